"""Batch evaluation throughput on a ResNet34 table: serial vs parallel kernel vs the Python reference.

Run: ``.venv/bin/python -m pytest benches/bench_kernels.py --benchmark-only``.

Per batch size M (groups ``M=1e3``, ``M=1e4``, ``M=1e5``, ``M=1e6``):

* ``evaluate_batch`` with the serial and the ``parallel=True`` build: what a caller gets, including
  the wrapper's validation, policy overrides and dtype conversions (1e4 and 1e5 bracket
  ``bitops.batch.PARALLEL_MIN_CONFIGS``);
* the kernels alone on arrays already in the kernels' dtypes, table arguments from
  ``bitops.batch.kernel_table``: the ceiling the wrapper can reach;
* ``evaluate_batch`` under a first/last-layer override at M=1e6 (the one case where the wrapper
  copies the bits) and with int64 inputs (checked and cast by the wrapper);
* ``bitops.cost.evaluate`` in a Python loop, at M=1e3 only (its per-config time is reported, not
  extrapolated).

Each variant warms up once (numba compilation and cache load stay out of the timings), runs 5
rounds, checks a few configurations against ``evaluate`` exactly, and records configs/s and
layer-evaluations/s (configs/s x MAC rows) in ``extra_info``. Target: >= 3e8 layer-evaluations/s
for the parallel build at M=1e6.

Group ``one body vs baseline: M=1e5``: today's kernels (one body, two builds, the table as one
``KernelTable``) against ``baseline_kernels.py``, a frozen copy of the two-copy, 21-argument
kernels they replaced, serial and parallel, under the default policy and under one that also
runs the op-row loop and the accumulator term. Each round calls both on the same arrays, in
alternating order, so a change of machine load hits both; the timing columns are of such a pair.
``extra_info``: each kernel's median and best seconds, ``throughput_ratio`` (median over rounds
of baseline seconds / new seconds: new throughput as a fraction of the baseline's),
``throughput_ratio_best`` (best / best) and ``meets_target`` (ratio >= 0.95), recorded, not
asserted: a busy machine must not fail a run. The two results are asserted equal, bit for bit.

In groups ``M=1e3`` and ``M=1e4`` also ``evaluate_batch(engine="numpy")``: the route a process
that has not loaded numba takes for a batch below ``bitops.batch.NUMPY_MAX_CONFIGS`` (8192).
"""

from __future__ import annotations

import time
from functools import cache
from statistics import median

import baseline_kernels
import numpy as np
import pytest

from bitops import Config, LayerTable, Policy, evaluate, evaluate_batch
from bitops import kernels
from bitops.batch import kernel_table

TARGET_LAYER_EVALS_PER_S = 3e8
TARGET_BASELINE_RATIO = 0.95
ROUNDS = 5
PAIRED_ROUNDS = 21
SIZES = {"1e3": 1_000, "1e4": 10_000, "1e5": 100_000, "1e6": 1_000_000}
POLICY = Policy()


@cache
def _batch(table: LayerTable, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """M random configurations (bits 1..32, kept 1..channels, no exits), drawn once per table and M."""
    rng = np.random.default_rng(m)
    w_bits = rng.integers(1, 33, size=(m, table.num_layers), dtype=np.uint8)
    a_bits = rng.integers(1, 33, size=(m, table.num_layers), dtype=np.uint8)
    kept = rng.integers(1, table.group_channels + 1, size=(m, table.num_groups)).astype(np.int32)
    exit_probs = np.zeros((m, table.num_exits))
    return w_bits, a_bits, kept, exit_probs


def _check(table: LayerTable, batch: tuple[np.ndarray, ...], bitops: np.ndarray, storage_bits: np.ndarray,
           policy: Policy = POLICY) -> None:
    m = batch[0].shape[0]
    for i in sorted({0, 1, m // 2, m - 1}):
        config = Config(w_bits=batch[0][i].astype(np.int64), a_bits=batch[1][i].astype(np.int64),
                        kept=batch[2][i].astype(np.int64), exit_probs=batch[3][i])
        totals = evaluate(table, config, policy).totals
        assert (bitops[i], storage_bits[i]) == (totals.bitops, totals.storage_bits), f"config {i}"


def _record(benchmark, table: LayerTable, m: int) -> None:
    stats = benchmark.stats.stats
    for label, seconds in (("mean", stats.mean), ("best", stats.min)):
        benchmark.extra_info[f"configs_per_s_{label}"] = m / seconds
        benchmark.extra_info[f"layer_evals_per_s_{label}"] = m * table.num_layers / seconds
    benchmark.extra_info.update(m=m, mac_rows=table.num_layers, op_rows=table.num_ops,
                                seconds_per_config=stats.mean / m)


def _by_size(*labels: str) -> list:
    return [pytest.param(SIZES[label], id=f"M={label}", marks=pytest.mark.benchmark(group=f"M={label}"))
            for label in labels]


@pytest.mark.parametrize("m", _by_size("1e3", "1e4", "1e5", "1e6"))
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_evaluate_batch(benchmark, resnet34_table: LayerTable, m: int, parallel: bool) -> None:
    batch = _batch(resnet34_table, m)
    result = benchmark.pedantic(evaluate_batch, args=(resnet34_table, *batch),
                                kwargs={"policy": POLICY, "parallel": parallel, "engine": "numba"},
                                warmup_rounds=1, rounds=ROUNDS)
    _check(resnet34_table, batch, result.bitops, result.storage_bits)
    _record(benchmark, resnet34_table, m)
    if parallel and m == SIZES["1e6"]:
        benchmark.extra_info["meets_target"] = bool(
            benchmark.extra_info["layer_evals_per_s_best"] >= TARGET_LAYER_EVALS_PER_S)


@pytest.mark.parametrize("m", _by_size("1e6"))
@pytest.mark.parametrize(("policy", "int64_inputs"), [(Policy(first_last_bits=8), False), (POLICY, True)],
                         ids=["first_last_8", "int64-inputs"])
def test_evaluate_batch_parallel_copying(benchmark, resnet34_table: LayerTable, m: int, policy: Policy,
                                         int64_inputs: bool) -> None:
    batch = _batch(resnet34_table, m)
    if int64_inputs:
        batch = (*(a.astype(np.int64) for a in batch[:3]), batch[3])
    result = benchmark.pedantic(evaluate_batch, args=(resnet34_table, *batch),
                                kwargs={"policy": policy, "parallel": True, "engine": "numba"},
                                warmup_rounds=1, rounds=ROUNDS)
    _check(resnet34_table, batch, result.bitops, result.storage_bits, policy)
    _record(benchmark, resnet34_table, m)


@pytest.mark.parametrize("m", _by_size("1e3", "1e4", "1e5", "1e6"))
@pytest.mark.parametrize("parallel", [False, True], ids=["kernel-serial", "kernel-parallel"])
def test_kernel_alone(benchmark, resnet34_table: LayerTable, m: int, parallel: bool) -> None:
    table, (w_bits, a_bits, kept, exit_probs) = resnet34_table, _batch(resnet34_table, m)
    args = (kernel_table(table, POLICY), w_bits, a_bits, kept, exit_probs)
    kernel = kernels.batch_cost_parallel if parallel else kernels.batch_cost_serial
    bitops, _, _, storage_bits = benchmark.pedantic(kernel, args=args, warmup_rounds=1, rounds=ROUNDS)
    _check(table, (w_bits, a_bits, kept, exit_probs), bitops, storage_bits)
    _record(benchmark, table, m)
    if parallel and m == SIZES["1e6"]:
        benchmark.extra_info["meets_target"] = bool(
            benchmark.extra_info["layer_evals_per_s_best"] >= TARGET_LAYER_EVALS_PER_S)


@pytest.mark.parametrize("m", _by_size("1e3"))
def test_python_reference(benchmark, resnet34_table: LayerTable, m: int) -> None:
    w_bits, a_bits, kept, exit_probs = _batch(resnet34_table, m)
    configs = [Config(w_bits=w_bits[i].astype(np.int64), a_bits=a_bits[i].astype(np.int64),
                      kept=kept[i].astype(np.int64), exit_probs=exit_probs[i]) for i in range(m)]

    def loop() -> list[float]:
        return [evaluate(resnet34_table, c, POLICY).totals.bitops for c in configs]

    bitops = benchmark.pedantic(loop, warmup_rounds=1, rounds=ROUNDS)
    batch = evaluate_batch(resnet34_table, w_bits, a_bits, kept, exit_probs, POLICY)
    assert bitops == batch.bitops.tolist()
    _record(benchmark, resnet34_table, m)


@pytest.mark.parametrize("m", [pytest.param(SIZES["1e5"], id="M=1e5",
                                            marks=pytest.mark.benchmark(group="one body vs baseline: M=1e5"))])
@pytest.mark.parametrize("policy", [POLICY, Policy(bitops_formula="accumulator", bn="counted", elementwise="counted")],
                         ids=["default", "accumulator-ops"])
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_kernel_against_baseline(benchmark, resnet34_table: LayerTable, m: int, policy: Policy,
                                 parallel: bool) -> None:
    table, batch = resnet34_table, _batch(resnet34_table, m)
    table_args = kernel_table(table, policy)
    new = kernels.batch_cost_parallel if parallel else kernels.batch_cost_serial
    old = baseline_kernels.batch_cost_parallel if parallel else baseline_kernels.batch_cost_serial
    runs = {"new": (new, (table_args, *batch)), "baseline": (old, (*table_args, *batch))}
    seconds: dict[str, list[float]] = {"new": [], "baseline": []}
    results = {}

    def pair() -> None:
        """One call of each, the first one alternating between rounds."""
        order = ("new", "baseline") if len(seconds["new"]) % 2 == 0 else ("baseline", "new")
        for name in order:
            kernel, args = runs[name]
            start = time.perf_counter()
            results[name] = kernel(*args)
            seconds[name].append(time.perf_counter() - start)

    benchmark.pedantic(pair, warmup_rounds=1, rounds=PAIRED_ROUNDS)
    for field, got, want in zip(("bitops", "macs", "params", "storage_bits"), results["new"], results["baseline"]):
        np.testing.assert_array_equal(got, want, err_msg=field)
    _check(table, batch, results["new"][0], results["new"][3], policy)

    timed = {name: s[1:] for name, s in seconds.items()}  # the warm-up round is the first
    ratio = median(b / n for b, n in zip(timed["baseline"], timed["new"]))
    benchmark.extra_info.update(
        m=m, rounds=len(timed["new"]), new_s_median=median(timed["new"]), new_s_best=min(timed["new"]),
        baseline_s_median=median(timed["baseline"]), baseline_s_best=min(timed["baseline"]),
        throughput_ratio=ratio, throughput_ratio_best=min(timed["baseline"]) / min(timed["new"]),
        meets_target=bool(ratio >= TARGET_BASELINE_RATIO))


@pytest.mark.parametrize("m", _by_size("1e3", "1e4"))
def test_evaluate_batch_numpy_route(benchmark, resnet34_table: LayerTable, m: int) -> None:
    batch = _batch(resnet34_table, m)
    result = benchmark.pedantic(evaluate_batch, args=(resnet34_table, *batch),
                                kwargs={"policy": POLICY, "engine": "numpy"}, warmup_rounds=1, rounds=ROUNDS)
    _check(resnet34_table, batch, result.bitops, result.storage_bits)
    _record(benchmark, resnet34_table, m)
