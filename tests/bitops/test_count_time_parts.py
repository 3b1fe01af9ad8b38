"""``scripts/count_time_parts.py``: every variant runs, and ``bitops.trace`` is as it was after."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from bitops import trace

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "count_time_parts.py"


@pytest.mark.slow
def test_every_variant_runs_and_trace_is_restored(monkeypatch, capsys):
    before = {name: getattr(trace, name) for name in ("_can_fork", "_child_members", "_shape_only_batch_norm")}
    before_methods = (trace._Pending.result, trace._Pending.sharing_cores)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--rounds", "1"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    names = [line[:16].strip() for line in lines[1:]]
    assert names == ["fvcore", "nothing pruned", "empty child", "neither change", "threads only", "kernel only",
                     "with groups"]
    assert lines[1].endswith("1.00x")
    assert {name: getattr(trace, name) for name in before} == before
    assert (trace._Pending.result, trace._Pending.sharing_cores) == before_methods
