"""``trainer.exit_sweep`` and ``chaincomp sweep``: early exit at any threshold from stored samples.

Expected values by other routes: a plain loop over the samples (first head at or above the
threshold, compared in float32 as torch compares a float32 tensor with a Python float); the path
costs' linear combination against numbers worked out by hand; bad input one line, exit 2. The
equality with a real model's recount and with bitops' own cost of each row is in
``tests/cli/test_train.py`` (the slow DPQE run).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitops.errors import InputError
from tests.cli.helpers import run_main
from trainer.exit_sweep import decode_samples, encode_samples, parse_thresholds, sweep, sweep_costs

NAMES = ["layer1", "layer2"]


def _samples(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.1, 1.0, size=(n, 2)).astype(np.float32)
    confidence[:5] = np.float32(0.9)  # exactly at a threshold: leaves (>=)
    confidence[5:8] = np.nextafter(np.float32(0.9), np.float32(0))  # just below it in float32: does not
    return confidence, rng.random((n, 3)) < 0.8


def _by_loop(confidence, correct, threshold):
    n = len(confidence)
    left, right = [0, 0, 0], 0
    for i in range(n):
        k = next((k for k in range(2) if confidence[i, k] >= np.float32(threshold)), 2)
        left[k] += 1
        right += bool(correct[i, k])
    return {"layer1": left[0] / n, "layer2": left[1] / n, "final": left[2] / n}, 100 * right / n


def test_sweep_equals_a_loop_over_the_samples():
    confidence, correct = _samples()
    thresholds = [0.05, 0.3, 0.5, 0.9, 0.95, 1.0]
    for row, t in zip(sweep(confidence, correct, NAMES, thresholds), thresholds, strict=True):
        rates, accuracy = _by_loop(confidence, correct, t)
        assert row["threshold"] == t and row["rates"] == rates and row["accuracy"] == pytest.approx(accuracy, abs=1e-12)


def test_samples_read_back_as_the_same_float32():
    confidence, correct = _samples()
    text = json.dumps(encode_samples(confidence, correct, NAMES))
    back, hits, names = decode_samples(json.loads(text))
    assert names == NAMES and back.dtype == np.float32
    np.testing.assert_array_equal(back, confidence)
    np.testing.assert_array_equal(hits, correct)


def test_costs_are_the_path_costs_weighted_by_the_rates():
    rows = [{"threshold": 0.5, "accuracy": 90.0, "rates": {"layer1": 0.5, "layer2": 0.25, "final": 0.25}}]
    out = sweep_costs(rows, {"layer1": 100.0, "layer2": 300.0, "final": 1000.0}, 8000.0)[0]
    assert out["bitops"] == 0.5 * 100 + 0.25 * 300 + 0.25 * 1000 == 375.0
    assert out["bitops_cr"] == 8000.0 / 375.0


@pytest.mark.parametrize("text, expected", [("0.5,0.9", [0.5, 0.9]), ("0.5:0.9:5", [0.5, 0.6, 0.7, 0.8, 0.9]),
                                            ("0.7:0.7:1", [0.7])])
def test_thresholds_parse(text, expected):
    assert parse_thresholds(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "a", "0.5:0.9", "0.5:0.9:0", "0,0.5", "1.5"])
def test_bad_thresholds_are_refused(text):
    with pytest.raises(InputError, match="thresholds"):
        parse_thresholds(text)


def _record(tmp_path, exit_entry):
    record = {"_type": "chaincomp.RunRecord", "_version": 1, "status": "complete",
              "config": {"order": "E"}, "stages": [{"stage": "base", "accuracy": 90.0},
                                                   {"stage": "E", "accuracy": 91.0, "exit": exit_entry}]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_the_command_sweeps_a_record_and_says_what_it_lacks(tmp_path, capsys):
    confidence, correct = _samples(50)
    entry = {"threshold": 0.9, "rates": {}, "thresholds": [{"threshold": 0.5}, {"threshold": 0.9}],
             "samples": encode_samples(confidence, correct, NAMES),
             "path_bitops": {"layer1": 10.0, "layer2": 30.0, "final": 100.0}, "reference_bitops": 1000.0}
    path = _record(tmp_path, entry)
    rc, out, err = run_main(capsys, "sweep", str(path), "--thresholds", "0.2:0.8:4", "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert [r["threshold"] for r in got["rows"]] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    for row in got["rows"]:
        rates, accuracy = _by_loop(confidence, correct, row["threshold"])
        assert row["rates"] == rates
        assert row["bitops"] == pytest.approx(rates["layer1"] * 10 + rates["layer2"] * 30 + rates["final"] * 100)
    rc, out, _ = run_main(capsys, "sweep", str(path))  # default: the run's thresholds
    assert rc == 0 and len(out.strip().splitlines()) == 2 + 2 and "operating threshold 0.9" in out
    del entry["samples"]
    path = _record(tmp_path, entry)
    rc, out, err = run_main(capsys, "sweep", str(path))
    assert rc == 2 and out == "" and "keeps no per-sample exit measurements" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_main(capsys, "sweep", str(path), "--stage", "0")
    assert rc == 2 and "stage: 0 is not a stage with exit heads; those are [1]" in err
