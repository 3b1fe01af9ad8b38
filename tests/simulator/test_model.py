"""The chain model (``simulator.model.predict``) against the calculator, order by order.

Expected costs come from a second route: the final model of each order is written down by hand
from DESIGN.md's "Order semantics" (which table, which keep ratio, which bits, which exit
probabilities), built as a ``bitops.Config`` and priced with the plain-Python ``bitops.evaluate``
against ``reference_totals`` of the teacher; the prediction must equal it exactly. Expected
accuracies are sums worked out by hand from :func:`hand_profile`'s numbers.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from bitops import Config, Policy, evaluate, kept_from_ratio, reference_totals, uniform_config
from bitops.config import heads_follow_stages, kept_channels_array
from bitops.cost import Totals
from bitops.errors import InputError
from bitops.orders import validate_order
from simulator.model import Grid, predict
from simulator.profile import parse_profile
from tests.simulator.profiles import BASE_ACCURACY, STUDENT, TEACHER, hand_profile, load, one_point_grid

EXITS = ("layer1", "layer2")
A_BITS = 8  # hand_profile's Q a_bits
# hand_profile's deltas at the one-value grid below
D_DELTA, P_DELTA, Q_DELTA, E_DELTA = -2.0, -1.5, -3.0, -1.0
RATES_AT_08 = (0.25, 0.25)  # hand_profile's exit rates at threshold 0.8 (layer1, layer2)


def profile_with(*terms: dict, **q_extra: object):
    data = hand_profile()
    data["interactions"] = list(terms)
    data["methods"]["Q"].update(q_extra)
    return parse_profile(data)


def hand_totals(model: str, *, prune_ratio: float | None = None, w_bits: int | None = None,
                exit_probs: tuple[float, ...] | None = None, policy: Policy = Policy()) -> Totals:
    """The final model written down by hand: ``model`` (its exit heads present iff ``exit_probs``),
    every group at keep ratio ``1 - prune_ratio`` with heads as wide as their kept stage, every
    layer at ``w_bits`` / A_BITS (full precision when None)."""
    table = load(model).with_exits(list(EXITS) if exit_probs is not None else [])
    kept = table.group_channels if prune_ratio is None else kept_from_ratio(table, 1.0 - prune_ratio)
    bits = (32, 32) if w_bits is None else (w_bits, A_BITS)
    config = Config(w_bits=np.full(table.num_layers, bits[0]), a_bits=np.full(table.num_layers, bits[1]),
                    kept=heads_follow_stages(table, kept),
                    exit_probs=np.zeros(0) if exit_probs is None else np.array(exit_probs, dtype=np.float64))
    return evaluate(table, config, policy).totals


def assert_cost(prediction, i: int, totals: Totals, policy: Policy = Policy()) -> None:
    reference = reference_totals(load(TEACHER), policy)
    assert prediction.bitops[i] == totals.bitops
    assert prediction.bitops_cr[i] == reference.bitops / totals.bitops
    assert prediction.cr[i] == reference.storage_bits / totals.storage_bits


# ---- no interaction terms, one value per method: the calculator exactly ------------------------

# order -> (final model, pruned?, quantized?, exits?): read off DESIGN.md "Order semantics".
FINAL_MODELS = {
    "DPQE": (STUDENT, True, True, True),
    "DEQP": (STUDENT, True, True, True),  # heads pruned and quantized with the backbone: same widths and bits
    "EDPQ": (STUDENT, True, True, True),  # exits carry over through D
    "PDQE": (STUDENT, False, True, True),  # the teacher's pruning does not reach the student
    "QDPE": (STUDENT, True, False, True),  # nor its bits
    "PQDE": (STUDENT, False, False, True),
    "PQED": (STUDENT, False, False, True),
    "PQE": (TEACHER, True, True, True),  # no D: the teacher itself is compressed
    "QE": (TEACHER, False, True, True),
    "E": (TEACHER, False, False, True),
    "P": (TEACHER, True, False, False),
    "PD": (STUDENT, False, False, False),
    "QD": (STUDENT, False, False, False),
    "D": (STUDENT, False, False, False),
}
DELTAS = {"D": D_DELTA, "P": P_DELTA, "Q": Q_DELTA, "E": E_DELTA}


@pytest.mark.parametrize("order", list(FINAL_MODELS))
def test_one_point_equals_the_calculator(order):
    model, pruned, quantized, exits = FINAL_MODELS[order]
    prediction = predict(parse_profile(hand_profile()), order, one_point_grid(), load, TEACHER)
    assert prediction.size == 1
    expected = hand_totals(model, prune_ratio=0.5 if pruned else None, w_bits=2 if quantized else None,
                           exit_probs=RATES_AT_08 if exits else None)
    assert_cost(prediction, 0, expected)
    # only the stages that reach the final model keep their delta: D if any, P if pruned, ...
    reach = {"D": model == STUDENT, "P": pruned, "Q": quantized, "E": exits}
    assert prediction.accuracy[0] == pytest.approx(BASE_ACCURACY + sum(DELTAS[m] for m in order if reach[m]),
                                                   abs=1e-12)
    assert not prediction.outside[0]


def test_pd_and_qd_cost_what_the_plain_student_costs():
    profile = parse_profile(hand_profile())
    plain = load(STUDENT).with_exits([])
    totals = evaluate(plain, uniform_config(plain)).totals
    for order in ("PD", "QD", "PQD", "D"):
        assert_cost(predict(profile, order, one_point_grid(), load, TEACHER), 0, totals)


def test_accuracy_is_base_plus_the_deltas():
    profile = parse_profile(hand_profile())
    prediction = predict(profile, "DPQE", one_point_grid(), load, TEACHER)
    assert prediction.accuracy[0] == 90.0 - 2.0 - 1.5 - 3.0 - 1.0
    # spreads add in quadrature: base 0.3 and D 0.4, the others give none
    assert prediction.accuracy_std[0] == pytest.approx(0.5, abs=1e-12)


def test_every_combination_of_a_grid_equals_the_calculator():
    profile = parse_profile(hand_profile())
    grid = Grid({"D": (STUDENT,), "P": (0.25, 0.5, 0.75), "Q": (1, 8), "E": (0.5, 0.95)})
    prediction = predict(profile, "DPQE", grid, load, TEACHER)
    assert prediction.size == 12
    rates = {0.5: (0.5, 0.25), 0.95: (0.125, 0.125)}
    p_deltas, q_deltas, e_deltas = {0.25: -0.5, 0.5: -1.5, 0.75: -4.0}, {1: -6.0, 8: -0.25}, {0.5: -3.0, 0.95: -0.25}
    seen = set()
    for i in range(prediction.size):
        student, ratio, bits, threshold = (prediction.settings[pos][i] for pos in range(4))
        seen.add((student, ratio, bits, threshold))
        assert_cost(prediction, i, hand_totals(STUDENT, prune_ratio=ratio, w_bits=bits, exit_probs=rates[threshold]))
        assert prediction.accuracy[i] == BASE_ACCURACY + D_DELTA + p_deltas[ratio] + q_deltas[bits] + e_deltas[threshold]
    assert len(seen) == 12  # every combination once


def test_first_last_bits_of_the_profile_apply_only_when_q_reaches_the_final_model():
    profile = profile_with(first_last_bits=8)
    pinned = Policy(first_last_bits=8)
    assert_cost(predict(profile, "Q", one_point_grid(), load, TEACHER), 0,
                hand_totals(TEACHER, w_bits=2, policy=pinned))
    assert_cost(predict(profile, "DQ", one_point_grid(), load, TEACHER), 0,
                hand_totals(STUDENT, w_bits=2, policy=pinned))
    plain = load(STUDENT).with_exits([])
    assert_cost(predict(profile, "QD", one_point_grid(), load, TEACHER), 0,
                evaluate(plain, uniform_config(plain)).totals)
    # and the pin matters: without it the same order costs less
    assert predict(profile_with(), "Q", one_point_grid(), load, TEACHER).bitops[0] < \
        predict(profile, "Q", one_point_grid(), load, TEACHER).bitops[0]


def test_a_bits_come_from_the_profile():
    profile = profile_with(a_bits=4)
    table = load(TEACHER).with_exits([])
    config = Config(w_bits=np.full(table.num_layers, 2), a_bits=np.full(table.num_layers, 4),
                    kept=table.group_channels.copy(), exit_probs=np.zeros(0))
    assert_cost(predict(profile, "Q", one_point_grid(), load, TEACHER), 0, evaluate(table, config).totals)


def test_a_ratio_that_keeps_no_channel_is_an_input_error():
    with pytest.raises(InputError, match="keeps 0 channels"):
        predict(parse_profile(hand_profile()), "DP", one_point_grid(P=(0.5, 0.99)), load, TEACHER)


# ---- interaction terms -------------------------------------------------------------------------

def test_an_accuracy_term_applies_to_its_order_only():
    profile = profile_with({"before": "P", "after": "Q", "accuracy": -1.5, "source": "hand"})
    pq = predict(profile, "PQ", one_point_grid(), load, TEACHER).accuracy[0]
    qp = predict(profile, "QP", one_point_grid(), load, TEACHER).accuracy[0]
    assert pq == 90.0 - 1.5 - 3.0 - 1.5
    assert qp == 90.0 - 3.0 - 1.5
    # costs do not depend on accuracy terms
    assert predict(profile, "PQ", one_point_grid(), load, TEACHER).bitops[0] == \
        predict(profile_with(), "PQ", one_point_grid(), load, TEACHER).bitops[0]


TERMS = (
    {"before": "D", "after": "P", "accuracy": -0.5},
    {"before": "P", "after": "Q", "accuracy": -1.5},
    {"before": "Q", "after": "E", "accuracy": 0.25},
    {"before": "E", "after": "D", "accuracy": -2.0},
    {"before": "Q", "after": "P", "accuracy": -7.0},
    {"before": "D", "after": "E", "accuracy": -0.125},
)


@pytest.mark.parametrize(("order", "deltas", "terms"), [
    # ordered pairs of DPQE: DP DQ DE PQ PE QE -> -0.5 + 0 - 0.125 - 1.5 + 0 + 0.25
    ("DPQE", D_DELTA + P_DELTA + Q_DELTA + E_DELTA, -0.5 - 0.125 - 1.5 + 0.25),
    # EDPQ: ED EP EQ DP DQ PQ -> -2.0 - 0.5 - 1.5 (D before E's term does not apply: E runs first)
    ("EDPQ", D_DELTA + P_DELTA + Q_DELTA + E_DELTA, -2.0 - 0.5 - 1.5),
    # QPED: D undoes Q and P, so their deltas and QP QE PE go; QD PD ED stay -> -2.0
    ("QPED", D_DELTA + E_DELTA, -2.0),
    # PDQE: P undone (PD only); DQ DE QE stay -> 0 - 0.125 + 0.25
    ("PDQE", D_DELTA + Q_DELTA + E_DELTA, -0.125 + 0.25),
])
def test_every_ordered_pair_of_a_four_stage_order_adds(order, deltas, terms):
    profile = profile_with(*TERMS)
    prediction = predict(profile, order, one_point_grid(), load, TEACHER)
    assert prediction.accuracy[0] == pytest.approx(BASE_ACCURACY + deltas + terms, abs=1e-12)


def test_a_term_curve_is_read_at_the_later_method_s_value():
    # QP given per pruning ratio: linear between the points, clamped (and flagged) outside them
    profile = profile_with({"before": "Q", "after": "P", "points": [{"value": 0.25, "accuracy": -1.0},
                                                                   {"value": 0.75, "accuracy": -9.0}]})
    grid = one_point_grid(P=(0.1, 0.25, 0.5, 0.75), Q=(2,))
    qp = predict(profile, "QP", grid, load, TEACHER)
    p_deltas = {0.1: -0.5, 0.25: -0.5, 0.5: -1.5, 0.75: -4.0}  # hand_profile's P curve, clamped below 0.25
    term = {0.1: -1.0, 0.25: -1.0, 0.5: -5.0, 0.75: -9.0}
    for i, ratio in enumerate(qp.settings[1]):
        assert qp.accuracy[i] == pytest.approx(BASE_ACCURACY + Q_DELTA + p_deltas[ratio] + term[ratio], abs=1e-12)
    assert qp.outside.tolist() == [True, False, False, False]
    # the other order has no term
    pq = predict(profile, "PQ", grid, load, TEACHER)
    assert [pq.accuracy[i] for i in range(4)] == [BASE_ACCURACY + p_deltas[r] + Q_DELTA for r in pq.settings[0]]


def test_a_term_curve_over_bits_is_interpolated_in_log2():
    profile = profile_with({"before": "P", "after": "Q", "points": [{"value": 1, "accuracy": -4.0},
                                                                   {"value": 4, "accuracy": -1.0}]})
    prediction = predict(profile, "PQ", one_point_grid(Q=(2,)), load, TEACHER)
    # log2(2) = 1 is half way from log2(1) = 0 to log2(4) = 2: -4 + (1/2) * 3 = -2.5
    assert prediction.accuracy[0] == pytest.approx(BASE_ACCURACY + P_DELTA + Q_DELTA - 2.5, abs=1e-12)


def test_term_standard_errors_add_to_the_spread():
    profile = profile_with({"before": "P", "after": "Q", "points": [{"value": 2, "accuracy": -1.0, "std_error": 1.2}]})
    prediction = predict(profile, "PQ", one_point_grid(), load, TEACHER)
    # base 0.3, the P and Q points give no spread, the term 1.2
    assert prediction.accuracy_std[0] == pytest.approx(math.hypot(0.3, 1.2), abs=1e-12)


def test_exit_scale_multiplies_the_rates_of_its_order_only():
    profile = profile_with({"before": "P", "after": "E", "exit_scale": 0.5},
                           {"before": "E", "after": "Q", "exit_scale": 0.5})
    grid = one_point_grid()
    assert_cost(predict(profile, "PE", grid, load, TEACHER), 0,
                hand_totals(TEACHER, prune_ratio=0.5, exit_probs=(0.125, 0.125)))
    assert_cost(predict(profile, "EP", grid, load, TEACHER), 0,
                hand_totals(TEACHER, prune_ratio=0.5, exit_probs=RATES_AT_08))
    # two terms multiply
    assert_cost(predict(profile, "PEQ", grid, load, TEACHER), 0,
                hand_totals(TEACHER, prune_ratio=0.5, w_bits=2, exit_probs=(0.0625, 0.0625)))
    # exit_scale leaves accuracy alone
    assert predict(profile, "PE", grid, load, TEACHER).accuracy[0] == BASE_ACCURACY + P_DELTA + E_DELTA


def test_heads_trained_before_d_carry_their_exit_scales_to_the_student():
    profile = profile_with({"before": "Q", "after": "E", "exit_scale": 0.5})
    grid = one_point_grid()
    # QED: E's heads were trained on the quantized teacher and the student's distil from them
    assert_cost(predict(profile, "QED", grid, load, TEACHER), 0, hand_totals(STUDENT, exit_probs=(0.125, 0.125)))
    # QDE: the heads are built for the fresh full-precision student: Q's scale does not reach them
    assert_cost(predict(profile, "QDE", grid, load, TEACHER), 0, hand_totals(STUDENT, exit_probs=RATES_AT_08))


def test_exit_scale_is_capped_so_nobody_leaves_twice():
    profile = profile_with({"before": "Q", "after": "E", "exit_scale": 2.0})
    # at threshold 0.5 the rates are 0.5 and 0.25; doubled they would send 150 % of the samples out
    prediction = predict(profile, "QE", one_point_grid(E=(0.5,)), load, TEACHER)
    expected = hand_totals(TEACHER, w_bits=2, exit_probs=(2 / 3, 1 / 3))  # rescaled to sum to 1
    assert prediction.bitops[0] == pytest.approx(expected.bitops, rel=1e-12)
    assert prediction.cr[0] == pytest.approx(reference_totals(load(TEACHER)).storage_bits / expected.storage_bits)
    # and the scale did act: unscaled, a quarter of the samples reach layer3 and cost more
    unscaled = predict(profile_with(), "QE", one_point_grid(E=(0.5,)), load, TEACHER)
    assert prediction.bitops[0] < unscaled.bitops[0]


def test_exit_scale_zero_keeps_everyone_to_the_end():
    profile = profile_with({"before": "D", "after": "E", "exit_scale": 0.0})
    assert_cost(predict(profile, "DE", one_point_grid(), load, TEACHER), 0, hand_totals(STUDENT, exit_probs=(0.0, 0.0)))
    assert_cost(predict(profile, "ED", one_point_grid(), load, TEACHER), 0, hand_totals(STUDENT, exit_probs=RATES_AT_08))


def exit_table(letters: str, values: tuple, scales: dict, smoothing: float = 0.0) -> dict:
    """An exit-scale grid entry: ``scales[(value, threshold)]`` = (layer1 scale, layer2 scale)."""
    first = {"first": letters[0]} if len(letters) == 3 else {}
    return {**first, "before": letters[-2], "after": letters[-1], "smoothing": smoothing, "source": "hand",
            "exit_scales": [{"value": v, "threshold": t, "exit": name, "scale": scales[(v, t)][k]}
                            for v in values for t in (0.5, 0.8) for k, name in enumerate(EXITS)]}


def test_exit_tables_scale_each_exit_per_value_and_threshold_through_the_smoothing():
    # EQ over Q's bits 2 and 8, thresholds 0.5 and 0.8; eps = 1/16. At Q=4 (halfway in log2 bits)
    # and threshold 0.8 the log scale is the mean of those at 2 and 8: layer1 sqrt(0.5 x 2) = 1,
    # layer2 sqrt(0.25 x 1) = 0.5; the rates (0.25, 0.25) become (0.25 + 1/16) x 1 - 1/16 = 0.25 and
    # (0.25 + 1/16) x 0.5 - 1/16 = 0.09375.
    scales = {(2, 0.5): (1.0, 1.0), (2, 0.8): (0.5, 0.25), (8, 0.5): (1.0, 1.0), (8, 0.8): (2.0, 1.0)}
    profile = profile_with(exit_table("EQ", (2, 8), scales, smoothing=1 / 16))
    got = predict(profile, "EQ", one_point_grid(Q=(4,)), load, TEACHER)
    assert_cost(got, 0, hand_totals(TEACHER, w_bits=4, exit_probs=(0.25, 0.09375)))
    assert not got.outside[0]
    # at Q=2, threshold 0.65 (halfway): log scales halfway between 0.5 and 0.8 -> layer1 sqrt(0.5),
    # layer2 0.5; the E curve there is (0.375, 0.25)
    got = predict(profile, "EQ", one_point_grid(Q=(2,), E=(0.65,)), load, TEACHER)
    want = ((0.375 + 1 / 16) * math.sqrt(0.5) - 1 / 16, (0.25 + 1 / 16) * 0.5 - 1 / 16)
    assert_cost(got, 0, hand_totals(TEACHER, w_bits=2, exit_probs=want))
    # a scale of 0 plus the smoothing sends nobody out, never a negative share; outside is flagged
    zero = {key: (0.0, 0.0) for key in scales}
    got = predict(profile_with(exit_table("EQ", (2, 8), zero, 1 / 16)), "EQ", one_point_grid(Q=(1,), E=(0.95,)),
                  load, TEACHER)
    assert_cost(got, 0, hand_totals(TEACHER, w_bits=1, exit_probs=(0.0, 0.0)))
    assert got.outside[0]
    # QE is another term: the EQ table leaves it alone
    assert_cost(predict(profile, "QE", one_point_grid(), load, TEACHER), 0,
                hand_totals(TEACHER, w_bits=2, exit_probs=RATES_AT_08))


def test_a_three_stage_exit_table_applies_where_e_runs_before_d_with_its_p_or_q():
    halve = {(v, t): (0.5, 0.5) for v in (2,) for t in (0.5, 0.8)}
    profile = profile_with(exit_table("EDQ", (2,), halve), exit_table("QED", (2,), {k: (0.25, 0.25) for k in halve}))
    grid = one_point_grid()
    # EDQ: the student's inherited heads quantized; QED: the heads of a quantized teacher distilled
    assert_cost(predict(profile, "EDQ", grid, load, TEACHER), 0, hand_totals(STUDENT, w_bits=2, exit_probs=(0.125, 0.125)))
    assert_cost(predict(profile, "QED", grid, load, TEACHER), 0, hand_totals(STUDENT, exit_probs=(0.0625, 0.0625)))
    # DEQ: no D after E; QDE: the heads are the fresh student's
    assert_cost(predict(profile, "DEQ", grid, load, TEACHER), 0, hand_totals(STUDENT, w_bits=2, exit_probs=RATES_AT_08))
    assert_cost(predict(profile, "QDE", grid, load, TEACHER), 0, hand_totals(STUDENT, exit_probs=RATES_AT_08))


# ---- outside the measured range ----------------------------------------------------------------

def test_outside_values_are_flagged_per_combination():
    profile = parse_profile(hand_profile())
    prediction = predict(profile, "PQ", one_point_grid(P=(0.1, 0.5), Q=(2, 16)), load, TEACHER)
    assert prediction.settings[0].tolist() == [0.1, 0.1, 0.5, 0.5]
    assert prediction.settings[1].tolist() == [2, 16, 2, 16]
    assert prediction.outside.tolist() == [True, True, False, True]
    # clamped to the nearest measured point: P 0.1 -> 0.25 (-0.5), Q 16 -> 8 (-0.25)
    assert prediction.accuracy.tolist() == [90.0 - 0.5 - 3.0, 90.0 - 0.5 - 0.25, 90.0 - 1.5 - 3.0, 90.0 - 1.5 - 0.25]
    # the cost is exact at the asked value, not at the clamped one
    assert_cost(prediction, 0, hand_totals(TEACHER, prune_ratio=0.1, w_bits=2))
    assert_cost(prediction, 3, hand_totals(TEACHER, prune_ratio=0.5, w_bits=16))


def test_outside_thresholds_clamp_the_exit_rates():
    prediction = predict(parse_profile(hand_profile()), "E", one_point_grid(E=(0.3, 0.99)), load, TEACHER)
    assert prediction.outside.tolist() == [True, True]
    assert_cost(prediction, 0, hand_totals(TEACHER, exit_probs=(0.5, 0.25)))
    assert_cost(prediction, 1, hand_totals(TEACHER, exit_probs=(0.125, 0.125)))


def test_an_unmeasured_student_is_an_input_error():
    with pytest.raises(InputError, match="resnet20"):
        predict(parse_profile(hand_profile()), "DP", one_point_grid(D=(STUDENT, TEACHER)), load, TEACHER)


# ---- repeats -----------------------------------------------------------------------------------

def test_pp_prunes_twice():
    profile = parse_profile(hand_profile())
    prediction = predict(profile, "PP", one_point_grid(P=(0.25, 0.5)), load, TEACHER)
    table = load(TEACHER).with_exits([])
    assert prediction.size == 4
    for i in range(4):
        first, second = prediction.settings[0][i], prediction.settings[1][i]
        kept = kept_channels_array(kept_channels_array(table.group_channels, 1.0 - first), 1.0 - second)
        config = Config(w_bits=np.full(table.num_layers, 32), a_bits=np.full(table.num_layers, 32), kept=kept,
                        exit_probs=np.zeros(0))
        assert_cost(prediction, i, evaluate(table, config).totals)
        deltas = {0.25: -0.5, 0.5: -1.5}
        assert prediction.accuracy[i] == BASE_ACCURACY + deltas[first] + deltas[second]
    # half of a half is a quarter of the channels of every group (all widths are multiples of 4)
    (quarter,) = np.flatnonzero((prediction.settings[0] == 0.5) & (prediction.settings[1] == 0.5))
    config = Config(w_bits=np.full(table.num_layers, 32), a_bits=np.full(table.num_layers, 32),
                    kept=table.group_channels // 4, exit_probs=np.zeros(0))
    assert_cost(prediction, quarter, evaluate(table, config).totals)


def test_only_stages_after_the_last_d_reach_the_final_model():
    profile = parse_profile(hand_profile())
    assert_cost(predict(profile, "PDP", one_point_grid(P=(0.25,)), load, TEACHER), 0,
                hand_totals(STUDENT, prune_ratio=0.25))
    assert_cost(predict(profile, "QDQD", one_point_grid(), load, TEACHER), 0, hand_totals(STUDENT))


@pytest.mark.parametrize(("order", "allow_repeat", "message"), [
    ("", False, "must use the letters"),
    ("DPX", False, "must use the letters"),
    ("EE", True, "E (early exit) can appear once"),
    ("PP", False, "repeats a letter"),
])
def test_validate_order(order, allow_repeat, message):
    with pytest.raises(InputError, match=re.escape(message)):
        validate_order(order, allow_repeat)


def test_validate_order_allows_repeats_on_request():
    assert validate_order("PDPQ", allow_repeat=True) == "PDPQ"


# ---- conventions -------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", [Policy(ops="flops"), Policy(elementwise="counted")], ids=["flops", "elementwise"])
def test_every_convention_of_the_policy_is_kept(policy):
    prediction = predict(parse_profile(hand_profile()), "DPQE", one_point_grid(), load, TEACHER, policy=policy)
    assert_cost(prediction, 0, hand_totals(STUDENT, prune_ratio=0.5, w_bits=2, exit_probs=RATES_AT_08, policy=policy),
                policy)


@pytest.mark.parametrize("policy", [Policy(bn="counted"), Policy(aux_bits=0), Policy(bitops_formula="accumulator"),
                                    Policy(input_bits=8)], ids=["bn", "aux0", "accumulator", "input8"])
def test_conventions_that_are_kept(policy):
    prediction = predict(parse_profile(hand_profile()), "DPQE", one_point_grid(), load, TEACHER, policy=policy)
    assert_cost(prediction, 0, hand_totals(STUDENT, prune_ratio=0.5, w_bits=2, exit_probs=RATES_AT_08, policy=policy),
                policy)


def test_spread_is_zero_when_the_profile_gives_none():
    data = hand_profile()
    del data["base"]["accuracy_std"]
    del data["methods"]["D"]["points"][0]["accuracy_std"]
    prediction = predict(parse_profile(data), "DPQE", one_point_grid(), load, TEACHER)
    assert prediction.accuracy_std[0] == 0.0
    assert math.isfinite(prediction.accuracy[0])
