"""Three-method accuracy terms: the profile entry, the prediction, the fit.

Expected values come from routes other than the code under test:

* interpolation: bilinear values worked out by hand in the test (P linear in the ratio, Q linear in
  log2 of the bits, E linear in the threshold), including where a value is clamped and flagged;
* which orders a triple applies to: written out by hand from the trainer's order semantics (D
  builds a fresh student, so a P or Q before the last D does not reach the final model; E always
  does), as literal sets of orders;
* the fit: synthetic run records made here by ``simulator.model.predict`` from a KNOWN truth profile
  (pair terms and a DPQ triple on a full grid), noise-free, so every identified unknown must come
  back exactly; the truth's own prediction is tied to a hand sum;
* bad input one rule per case: an InputError naming the field, or exit code 2 with one line on
  stderr naming --triples and nothing written.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitops.errors import InputError
from simulator.model import Grid, predict
from simulator.profile import Profile, parse_profile
from simulator.structure import structure
from tests.simulator.fitting import SETUP, base_profile, fit, run_cli
from tests.simulator.profiles import TEACHER, load, one_point_grid
from tests.simulator.profiles import BASE_ACCURACY, hand_profile

# A DPQ triple on P {0.25, 0.75} x Q {1, 4} bits, listed out of order on purpose (the parser sorts).
DPQ_POINTS = [{"before_value": 0.75, "value": 4, "accuracy": -2.0, "std_error": 0.8},
              {"before_value": 0.25, "value": 1, "accuracy": -1.0, "std_error": 0.2},
              {"before_value": 0.75, "value": 1, "accuracy": -3.0, "std_error": 0.6},
              {"before_value": 0.25, "value": 4, "accuracy": -0.5, "std_error": 0.4}]


def dpq_entry(points: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    entry = {"first": "D", "before": "P", "after": "Q", "source": "hand",
             "points": copy.deepcopy(DPQ_POINTS if points is None else points)}
    entry.update(fields)
    return entry


def hand_dpq(p: float, q: float) -> float:
    """DPQ_POINTS by hand: weights along Q in log2 bits (log2 1 = 0 .. log2 4 = 2), along P in the
    ratio (0.25 .. 0.75), each clamped to [0, 1]."""
    tq = min(max(math.log2(q) / 2.0, 0.0), 1.0)
    tp = min(max((p - 0.25) / 0.5, 0.0), 1.0)
    low_p = (1 - tq) * -1.0 + tq * -0.5
    high_p = (1 - tq) * -3.0 + tq * -2.0
    return (1 - tp) * low_p + tp * high_p


def profile_with(*entries: dict[str, Any]) -> Profile:
    data = hand_profile()
    data["interactions"] = copy.deepcopy(list(entries))
    return parse_profile(data)


def arrays(*values: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(v, dtype=np.float64) for v in values)


# ---- the profile entry -----------------------------------------------------------------------------

def test_a_triple_reads_back_as_a_sorted_grid():
    profile = profile_with(dpq_entry())
    assert set(profile.triple_terms) == {("D", "P", "Q")}
    assert profile.accuracy_terms == {}  # a triple is not a pair term
    triple = profile.triple_terms[("D", "P", "Q")]
    assert triple.before.values == (0.25, 0.75)
    assert [row.values for row in triple.rows] == [(1, 4), (1, 4)]
    assert [row.delta.tolist() for row in triple.rows] == [[-1.0, -0.5], [-3.0, -2.0]]
    assert [row.std.tolist() for row in triple.rows] == [[0.2, 0.4], [0.6, 0.8]]


def test_a_triple_is_bilinear_with_q_in_log2_bits():
    triple = profile_with(dpq_entry()).triple_terms[("D", "P", "Q")]
    # at the grid points: the points themselves
    assert triple.at(*arrays([0.25, 0.25, 0.75, 0.75], [1, 4, 1, 4])).tolist() == [-1.0, -0.5, -3.0, -2.0]
    # (0.25, 2 bits): log2 2 = 1 is half way from 0 to 2: -1.0 + 0.5 * 0.5 = -0.75 (linear in bits
    # would give -1.0 + (1/3) * 0.5). (0.5, 2): half way between -0.75 and -3.0 + 0.5 * 1.0 = -2.5.
    got = triple.at(*arrays([0.25, 0.5, 0.75], [2, 2, 2]))
    assert got == pytest.approx([-0.75, -1.625, -2.5], abs=1e-12)
    # (0.375, 3 bits): t = log2(3) / 2 along Q, 1/4 of the way along P
    t = math.log2(3) / 2
    want = 0.75 * (-1.0 + 0.5 * t) + 0.25 * (-3.0 + 1.0 * t)
    assert triple.at(*arrays([0.375], [3]))[0] == pytest.approx(want, abs=1e-12)
    for p, q in itertools.product((0.3, 0.5, 0.6), (1, 2, 3)):
        assert triple.at(*arrays([p], [q]))[0] == pytest.approx(hand_dpq(p, q), abs=1e-12), (p, q)
    # the standard errors interpolate the same way: (0.5, 2) -> half way between 0.3 and 0.7
    assert triple.std(*arrays([0.5], [2]))[0] == pytest.approx(0.5, abs=1e-12)
    assert not triple.outside(*arrays([0.25, 0.5, 0.75], [1, 2, 4])).any()


def test_a_triple_clamps_and_flags_outside_its_grid():
    triple = profile_with(dpq_entry()).triple_terms[("D", "P", "Q")]
    p, q = arrays([0.1, 0.9, 0.5, 0.5, 0.0], [2, 8, 1, 16, 32])
    # clamped to the nearest measured row / column: (0.25, 2), (0.75, 4), inside, (0.5, 4), (0.25, 4)
    assert triple.at(p, q) == pytest.approx([-0.75, -2.0, -2.0, -1.25, -0.5], abs=1e-12)
    assert triple.outside(p, q).tolist() == [True, True, False, True, True]


def test_a_triple_with_q_before_is_interpolated_in_log2_along_the_rows():
    entry = {"first": "D", "before": "Q", "after": "P", "points": [
        {"before_value": 2, "value": 0.25, "accuracy": -1.0}, {"before_value": 2, "value": 0.5, "accuracy": -2.0},
        {"before_value": 8, "value": 0.25, "accuracy": -3.0}, {"before_value": 8, "value": 0.5, "accuracy": -6.0}]}
    triple = profile_with(entry).triple_terms[("D", "Q", "P")]
    # Q = 4: log2 4 = 2 is half way from 1 to 3 (linear in bits would be 1/3 of the way).
    # P = 0.375 half way: row 2 bits -1.5, row 8 bits -4.5 -> -3.0
    assert triple.at(*arrays([4], [0.375]))[0] == pytest.approx(-3.0, abs=1e-12)
    assert triple.std(*arrays([4], [0.375]))[0] == 0.0  # no std_error given: no spread
    assert triple.outside(*arrays([1, 4, 16], [0.375, 0.6, 0.25])).tolist() == [True, True, True]


def test_a_one_row_grid_is_constant_along_the_before_axis_and_never_flagged_there():
    entry = {"first": "D", "before": "P", "after": "E", "points": [
        {"before_value": 0.5, "value": 0.5, "accuracy": 1.0}, {"before_value": 0.5, "value": 0.8, "accuracy": 0.4}]}
    triple = profile_with(entry).triple_terms[("D", "P", "E")]
    p, e = arrays([0.1, 0.9, 0.5, 0.5], [0.65, 0.65, 0.95, 0.8])
    # along E linear in the threshold: 0.65 half way -> 0.7; 0.95 clamped to 0.4 and flagged
    assert triple.at(p, e) == pytest.approx([0.7, 0.7, 0.4, 0.4], abs=1e-12)
    assert triple.outside(p, e).tolist() == [False, False, True, False]


def test_a_one_column_grid_is_constant_along_the_after_axis():
    entry = dpq_entry([{"before_value": 0.25, "value": 2, "accuracy": -1.0},
                       {"before_value": 0.75, "value": 2, "accuracy": -3.0}])
    triple = profile_with(entry).triple_terms[("D", "P", "Q")]
    p, q = arrays([0.5, 0.5, 0.9], [1, 8, 2])
    assert triple.at(p, q) == pytest.approx([-2.0, -2.0, -3.0], abs=1e-12)
    assert triple.outside(p, q).tolist() == [False, False, True]


def test_pair_terms_and_triples_live_side_by_side():
    profile = profile_with({"before": "P", "after": "Q", "accuracy": -1.0, "source": "hand"}, dpq_entry())
    assert set(profile.accuracy_terms) == {("P", "Q")} and set(profile.triple_terms) == {("D", "P", "Q")}


def _without_before_value(entry: dict[str, Any]) -> None:
    del entry["points"][2]["before_value"]


def _set(field: str, value: Any):
    def edit(entry: dict[str, Any]) -> None:
        entry[field] = value
    return edit


def _points(edit_points):
    def edit(entry: dict[str, Any]) -> None:
        edit_points(entry["points"])
    return edit


def _replace_value(key: str, old: float, new: Any):
    def edit(points: list[dict[str, Any]]) -> None:
        for point in points:
            if point[key] == old:
                point[key] = new
    return edit


BAD_TRIPLES = {
    "first equals before": (_set("first", "P"), "three different letters"),
    "before equals after": (_set("after", "P"), "three different letters"),
    "unknown letter": (_set("first", "X"), "three different letters"),
    "D as before": (lambda e: e.update(first="P", before="D", after="Q"), "D is not interpolated"),
    "D as after": (lambda e: e.update(first="P", before="Q", after="D"), "D is not interpolated"),
    "accuracy given": (_set("accuracy", -1.0), "'points' only"),
    "exit_scale given": (_set("exit_scale", 0.5), "'points' only"),
    "empty points": (_set("points", []), "points must be a non-empty list"),
    "no points": (lambda e: e.pop("points"), "points must be a non-empty list"),
    "a point without before_value": (_without_before_value, "needs 'before_value', 'value' and 'accuracy'"),
    "a point without accuracy": (_points(lambda ps: ps[0].pop("accuracy")),
                                 "needs 'before_value', 'value' and 'accuracy'"),
    "not a full grid": (_points(lambda ps: ps.pop(0)), "must form a full grid"),
    "a cell given twice": (_points(lambda ps: ps.append(dict(ps[0]))), "appears twice"),
    "P ratio 1.0": (_points(_replace_value("before_value", 0.75, 1.0)), "before_value must be in [0, 1), got 1.0"),
    "Q bits 0": (_points(_replace_value("value", 1, 0)), "value must be an integer in 1..32, got 0"),
    "Q bits 2.5": (_points(_replace_value("value", 4, 2.5)), "whole weight bits"),
    "before_value not a number": (_points(_replace_value("before_value", 0.25, "0.25")), "must be a finite number"),
}


@pytest.mark.parametrize("case", list(BAD_TRIPLES))
def test_each_triple_rule_is_an_input_error(case):
    edit, says = BAD_TRIPLES[case]
    entry = dpq_entry()
    edit(entry)
    data = hand_profile()
    data["interactions"] = [{"before": "P", "after": "Q", "accuracy": -1.0}, entry]
    with pytest.raises(InputError) as err:
        parse_profile(data)
    assert "interactions[1]" in str(err.value) and says in str(err.value), str(err.value)


def test_the_unedited_triple_is_valid():  # the bad cases above fail for their edit only
    data = hand_profile()
    data["interactions"] = [{"before": "P", "after": "Q", "accuracy": -1.0}, dpq_entry()]
    parse_profile(data)


# ---- structure ---------------------------------------------------------------------------------------

# order -> (i, j, k) positions of the three-method terms that apply, by hand: three stages that reach
# the final model (the last D, what follows it, E anywhere), different letters, the later two not D.
HAND_TRIPLES = {
    "DPQE": ((0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)),
    "EDPQ": ((0, 2, 3), (1, 2, 3)),  # EDP, EDQ: D is not interpolated
    "PDQE": ((1, 2, 3),),  # P is undone by D
    "EPDQ": (),  # E D Q only: EDQ has D in the middle
    "PEDQ": (),
    "QPED": (),  # E and D are all that reach the final model
    "EPQ": ((0, 1, 2),),
    "PQ": (),
    "DQPE": ((0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)),
}


@pytest.mark.parametrize("order", list(HAND_TRIPLES))
def test_structure_lists_the_triples_worked_out_by_hand(order):
    assert structure(order).triples == HAND_TRIPLES[order]


# ---- predict -----------------------------------------------------------------------------------------

# Orders of D, P, Q (and E) the DPQ triple applies to, by hand: D before P before Q, and no D after
# P or Q (there is one D, so "after D" is enough). E anywhere does not matter.
HAS_DPQ = {"DPQ", "DPQE", "DPEQ", "DEPQ", "EDPQ"}
ORDERS = ["".join(p) for p in itertools.permutations("DPQ")] + ["".join(p) for p in itertools.permutations("DPQE")]
# hand_profile at one_point_grid: D -2.0 (std 0.4), P(0.5) -1.5, Q(2) -3.0, E(0.8) -1.0; base std 0.3
DPQ_AT_GRID = -1.625  # hand_dpq(0.5, 2), worked out in test_a_triple_is_bilinear_with_q_in_log2_bits
DPQ_STD_AT_GRID = 0.5


def test_the_triple_changes_exactly_the_orders_that_have_it():
    plain, with_triple = profile_with(), profile_with(dpq_entry())
    assert len(ORDERS) == 30
    for order in ORDERS:
        a = predict(plain, order, one_point_grid(), load, TEACHER)
        b = predict(with_triple, order, one_point_grid(), load, TEACHER)
        want = DPQ_AT_GRID if order in HAS_DPQ else 0.0
        assert b.accuracy[0] - a.accuracy[0] == pytest.approx(want, abs=1e-12), order
        spread = math.sqrt(a.accuracy_std[0] ** 2 + (DPQ_STD_AT_GRID ** 2 if order in HAS_DPQ else 0.0))
        assert b.accuracy_std[0] == pytest.approx(spread, abs=1e-12), order
        assert b.bitops[0] == a.bitops[0] and b.cr[0] == a.cr[0]  # cost does not see accuracy terms
        assert not b.outside[0]


def test_dpq_and_dpqe_by_hand():
    profile = profile_with({"before": "P", "after": "Q", "accuracy": -1.0}, dpq_entry())
    dpq = predict(profile, "DPQ", one_point_grid(), load, TEACHER)
    # 90 - 2.0 - 1.5 - 3.0, PQ -1.0, DPQ -1.625
    assert dpq.accuracy[0] == pytest.approx(BASE_ACCURACY - 2.0 - 1.5 - 3.0 - 1.0 - 1.625, abs=1e-12)
    assert dpq.accuracy_std[0] == pytest.approx(math.sqrt(0.3 ** 2 + 0.4 ** 2 + 0.5 ** 2), abs=1e-12)
    dpqe = predict(profile, "DPQE", one_point_grid(), load, TEACHER)
    assert dpqe.accuracy[0] == pytest.approx(BASE_ACCURACY - 2.0 - 1.5 - 3.0 - 1.0 - 1.0 - 1.625, abs=1e-12)
    # PDQ: P is undone by D (only its PD term would stay; none here), so no PQ and no triple
    pdq = predict(profile, "PDQ", one_point_grid(), load, TEACHER)
    assert pdq.accuracy[0] == pytest.approx(BASE_ACCURACY - 2.0 - 3.0, abs=1e-12)


def test_a_triple_led_by_e_applies_when_e_precedes_kept_p_and_q():
    # EPQ, one point: a constant. It applies to E..P..Q with P and Q reaching the final model:
    # EPQ itself, and with one D before P: DEPQ, EDPQ (EPDQ, EPQD: P undone by D).
    entry = {"first": "E", "before": "P", "after": "Q", "points": [{"before_value": 0.5, "value": 2, "accuracy": 0.75}]}
    plain, with_triple = profile_with(), profile_with(entry)
    has = {"EPQ", "DEPQ", "EDPQ"}
    for order in ORDERS + ["EPQ", "EQP", "PEQ", "QPE"]:
        a = predict(plain, order, one_point_grid(), load, TEACHER).accuracy[0]
        b = predict(with_triple, order, one_point_grid(), load, TEACHER).accuracy[0]
        assert b - a == pytest.approx(0.75 if order in has else 0.0, abs=1e-12), order


def test_every_combination_of_a_grid_gets_the_triple_at_its_own_values():
    plain, with_triple = profile_with(), profile_with(dpq_entry())
    grid = one_point_grid(P=(0.25, 0.4, 0.5, 0.75), Q=(1, 2, 3, 4))
    a = predict(plain, "DPQ", grid, load, TEACHER)
    b = predict(with_triple, "DPQ", grid, load, TEACHER)
    assert b.size == 16
    for n in range(b.size):
        p, q = float(b.settings[1][n]), float(b.settings[2][n])
        assert b.accuracy[n] - a.accuracy[n] == pytest.approx(hand_dpq(p, q), abs=1e-12), (p, q)


def test_predict_flags_values_outside_the_triple_s_grid():
    # a triple measured on P {0.25, 0.5} x Q {2, 4}: P 0.75 and Q 8 are inside the curves, outside it
    small = dpq_entry([{"before_value": p, "value": q, "accuracy": -1.0} for p in (0.25, 0.5) for q in (2, 4)])
    grid = one_point_grid(P=(0.5, 0.75), Q=(2, 8))
    assert not predict(profile_with(), "DPQ", grid, load, TEACHER).outside.any()
    got = predict(profile_with(small), "DPQ", grid, load, TEACHER)
    flags = {(float(p), float(q)): bool(o) for p, q, o in zip(got.settings[1], got.settings[2], got.outside)}
    assert flags == {(0.5, 2.0): False, (0.5, 8.0): True, (0.75, 2.0): True, (0.75, 8.0): True}
    # one row: never outside along P
    row = dpq_entry([{"before_value": 0.5, "value": q, "accuracy": -1.0} for q in (2, 4)])
    got = predict(profile_with(row), "DPQ", one_point_grid(P=(0.75,), Q=(2,)), load, TEACHER)
    assert not got.outside[0]


# ---- fit -------------------------------------------------------------------------------------------

TRUE_PAIRS = {("D", "P"): -0.7, ("D", "Q"): -1.1, ("P", "Q"): -0.4}
TRUE_DPQ = {(0.25, 1): -1.2, (0.25, 4): -0.4, (0.75, 1): -2.6, (0.75, 4): -0.9}
CONFIG_FIELD = {"D": "student", "P": "ratio", "Q": "w_bits", "E": "threshold"}


def truth_profile() -> Profile:
    data = base_profile()
    data["interactions"] = [{"before": i, "after": j, "accuracy": x, "source": "truth"}
                            for (i, j), x in TRUE_PAIRS.items()]
    data["interactions"].append({"first": "D", "before": "P", "after": "Q", "source": "truth",
                                 "points": [{"before_value": p, "value": q, "accuracy": x}
                                            for (p, q), x in TRUE_DPQ.items()]})
    return parse_profile(data)


def chain_accuracy(profile: Profile, order: str, settings: dict[str, Any]) -> float:
    grid = Grid({m: (settings[m],) for m in order})
    return float(predict(profile, order, grid, load, TEACHER).accuracy[0])


def write_runs(folder: Path, runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Noise-free run records as trainer/chain.py writes them: each stage measures the truth's
    prediction of the order's prefix."""
    truth = truth_profile()
    paths = []
    for n, (order, settings) in enumerate(runs):
        stages = [{"stage": "base", "index": 0, "config": {}, "accuracy": truth.base_accuracy}]
        stages += [{"stage": m, "index": k, "config": {CONFIG_FIELD[m]: settings[m]},
                    "accuracy": chain_accuracy(truth, order[:k], settings)} for k, m in enumerate(order, start=1)]
        record = {"_type": "chaincomp.RunRecord", "_version": 1, "status": "complete",
                  "config": {"order": order, "teacher": SETUP["teacher"], "distill": {"student": "resnet8"}},
                  "data": {"name": SETUP["dataset"], "input_shape": SETUP["input_shape"],
                           "num_classes": SETUP["num_classes"]},
                  "stages": stages}
        path = folder / f"{n:02d}-{order}.json"
        path.write_text(json.dumps(record), encoding="utf-8")
        paths.append(str(path))
    return paths


# DPQ at every grid cell; DQ and PQ at both bit widths pin the pair terms the DPQ runs add to.
DPQ_RUNS = [("DPQ", {"D": "resnet8", "P": p, "Q": q}) for p, q in TRUE_DPQ]
PAIR_RUNS = [("DQ", {"D": "resnet8", "Q": q}) for q in (1, 4)] + [("PQ", {"P": 0.5, "Q": q}) for q in (1, 4)]


def triples_of(report: dict[str, Any]) -> dict[tuple[float, float], dict[str, Any]]:
    got = {(t["before_value"], t["value"]): t for t in report["terms"] if t["first"] is not None}
    assert all((t["first"], t["before"], t["after"], t["kind"]) == ("D", "P", "Q", "accuracy") for t in got.values())
    return got


def pairs_of(report: dict[str, Any]) -> dict[tuple[str, str, Any], float]:
    return {(t["before"], t["after"], t["value"]): t["estimate"] for t in report["terms"]
            if t["kind"] == "accuracy" and t["first"] is None}


def test_the_truth_predicts_the_hand_sum():
    # base_profile: 90, D -2.0, P(0.5) -1.5, Q(2) -3.0; pairs DP DQ PQ; DPQ at (0.5, 2 bits): the rows
    # at 2 bits (half way in log2) are -0.8 and -1.75, half way between them -1.275
    got = chain_accuracy(truth_profile(), "DPQ", {"D": "resnet8", "P": 0.5, "Q": 2})
    assert got == pytest.approx(90.0 - 2.0 - 1.5 - 3.0 - 0.7 - 1.1 - 0.4 - 1.275, abs=1e-12)


def test_fit_with_triples_recovers_every_cell_and_predicts_off_the_grid(tmp_path):
    paths = write_runs(tmp_path, DPQ_RUNS + PAIR_RUNS)
    report, fitted = fit(tmp_path, paths, "--triples", "DPQ")
    cells = triples_of(report)
    assert set(cells) == set(TRUE_DPQ)
    for cell, truth in TRUE_DPQ.items():
        assert cells[cell]["estimate"] == pytest.approx(truth, abs=1e-9), cell
        assert cells[cell]["equations"] == 1, cell  # the Q stage of the one DPQ run at that cell
    pairs = pairs_of(report)
    assert set(pairs) == {("D", "P", 0.25), ("D", "P", 0.75), ("D", "Q", 1.0), ("D", "Q", 4.0),
                          ("P", "Q", 1.0), ("P", "Q", 4.0)}
    for (i, j, value), estimate in pairs.items():
        assert estimate == pytest.approx(TRUE_PAIRS[(i, j)], abs=1e-9), (i, j, value)
    assert all(t["before_value"] is None for t in report["terms"] if t["first"] is None)
    assert report["accuracy"]["rms"] == pytest.approx(0.0, abs=1e-9)
    assert report["accuracy"]["rank"] == 10  # 6 pair nodes + 4 cells
    assert not [u for u in report["unidentified"] if u["first"] is not None and u["kind"] == "accuracy"]
    # the fitted profile writes the triple as a grid ...
    (entry,) = [t for t in fitted["interactions"] if "first" in t]
    assert (entry["first"], entry["before"], entry["after"]) == ("D", "P", "Q")
    assert {(p["before_value"], p["value"]): p["accuracy"] for p in entry["points"]} == \
        pytest.approx(TRUE_DPQ, abs=1e-9)
    assert not [u for u in fitted["provenance"]["fit"]["unidentified"] if u["first"] is not None
                and u["kind"] == "accuracy"]
    # ... and predicts, off the grid, what the truth does
    back, truth = parse_profile(fitted), truth_profile()
    assert set(back.triple_terms) == {("D", "P", "Q")}
    for p, q in ((0.5, 2), (0.4, 3), (0.25, 2), (0.6, 1)):
        settings = {"D": "resnet8", "P": p, "Q": q}
        assert chain_accuracy(back, "DPQ", settings) == pytest.approx(chain_accuracy(truth, "DPQ", settings),
                                                                       abs=1e-9), (p, q)


def test_fit_text_report_lists_the_three_method_terms(tmp_path):
    paths = write_runs(tmp_path, DPQ_RUNS + PAIR_RUNS)
    (tmp_path / "base.json").write_text(json.dumps(base_profile()), encoding="utf-8")
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(tmp_path / "f.json"), "--profile",
                                  str(tmp_path / "base.json"), "--triples", "DQP,DPQ"])
    assert rc == 0, stderr
    assert "three-method terms" in stdout
    rows = [line.split() for line in stdout.splitlines() if line.strip().startswith("DPQ ")]
    assert len(rows) == 4
    assert {r[1]: float(r[2]) for r in rows} == \
        pytest.approx({f"{p:g},{q:g}": x for (p, q), x in TRUE_DPQ.items()}, abs=5e-4)


def test_without_triples_the_dpq_runs_push_their_misfit_into_the_pair_terms(tmp_path):
    paths = write_runs(tmp_path, DPQ_RUNS + PAIR_RUNS)
    report, fitted = fit(tmp_path, paths)
    assert not [t for t in report["terms"] if t["first"] is not None]
    assert not [t for t in fitted["interactions"] if "first" in t]
    pairs = pairs_of(report)
    worst = max(abs(estimate - TRUE_PAIRS[(i, j)]) for (i, j, _), estimate in pairs.items())
    assert worst > 0.1
    assert report["accuracy"]["rms"] > 0.1


def test_a_grid_with_a_missing_cell_is_left_out_with_the_reason(tmp_path):
    runs = [run for run in DPQ_RUNS if (run[1]["P"], run[1]["Q"]) != (0.75, 4)] + PAIR_RUNS
    paths = write_runs(tmp_path, runs)
    report, fitted = fit(tmp_path, paths, "--triples", "DPQ")
    cells = triples_of(report)  # the three measured cells are identified, and right
    assert set(cells) == set(TRUE_DPQ) - {(0.75, 4)}
    for cell, term in cells.items():
        assert term["estimate"] == pytest.approx(TRUE_DPQ[cell], abs=1e-9), cell
    assert not [t for t in fitted["interactions"] if "first" in t]  # but not written: no grid
    parse_profile(fitted)
    for listed in (report["unidentified"], fitted["provenance"]["fit"]["unidentified"]):
        (u,) = [u for u in listed if u["first"] is not None and u["kind"] == "accuracy"]
        assert (u["first"], u["before"], u["after"], u["kind"]) == ("D", "P", "Q", "accuracy")
        assert "do not form a full grid" in u["reason"]
    # the pair terms are still there, and right
    for (i, j, value), estimate in pairs_of(report).items():
        assert estimate == pytest.approx(TRUE_PAIRS[(i, j)], abs=1e-9), (i, j, value)
    assert {(t["before"], t["after"]) for t in fitted["interactions"]} == set(TRUE_PAIRS)


@pytest.mark.parametrize("value", ["DP", "DDQ", "PQD", "XPQ", "DPQE", "DPQQ", "DPQ,PDQ", "dpq"])
def test_bad_triples_are_refused(value, tmp_path):
    paths = write_runs(tmp_path, PAIR_RUNS[2:3])
    profile_path = tmp_path / "base.json"
    profile_path.write_text(json.dumps(base_profile()), encoding="utf-8")
    out = tmp_path / "fitted.json"
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(out), "--profile", str(profile_path), "--triples", value])
    assert rc == 2 and stdout == ""
    assert stderr.startswith("chaincomp fit: error: ") and stderr.count("\n") == 1 and "--triples" in stderr, stderr
    assert not out.exists()
