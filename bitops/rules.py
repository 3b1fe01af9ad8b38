"""Every value rule of chaincomp, checked in one place.

One function per rule. Each takes the FIELD the value came from (as the caller names it: a config
field ``w_bits``, a dotted path ``prune.ratio``, a place in a file ``methods.Q.a_bits``) and raises
:class:`bitops.errors.InputError` with a message that starts with that field, then states the rule,
then the value: ``w_bits must be an integer in 1..32, got 0``. The command line maps field names to
its option names in one table, so no rule here speaks of options.

Values are returned as given (checked), so a caller can check and assign in one line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from bitops.errors import InputError

__all__ = [
    "MAX_BITS",
    "MAX_BUDGET",
    "PROB_SLACK",
    "check_bits",
    "check_bits_array",
    "check_budget",
    "check_exit_probs",
    "check_integer",
    "check_keep_ratio",
    "check_positive",
    "check_probability",
    "check_prune_ratio",
    "check_threshold",
]

# Full precision: no weight or activation is wider (bitops.policy.FULL_PRECISION_BITS is this).
MAX_BITS = 32
# Exit probabilities may sum to 1 up to this rounding slack (e.g. 0.1 + 0.2 + 0.7).
PROB_SLACK = 1e-9
# An accuracy-loss budget is in points of top-1 accuracy (percent): at most everything.
MAX_BUDGET = 100.0


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_integer(field: str, value: Any, low: int = 0, high: int | None = None) -> int:
    """An integer in ``low..high`` (no upper bound when ``high`` is None); by default a count >= 0."""
    if not (_is_integer(value) and low <= value and (high is None or value <= high)):
        rule = f">= {low}" if high is None else f"in {low}..{high}"
        raise InputError(f"{field} must be an integer {rule}, got {value!r}")
    return value


def check_bits(field: str, value: Any, *, optional: bool = False, allow_zero: bool = False) -> Any:
    """Bits of a weight, an activation or an input: an integer in 1..32.

    ``optional``: None is allowed too (the caller's "same as the layer" / "not pinned").
    ``allow_zero``: 0..32, for storage widths where 0 leaves a part out (``Policy.aux_bits``).
    """
    if optional and value is None:
        return value
    return check_integer(field, value, 0 if allow_zero else 1, MAX_BITS)


def check_bits_array(field: str, values: np.ndarray, names: Sequence[str] | None = None,
                     kind: str = "layer") -> np.ndarray:
    """:func:`check_bits` for every entry of an integer array; the first bad entry is named
    (``for layer NAME`` when ``names`` are given)."""
    arr = np.asarray(values)
    bad = np.flatnonzero((arr < 1) | (arr > MAX_BITS))
    if bad.size:
        i = int(bad[0])
        where = "" if names is None else f" for {kind} {names[i]}"
        raise InputError(f"{field} must be an integer in 1..{MAX_BITS}, got {int(arr.flat[i])}{where}")
    return arr


def check_keep_ratio(field: str, value: Any) -> Any:
    """The fraction of a channel group's channels kept: in (0, 1] (1 keeps everything)."""
    if not (_is_real(value) and 0 < value <= 1):
        raise InputError(f"{field} must be in (0, 1], got {value!r}")
    return value


def check_prune_ratio(field: str, value: Any) -> Any:
    """The fraction of a channel group's channels removed: in [0, 1) (0 removes nothing)."""
    if not (_is_real(value) and 0 <= value < 1):
        raise InputError(f"{field} must be in [0, 1), got {value!r}")
    return value


def check_probability(field: str, value: Any) -> Any:
    """A probability or a convex weight: in [0, 1]."""
    if not (_is_real(value) and 0 <= value <= 1):
        raise InputError(f"{field} must be in [0, 1], got {value!r}")
    return value


def check_exit_probs(field: str, values: Any, names: Sequence[str] = ()) -> np.ndarray:
    """P(leave at exit k) for each exit: finite, >= 0, summing to at most 1 (up to :data:`PROB_SLACK`);
    the rest reach the final classifier. ``names`` (the exits) are named when the sum is too large."""
    items = np.asarray(values, dtype=object).ravel().tolist()
    if not all(_is_real(v) and math.isfinite(v) and v >= 0 for v in items):
        raise InputError(f"{field} must be finite and >= 0, got {items}")
    probs = np.asarray(values, dtype=np.float64)
    total = float(probs.sum())
    if total > 1 + PROB_SLACK:
        exits = f" for exits {', '.join(names)}" if len(names) else ""
        raise InputError(f"{field} must sum to at most 1 (the rest reach the final classifier), "
                         f"got {total:.6g}{exits}")
    return probs


def check_threshold(field: str, value: Any) -> Any:
    """A max-softmax early-exit threshold: in (0, 1] (a sample leaves when its confidence reaches it)."""
    if not (_is_real(value) and 0 < value <= 1):
        raise InputError(f"{field} must be in (0, 1], got {value!r}")
    return value


def check_budget(field: str, value: Any) -> Any:
    """An accuracy-loss budget in points of top-1 accuracy: in (0, 100]."""
    if not (_is_real(value) and 0 < value <= MAX_BUDGET):
        shown = f"{value:g}" if _is_real(value) else repr(value)
        raise InputError(f"{field} must be accuracy losses in (0, {MAX_BUDGET:g}] points, got {shown}")
    return value


def check_confidence(field: str, value: Any) -> Any:
    """A one-sided confidence level: in [0.5, 1) (0.5 is the mean prediction itself)."""
    if not (_is_real(value) and 0.5 <= value < 1):
        raise InputError(f"{field} must be in [0.5, 1), got {value!r}")
    return value


def check_positive(field: str, value: Any) -> Any:
    """A finite number > 0 (learning rates, temperatures, width multipliers)."""
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise InputError(f"{field} must be a finite number > 0, got {value!r}")
    return value
