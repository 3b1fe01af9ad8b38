"""Cost of one configuration: re-tracing a modified model vs reading the shipped table; the CLI end to end.

Run: ``.venv/bin/python -m pytest benches/bench_trace.py --benchmark-only``.

Group ``per-config: trace vs table`` prices one compressed ResNet34 (CIFAR form, 10 classes, all
three exit heads) three ways, side by side, in one run:

* (a) the torch route: ``trace_model`` (fvcore + torch-pruning) of a physically pruned copy at
  keep ratio 0.7, then ``evaluate`` of its table. The pruning itself is set-up and left out, so the
  speed-ups below are lower bounds on that count. It runs on one torch thread: at batch 1 a second
  thread saves ~20% on an idle 2-core machine but costs 3-8x while another process competes for
  the cores, and a stable baseline matters more here than that 20%;
* (b) ``bitops.evaluate`` of the same configuration (1w8a, keep 0.7, exit probabilities) on the
  shipped table, in plain Python;
* (c) ``bitops.evaluate_batch`` with the ``parallel=True`` kernel on M=1e5 configurations (the
  same one first), timed per configuration.

Each bench warms up once (numba compilation and cache load stay out), checks its result against
another route exactly, and records ``seconds_per_config`` in ``extra_info``; (b) and (c) also record
their speed-up over (a) when (a) ran earlier in the session (the file's order). Target: (c) >= 1e5x (a).

Group ``end to end: chaincomp count``: ``python -m chaincomp count resnet34_cifar --json`` as a
subprocess (what ``.venv/bin/chaincomp`` runs), wall time per call. Target: < 1 s, and no torch
imported in that process (checked on one more call under ``-X importtime``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from probe import assert_torch_free

from bitops import Config, LayerTable, evaluate, evaluate_batch, kept_from_ratio, uniform_config
from bitops.models import ZOO_INPUT_SHAPE, shipped_table

NAME = "resnet34_cifar"
KEEP_RATIO = 0.7
W_BITS, A_BITS = 1, 8
EXIT_PROBS = (0.4, 0.2, 0.1)  # leave at layer1, layer2, layer3; the rest reach the classifier
M = 100_000
ROUNDS = 5
TARGET_SPEEDUP = 1e5
TARGET_CLI_S = 1.0
GROUP = "per-config: trace vs table"
ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "chaincomp", "count", NAME, "--json"]

# bench -> mean seconds per configuration, filled as the benches run (in file order).
_SECONDS_PER_CONFIG: dict[str, float] = {}


@pytest.fixture(scope="module")
def table() -> LayerTable:
    shipped = shipped_table(NAME, 10)
    assert shipped is not None and shipped.num_exits == len(EXIT_PROBS)
    return shipped


@pytest.fixture(scope="module")
def config(table: LayerTable) -> Config:
    return Config(w_bits=np.full(table.num_layers, W_BITS), a_bits=np.full(table.num_layers, A_BITS),
                  kept=kept_from_ratio(table, KEEP_RATIO), exit_probs=np.array(EXIT_PROBS))


@pytest.fixture(scope="module")
def pruned_model():
    """resnet34_cifar with exits, pruned by torch-pruning as the trainer's P stage does it."""
    import torch
    import torch_pruning as tp

    from bitops import zoo
    from bitops.trace import output_layers

    model = zoo.build(NAME, exits=True)
    pruner = tp.pruner.MagnitudePruner(model, torch.zeros(1, *ZOO_INPUT_SHAPE),
                                       importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=1 - KEEP_RATIO, ignored_layers=output_layers(model))
    pruner.step()
    return model.eval()


@pytest.fixture(scope="module")
def pruned_table(pruned_model) -> LayerTable:
    from bitops.trace import trace_model

    return trace_model(pruned_model, ZOO_INPUT_SHAPE, name=f"{NAME} pruned")


@pytest.fixture
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield 1
    torch.set_num_threads(threads)


def _physical_totals(traced: LayerTable):
    """Cost of the traced pruned model: nothing left to prune, the same bits and exit probabilities."""
    return evaluate(traced, uniform_config(traced, w_bits=W_BITS, a_bits=A_BITS, exit_probs=EXIT_PROBS)).totals


def _record(benchmark, key: str, configs: int) -> None:
    stats = benchmark.stats.stats
    per_config = stats.mean / configs
    _SECONDS_PER_CONFIG[key] = per_config
    benchmark.extra_info.update(configs_per_round=configs, seconds_per_config=per_config,
                                seconds_per_config_best=stats.min / configs, load_avg_1min=os.getloadavg()[0])
    if key != "trace" and "trace" in _SECONDS_PER_CONFIG:
        benchmark.extra_info["speedup_over_trace"] = _SECONDS_PER_CONFIG["trace"] / per_config


@pytest.mark.benchmark(group=GROUP)
def test_a_retrace_pruned_model(benchmark, table: LayerTable, config: Config, pruned_model, one_torch_thread) -> None:
    from bitops.trace import trace_model

    def trace_and_count():
        traced = trace_model(pruned_model, ZOO_INPUT_SHAPE, name=f"{NAME} pruned")
        return traced, _physical_totals(traced)

    traced, totals = benchmark.pedantic(trace_and_count, warmup_rounds=1, rounds=ROUNDS)
    assert totals == evaluate(table, config).totals  # the analytic count, to the integer
    assert totals.params == sum(p.numel() for p in pruned_model.parameters())
    _record(benchmark, "trace", 1)
    benchmark.extra_info.update(mac_rows=traced.num_layers, torch_threads=one_torch_thread)


@pytest.mark.benchmark(group=GROUP)
def test_b_evaluate_shipped_table(benchmark, table: LayerTable, config: Config, pruned_table: LayerTable) -> None:
    report = benchmark.pedantic(evaluate, args=(table, config), warmup_rounds=1, rounds=ROUNDS, iterations=100)
    assert report.totals == _physical_totals(pruned_table)
    _record(benchmark, "evaluate", 1)


@pytest.mark.benchmark(group=GROUP)
def test_c_evaluate_batch_parallel(benchmark, table: LayerTable, config: Config) -> None:
    rng = np.random.default_rng(0)
    w_bits = rng.integers(1, 33, size=(M, table.num_layers))
    a_bits = rng.integers(1, 33, size=(M, table.num_layers))
    kept = rng.integers(1, table.group_channels + 1, size=(M, table.num_groups))
    exit_probs = rng.dirichlet(np.ones(table.num_exits + 1), size=M)[:, :-1]  # sums < 1: some reach the end
    w_bits[0], a_bits[0], kept[0], exit_probs[0] = config.w_bits, config.a_bits, config.kept, config.exit_probs

    result = benchmark.pedantic(evaluate_batch, args=(table, w_bits, a_bits, kept, exit_probs),
                                kwargs={"parallel": True}, warmup_rounds=1, rounds=ROUNDS)
    for i in (0, 1, M // 2, M - 1):
        totals = evaluate(table, Config(w_bits=w_bits[i], a_bits=a_bits[i], kept=kept[i],
                                        exit_probs=exit_probs[i])).totals
        got = (result.macs[i], result.bitops[i], result.params[i], result.storage_bits[i])
        assert got == (totals.macs, totals.bitops, totals.params, totals.storage_bits), f"config {i}"
    _record(benchmark, "evaluate_batch", M)
    if "speedup_over_trace" in benchmark.extra_info:
        benchmark.extra_info["meets_target"] = bool(benchmark.extra_info["speedup_over_trace"] >= TARGET_SPEEDUP)


@pytest.mark.benchmark(group="end to end: chaincomp count")
def test_cli_count_end_to_end(benchmark, table: LayerTable) -> None:
    result = benchmark.pedantic(subprocess.run, args=(CLI,), kwargs={"capture_output": True, "text": True, "cwd": ROOT},
                                warmup_rounds=1, rounds=ROUNDS)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    original = table.with_exits([])
    totals = evaluate(original, uniform_config(original)).totals
    assert (report["macs"], report["bitops"], report["params"]) == (totals.macs, totals.bitops, totals.params)

    assert_torch_free(CLI[1:], ROOT, ("chaincomp.cli", "bitops.cost"))

    stats = benchmark.stats.stats
    benchmark.extra_info.update(wall_s_mean=stats.mean, wall_s_best=stats.min,
                                meets_target=bool(stats.mean < TARGET_CLI_S))
