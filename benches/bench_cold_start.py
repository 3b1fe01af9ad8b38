"""Cold start of the main command against Python's own floor: ``chaincomp simulate --json`` vs ``import numpy``.

Run: ``.venv/bin/python -m pytest benches/bench_cold_start.py --benchmark-only`` from the repository
root.

Group ``cold start: simulate vs import numpy``: each round starts two fresh processes, ``python -c
"import numpy"`` (the least any command of ours can cost) and the README's main command (shipped
profile, default grid, all 24 orders), in alternating order so that a change of machine load hits
both; the timing columns are of such a pair. The command runs as ``python -m chaincomp`` through a
``-c`` wrapper that makes ``import torch`` fail, so a torch import anywhere on its path fails the run instead of slowing it. Each run must exit 0 and
print valid JSON. ``extra_info``: median and best wall seconds of each, ``ratio`` (median over
rounds of simulate / numpy), ``ratio_best`` (best / best) and ``meets_target`` (ratio <= 3),
recorded, not asserted: a busy machine must not fail a run.

Before the timings, one more run under ``-X importtime`` checks that the command imports neither
torch (``probe.assert_torch_free``) nor numba: the default grid's batches are small enough for
``bitops.batch``'s numpy route (``NUMPY_MAX_CONFIGS``), and loading numba alone costs ~1 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import pytest
from probe import assert_torch_free, imported_modules

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 3.0
ROUNDS = 7
CLI = "chaincomp"
COMMAND = ["simulate", "--json"]

# Runs the CLI as ``python -m CLI`` would, with a finder first on sys.meta_path that refuses torch.
NO_TORCH = f"""
import runpy, sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this bench ({{name}})")
        return None

sys.meta_path.insert(0, NoTorch())
runpy.run_module({CLI!r}, run_name="__main__", alter_sys=True)
"""


def _wall(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    run = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, run


@pytest.mark.benchmark(group="cold start: simulate vs import numpy")
def test_simulate_against_import_numpy(benchmark) -> None:
    probe_args = ["-m", CLI, *COMMAND]
    assert_torch_free(probe_args, ROOT, must_see=(CLI, "bitops.batch"))
    probe = subprocess.run([sys.executable, "-X", "importtime", *probe_args], capture_output=True, text=True, cwd=ROOT)
    assert probe.returncode == 0, probe.stderr
    assert "numba" not in imported_modules(probe.stderr), f"{' '.join(probe_args)} imported numba"

    runs = {"numpy": [sys.executable, "-c", "import numpy"], "simulate": [sys.executable, "-c", NO_TORCH, *COMMAND]}
    seconds: dict[str, list[float]] = {"numpy": [], "simulate": []}

    def pair() -> None:
        """One run of each, the first one alternating between rounds."""
        order = ("numpy", "simulate") if len(seconds["numpy"]) % 2 == 0 else ("simulate", "numpy")
        for name in order:
            wall, run = _wall(runs[name])
            assert run.returncode == 0, f"{name}: {run.stderr}"
            if name == "simulate":
                json.loads(run.stdout)
            seconds[name].append(wall)

    benchmark.pedantic(pair, warmup_rounds=1, rounds=ROUNDS)
    timed = {name: s[1:] for name, s in seconds.items()}  # the warm-up round is the first
    ratio = median(s / n for s, n in zip(timed["simulate"], timed["numpy"]))
    benchmark.extra_info.update(
        command=f"python -m {CLI} {' '.join(COMMAND)}", rounds=len(timed["numpy"]),
        numpy_s_median=median(timed["numpy"]), numpy_s_best=min(timed["numpy"]),
        simulate_s_median=median(timed["simulate"]), simulate_s_best=min(timed["simulate"]),
        ratio=ratio, ratio_best=min(timed["simulate"]) / min(timed["numpy"]),
        meets_target=bool(ratio <= TARGET_RATIO))
