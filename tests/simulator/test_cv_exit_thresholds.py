"""scripts/cv_exit_thresholds.py on runs made by a known chain model: where the truth's ED term
depends on E's threshold, fitting it per threshold lowers the held-out error at every threshold and
is chosen; where it does not, per-threshold terms buy nothing and none is chosen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script
from tests.simulator.fitting import AT_MEASURED, BETWEEN, TRUE_ACCURACY, base_profile, make_record

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ("E", "D", "ED", "DE", "EP", "EQ", "EDP", "EDQ", "EPD", "EQD", "PED", "QED", "EPQ", "EQP")


def _script():
    return load_script("cv_exit_thresholds")


def _campaign(folder: Path, ed) -> Path:
    (folder / "runs").mkdir(parents=True)
    (folder / "single_stage.json").write_text(json.dumps(base_profile()), encoding="utf-8")
    rng = np.random.default_rng(5)
    for seed in (0, 1):
        for n, settings in enumerate((AT_MEASURED, BETWEEN)):
            for order in ORDERS:
                record = make_record(order, settings, rng, 0.1, 0.0, accuracy={**TRUE_ACCURACY, ("E", "D"): ed},
                                     thresholds=(0.5, 0.8, 0.95))
                record["config"]["seed"] = seed
                (folder / "runs" / f"{order}-{n}-s{seed}.json").write_text(json.dumps(record), encoding="utf-8")
    return folder


@pytest.mark.parametrize(("ed", "chosen"), [
    ({("resnet8", 0.5): -6.0, ("resnet8", 0.8): -1.5, ("resnet8", 0.95): 0.5}, "ED"),
    (TRUE_ACCURACY[("E", "D")], "none"),
])
def test_the_per_threshold_term_is_chosen_where_the_truth_has_one(tmp_path, capsys, ed, chosen):
    folder = _campaign(tmp_path / "c", ed)
    assert _script().main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"chosen: {chosen} per threshold" in out
    rows = {line.split()[0]: line for line in out.splitlines()[2:7]}
    none, ed_row = rows["none"].split(), rows["ED"].split()
    # every-threshold mean |error|, held out by seed (4th number) and by order (8th)
    if chosen == "ED":
        assert float(ed_row[3].rstrip(",")) < float(none[3].rstrip(",")) - 0.5
    else:
        assert float(ed_row[3].rstrip(",")) >= float(none[3].rstrip(",")) - 0.01


def test_an_empty_folder_is_one_line(tmp_path, capsys):
    assert _script().main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"cv_exit_thresholds: error: runs_dir: no run records in "
                                               f"{str(tmp_path / 'runs')!r}")
