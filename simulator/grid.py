"""What a simulation ranges over: the hyperparameter grid, the loss budgets and the orders.

Each parser takes the text a user types (``'P=0.1:0.7:13;Q=1,2,4,8'``, ``'1,2,4'``, ``'all'``) or
the Python values an API caller passes, and checks every value once with :mod:`bitops.rules`.
Errors start with the field they are about (``grid``, ``budgets``, ``orders``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import permutations
from typing import Any

import numpy as np

from bitops.errors import InputError
from bitops.orders import METHODS, validate_order
from bitops.rules import check_bits, check_budget, check_prune_ratio, check_threshold
from simulator.model import Grid
from simulator.profile import Profile

__all__ = ["BOOTSTRAP", "DEFAULT_BENCH_BUDGETS", "DEFAULT_BENCH_CONFIDENCE", "DEFAULT_BENCH_SEEDS", "DEFAULT_BUDGETS", "DEFAULT_CONFIDENCE", "P_DENSIFY", "grid_for", "parse_budgets", "parse_orders"]

# chaincomp benchmark: the budgets each order gets an operating point at, the held-out seeds, the
# confidence of the operating points, and the bootstrap resamples of its intervals
DEFAULT_BENCH_BUDGETS = (1.0, 2.0, 4.0)
DEFAULT_BENCH_SEEDS = (2, 3)
DEFAULT_BENCH_CONFIDENCE = 0.5
BOOTSTRAP = 2000
DEFAULT_CONFIDENCE = 0.5  # rank by the mean prediction; higher levels ask the spread to fit the budget too
DEFAULT_BUDGETS = (0.2, 0.6, 1.0, 2.0)  # accuracy-loss budgets in points (the paper's Table 1 uses 1-2 points)
P_DENSIFY = 13  # pruning ratios between the measured ones: costs are exact anywhere, accuracy interpolated


def _numbers(field: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{field} must be comma-separated numbers, got {text!r}") from None


def parse_budgets(budgets: str | float | Sequence[float], field: str = "budgets") -> list[float]:
    """Accuracy-loss budgets in points, each in (0, 100], sorted; errors name ``field``."""
    if isinstance(budgets, str):
        values = _numbers(field, budgets)
    elif isinstance(budgets, (int, float)):
        values = [float(budgets)]
    else:
        values = list(budgets)
    if not values:
        raise InputError(f"{field} must hold at least one accuracy-loss budget")
    for value in values:
        check_budget(field, value)
    return sorted(float(v) for v in values)


def parse_orders(orders: str | Sequence[str], allow_repeat: bool = False, methods: str = METHODS) -> list[str]:
    """'all' (every order of ``methods``, those the profile measured) or orders as text or a list."""
    if orders == "all":
        return ["".join(p) for p in permutations(methods)]
    given = [o.strip() for o in orders.split(",")] if isinstance(orders, str) else list(orders)
    given = [o for o in given if o]
    if not given:
        raise InputError(f"orders must be 'all' or a comma list of orders, got {orders!r}")
    for order in given:
        try:
            validate_order(order, allow_repeat)
        except InputError as err:
            raise InputError(f"orders: {err}") from None
    return given


def _check_values(method: str, values: Sequence[Any]) -> tuple[Any, ...]:
    """One method's grid values, each checked by its rule."""
    if not values:
        raise InputError(f"grid {method}= is empty")
    where = f"grid {method}="
    if method == "D":
        if not all(isinstance(v, str) and v for v in values):
            raise InputError(f"{where} must list student model names, got {list(values)!r}")
        return tuple(values)
    for value in values:
        if method == "P":
            check_prune_ratio(where, value)
        elif method == "Q":
            if isinstance(value, bool) or not float(value).is_integer():
                raise InputError(f"{where} must hold integer weight bits in 1..32, got {value:g}")
            check_bits(where, int(value))
        else:
            check_threshold(where, value)
    return tuple(int(v) for v in values) if method == "Q" else tuple(float(v) for v in values)


def _parse_values(method: str, raw: str) -> tuple[Any, ...]:
    if method == "D":
        names = tuple(v for v in raw.split(",") if v)
        if not names:
            raise InputError("grid D= must list at least one student")
        return names
    try:
        if raw.count(":") == 2:
            start, stop, count = raw.split(":")
            return tuple(np.linspace(float(start), float(stop), int(count)).round(6).tolist())
        return tuple(float(v) for v in raw.split(","))
    except ValueError:
        raise InputError(f"grid {method}= must be numbers (a,b,c) or a range (start:stop:count), got {raw!r}") from None


def grid_for(profile: Profile, grid: str | Mapping[str, Sequence[Any]] | None = None) -> Grid:
    """The profile's measured values of each method (P densified), with ``grid``'s methods replaced.

    ``grid`` is text (``'P=0.1:0.7:13;Q=1,2,4,8;E=0.5,0.9;D=resnet8'``: ``a:b:n`` is n values from a
    to b) or a mapping from method letter to values.
    """
    values: dict[str, tuple] = {}
    for method, curve in profile.curves.items():
        measured = tuple(curve.values)
        if method == "P":
            dense = np.round(np.linspace(min(measured), max(measured), P_DENSIFY), 4)
            measured = tuple(sorted({*measured, *dense.tolist()}))
        values[method] = measured
    if isinstance(grid, str):
        given: dict[str, tuple] = {}
        for part in grid.split(";"):
            if not part.strip():
                continue
            method, sep, raw = part.partition("=")
            method = method.strip()
            if not sep or len(method) != 1 or method not in METHODS:
                raise InputError(f"grid entries must look like P=0.1,0.2 or P=0.1:0.7:7, got {part!r}")
            given[method] = _parse_values(method, raw.strip())
    else:
        given = {m: tuple(v) for m, v in (grid or {}).items()}
        unknown = [m for m in given if m not in METHODS or len(m) != 1]
        if unknown:
            raise InputError(f"grid keys must be method letters of {METHODS}, got {unknown[0]!r}")
    for method, raw_values in given.items():
        values[method] = _check_values(method, raw_values)
    return Grid(values)
