"""Reductions over predictions (``simulator.search``) on hand-built inputs.

Predictions are built by hand (no profile, no cost model), so every expected front, budget row,
ranking, precedence graph and insertion verdict here is worked out from the numbers written in
the test; the Pareto front is also checked against a brute-force dominance test on random points.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.model import Prediction
from simulator.report import format_orders, orders_json
from simulator.search import (
    PairResult,
    best_within,
    budget_table,
    insertion_check,
    pareto_front,
    precedence,
    rank_orders,
    score,
    topological_orders,
)

BASE = 90.0


def prediction(order: str, bitops_cr: list[float], accuracy: list[float]) -> Prediction:
    """A hand-built prediction: only BitOpsCR and accuracy matter to the reductions."""
    n = len(accuracy)
    cr = np.asarray(bitops_cr, dtype=np.float64)
    return Prediction(order=order, settings={0: np.arange(n, dtype=object)}, accuracy=np.asarray(accuracy, dtype=np.float64),
                      accuracy_std=np.zeros(n), bitops=1e9 / cr, bitops_cr=cr, cr=cr / 4, outside=np.zeros(n, dtype=bool))


# ---- Pareto front ------------------------------------------------------------------------------

def test_pareto_front_removes_dominated_points_and_sorts_by_bitops_cr():
    points = {  # name: (BitOpsCR, accuracy)
        "a": (10.0, 90.0),
        "b": (20.0, 85.0),
        "c": (15.0, 80.0),  # dominated by b
        "d": (5.0, 89.0),  # dominated by a
        "e": (20.0, 84.0),  # same BitOpsCR as b, less accurate
        "f": (30.0, 70.0),
        "g": (8.0, 90.0),  # same accuracy as a, less compressed
    }
    names = list(points)
    p = prediction("PQ", [v[0] for v in points.values()], [v[1] for v in points.values()])
    front = pareto_front(p)
    assert [names[i] for i in front] == ["a", "b", "f"]
    assert front.dtype == np.int64


def test_pareto_front_keeps_one_of_two_equal_points():
    p = prediction("PQ", [10.0, 10.0, 20.0], [90.0, 90.0, 80.0])
    front = pareto_front(p)
    assert len(front) == 2 and set(front.tolist()) in ({0, 2}, {1, 2})


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(7)
    cr, acc = rng.uniform(1, 1000, 400), rng.uniform(60, 90, 400)
    front = pareto_front(prediction("DPQE", cr.tolist(), acc.tolist()))
    dominated = [bool(np.any((cr >= cr[i]) & (acc >= acc[i]) & ((cr > cr[i]) | (acc > acc[i])))) for i in range(400)]
    assert sorted(front.tolist()) == [i for i in range(400) if not dominated[i]]
    assert np.all(np.diff(cr[front]) > 0) and np.all(np.diff(acc[front]) < 0)  # a staircase


# ---- budget table, ranking ---------------------------------------------------------------------

@pytest.fixture
def two_orders() -> list[Prediction]:
    return [prediction("PQ", [2.0, 5.0, 50.0, 900.0], [89.875, 89.5, 88.0, 80.0]),
            prediction("QP", [10.0, 3.0], [89.0, 89.75])]


BUDGETS = [0.2, 0.5, 1.0, 2.0, 5.0]


def test_best_within(two_orders):
    pq = two_orders[0]
    assert best_within(pq, BASE, 0.2) == (2.0, 0)
    assert best_within(pq, BASE, 0.5) == (5.0, 1)  # a loss of exactly the budget is within it
    assert best_within(pq, BASE, 2.0) == (50.0, 2)
    assert best_within(pq, BASE, 0.1) is None


def test_budget_table(two_orders):
    table = budget_table(two_orders, BASE, BUDGETS)
    assert table == {"PQ": [2.0, 5.0, 5.0, 50.0, 50.0], "QP": [None, 3.0, 10.0, 10.0, 10.0]}


def test_score_and_ranking(two_orders):
    table = budget_table(two_orders, BASE, BUDGETS)
    pq = (2.0 * 5.0 * 5.0 * 50.0 * 50.0) ** (1 / 5)
    qp = (1.0 * 3.0 * 10.0 * 10.0 * 10.0) ** (1 / 5)  # the unreachable budget counts as 1x
    assert score(table["QP"]) == pytest.approx(qp, rel=1e-12)
    ranking = rank_orders(table)
    assert [o for o, _ in ranking] == ["PQ", "QP"]
    assert [s for _, s in ranking] == pytest.approx([pq, qp], rel=1e-12)
    assert score([None, None]) == 1.0


# ---- precedence graph, topological sort, cycles ------------------------------------------------

def pairs_from(winners: dict[str, str]) -> list[PairResult]:
    """PairResults from {"DP": winner}: winner "PD" means P before D wins, "" a tie."""
    pairs = []
    for (a, b), w in winners.items():
        scores = {a + b: 10.0, b + a: 10.0} if not w else {w: 20.0, w[::-1]: 10.0}
        pairs.append(PairResult(a, b, w, 2.0 if w else 1.0, scores))
    return pairs


def test_a_chain_sorts_uniquely():
    pairs = pairs_from({"DP": "DP", "DQ": "DQ", "DE": "DE", "PQ": "PQ", "PE": "PE", "QE": "QE"})
    assert topological_orders(pairs) == (list("DPQE"), [], True)


def test_edges_follow_the_winner_not_the_pair():
    pairs = pairs_from({"DP": "PD", "DQ": "QD", "DE": "ED", "PQ": "QP", "PE": "EP", "QE": "EQ"})
    assert topological_orders(pairs) == (list("EQPD"), [], True)


def test_two_free_methods_at_one_step_are_not_unique():
    # D first, E last, P and Q unordered between them (their pair ties: no edge)
    pairs = pairs_from({"DP": "DP", "DQ": "DQ", "DE": "DE", "PQ": "", "PE": "PE", "QE": "QE"})
    order, cycles, unique = topological_orders(pairs)
    assert order[0] == "D" and order[-1] == "E" and set(order[1:3]) == {"P", "Q"}
    assert (cycles, unique) == ([], False)


def test_ties_add_no_edge():
    pairs = pairs_from({"DP": "", "DQ": "", "DE": "", "PQ": "", "PE": "", "QE": ""})
    order, cycles, unique = topological_orders(pairs)
    assert sorted(order) == sorted("DPQE") and cycles == [] and unique is False


def test_a_three_cycle_is_reported_with_its_members():
    # P -> Q -> E -> P, and D before all three
    pairs = pairs_from({"DP": "DP", "DQ": "DQ", "DE": "DE", "PQ": "PQ", "QE": "QE", "PE": "EP"})
    order, cycles, unique = topological_orders(pairs)
    assert order == ["D"]  # the sort stops where the cycle starts
    assert len(cycles) == 1 and set(cycles[0]) == {"P", "Q", "E"}
    cycle = cycles[0]
    edges = {(p.winner[0], p.winner[1]) for p in pairs}
    assert all((cycle[i], cycle[(i + 1) % 3]) in edges for i in range(3))  # listed in edge direction
    assert unique is False
    text = format_orders(orders_json(pairs, order, cycles, unique, [], [1.0]))
    assert "cycles: " + " -> ".join(cycle) + f" -> {cycle[0]}" in text
    assert "topological sort (methods outside the cycles): D" in text


def test_every_elementary_cycle_is_listed():
    # D -> P -> Q -> D, D -> E -> Q -> D and D -> P -> E -> Q -> D
    pairs = pairs_from({"DP": "DP", "PQ": "PQ", "DQ": "QD", "DE": "DE", "QE": "EQ", "PE": "PE"})
    order, cycles, unique = topological_orders(pairs)
    assert order == []
    assert sorted(map(tuple, cycles)) == [("D", "E", "Q"), ("D", "P", "E", "Q"), ("D", "P", "Q")]
    assert unique is False


def test_a_method_after_a_cycle_is_still_sorted():
    # P -> Q -> E -> P, all three before D: D is in no cycle
    pairs = pairs_from({"PQ": "PQ", "QE": "QE", "PE": "EP", "DP": "PD", "DQ": "QD", "DE": "ED"})
    order, cycles, _ = topological_orders(pairs)
    assert [set(c) for c in cycles] == [{"P", "Q", "E"}]
    assert order == ["D"]


def test_methods_subset():
    pairs = pairs_from({"PQ": "QP", "PE": "PE", "QE": "QE"})
    assert topological_orders(pairs, "PQE") == (list("QPE"), [], True)


# ---- precedence and insertion on a fake simulate whose scores are set by hand ------------------

def fake_simulate(scores: dict[str, float]):
    """simulate(order): one lossless combination at BitOpsCR ``scores[order]`` (its score at any budget)."""
    calls = []

    def simulate(order: str) -> Prediction:
        calls.append(order)
        return prediction(order, [scores[order]], [BASE])
    simulate.calls = calls
    return simulate


def test_precedence_scores_both_orders_of_every_pair():
    scores = {"PQ": 100.0, "QP": 50.0, "PE": 30.0, "EP": 30.0 * (1 + 1e-12), "QE": 20.0, "EQ": 80.0}
    simulate = fake_simulate(scores)
    pairs = precedence(simulate, BASE, [1.0, 2.0], "PQE")
    assert sorted(simulate.calls) == sorted(scores)
    by_pair = {p.first + p.second: p for p in pairs}
    assert by_pair["PQ"].winner == "PQ" and by_pair["PQ"].margin == pytest.approx(2.0)
    assert by_pair["QE"].winner == "EQ" and by_pair["QE"].margin == pytest.approx(4.0)
    assert by_pair["PE"].winner == ""  # within the tie tolerance: no edge
    assert by_pair["PQ"].scores == {"PQ": pytest.approx(100.0), "QP": pytest.approx(50.0)}
    assert topological_orders(pairs, "PQE")[0][-1] == "Q"  # P -> Q and E -> Q


def test_insertion_check_reports_a_flip():
    pairs = pairs_from({"PQ": "PQ", "DE": ""})
    simulate = fake_simulate({"PDQ": 100.0, "QDP": 50.0, "PEQ": 10.0, "QEP": 20.0})
    rows = insertion_check(simulate, pairs, BASE, [1.0])
    assert [(r["pair"], r["inserted"], r["survives"]) for r in rows] == [("PQ", "D", True), ("PQ", "E", False)]
    assert rows[1]["orders"] == {"PEQ": pytest.approx(10.0), "QEP": pytest.approx(20.0)}
    text = format_orders(orders_json(pairs, list("DPQE"), [], False, rows, [1.0]))
    assert "insertion check: 1/2 pairwise orders survive" in text
    assert "PQ flips with E inserted" in text


def test_insertion_check_skips_ties_and_keeps_equal_scores():
    pairs = pairs_from({"PQ": "QP", "PE": ""})
    simulate = fake_simulate({"QDP": 7.0, "PDQ": 7.0, "QEP": 9.0, "PEQ": 3.0})
    rows = insertion_check(simulate, pairs, BASE, [1.0], "DPQE")
    assert [(r["pair"], r["inserted"], r["survives"]) for r in rows] == [("QP", "D", True), ("QP", "E", True)]
    assert sorted(simulate.calls) == ["PDQ", "PEQ", "QDP", "QEP"]  # nothing for the tied pair P, E


def test_score_is_a_geometric_mean():
    assert score([4.0, 9.0]) == pytest.approx(6.0, rel=1e-12)
    assert score([8.0, None, 8.0]) == pytest.approx(math.exp((2 * math.log(8.0)) / 3), rel=1e-12)
