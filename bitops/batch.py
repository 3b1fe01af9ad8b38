"""Batch evaluation: validate M configurations once, then hand flat arrays to a numba kernel.

This is the Python side of :mod:`bitops.kernels`: it owns the checks, the policy overrides, the
dtype/contiguity conversions and the choice between the serial and the ``parallel=True`` build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitops.config import PROB_SLACK
from bitops.cost import resolved_bits
from bitops.errors import InputError
from bitops.policy import FULL_PRECISION_BITS, Policy
from bitops.table import LayerTable

__all__ = ["PARALLEL_MIN_CONFIGS", "BatchResult", "evaluate_batch"]

# Below this many configurations thread start-up costs more than it saves (measured in
# benches/bench_kernels.py on 2 cores).
PARALLEL_MIN_CONFIGS = 2048


@dataclass(frozen=True, eq=False)
class BatchResult:
    """Totals of M configurations, each an array of length M (BitOps/MACs expected over exits)."""

    bitops: np.ndarray
    macs: np.ndarray
    params: np.ndarray
    storage_bits: np.ndarray


def _as_matrix(name: str, values: np.ndarray, m: int | None, width: int, dtype: type) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != width or (m is not None and arr.shape[0] not in (1, m)):
        raise InputError(f"{name} must have shape (M, {width}) or ({width},), got {np.shape(values)}")
    return arr.astype(dtype, copy=False)


def evaluate_batch(
    table: LayerTable,
    w_bits: np.ndarray,
    a_bits: np.ndarray,
    kept: np.ndarray,
    exit_probs: np.ndarray | None = None,
    policy: Policy = Policy(),
    parallel: bool | None = None,
) -> BatchResult:
    """Cost of M configurations. Each input is (M, width) or (width,), broadcast over M.

    ``w_bits``/``a_bits`` are per MAC layer (L), ``kept`` per channel group (G), ``exit_probs``
    per exit (K; default: nobody leaves early). ``parallel=None`` picks the parallel build for
    M >= :data:`PARALLEL_MIN_CONFIGS`.
    """
    from bitops import kernels  # numba is imported only when a batch is evaluated

    inputs = {"w_bits": (w_bits, table.num_layers, np.int64), "a_bits": (a_bits, table.num_layers, np.int64),
              "kept": (kept, table.num_groups, np.int64),
              "exit_probs": (np.zeros(table.num_exits) if exit_probs is None else exit_probs, table.num_exits, np.float64)}
    m = max(np.shape(v)[0] if np.ndim(v) == 2 else 1 for v, _, _ in inputs.values())
    arrays = {k: _as_matrix(k, v, m, w, dt) for k, (v, w, dt) in inputs.items()}
    w, a = resolved_bits(table, np.broadcast_to(arrays["w_bits"], (m, table.num_layers)),
                         np.broadcast_to(arrays["a_bits"], (m, table.num_layers)), policy)
    for name, bits in (("w_bits", w), ("a_bits", a)):
        if bits.size and (bits.min() < 1 or bits.max() > FULL_PRECISION_BITS):
            raise InputError(f"{name} must be in 1..{FULL_PRECISION_BITS}, got values in {bits.min()}..{bits.max()}")
    kept_m = np.broadcast_to(arrays["kept"], (m, table.num_groups))
    if kept_m.size and (np.any(kept_m < 1) or np.any(kept_m > table.group_channels)):
        raise InputError("kept channels must be in 1..channels of their group for every configuration")
    probs = np.broadcast_to(arrays["exit_probs"], (m, table.num_exits))
    if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.sum(axis=1).max() > 1 + PROB_SLACK):
        raise InputError("exit_probs must be finite, >= 0 and sum to at most 1 in every configuration")

    lay, opc = table.layers, table.ops
    op_cost = np.array([float(policy.nonmac_bits * policy.nonmac_bits * policy.ops_per_mac)
                        if policy.counts_category(c) else 0.0 for c in opc["category"]], dtype=np.float64)
    use_parallel = m >= PARALLEL_MIN_CONFIGS if parallel is None else parallel
    kernel = kernels.batch_cost_parallel if use_parallel else kernels.batch_cost_serial
    bitops, macs, params, storage = kernel(
        lay["macs_unit"], lay["in_ch"], lay["out_ch"], lay["groups"], lay["taps"], lay["in_group"], lay["out_group"],
        lay["segment"], lay["has_weight"], lay["has_bias"], lay["depthwise"],
        opc["elements"], opc["channels"], opc["group"], opc["params"], opc["segment"], op_cost, table.group_channels,
        np.ascontiguousarray(w, dtype=np.uint8), np.ascontiguousarray(a, dtype=np.uint8),
        np.ascontiguousarray(kept_m, dtype=np.int32), np.ascontiguousarray(probs, dtype=np.float64),
        policy.ops_per_mac, policy.bitops_formula == "accumulator", policy.aux_bits,
    )
    extra = table.extra_params
    return BatchResult(bitops=bitops, macs=macs, params=params + extra, storage_bits=storage + extra * policy.aux_bits)
