"""scripts/exit_rate_misses.py on the seed-6 benchmark records that ship: every record with E is a
row, its measured shares are the record's own (read here directly), the predicted ones a
distribution over the exits, and bad input is one line."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def _script():
    return load_script("exit_rate_misses")


def test_every_record_with_exits_is_a_row_with_its_own_rates(tmp_path, capsys):
    with tarfile.open(ROOT / "results" / "benchmark_s5_s6_runs.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    folder = tmp_path / "benchmark-s6"
    expected = {}
    for path in folder.glob("*.json"):
        record = json.loads(path.read_text())
        if record.get("_type") == "chaincomp.RunRecord" and record["status"] == "complete":
            last = [s for s in record["stages"] if "exit" in s]
            if last:
                expected[path.name] = last[-1]["exit"]["rates"]
    rows = _script().rows([str(folder)], None)
    assert len(expected) >= 24 and {r["run"] for r in rows} == set(expected)  # 24 orders, some at two points
    for r in rows:
        assert r["measured"] == {x: expected[r["run"]].get(x, 0.0) for x in r["measured"]}
        assert all(0 <= p <= 1 for p in r["predicted"].values()) and sum(r["predicted"].values()) <= 1 + 1e-9
        assert "E" in r["order"] and all("E" in t for t in r["terms"])
    assert _script().main([str(folder)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(expected)


def test_a_folder_that_does_not_exist_is_one_line(tmp_path, capsys):
    assert _script().main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == (f"exit_rate_misses: error: RUN_DIR {str(tmp_path / 'nowhere')!r} "
                                               "is not a folder")
