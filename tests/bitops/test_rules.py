"""bitops.rules: every value rule once. Per rule: the values at and beside its bounds that pass, one
``pytest.raises`` per kind of value that breaks it, and the message — field first, then the rule,
then the value — checked in full."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from bitops.errors import InputError
from bitops.rules import (MAX_BITS, PROB_SLACK, check_bits, check_bits_array, check_budget, check_exit_probs,
                          check_integer, check_keep_ratio, check_positive, check_probability, check_prune_ratio,
                          check_threshold)


def raises_exactly(message: str):
    return pytest.raises(InputError, match=f"^{re.escape(message)}$")


def test_max_bits_is_full_precision():
    from bitops.policy import FULL_PRECISION_BITS

    assert MAX_BITS == FULL_PRECISION_BITS == 32


# ---- integers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 1, 10**12, np.int64(3)])
def test_integer_accepts_counts(value):
    assert check_integer("epochs", value) is value


@pytest.mark.parametrize("value", [-1, 1.0, True, "3", None])
def test_integer_rejects_what_is_not_a_count(value):
    with raises_exactly(f"epochs must be an integer >= 0, got {value!r}"):
        check_integer("epochs", value)


@pytest.mark.parametrize("value, message", [(7, "image_size must be an integer in 8..128, got 7"),
                                            (129, "image_size must be an integer in 8..128, got 129")])
def test_integer_range(value, message):
    assert check_integer("image_size", 8, 8, 128) == 8 and check_integer("image_size", 128, 8, 128) == 128
    with raises_exactly(message):
        check_integer("image_size", value, 8, 128)


# ---- bits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [1, 8, 32])
def test_bits_accepts_1_to_32(value):
    assert check_bits("w_bits", value) == value


@pytest.mark.parametrize("value", [0, 33, -1, 2.0, True, "8", None])
def test_bits_rejects(value):
    with raises_exactly(f"w_bits must be an integer in 1..32, got {value!r}"):
        check_bits("w_bits", value)


def test_optional_bits_accept_none_only_besides_bits():
    assert check_bits("first_last_bits", None, optional=True) is None
    with raises_exactly("first_last_bits must be an integer in 1..32, got 0"):
        check_bits("first_last_bits", 0, optional=True)


def test_aux_bits_may_be_zero():
    assert check_bits("aux_bits", 0, allow_zero=True) == 0
    with raises_exactly("aux_bits must be an integer in 0..32, got -1"):
        check_bits("aux_bits", -1, allow_zero=True)
    with raises_exactly("aux_bits must be an integer in 0..32, got 33"):
        check_bits("aux_bits", 33, allow_zero=True)


def test_bits_array_names_the_first_bad_entry():
    good = np.array([1, 8, 32])
    assert check_bits_array("a_bits", good, ["conv1", "conv2", "fc"]) is not None
    with raises_exactly("a_bits must be an integer in 1..32, got 0 for layer conv2"):
        check_bits_array("a_bits", np.array([8, 0, 33]), ["conv1", "conv2", "fc"])
    with raises_exactly("a_bits must be an integer in 1..32, got 33"):
        check_bits_array("a_bits", np.array([8, 8, 33]))


# ---- ratios, probabilities, thresholds, budgets ---------------------------------------------------

@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, math.nan, math.inf, True, "0.5", None])
def test_keep_ratio_rejects(value):
    with raises_exactly(f"keep_ratio must be in (0, 1], got {value!r}"):
        check_keep_ratio("keep_ratio", value)


def test_keep_ratio_bounds():
    assert check_keep_ratio("keep_ratio", 1) == 1 and check_keep_ratio("keep_ratio", 1e-9) == 1e-9


@pytest.mark.parametrize("value", [1.0, -0.1, math.nan, False, "0"])
def test_prune_ratio_rejects(value):
    with raises_exactly(f"prune.ratio must be in [0, 1), got {value!r}"):
        check_prune_ratio("prune.ratio", value)


def test_prune_ratio_bounds():
    assert check_prune_ratio("ratio", 0) == 0 and check_prune_ratio("ratio", 0.999) == 0.999


@pytest.mark.parametrize("value", [-0.1, 1.1, math.nan, True])
def test_probability_rejects(value):
    with raises_exactly(f"alpha must be in [0, 1], got {value!r}"):
        check_probability("alpha", value)


def test_probability_bounds():
    assert check_probability("alpha", 0) == 0 and check_probability("alpha", 1.0) == 1.0


@pytest.mark.parametrize("value", [0, -0.5, 1.01, math.nan, True])
def test_threshold_rejects(value):
    with raises_exactly(f"threshold must be in (0, 1], got {value!r}"):
        check_threshold("threshold", value)


def test_threshold_bounds():
    assert check_threshold("threshold", 1) == 1 and check_threshold("threshold", 0.01) == 0.01


@pytest.mark.parametrize("value, shown", [(0, "0"), (100.5, "100.5"), (math.nan, "nan"), ("1", "'1'")])
def test_budget_rejects(value, shown):
    with raises_exactly(f"budgets must be accuracy losses in (0, 100] points, got {shown}"):
        check_budget("budgets", value)


def test_budget_bounds():
    assert check_budget("budget", 100) == 100 and check_budget("budget", 0.01) == 0.01


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, True, "0.1"])
def test_positive_rejects(value):
    with raises_exactly(f"lr must be a finite number > 0, got {value!r}"):
        check_positive("lr", value)


def test_positive_accepts_ints_and_floats():
    assert check_positive("lr", 1) == 1 and check_positive("lr", 1e-12) == 1e-12


# ---- exit probabilities --------------------------------------------------------------------------

def test_exit_probs_up_to_one_with_slack():
    # 0.1 + 0.2 + 0.7 is 1.0000000000000002 in floating point: within the slack, not beyond it.
    assert check_exit_probs("exit_probs", [0.1, 0.2, 0.7]).tolist() == [0.1, 0.2, 0.7]
    assert check_exit_probs("exit_probs", np.zeros(0)).size == 0
    with raises_exactly("exit_probs must sum to at most 1 (the rest reach the final classifier), got 1 for exits a, b"):
        check_exit_probs("exit_probs", [0.5, 0.5 + 2 * PROB_SLACK], ["a", "b"])


@pytest.mark.parametrize("values, shown", [([0.2, -0.1], "[0.2, -0.1]"), ([math.inf, 0.0], "[inf, 0.0]"),
                                           ([math.nan], "[nan]"), (["0.1", 0.2], "['0.1', 0.2]"),
                                           ([True, 0.2], "[True, 0.2]")])
def test_exit_probs_rejects_values(values, shown):
    with raises_exactly(f"exit_probs must be finite and >= 0, got {shown}"):
        check_exit_probs("exit_probs", values)


def test_exit_probs_rejects_a_sum_over_one():
    with raises_exactly("claim #1.exit_probs must sum to at most 1 (the rest reach the final classifier), got 1.1"):
        check_exit_probs("claim #1.exit_probs", np.array([0.6, 0.5]))
