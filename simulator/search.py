"""Reductions over predictions: Pareto fronts, the paper's Table-1 budget table, rankings, and the
pairwise precedence analysis of section 4-5 (which order of two methods wins, the precedence graph,
its topological sort, cycles, and the insertion check).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from bitops.orders import METHODS
from simulator.model import Prediction

__all__ = ["PairResult", "best_within", "budget_table", "confidence_z", "pareto_front", "precedence", "rank_orders", "score", "topological_orders"]


# Scores within this relative difference are a tie: the profile cannot tell the two orders apart.
TIE_TOLERANCE = 1e-9


def pareto_front(prediction: Prediction) -> np.ndarray:
    """Indices of the combinations no other beats in both BitOpsCR and accuracy, by rising BitOpsCR."""
    order = np.lexsort((-prediction.accuracy, -prediction.bitops_cr))  # BitOpsCR desc, then accuracy desc
    front, best = [], -np.inf
    for i in order:
        if prediction.accuracy[i] > best:
            front.append(i)
            best = prediction.accuracy[i]
    return np.array(front[::-1], dtype=np.int64)


def confidence_z(confidence: float) -> float:
    """The standard normal quantile of ``confidence``: a prediction N(accuracy, std) loses at most
    a budget with that probability when ``accuracy - z * std`` does (0 at 0.5: the mean alone)."""
    return 0.0 if confidence == 0.5 else NormalDist().inv_cdf(confidence)


def best_within(prediction: Prediction, base_accuracy: float, budget: float,
                z: float = 0.0) -> tuple[float, int] | None:
    """Max BitOpsCR among combinations losing at most ``budget`` points of accuracy (their accuracy
    less ``z`` spreads, :func:`confidence_z`), and its index."""
    ok = np.flatnonzero(base_accuracy - (prediction.accuracy - z * prediction.accuracy_std) <= budget + 1e-12)
    if ok.size == 0:
        return None
    i = ok[np.argmax(prediction.bitops_cr[ok])]
    return float(prediction.bitops_cr[i]), int(i)


def budget_table(predictions: Sequence[Prediction], base_accuracy: float,
                 budgets: Sequence[float], z: float = 0.0) -> dict[str, list[float | None]]:
    """Per order, the max BitOpsCR within each accuracy-loss budget (the paper's Table 1 layout),
    at the confidence whose quantile is ``z``."""
    table = {}
    for p in predictions:
        table[p.order] = [None if (hit := best_within(p, base_accuracy, b, z)) is None else hit[0] for b in budgets]
    return table


def score(values: Sequence[float | None]) -> float:
    """Geometric mean of the budget row, an unreachable budget counting as 1x (no compression)."""
    return float(np.exp(np.mean([np.log(v if v is not None else 1.0) for v in values])))


def rank_orders(table: dict[str, list[float | None]]) -> list[tuple[str, float]]:
    """Orders best first by :func:`score` of their budget row."""
    return sorted(((o, score(row)) for o, row in table.items()), key=lambda item: -item[1])


@dataclass(frozen=True)
class PairResult:
    """Which of ``first+second`` and ``second+first`` wins, and by how much (score ratio)."""

    first: str
    second: str
    winner: str  # the order that wins, e.g. "PQ"; "" when the two score the same (a tie: no edge)
    margin: float  # winner's score / loser's score (>= 1)
    scores: dict[str, float]


def precedence(simulate: Callable[[str], Prediction], base_accuracy: float, budgets: Sequence[float],
               methods: str = METHODS) -> list[PairResult]:
    """Both orders of every pair of methods, simulated and scored; the better order wins the pair."""
    results = []
    for a, b in itertools.combinations(methods, 2):
        scores = {o: score(budget_table([simulate(o)], base_accuracy, budgets)[o]) for o in (a + b, b + a)}
        high, low = max(scores.values()), min(scores.values())
        winner = "" if high <= low * (1 + TIE_TOLERANCE) else max(scores, key=scores.get)
        results.append(PairResult(a, b, winner, high / low, scores))
    return results


def topological_orders(pairs: Sequence[PairResult], methods: str = METHODS) -> tuple[list[str], list[list[str]], bool]:
    """(a topological order of the precedence graph, the cycles found, whether the order is unique).

    Kahn's algorithm; the sort is unique when exactly one method is free at every step. Cycles are
    listed (as method sequences) rather than broken silently; with cycles the sort covers only
    the methods outside them.
    """
    edges = {m: set() for m in methods}
    for p in pairs:
        if p.winner:
            edges[p.winner[0]].add(p.winner[1])
    indegree = {m: 0 for m in methods}
    for src in edges:
        for dst in edges[src]:
            indegree[dst] += 1
    cycles = _cycles(edges)
    in_cycle = {m for c in cycles for m in c}
    # Sort the methods outside the cycles: a cycle member's outgoing edges no longer hold anyone back.
    for m in in_cycle:
        for dst in edges[m]:
            indegree[dst] -= 1
    order, unique = [], True
    free = sorted(m for m in methods if indegree[m] == 0 and m not in in_cycle)
    while free:
        unique &= len(free) == 1
        m = free.pop(0)
        order.append(m)
        for dst in sorted(edges[m]):
            indegree[dst] -= 1
            if indegree[dst] == 0 and dst not in in_cycle:
                free.append(dst)
        free.sort()
    return order, cycles, unique and not cycles


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle, each listed once starting from its smallest method (tiny graphs only)."""
    found = []
    nodes = sorted(edges)
    for length in range(2, len(nodes) + 1):
        for perm in itertools.permutations(nodes, length):
            if perm[0] == min(perm) and all(perm[(i + 1) % length] in edges[perm[i]] for i in range(length)):
                found.append(list(perm))
    return found


def insertion_check(simulate: Callable[[str], Prediction], pairs: Sequence[PairResult], base_accuracy: float,
                    budgets: Sequence[float], methods: str = METHODS) -> list[dict[str, object]]:
    """Section 4: does i-before-j still win with a third method k inserted between them (i k j vs j k i)?"""
    rows = []
    for p in pairs:
        if not p.winner:
            continue
        i, j = p.winner
        for k in methods:
            if k in (i, j):
                continue
            kept, flipped = i + k + j, j + k + i
            scores = {o: score(budget_table([simulate(o)], base_accuracy, budgets)[o]) for o in (kept, flipped)}
            rows.append({"pair": p.winner, "inserted": k, "orders": scores, "survives": scores[kept] >= scores[flipped]})
    return rows
