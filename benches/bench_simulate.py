"""Order search throughput: every order over a dense grid, and the ``simulate`` command cold.

Run: ``.venv/bin/python -m pytest benches/bench_simulate.py --benchmark-only`` from the repository
root (``python -m`` puts the root on ``sys.path``, where the fixture's ``tests`` package lives).

Both benches read the hand-made stage profile of ``tests/simulator/profiles.py``
(ResNet20 teacher, ResNet8 student, 3x16x16 inputs: the shipped tables, no torch).

Group ``simulate: 24 orders``: ``predict`` of all 24 orders of D, P, Q, E over 50 pruning ratios x
5 weight bit-widths x 40 exit thresholds x 1 student (10,000 combinations per order, 240,000 in
all), each reduced to its Pareto front, then the budget table and the ranking. Warm-up rounds keep
numba compilation (or cache load) and the table loads out of the timing. A few combinations of a
few orders are checked against ``bitops.evaluate`` of the configuration written down by hand, and
each budget cell against its combinations. ``extra_info``: combinations/s and ``meets_target``
(recorded, not asserted, as in the other benches: a busy machine must not fail a run). Target: < 1 s.

The same search once more with the shipped profile (term curves, three-method terms, exit scales;
checked for its budget table only: its exit scales make the hand costs above another sum).

Group ``end to end: chaincomp simulate``: ``python -m chaincomp simulate --profile FIXTURE`` and the
README's main command (no argument: the shipped profile) as subprocesses (default grid, all 24
orders), wall time per call. Target: < 1.5 s, exit 0, and no torch
imported in that process (checked on one more call under ``-X importtime``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
from probe import assert_torch_free

from bitops import Config, evaluate, kept_from_ratio, reference_totals
from bitops.config import heads_follow_stages
from bitops.models import ModelSpec, load_model_table
from bitops.table import LayerTable
from simulator.model import Grid, Prediction, predict
from simulator.profile import load_profile, parse_profile
from simulator.search import budget_table, pareto_front, rank_orders
from tests.simulator.profiles import BASE_ACCURACY, hand_profile

ROOT = Path(__file__).resolve().parents[1]
TARGET_SEARCH_S = 1.0
TARGET_CLI_S = 1.5
ROUNDS = 5
ORDERS = ["".join(p) for p in permutations("DPQE")]
BUDGETS = (3.0, 6.0, 10.0)
GRID = Grid({
    "D": ("resnet8",),
    "P": tuple(np.linspace(0.0, 0.9, 50).round(4)),  # 0.9 keeps int(16 x 0.1) = 1 channel of the narrowest group
    "Q": (1, 2, 3, 4, 8),
    "E": tuple(np.linspace(0.5, 0.99, 40).round(4)),  # beyond the measured 0.95: flagged, still costed
})
COMBINATIONS = 50 * 5 * 40
# hand_profile's E curve, read here by hand: thresholds and each exit's rates
E_THRESHOLDS = (0.5, 0.8, 0.95)
E_RATES = {"layer1": (0.5, 0.25, 0.125), "layer2": (0.25, 0.25, 0.125)}


@cache
def load(name: str) -> LayerTable:
    return load_model_table(ModelSpec(name, input_shape=(3, 16, 16), num_classes=10))


def search(profile) -> tuple[list[Prediction], dict[str, np.ndarray], dict[str, list], list]:
    predictions = [predict(profile, order, GRID, load, "resnet20") for order in ORDERS]
    fronts = {p.order: pareto_front(p) for p in predictions}
    table = budget_table(predictions, profile.base_accuracy, BUDGETS)
    return predictions, fronts, table, rank_orders(table)


def _hand_bitops(order: str, settings: dict[str, object]) -> float:
    """BitOps of the final model of a D-first (everything reaches the student) or D-last
    (nothing does but the exits) order, written down by hand."""
    student = load("resnet8").with_exits(list(E_RATES))
    threshold = float(settings["E"])
    probs = np.array([np.interp(threshold, E_THRESHOLDS, E_RATES[e]) for e in E_RATES])
    if order[0] == "D":
        kept = heads_follow_stages(student, kept_from_ratio(student, 1.0 - float(settings["P"])))
        w_bits, a_bits = int(settings["Q"]), 8
    else:
        kept, w_bits, a_bits = student.group_channels.copy(), 32, 32
    config = Config(w_bits=np.full(student.num_layers, w_bits), a_bits=np.full(student.num_layers, a_bits),
                    kept=kept, exit_probs=probs)
    return evaluate(student, config).totals.bitops


def _check(predictions: list[Prediction], fronts: dict[str, np.ndarray], table: dict[str, list], ranking: list) -> None:
    assert [p.size for p in predictions] == [COMBINATIONS] * len(ORDERS)
    reference = reference_totals(load("resnet20")).bitops
    by_order = {p.order: p for p in predictions}
    for order in ("DPQE", "DEQP", "QPED"):
        p = by_order[order]
        for i in (0, 1, COMBINATIONS // 3, COMBINATIONS - 1):
            settings = {m: p.settings[pos][i] for pos, m in enumerate(order)}
            bitops = _hand_bitops(order, settings)
            assert p.bitops[i] == bitops, (order, settings)
            assert p.bitops_cr[i] == reference / bitops
    for order, row in table.items():
        p = by_order[order]
        for budget, cell in zip(BUDGETS, row):
            within = BASE_ACCURACY - p.accuracy <= budget + 1e-12
            assert cell == (p.bitops_cr[within].max() if within.any() else None)
            front = fronts[order]
            assert cell is None or cell in p.bitops_cr[front]  # the best within a budget lies on the front
    assert sorted(o for o, _ in ranking) == sorted(ORDERS)


@pytest.mark.benchmark(group="simulate: 24 orders")
def test_all_orders_dense_grid(benchmark) -> None:
    profile = parse_profile(hand_profile())
    result = benchmark.pedantic(search, args=(profile,), warmup_rounds=1, rounds=ROUNDS)
    _check(*result)
    stats = benchmark.stats.stats
    total = COMBINATIONS * len(ORDERS)
    benchmark.extra_info.update(orders=len(ORDERS), combinations_per_order=COMBINATIONS, combinations=total,
                                combinations_per_s_mean=total / stats.mean, combinations_per_s_best=total / stats.min,
                                meets_target=bool(stats.mean < TARGET_SEARCH_S))


@pytest.mark.benchmark(group="simulate: 24 orders")
def test_all_orders_dense_grid_shipped_profile(benchmark) -> None:
    """The same search with the shipped profile: term curves, three-method terms, exit scales."""
    profile = load_profile()
    predictions, fronts, table, ranking = benchmark.pedantic(search, args=(profile,), warmup_rounds=1, rounds=ROUNDS)
    assert [p.size for p in predictions] == [COMBINATIONS] * len(ORDERS) and profile.triple_terms
    by_order = {p.order: p for p in predictions}
    for order, row in table.items():
        p = by_order[order]
        for budget, cell in zip(BUDGETS, row):
            within = profile.base_accuracy - p.accuracy <= budget + 1e-12
            assert cell == (p.bitops_cr[within].max() if within.any() else None)
    assert sorted(o for o, _ in ranking) == sorted(ORDERS)
    stats = benchmark.stats.stats
    benchmark.extra_info.update(combinations=COMBINATIONS * len(ORDERS), meets_target=bool(stats.mean < TARGET_SEARCH_S))


@pytest.mark.benchmark(group="end to end: chaincomp simulate")
def test_cli_simulate_default_cold_start(benchmark) -> None:
    """The README's main command: ``chaincomp simulate`` with no argument (the shipped profile)."""
    cli = [sys.executable, "-m", "chaincomp", "simulate"]
    result = benchmark.pedantic(subprocess.run, args=(cli,), kwargs={"capture_output": True, "text": True, "cwd": ROOT},
                                warmup_rounds=1, rounds=ROUNDS)
    assert result.returncode == 0, result.stderr
    assert "max BitOpsCR within an accuracy-loss budget" in result.stdout
    assert_torch_free(cli[1:], ROOT, ("chaincomp.cli", "simulator.model"))
    stats = benchmark.stats.stats
    benchmark.extra_info.update(wall_s_mean=stats.mean, wall_s_best=stats.min, meets_target=bool(stats.mean < TARGET_CLI_S))


@pytest.mark.benchmark(group="end to end: chaincomp simulate")
def test_cli_simulate_cold_start(benchmark, tmp_path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(hand_profile()), encoding="utf-8")
    cli = [sys.executable, "-m", "chaincomp", "simulate", "--profile", str(path), "--json"]
    result = benchmark.pedantic(subprocess.run, args=(cli,), kwargs={"capture_output": True, "text": True, "cwd": ROOT},
                                warmup_rounds=1, rounds=ROUNDS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["orders"]) == sorted(ORDERS)

    assert_torch_free(cli[1:], ROOT, ("chaincomp.cli", "simulator.model"))

    stats = benchmark.stats.stats
    benchmark.extra_info.update(wall_s_mean=stats.mean, wall_s_best=stats.min, meets_target=bool(stats.mean < TARGET_CLI_S))
