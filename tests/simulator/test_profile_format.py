"""The stage-profile file as the simulator reads it (``simulator.profile``).

A hand-made profile (:func:`tests.simulator.profiles.hand_profile`, the fixture the simulator tests share) is parsed
and read back; every rule of the format has one ``pytest.raises`` case; the curves are checked
against interpolation worked out by hand (P linear in the ratio, Q linear in log2 of the bits, E's
exit rates linear in the threshold) and against their ``outside`` flags.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bitops.errors import InputError
from simulator.profile import load_profile, parse_profile
from tests.simulator.profiles import hand_profile
from trainer.profile_format import PROFILE_TYPE, PROFILE_VERSION



def _edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = hand_profile()
    edit(data)
    return data


# ---- round trip --------------------------------------------------------------------------------

def test_parse_reads_every_field():
    data = hand_profile()
    data["interactions"] = [{"before": "P", "after": "Q", "accuracy": -1.5, "source": "hand"},
                            {"before": "Q", "after": "E", "exit_scale": 0.5, "source": "fit"}]
    profile = parse_profile(data)
    assert (profile.base_accuracy, profile.base_std) == (90.0, 0.3)
    assert list(profile.curves) == ["D", "P", "Q", "E"]
    assert profile.curves["P"].values == (0.25, 0.5, 0.75)  # sorted
    assert profile.curves["P"].delta.tolist() == [-0.5, -1.5, -4.0]  # sorted with their values
    assert profile.curves["D"].values == ("resnet8",)
    assert profile.curves["D"].std.tolist() == [0.4]
    assert profile.curves["Q"].std.tolist() == [0.0] * 4  # no spread given
    assert profile.curves["Q"].extra == {"a_bits": 8}
    assert profile.curves["E"].extra["exits"] == ["layer1", "layer2"]
    assert profile.curves["E"].exit_rates["layer1"].tolist() == [0.5, 0.25, 0.125]
    assert {pair: (t.constant, t.curve) for pair, t in profile.accuracy_terms.items()} == {("P", "Q"): (-1.5, None)}
    assert profile.exit_scales == {("Q", "E"): 0.5}
    assert profile.term_sources == {("P", "Q", "accuracy"): "hand", ("Q", "E", "exit_scale"): "fit"}
    assert profile.setup["teacher"] == "resnet20"
    assert profile.provenance["source"] == "hand"


def test_file_round_trip(tmp_path):
    data = hand_profile()
    data["interactions"] = [{"before": "E", "after": "P", "accuracy": 0.75, "exit_scale": 2.0, "source": "hand"}]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    loaded = load_profile(path)
    assert loaded.raw == data
    again = parse_profile(json.loads(json.dumps(loaded.raw)))
    for method in "DPQE":
        a, b = loaded.curves[method], again.curves[method]
        assert (a.parameter, a.values, a.delta.tolist(), a.std.tolist(), a.extra) == \
               (b.parameter, b.values, b.delta.tolist(), b.std.tolist(), b.extra)
        assert {k: v.tolist() for k, v in a.exit_rates.items()} == {k: v.tolist() for k, v in b.exit_rates.items()}
    assert {pair: t.constant for pair, t in loaded.accuracy_terms.items()} == {("E", "P"): 0.75}
    assert loaded.exit_scales == {("E", "P"): 2.0}


def test_a_term_given_per_value_of_the_later_method_is_a_sorted_curve():
    data = hand_profile()
    data["interactions"] = [{"before": "Q", "after": "P", "parameter": "prune_ratio", "source": "fit",
                             "points": [{"value": 0.75, "accuracy": -9.0, "std_error": 0.5},
                                        {"value": 0.25, "accuracy": -1.0}]},
                            {"before": "P", "after": "D", "points": [{"value": "resnet8", "accuracy": 0.25}]},
                            {"before": "P", "after": "E", "points": [{"value": 0.5, "accuracy": 1.0},
                                                                     {"value": 0.8, "accuracy": 0.0}]}]
    profile = parse_profile(data)
    qp = profile.accuracy_terms[("Q", "P")]
    assert qp.curve.values == (0.25, 0.75) and qp.curve.delta.tolist() == [-1.0, -9.0]
    assert qp.curve.std.tolist() == [0.0, 0.5]
    assert qp.at(np.array([0.1, 0.5, 0.9])).tolist() == [-1.0, -5.0, -9.0]
    assert qp.outside(np.array([0.1, 0.5, 0.9])).tolist() == [True, False, True]
    pd = profile.accuracy_terms[("P", "D")]
    assert pd.at(np.array(["resnet8", "resnet20"], dtype=object)).tolist() == [0.25, 0.0]  # unmeasured student: none
    assert pd.outside(np.array(["resnet8", "resnet20"], dtype=object)).tolist() == [False, True]
    assert profile.accuracy_terms[("P", "E")].at(np.array([0.65])).tolist() == pytest.approx([0.5])
    assert profile.term_sources[("Q", "P", "accuracy")] == "fit"


def test_a_single_point_term_is_a_constant_never_outside():
    data = hand_profile()
    data["interactions"] = [{"before": "Q", "after": "P", "points": [{"value": 0.5, "accuracy": -2.0}]}]
    term = parse_profile(data).accuracy_terms[("Q", "P")]
    assert term.at(np.array([0.1, 0.5, 0.9])).tolist() == [-2.0] * 3
    assert not term.outside(np.array([0.1, 0.9])).any()


def test_profile_constants():
    assert (PROFILE_TYPE, PROFILE_VERSION) == (hand_profile()["_type"], hand_profile()["_version"])


# ---- one InputError per rule -------------------------------------------------------------------

def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets ``data[a][b]...`` (``path`` "a.b.c"; integer parts index lists)."""
    *parents, last = path.split(".")

    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(data: dict[str, Any]) -> None:
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]
    return edit


def _term(**term: Any) -> Callable[[dict[str, Any]], None]:
    return _set("interactions", [term])


def _cells(value: object = 2, threshold: float = 0.5, scale: float = 0.5) -> list[dict]:
    """A 1 x 2 x 2 exit-scale grid; the first cell at ``value``, ``threshold``, ``scale``."""
    cells = [{"value": 2, "threshold": t, "exit": x, "scale": 0.5} for t in (0.5, 0.8) for x in ("layer1", "layer2")]
    cells[0] = {**cells[0], "value": value, "threshold": threshold, "scale": scale}
    return cells


RULES = {
    "wrong-type": (_set("_type", "chaincomp.LayerTable"), "_type must be 'chaincomp.StageProfile'"),
    "wrong-version": (_set("_version", 2), "_version must be 1, got 2"),
    "version-true": (_set("_version", True), "_version must be 1, got True"),
    "missing-base": (_drop("base"), "'base' must be an object"),
    "missing-methods": (_drop("methods"), "'methods' must be an object"),
    "base-accuracy-not-number": (_set("base.accuracy", "90"), "base.accuracy must be a finite number"),
    "unknown-method": (_set("methods.X", {"parameter": "x", "points": [{"value": 1, "delta": 0}]}),
                       "unknown method 'X'"),
    "bad-parameter-name": (_set("methods.P.parameter", "ratio"), "methods.P.parameter must be 'prune_ratio'"),
    "no-points": (_set("methods.Q.points", []), "methods.Q must be an object with a non-empty 'points' list"),
    "point-without-delta": (_drop("methods.P.points.0.delta"), "methods.P.points[0] needs 'value' and 'delta'"),
    "duplicate-values": (_set("methods.P.points.1.value", 0.5), "a value appears twice"),
    "P-ratio-1": (_set("methods.P.points.2.value", 1.0), "methods.P.points[2].value must be in [0, 1), got 1.0"),
    "Q-bits-0": (_set("methods.Q.points.0.value", 0), "methods.Q.points[0].value must be an integer in 1..32, got 0"),
    "E-threshold-0": (_set("methods.E.points.0.value", 0), "methods.E.points[0].value must be in (0, 1], got 0"),
    "exit-rates-sum": (_set("methods.E.points.1.exit_rates", {"layer1": 0.25, "layer2": 0.25, "final": 0.25}),
                       "must be >= 0 and sum to 1, got sum 0.75"),
    "exit-rates-negative": (_set("methods.E.points.1.exit_rates", {"layer1": -0.25, "layer2": 0.75, "final": 0.5}),
                            "must be >= 0 and sum to 1"),
    "exit-rates-missing-exit": (_set("methods.E.points.1.exit_rates", {"layer1": 0.5, "final": 0.5}),
                                "exit_rates must give a rate for each of ['layer1', 'layer2'] and 'final'"),
    "exits-not-listed": (_drop("methods.E.exits"), "methods.E.exits must list the exit point names"),
    "interactions-not-list": (_set("interactions", {"P": "Q"}), "interactions must be a list"),
    "interaction-same-letter": (_term(before="P", after="P", accuracy=-1.0),
                                "interactions[0] needs 'before' and 'after', two different letters"),
    "interaction-unknown-letter": (_term(before="P", after="X", accuracy=-1.0), "two different letters of D, P, Q, E"),
    "interaction-without-effect": (_term(before="P", after="Q"),
                                   "interactions[0] needs 'accuracy' (or 'points') and/or 'exit_scale'"),
    "term-accuracy-and-points": (_term(before="P", after="Q", accuracy=-1.0, points=[{"value": 2, "accuracy": -1.0}]),
                                 "gives both 'accuracy' and 'points'"),
    "term-points-empty": (_term(before="P", after="Q", points=[]), "interactions[0].points must be a non-empty list"),
    "term-point-without-accuracy": (_term(before="P", after="Q", points=[{"value": 2}]),
                                    "interactions[0].points[0] needs 'value' and 'accuracy'"),
    "term-wrong-parameter": (_term(before="P", after="Q", parameter="prune_ratio", points=[{"value": 2, "accuracy": 0}]),
                             "interactions[0].parameter must be 'w_bits' (the axis of Q)"),
    "term-value-out-of-rule": (_term(before="Q", after="P", points=[{"value": 1.5, "accuracy": 0}]),
                               "interactions[0].points[0].value must be in [0, 1), got 1.5"),
    "term-duplicate-value": (_term(before="Q", after="P", points=[{"value": 0.5, "accuracy": 0},
                                                                  {"value": 0.5, "accuracy": 1}]),
                             "a value appears twice"),
    "exit-scale-without-E": (_term(before="P", after="Q", exit_scale=0.5), "exit_scale applies to pairs with E"),
    "exit-scale-negative": (_term(before="E", after="Q", exit_scale=-0.5), "exit_scale must be >= 0, got -0.5"),
    "interaction-accuracy-nan": (_term(before="P", after="Q", accuracy=float("nan")),
                                 "interactions[0].accuracy must be a finite number"),
    "exit-table-without-E": (_term(before="P", after="Q", exit_scales=_cells()),
                             "exit_scales apply to a pair with E or to one of EDP, EDQ, EPD, EQD, PED, QED, got PQ"),
    "exit-table-not-a-triple": (_term(first="D", before="E", after="Q", exit_scales=_cells()),
                                "exit_scales apply to a pair with E or to one of"),
    "exit-table-and-accuracy": (_term(before="E", after="Q", accuracy=1.0, exit_scales=_cells()),
                                "an entry with exit_scales holds nothing else, got 'accuracy' too"),
    "exit-table-wrong-parameter": (_term(before="E", after="Q", parameter="threshold", exit_scales=_cells()),
                                   "interactions[0].parameter must be 'w_bits' (the axis of Q)"),
    "exit-table-smoothing": (_term(before="E", after="Q", smoothing=1.0, exit_scales=_cells()),
                             "interactions[0].smoothing must be in [0, 1), got 1.0"),
    "exit-table-empty": (_term(before="E", after="Q", exit_scales=[]), "exit_scales must be a non-empty list"),
    "exit-table-negative": (_term(before="E", after="Q", exit_scales=_cells(scale=-1.0)),
                            "interactions[0].exit_scales[0].scale must be >= 0, got -1.0"),
    "exit-table-bits": (_term(before="E", after="Q", exit_scales=_cells(value=2.5)),
                        "interactions[0].exit_scales[0].value must be whole weight bits, got 2.5"),
    "exit-table-student": (_term(before="E", after="D", exit_scales=_cells(value=3)),
                           "interactions[0].exit_scales[0].value must be a student's name, got 3"),
    "exit-table-threshold": (_term(before="E", after="Q", exit_scales=_cells(threshold=0.0)),
                             "interactions[0].exit_scales[0].threshold must be in (0, 1]"),
    "exit-table-twice": (_term(before="E", after="Q", exit_scales=_cells() + _cells()[:1]),
                         "interactions[0].exit_scales[4]: value 2, threshold 0.5, exit 'layer1' is given twice"),
    "exit-table-not-a-grid": (_term(before="E", after="Q", exit_scales=_cells()[:3]),
                              "exit_scales must form a full grid: every value at every threshold and exit "
                              "(1 x 2 x 2 cells, got 3)"),
}


@pytest.mark.parametrize(("edit", "message"), list(RULES.values()), ids=list(RULES))
def test_each_rule_is_an_input_error(edit, message):
    with pytest.raises(InputError) as err:
        parse_profile(_edited(edit), "my.json")
    assert message in str(err.value)
    assert str(err.value).startswith("my.json: ")  # the source is named once, in front


def test_the_fixture_itself_is_valid():
    parse_profile(hand_profile())  # the rule cases above fail for their edit, not for the fixture


def test_not_an_object():
    with pytest.raises(InputError, match="must be a JSON object, got list"):
        parse_profile([hand_profile()])


def test_duplicate_student_is_an_input_error():
    data = hand_profile()
    data["methods"]["D"]["points"].append({"value": "resnet8", "accuracy": 80.0, "delta": -10.0})
    with pytest.raises(InputError, match="appears twice"):
        parse_profile(data)


def test_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"_type": "chaincomp.StageProfile",', encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"profile {str(path)!r}: not valid JSON (line 1")


def test_missing_file_names_the_field(tmp_path):
    path = tmp_path / "nowhere.json"
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert str(err.value) == f"profile {str(path)!r}: cannot read (No such file or directory)"


def test_content_errors_name_the_field(tmp_path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(_edited(_set("_version", 2))), encoding="utf-8")
    with pytest.raises(InputError, match=r"^profile '.*v2\.json': _version must be 1, got 2$"):
        load_profile(path)


# ---- curves ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def profile():
    return parse_profile(hand_profile())


def test_p_is_linear_in_the_ratio(profile):
    curve = profile.curve("P")
    got = curve.at(np.array([0.25, 0.375, 0.6, 0.75]), curve.delta)
    # 0.375 is halfway from 0.25 (-0.5) to 0.5 (-1.5); 0.6 is 40 % of the way from 0.5 (-1.5) to 0.75 (-4.0)
    assert got.tolist() == pytest.approx([-0.5, -1.0, -1.5 + 0.4 * -2.5, -4.0], abs=1e-12)


def test_q_is_linear_in_log2_bits(profile):
    curve = profile.curve("Q")
    at3 = float(curve.at(np.array([3.0]), curve.delta)[0])
    position = math.log2(3) - 1  # log2(3) between log2(2) = 1 and log2(4) = 2
    assert at3 == pytest.approx(-3.0 + position * (-1.0 - -3.0), abs=1e-12)
    assert at3 != pytest.approx(-2.0)  # linear in bits would put 3 halfway: -2.0
    assert -3.0 < at3 < -1.0
    at6 = float(curve.at(np.array([6.0]), curve.delta)[0])
    assert at6 == pytest.approx(-1.0 + (math.log2(6) - 2) * (-0.25 - -1.0), abs=1e-12)


def test_e_rates_are_linear_in_the_threshold(profile):
    curve = profile.curve("E")
    thresholds = np.array([0.65, 0.875])
    assert curve.at(thresholds, curve.exit_rates["layer1"]).tolist() == pytest.approx([0.375, 0.1875], abs=1e-12)
    assert curve.at(thresholds, curve.exit_rates["layer2"]).tolist() == pytest.approx([0.25, 0.1875], abs=1e-12)
    assert curve.at(thresholds, curve.delta).tolist() == pytest.approx([-2.0, -0.625], abs=1e-12)


@pytest.mark.parametrize(("method", "values", "outside", "clamped_to"), [
    ("P", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9], [True, True, False, False, False, True],
     [-0.5, -0.5, -0.5, -1.5, -4.0, -4.0]),
    ("Q", [1, 3, 8, 16, 32], [False, False, False, True, True], [-6.0, None, -0.25, -0.25, -0.25]),
    ("E", [0.3, 0.5, 0.95, 0.99], [True, False, False, True], [-3.0, -3.0, -0.25, -0.25]),
])
def test_outside_the_measured_range_is_flagged_and_clamped(profile, method, values, outside, clamped_to):
    curve = profile.curve(method)
    query = np.array(values, dtype=np.float64)
    assert curve.outside(query).tolist() == outside
    got = curve.at(query, curve.delta)
    for value, expected in zip(got.tolist(), clamped_to):
        if expected is not None:
            assert value == expected


def test_d_outside_is_an_unmeasured_student(profile):
    curve = profile.curve("D")
    students = np.array(["resnet8", "resnet20"], dtype=object)
    assert curve.outside(students).tolist() == [False, True]
    assert curve.at(students, curve.delta)[0] == -2.0


def test_missing_method_is_an_input_error():
    data = hand_profile()
    del data["methods"]["E"]
    profile = parse_profile(data)
    with pytest.raises(InputError, match="the profile has no measurements for E; it covers D, P, Q"):
        profile.curve("E")
