"""scripts/judge_profiles.py against the benchmark's own figures: the same profile on the same
measured runs must give what ``chaincomp benchmark`` reported when it trained them (its metric code
is the other implementation)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("judge_profiles", ROOT / "scripts" / "judge_profiles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("report", "predictor"), [("benchmark.json", "simulator"),
                                                    ("benchmark_s4.json", "challenger")])
def test_a_profile_judged_again_gives_the_benchmarks_figures(report, predictor):
    data = json.loads((ROOT / "results" / report).read_text())
    judged = _script().judge(data, str(ROOT / "results" / "benchmark_profile.json"))
    reported = data["predictors"][predictor]
    for figure, value in judged.items():
        assert value == pytest.approx(reported[figure]["value"], rel=1e-9, abs=1e-12), figure


def test_a_file_that_is_not_a_benchmark_report_is_one_line(tmp_path, capsys):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"_type": "chaincomp.RunRecord"}))
    assert _script().main([str(path), "--profile", str(ROOT / "results" / "benchmark_profile.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"judge_profiles: error: report {str(path)!r}: not a chaincomp benchmark --json report"
