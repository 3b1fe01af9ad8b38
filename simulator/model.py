"""The chain model: predict an order's accuracy and exact cost over a hyperparameter grid.

A state (model table, kept channels, bits, exit rates, accuracy) is carried through the order's
stages with the trainer's semantics (DESIGN.md "Order semantics", trainer/chain.py):

* D replaces the model by a fresh student: pruning and bits applied before it do not reach the
  final model (PD, QD); exit heads carry over (ED);
* P keeps ``int(C * (1 - ratio))`` channels per group, as torch-pruning and bitops round; heads
  that exist when P runs (E earlier) are pruned with the backbone, heads added later (PE) are
  built for the pruned stages they read;
* Q sets every layer (heads included: EQ quantizes them, QE trains them at the backbone's bits)
  to ``w_bits`` / the profile's ``a_bits``, the first and last layers as the profile's
  ``first_last_bits``;
* E adds heads at the profile's exit points (those the model has) and takes the exit rates the
  profile measured at the threshold, scaled by the exit-rate interaction terms.

Accuracy follows the same semantics (:func:`structure`): base + the profile's delta of each stage
that reaches the final model (the last D, the stages after it, and E wherever it runs) at its
hyperparameter + the accuracy term of every ordered pair of those stages (``i`` before ``j``, at
j's hyperparameter) + for each P or Q the last D undoes, its term with D (the student of a pruned
or quantized teacher) + the three-method term of every three of those stages the profile has
(at the later two's hyperparameters). Exit rates are scaled by the exit terms of the pairs of E
with the stages its heads saw (all of them when E runs before the last D: the student's heads
distil from them) and of the three-stage exit terms (E before the last D, with each P or Q:
``bitops.orders.EXIT_TRIPLES``), each measured per threshold, exit and value of its other method
(``simulator.profile.ExitTable``). The spread adds the profile's spreads and the terms' standard errors in
quadrature. Cost is exact: every combination is evaluated by the bitops batch kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from bitops.batch import evaluate_batch
from bitops.config import heads_follow_stages, kept_channels_array
from bitops.cost import reference_totals
from bitops.errors import InputError
from bitops.orders import exit_value
from bitops.policy import FULL_PRECISION_BITS, Policy
from bitops.table import LayerTable
from simulator.profile import Profile, ThresholdTerm
from simulator.structure import Structure, structure

__all__ = ["Grid", "Prediction", "Structure", "exit_scale", "predict", "structure"]

TableLoader = Callable[[str], LayerTable]  # zoo name -> table at the profile's input shape and classes


@dataclass(frozen=True)
class Grid:
    """Hyperparameter values per method: students, pruning ratios, weight bits, thresholds."""

    values: dict[str, tuple]

    def axis(self, method: str) -> tuple:
        if method not in self.values or not self.values[method]:
            raise InputError(f"the grid has no values for {method}")
        return self.values[method]

    @property
    def size(self) -> dict[str, int]:
        return {m: len(v) for m, v in self.values.items()}


@dataclass(frozen=True, eq=False)
class Prediction:
    """One order over its grid: arrays of length N (one entry per hyperparameter combination)."""

    order: str
    settings: dict[int, np.ndarray]  # stage position -> its hyperparameter per combination
    accuracy: np.ndarray
    accuracy_std: np.ndarray
    bitops: np.ndarray
    bitops_cr: np.ndarray
    cr: np.ndarray
    outside: np.ndarray  # some hyperparameter outside the profile's measured range

    @property
    def size(self) -> int:
        return len(self.accuracy)


def _combos(order: str, grid: Grid) -> list[np.ndarray]:
    axes = [np.arange(len(grid.axis(m))) for m in order]
    mesh = np.meshgrid(*axes, indexing="ij")
    return [m.reshape(-1) for m in mesh]


def _axis(grid: Grid, method: str) -> np.ndarray:
    return np.asarray(grid.axis(method), dtype=object if method == "D" else np.float64)


def _accuracy(profile: Profile, order: str, grid: Grid, index: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    n = len(index[0])
    shape = structure(order)
    accuracy = np.full(n, profile.base_accuracy)
    variance = np.full(n, profile.base_std ** 2)
    outside = np.zeros(n, dtype=bool)
    # Sums run in letter order, so the same stages give bit-identical accuracies in any order.
    for pos in sorted(shape.kept, key=lambda p: (order[p], p)):
        method = order[pos]
        curve = profile.curve(method)
        axis = _axis(grid, method)
        if method == "D" and curve.outside(axis).any():
            missing = [v for v, out in zip(axis, curve.outside(axis)) if out]
            raise InputError(f"the profile has no D measurement for student {missing[0]!r}; it measured "
                             f"{', '.join(map(str, curve.values))} (students are not interpolated)")
        accuracy += curve.at(axis, curve.delta)[index[pos]]
        variance += curve.at(axis, curve.std)[index[pos]] ** 2
        outside |= curve.outside(axis)[index[pos]]
    for i, j in sorted(shape.pairs, key=lambda p: (order[p[0]], order[p[1]], p)):
        term = profile.accuracy_terms.get((order[i], order[j]))
        if term is None:
            continue
        axis = _axis(grid, order[j])
        if isinstance(term, ThresholdTerm):  # E's term with a later stage, at E's threshold
            values, thresholds = axis[index[j]], _axis(grid, "E")[index[i]]
            accuracy += term.at(values, thresholds)
            variance += term.std(values, thresholds) ** 2
            outside |= term.outside(values, thresholds)
            continue
        accuracy += term.at(axis)[index[j]]
        variance += term.std(axis)[index[j]] ** 2
        outside |= term.outside(axis)[index[j]]
    for i, j, k in sorted(shape.triples, key=lambda t: (order[t[0]], order[t[1]], order[t[2]], t)):
        triple = profile.triple_terms.get((order[i], order[j], order[k]))
        if triple is None:
            continue
        before, after = _axis(grid, order[j])[index[j]], _axis(grid, order[k])[index[k]]
        accuracy += triple.at(before, after)
        variance += triple.std(before, after) ** 2
        outside |= triple.outside(before, after)
    # an accuracy is a share of the test set: sums past either end say how far the terms reach, not more
    # the noise of a new training, where the profile calibrated it: larger the more is predicted lost
    noise = profile.spread_floor + profile.spread_per_point * np.maximum(profile.base_accuracy - accuracy, 0.0)
    variance += noise ** 2
    return np.clip(accuracy, 0.0, 100.0), np.sqrt(variance), outside


def exit_scale(profile: Profile, order: str) -> float:
    """The product of the exit scales of the pairs with E that apply to ``order``."""
    scale = 1.0
    for i, j in structure(order).exit_pairs:
        scale *= profile.exit_scales.get((order[i], order[j]), 1.0)
    return scale


def _exit_tables(profile: Profile, order: str, grid: Grid, index: list[np.ndarray]):
    """The exit tables that apply to ``order``, each with its other method's grid values and the
    index of each combination's value among them."""
    shape = structure(order)
    for positions in (*shape.exit_pairs, *shape.exit_triples):
        letters = "".join(order[p] for p in positions)
        table = profile.exit_tables.get(letters)
        if table is None:
            continue
        method = exit_value(letters)
        pos = next(p for p in positions if order[p] == method)
        values = np.asarray(grid.axis(method), dtype=object)
        yield table, (values if method == "D" else values.astype(np.float64)), index[pos]


def _exit_probs(profile: Profile, order: str, grid: Grid, index: list[np.ndarray], exits: Sequence[str]) -> np.ndarray:
    """(N, K) probabilities of leaving at each of ``exits`` (the model's, in depth order): the E
    curve's rates at the threshold, through the exit tables that apply ((r + eps) x scales - eps),
    times the hand-entered scalar exit scales."""
    curve = profile.curve("E")
    axis = np.asarray(grid.axis("E"), dtype=np.float64)
    at = index[order.index("E")]
    measured = np.array([e in curve.exit_rates for e in exits], dtype=bool)
    probs = np.stack([curve.at(axis, curve.exit_rates[e]) if e in curve.exit_rates else np.zeros(len(axis))
                      for e in exits], axis=1).reshape(len(axis), len(exits))[at]
    log_scale = np.zeros_like(probs)
    smoothing = 0.0
    for table, values, value_at in _exit_tables(profile, order, grid, index):
        log_scale += table.log_grid(values, axis, exits)[value_at, at]
        smoothing = max(smoothing, table.smoothing)
    probs = np.where(measured, np.maximum((probs + smoothing) * np.exp(log_scale) - smoothing, 0.0), 0.0)
    probs = probs * exit_scale(profile, order)
    total = probs.sum(axis=1, keepdims=True)
    return np.where(total > 1, probs / np.maximum(total, 1e-300), probs)  # a scale cannot send more than all


def _exit_outside(profile: Profile, order: str, grid: Grid, index: list[np.ndarray]) -> np.ndarray:
    """Combinations where an exit table is asked outside its measured values or thresholds."""
    axis = np.asarray(grid.axis("E"), dtype=np.float64)
    at = index[order.index("E")]
    flags = np.zeros(len(at), dtype=bool)
    for table, values, value_at in _exit_tables(profile, order, grid, index):
        flags |= table.outside_grid(values, axis)[value_at, at]
    return flags


@lru_cache(maxsize=16)
def _reference_totals(table: LayerTable, policy: Policy):
    """The teacher's full-precision totals, once per (table, policy): every order of a simulation
    shares them (tables hash by identity, so a loader that caches its tables hits this cache)."""
    return reference_totals(table, policy)


def predict(profile: Profile, order: str, grid: Grid, load: TableLoader, teacher: str,
            policy: Policy | None = None) -> Prediction:
    """Accuracy (with spread) and exact BitOps / BitOpsCR / CR of ``order`` at every grid combination."""
    index = _combos(order, grid)
    accuracy, std, outside = _accuracy(profile, order, grid, index)
    if "E" in order and profile.exit_tables:
        outside = outside | _exit_outside(profile, order, grid, index)
    n = len(accuracy)
    q_curve = profile.curves.get("Q")
    a_bits = int(q_curve.extra.get("a_bits", 8)) if q_curve else 8
    if policy is None:
        first_last = q_curve.extra.get("first_last_bits") if q_curve else None
        policy = Policy(first_last_bits=first_last)
    reference = _reference_totals(load(teacher), policy)
    last_d = order.rfind("D")
    # The student each combination ends with: one batch per student value.
    students = np.asarray(grid.axis("D"), dtype=object)[index[last_d]] if last_d >= 0 else np.full(n, teacher, object)
    bitops = np.empty(n)
    storage = np.empty(n)
    for name in dict.fromkeys(students.tolist()):
        rows = np.flatnonzero(students == name)
        sub = [ix[rows] for ix in index]
        b, s = _cost(order, grid, sub, load(name), profile, a_bits, policy)
        bitops[rows], storage[rows] = b, s
    settings = {pos: np.asarray(grid.axis(m), dtype=object)[index[pos]] for pos, m in enumerate(order)}
    return Prediction(order=order, settings=settings, accuracy=accuracy, accuracy_std=std, bitops=bitops,
                      bitops_cr=reference.bitops / bitops, cr=reference.storage_bits / storage, outside=outside)


def _cost(order: str, grid: Grid, index: list[np.ndarray], full: LayerTable, profile: Profile, a_bits: int,
          policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Exact BitOps and storage bits of the final model of every combination (one student)."""
    n = len(index[0])
    after_d = order.rfind("D") + 1  # stages before the last D do not reach the final model
    tail = order[after_d:]
    has_e = "E" in order
    exits = list(profile.curve("E").extra.get("exits", ())) if has_e else []
    table = full.with_exits([e for e in exits if e in full.exit_names])
    kept = np.broadcast_to(table.group_channels, (n, table.num_groups)).copy()
    for pos in range(after_d, len(order)):
        if order[pos] == "P":
            ratio = np.asarray(grid.axis("P"), dtype=np.float64)[index[pos]]
            kept = kept_channels_array(kept, 1.0 - ratio[:, None], table.group_divisions[None, :])
    # A zoo head reads one stage group and is as wide as it: pruned with it (EP) or built for its
    # pruned width (PE), its own channels end up equal to the stage's kept channels either way.
    kept = heads_follow_stages(table, kept)
    if np.any(kept < 1):
        raise InputError("a pruning ratio of the grid keeps 0 channels of some group; lower the largest P value")
    w = np.full((n, 1), FULL_PRECISION_BITS, dtype=np.int64)
    a = np.full((n, 1), FULL_PRECISION_BITS, dtype=np.int64)
    for pos in range(after_d, len(order)):
        if order[pos] == "Q":
            w[:, 0] = np.asarray(grid.axis("Q"), dtype=np.int64)[index[pos]]
            a[:, 0] = a_bits
    # Without a Q after the last D every layer is at full precision: no first/last override applies.
    layer_policy = replace(policy, first_last_bits=None) if "Q" not in tail else policy
    probs = _exit_probs(profile, order, grid, index, table.exit_names) if has_e else np.zeros((n, 0))
    result = evaluate_batch(table, np.broadcast_to(w, (n, table.num_layers)), np.broadcast_to(a, (n, table.num_layers)),
                            kept, probs, layer_policy)
    return result.bitops, result.storage_bits
