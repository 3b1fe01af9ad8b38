"""``chaincomp fit``: interaction terms recovered from run records made by the chain model itself.

Expected values come from routes other than the fit code:

* synthetic run records: each stage's accuracy is ``simulator.model.predict`` of the order's prefix
  under a profile that holds KNOWN interaction terms (so the increments are the model's own), plus
  seeded gaussian noise per stage; exit rates are the profile's rates at the threshold (np.interp)
  times the known scales, worked out here, times seeded log-normal noise;
* the tolerance of the noisy recovery is a closed form: with all 24 orders of DPQE, method m's
  block of the normal matrix is ``4 I + 8 J`` (3x3; J all ones: each earlier method precedes m in 12
  runs, two given ones both do in 8), whose inverse has ``5/28`` on the diagonal, so each accuracy
  term's standard deviation is ``sigma * sqrt(5/28)``; each (E, m) exit scale is seen once in each
  of the 12 runs with m after E: ``sigma / sqrt(12)``;
* the least squares itself on matrices small enough to solve by hand;
* bad input one rule per case: exit code 2, one line on stderr, nothing written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitops.models import ModelSpec, load_model_table
from simulator.cli import main
from simulator.fit import solve
from simulator.model import Grid, predict
from simulator.profile import load_profile, parse_profile

BASE_ACCURACY = 90.0
SETUP = {"teacher": "resnet20", "student": "resnet8", "dataset": "digits", "input_shape": [3, 16, 16],
         "num_classes": 10}
# The terms the synthetic runs are made with: every ordered pair a different, non-round value.
TRUE_ACCURACY = {("D", "P"): -0.7, ("P", "D"): -2.3, ("D", "Q"): -1.1, ("Q", "D"): -3.4, ("D", "E"): 0.6,
                 ("E", "D"): -1.9, ("P", "Q"): -0.4, ("Q", "P"): -2.8, ("P", "E"): 0.3, ("E", "P"): -1.6,
                 ("Q", "E"): -0.2, ("E", "Q"): -1.3}
TRUE_SCALE = {("D", "E"): 0.8, ("P", "E"): 1.15, ("Q", "E"): 0.9, ("E", "D"): 0.7, ("E", "P"): 1.1, ("E", "Q"): 0.95}
# Hyperparameters the runs draw from: measured points and values between them (interpolated).
VALUES = {"D": ("resnet8",), "P": (0.25, 0.4, 0.5, 0.75), "Q": (1, 2, 3, 8), "E": (0.5, 0.65, 0.8, 0.95)}
CONFIG_FIELD = {"D": "student", "P": "ratio", "Q": "w_bits", "E": "threshold"}


def base_profile() -> dict[str, Any]:
    """A hand profile of the digits setup (deltas and exit rates easy to check by eye), no terms."""
    return {
        "_type": "chaincomp.StageProfile", "_version": 1,
        "provenance": {"source": "hand", "citation": "tests/simulator/test_fit.py"},
        "setup": dict(SETUP),
        "base": {"model": "resnet20", "accuracy": BASE_ACCURACY, "accuracy_std": 0.3},
        "methods": {
            "D": {"parameter": "student", "points": [{"value": "resnet8", "accuracy": 88.0, "delta": -2.0}]},
            "P": {"parameter": "prune_ratio", "points": [{"value": 0.25, "accuracy": 89.5, "delta": -0.5},
                                                         {"value": 0.5, "accuracy": 88.5, "delta": -1.5},
                                                         {"value": 0.75, "accuracy": 86.0, "delta": -4.0}]},
            "Q": {"parameter": "w_bits", "a_bits": 8, "points": [{"value": 1, "accuracy": 84.0, "delta": -6.0},
                                                                 {"value": 2, "accuracy": 87.0, "delta": -3.0},
                                                                 {"value": 4, "accuracy": 89.0, "delta": -1.0},
                                                                 {"value": 8, "accuracy": 89.75, "delta": -0.25}]},
            "E": {"parameter": "threshold", "exits": ["layer1", "layer2"], "points": [
                {"value": 0.5, "accuracy": 87.0, "delta": -3.0,
                 "exit_rates": {"layer1": 0.3, "layer2": 0.2, "final": 0.5}},
                {"value": 0.8, "accuracy": 89.0, "delta": -1.0,
                 "exit_rates": {"layer1": 0.2, "layer2": 0.15, "final": 0.65}},
                {"value": 0.95, "accuracy": 89.75, "delta": -0.25,
                 "exit_rates": {"layer1": 0.1, "layer2": 0.1, "final": 0.8}}]},
        },
        "interactions": [],
    }


def with_terms(profile: dict[str, Any], accuracy: dict, scales: dict) -> dict[str, Any]:
    data = copy.deepcopy(profile)
    data["interactions"] = ([{"before": i, "after": j, "accuracy": x, "source": "truth"} for (i, j), x in accuracy.items()]
                            + [{"before": i, "after": j, "exit_scale": s, "source": "truth"} for (i, j), s in scales.items()])
    return data


def _load(name: str):
    return load_model_table(ModelSpec(name, input_shape=tuple(SETUP["input_shape"]), num_classes=SETUP["num_classes"]))


def chain_accuracy(truth, order: str, settings: dict[str, Any]) -> float:
    """The chain model's accuracy of ``order`` at ``settings`` (one grid point)."""
    if not order:
        return truth.base_accuracy
    grid = Grid({m: (settings[m],) for m in order})
    return float(predict(truth, order, grid, _load, SETUP["teacher"]).accuracy[0])


def exit_rates(profile: dict[str, Any], threshold: float) -> dict[str, float]:
    points = profile["methods"]["E"]["points"]
    xs = [p["value"] for p in points]
    return {e: float(np.interp(threshold, xs, [p["exit_rates"][e] for p in points])) for e in ("layer1", "layer2")}


def make_record(order: str, settings: dict[str, Any], rng: np.random.Generator, sigma: float, log_sigma: float,
                profile: dict[str, Any] | None = None, accuracy: dict | None = None, scales: dict | None = None,
                status: str = "complete", setup: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run record as trainer/chain.py writes it (the fields fit reads), made by the chain model."""
    profile = profile or base_profile()
    accuracy = TRUE_ACCURACY if accuracy is None else accuracy
    scales = TRUE_SCALE if scales is None else scales
    truth = parse_profile(with_terms(profile, accuracy, scales))
    setup = setup or SETUP
    acc = truth.base_accuracy + rng.normal(0, sigma)
    stages = [{"stage": "base", "index": 0, "config": {"epochs": 15, "lr": 0.05}, "accuracy": acc}]
    share_factor = None
    for k, method in enumerate(order, start=1):
        acc += chain_accuracy(truth, order[:k], settings) - chain_accuracy(truth, order[:k - 1], settings) \
            + rng.normal(0, sigma)
        entry = {"stage": method, "index": k, "config": {CONFIG_FIELD[method]: settings[method]}, "accuracy": acc}
        if method == "E":
            share_factor = math.prod(scales.get((i, "E"), 1.0) for i in order[:k - 1])
        elif share_factor is not None:
            share_factor *= scales.get(("E", method), 1.0)
        if share_factor is not None:
            share_factor *= math.exp(rng.normal(0, log_sigma))
            rates = {e: r * share_factor for e, r in exit_rates(profile, settings["E"]).items()}
            rates["final"] = 1 - sum(rates.values())
            entry["exit"] = {"threshold": settings["E"], "rates": rates, "thresholds": []}
        stages.append(entry)
    return {"_type": "chaincomp.RunRecord", "_version": 1, "status": status,
            "config": {"order": order, "teacher": setup["teacher"], "distill": {"student": "resnet8"}},
            "data": {"name": setup["dataset"], "input_shape": setup["input_shape"], "num_classes": setup["num_classes"]},
            "stages": stages}


def write_runs(folder: Path, orders, rng: np.random.Generator, sigma: float, log_sigma: float,
               values: dict[str, tuple] = VALUES, **kwargs: Any) -> list[str]:
    paths = []
    for n, order in enumerate(orders):
        settings = {m: values[m][rng.integers(len(values[m]))] for m in "DPQE"}
        path = folder / f"{n:02d}-{order}.json"
        path.write_text(json.dumps(make_record(order, settings, rng, sigma, log_sigma, **kwargs)), encoding="utf-8")
        paths.append(str(path))
    return paths


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def fit(tmp_path: Path, paths: list[str], *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fit report, fitted profile file) of ``chaincomp fit --json``."""
    profile_path = tmp_path / "base.json"
    profile_path.write_text(json.dumps(base_profile()), encoding="utf-8")
    out = tmp_path / "fitted.json"
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(out), "--profile", str(profile_path), "--json", *extra])
    assert rc == 0, stderr
    return json.loads(stdout), json.loads(out.read_text(encoding="utf-8"))


def terms(report: dict[str, Any], kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(t["before"], t["after"]): t for t in report["terms"] if t["kind"] == kind}


ALL_ORDERS = ["".join(p) for p in itertools.permutations("DPQE")]


# ---- the least squares on hand-sized matrices ------------------------------------------------------

def test_solve_identified_system_by_hand():
    # x0 = 1, x0 + x1 = 3  ->  x = (1, 2), exactly; no residual degrees of freedom, no std error.
    got = solve(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([1.0, 3.0]))
    assert got.identified.tolist() == [True, True]
    assert got.estimate == pytest.approx([1.0, 2.0])
    assert got.rank == 2 and got.dof == 0 and np.isnan(got.std_error).all()


def test_solve_mean_and_its_standard_error_by_hand():
    # One unknown seen three times: the mean 2, residuals -1, 0, 1, sigma^2 = 2 / 2, se = 1 / sqrt(3).
    got = solve(np.array([[1.0], [1.0], [1.0]]), np.array([1.0, 2.0, 3.0]))
    assert got.estimate[0] == pytest.approx(2.0)
    assert got.residuals == pytest.approx([-1.0, 0.0, 1.0])
    assert got.std_error[0] == pytest.approx(1 / math.sqrt(3))
    assert got.rms == pytest.approx(math.sqrt(2 / 3))


def test_solve_confounded_and_zero_columns():
    # x0 and x1 only ever appear together; x2 never appears; x3 alone.
    design = np.array([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
    got = solve(design, np.array([5.0, 3.0, 6.0]))
    assert got.identified.tolist() == [False, False, False, True]
    assert got.estimate[3] == pytest.approx(2.0)
    assert got.confounded[0] == [1] and got.confounded[1] == [0] and got.confounded[2] == []
    assert np.isnan(got.estimate[:3]).all()  # never a number for what the runs cannot see


# ---- recovery of known terms ---------------------------------------------------------------------

def test_exact_runs_give_back_every_term_exactly(tmp_path):
    rng = np.random.default_rng(0)
    paths = write_runs(tmp_path, ALL_ORDERS, rng, sigma=0.0, log_sigma=0.0)
    report, fitted = fit(tmp_path, paths)
    acc, scale = terms(report, "accuracy"), terms(report, "exit_scale")
    assert set(acc) == set(TRUE_ACCURACY) and set(scale) == set(TRUE_SCALE)
    for pair, truth in TRUE_ACCURACY.items():
        assert acc[pair]["estimate"] == pytest.approx(truth, abs=1e-9), pair
    for pair, truth in TRUE_SCALE.items():
        assert scale[pair]["estimate"] == pytest.approx(truth, rel=1e-9), pair
    assert report["unidentified"] == []
    assert report["accuracy"]["rms"] == pytest.approx(0, abs=1e-9)
    assert report["accuracy"]["equations"] == 24 * 4 and report["accuracy"]["rank"] == 12
    # The written profile reads back, and predicts the runs' own final accuracies.
    back = parse_profile(fitted)
    assert back.accuracy_terms == pytest.approx(TRUE_ACCURACY, abs=1e-9)
    assert back.exit_scales == pytest.approx(TRUE_SCALE, rel=1e-9)


def test_noisy_runs_recover_the_terms_within_the_closed_form_spread(tmp_path):
    sigma, log_sigma = 0.2, 0.03
    rng = np.random.default_rng(1)
    paths = write_runs(tmp_path, ALL_ORDERS, rng, sigma=sigma, log_sigma=log_sigma)
    report, _ = fit(tmp_path, paths)
    acc, scale = terms(report, "accuracy"), terms(report, "exit_scale")
    acc_sd = sigma * math.sqrt(5 / 28)
    for pair, truth in TRUE_ACCURACY.items():
        assert abs(acc[pair]["estimate"] - truth) < 4.5 * acc_sd, pair
        assert acc[pair]["std_error"] == pytest.approx(acc_sd, rel=0.3), pair  # sigma from 84 residual dof
        assert acc[pair]["equations"] == 12  # i precedes j in half of the 24 orders
    for (i, j), truth in TRUE_SCALE.items():
        log_sd = log_sigma * (math.sqrt(5 / 28) if j == "E" else 1 / math.sqrt(12))
        assert abs(math.log(scale[(i, j)]["estimate"] / truth)) < 4.5 * log_sd, (i, j)
    assert report["accuracy"]["rms"] == pytest.approx(sigma, rel=0.3)


# ---- what the runs cannot identify ---------------------------------------------------------------

def test_only_pq_runs_leave_qp_unidentified_and_out_of_the_profile(tmp_path):
    rng = np.random.default_rng(2)
    paths = write_runs(tmp_path, ["PQ"] * 4, rng, sigma=0.0, log_sigma=0.0)
    report, fitted = fit(tmp_path, paths)
    assert set(terms(report, "accuracy")) == {("P", "Q")}
    assert terms(report, "accuracy")[("P", "Q")]["estimate"] == pytest.approx(TRUE_ACCURACY[("P", "Q")], abs=1e-9)
    missing = {(u["before"], u["after"], u["kind"]): u["reason"] for u in report["unidentified"]}
    assert missing[("Q", "P", "accuracy")] == "no run applies P after Q"
    assert len(missing) == 11 + 6  # every other accuracy pair, and every exit scale
    pairs = {(t["before"], t["after"]) for t in fitted["interactions"]}
    assert pairs == {("P", "Q")}  # QP is absent, not written as 0
    listed = {(u["before"], u["after"], u["kind"]) for u in fitted["provenance"]["fit"]["unidentified"]}
    assert ("Q", "P", "accuracy") in listed


def test_only_dpqe_runs_confound_the_terms_that_always_appear_together(tmp_path):
    rng = np.random.default_rng(3)
    paths = write_runs(tmp_path, ["DPQE"] * 5, rng, sigma=0.1, log_sigma=0.01)
    report, _ = fit(tmp_path, paths)
    assert set(terms(report, "accuracy")) == {("D", "P")}  # P's only predecessor is D
    missing = {(u["before"] + u["after"], u["kind"]): u["reason"] for u in report["unidentified"]}
    assert missing[("DQ", "accuracy")].startswith("confounded with PQ")
    assert missing[("DE", "accuracy")].startswith("confounded with PE, QE")
    assert missing[("DE", "exit_scale")].startswith("confounded with PE, QE")
    assert missing[("ED", "exit_scale")] == "no run applies D after E"


def test_zero_exit_shares_give_no_exit_equation_and_say_so(tmp_path):
    profile = base_profile()
    for point in profile["methods"]["E"]["points"]:
        point["exit_rates"] = {"layer1": 0.0, "layer2": 0.0, "final": 1.0}
    rng = np.random.default_rng(4)
    paths = []
    for n, order in enumerate(["PE", "EP"]):
        record = make_record(order, {"P": 0.5, "E": 0.8}, rng, 0.0, 0.0, profile=profile)
        path = tmp_path / f"{order}.json"
        path.write_text(json.dumps(record), encoding="utf-8")
        paths.append(str(path))
    (tmp_path / "base.json").write_text(json.dumps(profile), encoding="utf-8")
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(tmp_path / "f.json"), "--profile",
                                  str(tmp_path / "base.json"), "--json"])
    assert rc == 0, stderr
    report = json.loads(stdout)
    assert report["exit_scale"]["equations"] == 0
    assert any("exit share is 0" in note for note in report["exit_scale"]["notes"])
    missing = {(u["before"] + u["after"], u["kind"]): u["reason"] for u in report["unidentified"]}
    assert "no usable exit-rate measurement" in missing[("PE", "exit_scale")]
    assert set(terms(report, "accuracy")) == {("P", "E"), ("E", "P")}


# ---- refining the single-stage deltas ------------------------------------------------------------

MEASURED = {"D": ("resnet8",), "P": (0.25, 0.5, 0.75), "Q": (1, 2, 4, 8), "E": (0.5, 0.8, 0.95)}
# How far the runs' own single-stage deltas are from the profile's, per measured point.
SHIFT = {("D", "resnet8"): 0.6, ("P", 0.25): 0.2, ("P", 0.5): -0.3, ("P", 0.75): 0.4, ("Q", 1): -0.5,
         ("Q", 2): 0.25, ("Q", 4): 0.1, ("Q", 8): -0.1, ("E", 0.5): -0.2, ("E", 0.8): 0.15, ("E", 0.95): 0.05}


def shifted_profile() -> dict[str, Any]:
    data = base_profile()
    for method, entry in data["methods"].items():
        for point in entry["points"]:
            point["delta"] += SHIFT[(method, point["value"])]
    return data


def test_refined_deltas_and_terms_are_recovered_when_the_profile_is_off(tmp_path):
    rng = np.random.default_rng(11)
    truth = shifted_profile()
    paths = write_runs(tmp_path, ALL_ORDERS, rng, 0.0, 0.0, values=MEASURED, profile=truth)
    for method, value in SHIFT:  # one single-method run per measured point, as a profile makes
        record = make_record(method, {m: value if m == method else None for m in "DPQE"}, rng, 0.0, 0.0, profile=truth)
        path = tmp_path / f"single-{method}-{value}.json"
        path.write_text(json.dumps(record), encoding="utf-8")
        paths.append(str(path))
    report, fitted = fit(tmp_path, paths, "--refine-deltas")
    assert report["unidentified"] == []
    got = {(d["method"], d["value"]): d for d in report["deltas"]}
    assert set(got) == set(SHIFT)
    for key, shift in SHIFT.items():
        assert got[key]["correction"] == pytest.approx(shift, abs=1e-9), key
    for pair, value in TRUE_ACCURACY.items():
        assert terms(report, "accuracy")[pair]["estimate"] == pytest.approx(value, abs=1e-9), pair
    for method, entry in shifted_profile()["methods"].items():  # the written points are the truth's
        for want, point in zip(entry["points"], fitted["methods"][method]["points"]):
            assert point["value"] == want["value"] and point["delta"] == pytest.approx(want["delta"], abs=1e-9)
            assert point["accuracy"] == pytest.approx(want["accuracy"] + SHIFT[(method, want["value"])])
            assert point["fit"]["profile_delta"] == pytest.approx(want["delta"] - SHIFT[(method, want["value"])])
    # Without refining, the same runs push the profile's error into the terms.
    plain, _ = fit(tmp_path, paths)
    worst = max(abs(t["estimate"] - TRUE_ACCURACY[(t["before"], t["after"])])
                for t in plain["terms"] if t["kind"] == "accuracy")
    assert worst > 0.1


def test_refining_with_only_pq_runs_confounds_pq_with_q_s_delta(tmp_path):
    rng = np.random.default_rng(12)
    paths = write_runs(tmp_path, ["PQ"] * 3, rng, 0.0, 0.0, values={**MEASURED, "Q": (2,)})
    report, _ = fit(tmp_path, paths, "--refine-deltas")
    missing = {(u["before"] + u["after"], u["kind"]): u["reason"] for u in report["unidentified"]}
    assert missing[("PQ", "accuracy")].startswith("confounded with delta Q=2")
    assert {d["method"]: d["correction"] is None for d in report["deltas"]} == {"P": False, "Q": True}


# ---- the command's output ------------------------------------------------------------------------

def test_text_report_and_provenance(tmp_path):
    rng = np.random.default_rng(5)
    paths = write_runs(tmp_path, ["PQ", "QP", "PQ", "QP"], rng, sigma=0.1, log_sigma=0.0)
    profile_path = tmp_path / "base.json"
    profile_path.write_text(json.dumps(base_profile()), encoding="utf-8")
    out = tmp_path / "fitted.json"
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(out), "--profile", str(profile_path)])
    assert rc == 0, stderr
    assert "PQ" in stdout and "QP" in stdout and "not identified" in stdout and "residual rms" in stdout
    fitted = json.loads(out.read_text(encoding="utf-8"))
    assert fitted["provenance"]["fitted_from"] == paths
    assert fitted["provenance"]["source"] == "hand"  # the base's provenance is kept, and extended
    assert fitted["provenance"]["fit"]["accuracy"]["equations"] == 8
    for term in fitted["interactions"]:
        assert term["source"].startswith("fit of RUN files 00-PQ.json, 01-QP.json, 02-PQ.json")
        assert "residual rms" in term["source"]
    assert fitted["methods"] == base_profile()["methods"]  # the single-stage curves are the base's


def test_default_base_profile_is_the_shipped_one(tmp_path, monkeypatch):
    from simulator import profile as profile_mod

    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(base_profile()), encoding="utf-8")
    monkeypatch.setattr(profile_mod, "DEFAULT_PROFILE", shipped)
    paths = write_runs(tmp_path, ["PQ", "QP"], np.random.default_rng(6), 0.0, 0.0)
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(tmp_path / "f.json")])
    assert rc == 0, stderr
    assert json.loads((tmp_path / "f.json").read_text())["provenance"]["fit"]["base_profile"] == "(shipped default)"
    assert load_profile(tmp_path / "f.json").accuracy_terms == pytest.approx(
        {("P", "Q"): TRUE_ACCURACY[("P", "Q")], ("Q", "P"): TRUE_ACCURACY[("Q", "P")]}, abs=1e-9)


def test_incomplete_run_is_used_with_allow_incomplete(tmp_path):
    rng = np.random.default_rng(7)
    record = make_record("PQE", {"P": 0.5, "Q": 2, "E": 0.8}, rng, 0.0, 0.0, status="interrupted")
    record["stages"] = record["stages"][:3]  # base, P, Q finished; E did not
    path = tmp_path / "part.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    report, _ = fit(tmp_path, [str(path)], "--allow-incomplete")
    assert report["accuracy"]["equations"] == 2
    assert terms(report, "accuracy")[("P", "Q")]["estimate"] == pytest.approx(TRUE_ACCURACY[("P", "Q")], abs=1e-9)


# ---- bad input -----------------------------------------------------------------------------------

def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    rng = np.random.default_rng(8)
    good = write_runs(tmp_path, ["PQ"], rng, 0.0, 0.0)[0]

    def record_file(name: str, data: Any) -> str:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        return str(path)

    other = dict(SETUP, teacher="resnet32")
    letters = make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0)
    letters["config"]["order"] = "PX"
    student = make_record("DP", {"D": "resnet8", "P": 0.5}, rng, 0, 0)
    student["stages"][1]["config"]["student"] = "resnet20"  # a student the profile has no D point for
    return {
        "no runs": ([], "at least one run record"),
        "missing file": ([str(tmp_path / "nope.json")], "cannot read"),
        "not json": ([record_file("bad.json", "{not json")], "not valid JSON"),
        "a profile, not a run": ([record_file("prof.json", base_profile())], "not a chaincomp run record"),
        "other teacher": ([record_file("t.json", make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0, setup=other))],
                          "teacher is 'resnet32'"),
        "other dataset": ([record_file("d.json", make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0,
                                                             setup=dict(SETUP, dataset="cifar10")))],
                          "dataset is 'cifar10'"),
        "other image size": ([record_file("s.json", make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0,
                                                                setup=dict(SETUP, input_shape=[3, 8, 8])))],
                             "input_shape is [3, 8, 8]"),
        "other student": ([record_file("st.json", student)],
                          "student is 'resnet20'"),
        "incomplete": ([record_file("run.json", make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0, status="running"))],
                       "status is 'running', not 'complete'"),
        "given twice": ([good, good], "is given twice"),
        "order of other letters": ([record_file("x.json", letters)], "config.order must be letters of D, P, Q, E"),
    }


@pytest.mark.parametrize("case", ["no runs", "missing file", "not json", "a profile, not a run", "other teacher",
                                  "other dataset", "other image size", "other student", "incomplete", "given twice",
                                  "order of other letters"])
def test_bad_runs_are_refused(case, tmp_path):
    paths, says = _bad_cases(tmp_path)[case]
    profile_path = tmp_path / "base.json"
    profile_path.write_text(json.dumps(base_profile()), encoding="utf-8")
    out = tmp_path / "fitted.json"
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(out), "--profile", str(profile_path)])
    assert rc == 2 and stdout == ""
    assert stderr.startswith("chaincomp fit: error: ") and stderr.count("\n") == 1 and says in stderr
    assert not out.exists()


def test_out_in_missing_directory_is_refused(tmp_path):
    paths = write_runs(tmp_path, ["PQ"], np.random.default_rng(9), 0.0, 0.0)
    rc, _, stderr = run_cli(["fit", *paths, "-o", str(tmp_path / "no" / "f.json")])
    assert rc == 2 and stderr.count("\n") == 1 and "does not exist" in stderr


def test_out_onto_a_run_record_is_refused(tmp_path):
    paths = write_runs(tmp_path, ["PQ"], np.random.default_rng(10), 0.0, 0.0)
    before = Path(paths[0]).read_text()
    rc, _, stderr = run_cli(["fit", *paths, "-o", paths[0]])
    assert rc == 2 and "is one of the run records" in stderr
    assert Path(paths[0]).read_text() == before


def test_fit_and_confirm_modules_import_no_torch():
    code = "import sys, simulator.fit, simulator.confirm; assert 'torch' not in sys.modules and 'trainer' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
