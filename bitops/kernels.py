"""Batch kernels: the cost of M configurations of one table in one pass.

Module-level ``@njit(cache=True)`` functions over flat, contiguous numpy arrays; no objects,
dicts or validation inside (the Python layer in :mod:`bitops.batch` owns those). Each computes,
per configuration m, exactly what :func:`bitops.cost.evaluate` computes row by row, in the same
order of float operations, so the two agree to the last bit.

Arrays (L MAC rows, N other ops, G channel groups, K exits, M configurations):

* layer columns, int64[L]: ``macs_unit, in_ch, out_ch, groups, taps, in_group, out_group,
  segment``; bool[L]: ``has_weight, has_bias, depthwise``;
* op columns, int64[N]: ``op_elements, op_channels, op_group, op_params, op_segment``;
  ``op_cost`` float64[N]: BitOps per kept element (0 where the policy does not count the op);
* ``group_channels`` int64[G];
* configurations: ``w_bits, a_bits`` uint8[M, L] (policy overrides already applied),
  ``kept`` int32[M, G], ``exit_probs`` float64[M, K];
* scalars: ``ops_per_mac`` (1 or 2), ``accumulator`` (Baskin term on/off), ``aux_bits``.

Outputs, each of length M: ``bitops`` and ``macs`` float64 (expected over exits),
``params`` and ``storage_bits`` int64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["batch_cost_parallel", "batch_cost_serial"]


@njit(cache=True, inline="always")
def _width(width, group, kept_row, group_channels):
    if group < 0:
        return width
    return np.int64(kept_row[group]) * (width // group_channels[group])


@njit(cache=True, inline="always")
def _one_config(m, macs_unit, in_ch, out_ch, groups, taps, in_group, out_group, segment, has_weight, has_bias,
                depthwise, op_elements, op_channels, op_group, op_params, op_segment, op_cost, group_channels,
                w_bits, a_bits, kept, exit_probs, ops_per_mac, accumulator, aux_bits,
                out_bitops, out_macs, out_params, out_storage):
    n_exits = exit_probs.shape[1]
    reach = np.empty(n_exits + 1)
    reach[0] = 1.0
    for k in range(n_exits):
        reach[k + 1] = max(reach[k] - exit_probs[m, k], 0.0)
    kept_row = kept[m]
    total_macs = 0.0
    total_bitops = 0.0
    params = np.int64(0)
    storage = np.int64(0)
    for i in range(macs_unit.shape[0]):
        in_w = _width(in_ch[i], in_group[i], kept_row, group_channels)
        out_w = _width(out_ch[i], out_group[i], kept_row, group_channels)
        in_pg = np.int64(1) if depthwise[i] else in_w // groups[i]
        macs = macs_unit[i] * out_w * in_pg * ops_per_mac
        wb = np.int64(w_bits[m, i])
        ab = np.int64(a_bits[m, i])
        if accumulator:
            static = macs * (np.float64(wb * ab + wb + ab) + np.log2(np.float64(in_pg * taps[i])))
        else:
            static = np.float64(macs * wb * ab)
        r = reach[segment[i]]
        total_macs += macs * r
        total_bitops += static * r
        weights = out_w * in_pg * taps[i] if has_weight[i] else np.int64(0)
        bias = out_w if has_bias[i] else np.int64(0)
        params += weights + bias
        storage += weights * wb + bias * aux_bits
    op_total = 0.0
    for j in range(op_elements.shape[0]):
        width = _width(op_channels[j], op_group[j], kept_row, group_channels)
        elements = op_elements[j] // op_channels[j] * width
        op_params_j = op_params[j] // op_channels[j] * width
        if op_cost[j] != 0.0:
            op_total += elements * op_cost[j] * reach[op_segment[j]]
        params += op_params_j
        storage += op_params_j * aux_bits
    out_bitops[m] = total_bitops + op_total
    out_macs[m] = total_macs
    out_params[m] = params
    out_storage[m] = storage


@njit(cache=True)
def batch_cost_serial(macs_unit, in_ch, out_ch, groups, taps, in_group, out_group, segment, has_weight, has_bias,
                      depthwise, op_elements, op_channels, op_group, op_params, op_segment, op_cost, group_channels,
                      w_bits, a_bits, kept, exit_probs, ops_per_mac, accumulator, aux_bits):
    """Serial build: one configuration after another (best for small M)."""
    n = w_bits.shape[0]
    out_bitops = np.empty(n)
    out_macs = np.empty(n)
    out_params = np.empty(n, dtype=np.int64)
    out_storage = np.empty(n, dtype=np.int64)
    for m in range(n):
        _one_config(m, macs_unit, in_ch, out_ch, groups, taps, in_group, out_group, segment, has_weight, has_bias,
                    depthwise, op_elements, op_channels, op_group, op_params, op_segment, op_cost, group_channels,
                    w_bits, a_bits, kept, exit_probs, ops_per_mac, accumulator, aux_bits,
                    out_bitops, out_macs, out_params, out_storage)
    return out_bitops, out_macs, out_params, out_storage


@njit(cache=True, parallel=True)
def batch_cost_parallel(macs_unit, in_ch, out_ch, groups, taps, in_group, out_group, segment, has_weight, has_bias,
                        depthwise, op_elements, op_channels, op_group, op_params, op_segment, op_cost, group_channels,
                        w_bits, a_bits, kept, exit_probs, ops_per_mac, accumulator, aux_bits):
    """Parallel build: configurations split across threads (``prange``); same result as serial."""
    n = w_bits.shape[0]
    out_bitops = np.empty(n)
    out_macs = np.empty(n)
    out_params = np.empty(n, dtype=np.int64)
    out_storage = np.empty(n, dtype=np.int64)
    for m in prange(n):
        _one_config(m, macs_unit, in_ch, out_ch, groups, taps, in_group, out_group, segment, has_weight, has_bias,
                    depthwise, op_elements, op_channels, op_group, op_params, op_segment, op_cost, group_channels,
                    w_bits, a_bits, kept, exit_probs, ops_per_mac, accumulator, aux_bits,
                    out_bitops, out_macs, out_params, out_storage)
    return out_bitops, out_macs, out_params, out_storage
