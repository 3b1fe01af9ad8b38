"""Synthetic run records for the fit tests (``test_fit``, ``test_triples``, ``test_confirm``): the
known terms they are made with, the trainer's semantics written out by hand, the record writer and
the ``chaincomp fit`` runner. How each route is independent of the fit code: ``test_fit``'s docstring.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitops.models import ModelSpec, load_model_table
from chaincomp.cli import main
from simulator.model import Grid, predict
from simulator.profile import parse_profile

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
# Two settings every order is run at: at measured points, and between them (interpolated deltas).
AT_MEASURED = {"D": "resnet8", "P": 0.5, "Q": 2, "E": 0.8}
BETWEEN = {"D": "resnet8", "P": 0.4, "Q": 3, "E": 0.65}
ALL_ORDERS = ["".join(p) for p in itertools.permutations("DPQE")]
ALL_RUNS = [(order, settings) for settings in (AT_MEASURED, BETWEEN) for order in ALL_ORDERS]
EXIT_PAIRS = [("D", "E"), ("P", "E"), ("Q", "E"), ("E", "D"), ("E", "P"), ("E", "Q")]


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


# ---- the trainer's order semantics, written out independently of simulator.structure ---------------

def reaches(order: str, pos: int) -> bool:
    """Stage ``pos`` reaches the final model: E always (its heads carry over), others unless a D follows."""
    return order[pos] == "E" or "D" not in order[pos + 1:]


def applies(order: str, i: int, j: int) -> bool:
    """The term of stage i before stage j applies: j reaches the final model, and so does i, unless j is
    the D that absorbs i (every stage before the last D keeps its term with that D)."""
    return (i < j and order[i] != order[j] and reaches(order, j)
            and (reaches(order, i) or order[j] == "D"))


def applied_pairs(order: str) -> list[tuple[str, str, int]]:
    """(earlier letter, later letter, later position) of every pair that applies to ``order``."""
    return [(order[i], order[j], j) for j in range(len(order)) for i in range(j) if applies(order, i, j)]


def accuracy_design(runs: Sequence[tuple[str, dict[str, Any]]]) -> tuple[np.ndarray, list[tuple[str, str, Any]]]:
    """The increments' design matrix: one row per stage (prefix k minus prefix k-1), one column per
    (earlier, later, later method's value) term, and E's threshold too for a term of E with D (the
    records made here report no sweep, so each run gives its stages' rows at its own threshold)."""
    rows: list[dict[tuple, float]] = []
    for order, settings in runs:
        for k in range(1, len(order) + 1):
            row: dict[tuple, float] = {}
            for prefix, sign in ((order[:k], 1.0), (order[:k - 1], -1.0)):
                for a, b, _ in applied_pairs(prefix):
                    key = (a, b, settings[b], *([settings["E"]] if (a, b) == ("E", "D") else []))
                    row[key] = row.get(key, 0.0) + sign
            rows.append(row)
    columns = sorted({c for row in rows for c, w in row.items() if w}, key=str)
    design = np.array([[row.get(c, 0.0) for c in columns] for row in rows]).reshape(len(rows), len(columns))
    return design, columns


def exit_scale_pairs(order: str) -> list[tuple[str, str]]:
    """The exit scales that apply: E with every other stage when a D follows E (the student's heads
    distil from heads that saw them all), else E with the stages that reach the final model."""
    if "E" not in order:
        return []
    e = order.index("E")
    heads_carry = "D" in order[e + 1:]
    return [(order[x], "E") if x < e else ("E", order[x]) for x in range(len(order))
            if x != e and (heads_carry or reaches(order, x))]


def exit_triple_terms(order: str) -> list[str]:
    """The three-stage exit terms: when E's heads go through a D (E before it), E, D and each P or
    Q of the order, in the order they run (the student's inherited heads compressed, a compressed
    teacher's heads distilled)."""
    if "E" not in order or "D" not in order[order.index("E") + 1:]:
        return []
    return ["".join(sorted("ED" + m, key=order.index)) for m in "PQ" if m in order]


def exit_keys(order: str, settings: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every exit unknown of ``order``: (letters, value of the method that is neither E nor D if
    there is one, else D's student)."""
    def value(letters: str) -> Any:
        other = [m for m in letters if m not in "ED"]
        return settings[other[0] if other else "D"]
    return [(a + b, value(a + b)) for a, b in exit_scale_pairs(order)] + \
        [(t, value(t)) for t in exit_triple_terms(order)]


def exit_design(runs: Sequence[tuple[str, dict[str, Any]]], threshold: float | None = None
                ) -> tuple[np.ndarray, list[tuple[str, Any]]]:
    """Log exit-share equations of one exit at one threshold (every run whose E ran at it; None:
    all runs): at E, the unknowns of its prefix; after it, prefix k minus prefix k-1. Columns are
    the unknowns (letters, value) the rows use."""
    rows = []
    for order, settings in runs:
        if "E" not in order or (threshold is not None and settings["E"] != threshold):
            continue
        e = order.index("E") + 1
        for k in range(e, len(order) + 1):
            row: dict[tuple[str, Any], float] = {}
            for key in exit_keys(order[:k], settings):
                row[key] = row.get(key, 0.0) + 1
            for key in exit_keys(order[:k - 1], settings) if k > e else []:
                row[key] = row.get(key, 0.0) - 1
            rows.append(row)
    columns = sorted({c for row in rows for c, w in row.items() if w}, key=str)
    return np.array([[row.get(c, 0.0) for c in columns] for row in rows]).reshape(len(rows), len(columns)), columns


def with_terms(profile: dict[str, Any], accuracy: dict, scales: dict) -> dict[str, Any]:
    """``profile`` with known terms: an accuracy term is a number, or {value of the later method: x},
    or (a term of E with a later method) {(value, E's threshold): x}."""
    data = copy.deepcopy(profile)
    data["interactions"] = []
    for (i, j), x in accuracy.items():
        if isinstance(x, dict) and all(isinstance(k, tuple) for k in x):
            data["interactions"].append({"before": i, "after": j, "source": "truth",
                                         "points": [{"value": v, "threshold": t, "accuracy": a}
                                                    for (v, t), a in x.items()]})
        elif isinstance(x, dict):
            data["interactions"].append({"before": i, "after": j, "source": "truth",
                                         "points": [{"value": v, "accuracy": a} for v, a in x.items()]})
        else:
            data["interactions"].append({"before": i, "after": j, "accuracy": x, "source": "truth"})
    data["interactions"] += [{"before": i, "after": j, "exit_scale": s, "source": "truth"}
                             for (i, j), s in scales.items()]
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
                status: str = "complete", setup: dict[str, Any] | None = None,
                thresholds: Sequence[float] = ()) -> dict[str, Any]:
    """A run record as trainer/chain.py writes it (the fields fit reads), made by the chain model.

    The model after stage k measures ``chain_accuracy`` of the prefix plus noise that accumulates
    (each stage adds its own); once E has run its exit share is the profile's at the threshold
    times the scales of the E pairs that apply to the prefix (:func:`applied_pairs`), times
    log-normal noise that accumulates likewise. With ``thresholds``, every model with exits also
    reports its accuracy and rates at each of them (and at the operating threshold), as the
    trainer does."""
    profile = profile or base_profile()
    accuracy = TRUE_ACCURACY if accuracy is None else accuracy
    scales = TRUE_SCALE if scales is None else scales
    truth = parse_profile(with_terms(profile, accuracy, scales))
    setup = setup or SETUP
    noise = rng.normal(0, sigma)
    stages = [{"stage": "base", "index": 0, "config": {"epochs": 15, "lr": 0.05},
               "accuracy": truth.base_accuracy + noise}]
    log_noise = 0.0
    for k, method in enumerate(order, start=1):
        prefix = order[:k]
        noise += rng.normal(0, sigma)
        entry = {"stage": method, "index": k, "config": {CONFIG_FIELD[method]: settings[method]},
                 "accuracy": chain_accuracy(truth, prefix, settings) + noise}
        if "E" in prefix:
            log_noise += rng.normal(0, log_sigma)
            factor = math.exp(log_noise) * math.prod(scales.get(pair, 1.0) for pair in exit_scale_pairs(prefix))

            def rates_at(threshold: float) -> dict[str, float]:
                rates = {e: r * factor for e, r in exit_rates(profile, threshold).items()}
                return {**rates, "final": 1 - sum(rates.values())}

            rows = [{"threshold": t, "rates": rates_at(t),
                     "accuracy": chain_accuracy(truth, prefix, {**settings, "E": t}) + noise}
                    for t in sorted({*thresholds, settings["E"]})] if thresholds else []
            entry["exit"] = {"threshold": settings["E"], "rates": rates_at(settings["E"]), "thresholds": rows}
        stages.append(entry)
    return {"_type": "chaincomp.RunRecord", "_version": 1, "status": status,
            "config": {"order": order, "teacher": setup["teacher"], "distill": {"student": "resnet8"}},
            "data": {"name": setup["dataset"], "input_shape": setup["input_shape"], "num_classes": setup["num_classes"]},
            "stages": stages}


def write_records(folder: Path, runs: Sequence[tuple[str, dict[str, Any]]], rng: np.random.Generator, sigma: float,
                  log_sigma: float, **kwargs: Any) -> list[str]:
    """One record file per (order, settings)."""
    paths = []
    for n, (order, settings) in enumerate(runs):
        path = folder / f"{n:02d}-{order}.json"
        path.write_text(json.dumps(make_record(order, settings, rng, sigma, log_sigma, **kwargs)), encoding="utf-8")
        paths.append(str(path))
    return paths


def write_runs(folder: Path, orders, rng: np.random.Generator, sigma: float, log_sigma: float,
               values: dict[str, tuple] = VALUES, **kwargs: Any) -> list[str]:
    """Records of ``orders`` at settings drawn from ``values``."""
    runs = [(order, {m: values[m][rng.integers(len(values[m]))] for m in "DPQE"}) for order in orders]
    return write_records(folder, runs, rng, sigma, log_sigma, **kwargs)


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


def accuracy_terms(report: dict[str, Any]) -> dict[tuple[str, str, Any], dict[str, Any]]:
    """Fitted accuracy terms by (earlier, later, value of the later method[, E's threshold: a term of E
    with a later D, fitted per threshold])."""
    got = {(t["before"], t["after"], t["value"], *([] if t.get("threshold") is None else [t["threshold"]])): t
           for t in report["terms"] if t["kind"] == "accuracy"}
    assert len(got) == sum(t["kind"] == "accuracy" for t in report["terms"])  # one entry per node
    return got


def exit_tables(report: dict[str, Any]) -> dict[tuple[str, Any], np.ndarray]:
    """Fitted exit scales by (term letters, value of its other method): a (thresholds, exits) array."""
    return {(t["term"], value): np.array(t["scale"][v]) for t in report["exit_scale"]["tables"]
            for v, value in enumerate(t["values"])}


def residual(report: dict[str, Any], path: str, stage: int) -> list[dict[str, Any]]:
    """The accuracy equations of one run's stage (several for an E stage reporting several thresholds)."""
    return [r for r in report["accuracy"]["residuals"] if r["run"] == path and r["stage"] == stage]


# ---- the least squares on hand-sized matrices ------------------------------------------------------
