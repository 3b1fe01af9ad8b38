"""FROZEN BASELINE for benches/bench_kernels.py -- not part of the library, never imported by it.

A verbatim copy of ``bitops/kernels.py`` as of commit 0ee5d54 (two copies of one body, 21
positional arguments), kept so that the bench can time today's kernels against this one in the
same run and record the ratio (issue 9, item 6: the one-body kernels must keep >= 95 % of this
throughput). Its positional arguments are the fields of ``bitops.batch.KernelTable`` in order,
then the four per-configuration arrays, so ``baseline(*kernel_table(...), w, a, kept, probs)``
calls it. Do not edit it to follow library changes; replace it only on purpose, with a new baseline.

The original module docstring follows.

Batch kernels: the cost of M configurations of one table in one pass.

Module-level ``@njit(cache=True)`` functions over flat, contiguous numpy arrays; no objects,
dicts or validation inside (the Python layer in :mod:`bitops.batch` owns those, and
:func:`bitops.batch.kernel_table` builds the table arguments below). Each computes, per
configuration m, exactly what :func:`bitops.cost.evaluate` computes row by row, in the same order
of float operations, so the two agree to the last bit.

Arguments, in this order (L MAC rows, C counted op rows, G channel groups, K exits, M configs):

* MAC rows, int64[L]: ``ops_unit``, MACs per (kept output channel x input channel per conv
  group) times ``ops_per_mac`` (1, or 2 under ``ops="flops"``); ``in_pg_unit, in_pg_group,
  in_pg_div`` (input channels per conv group, below); ``out_unit, out_group``; ``taps`` (log2's
  fan-in is in_pg x taps); ``weight_taps``, weights per such pair (``taps``, or 0 for a row with
  no weights); ``segment``;
* the non-MAC op rows whose BitOps the policy counts: ``op_unit, op_group, op_segment``
  int64[C] (output elements, a unit); the rows it does not count cost 0.0 and are left out;
* parameters stored at ``aux_bits`` (MAC-row biases, BN and other per-channel op parameters, the
  table's ``extra_params``): ``aux_per_kept`` int64[G], how many per kept channel of group g, and
  ``aux_fixed`` int64, how many are never pruned;
* scalars: ``accumulator`` (bool: Baskin et al.'s term), ``nonmac_cost`` (BitOps per element of
  a counted op: nonmac_bits^2 x ops_per_mac), ``aux_bits``;
* configurations: ``w_bits, a_bits`` uint8[M, L] (policy overrides already applied),
  ``kept`` int32[M, G], ``exit_probs`` float64[M, K].

Units: a count that scales with a channel group's kept channels is ``kept[m, group] x unit``, or
``unit`` itself where ``group`` is -1 (never pruned). :func:`bitops.batch.kernel_table` divides
by the group's channel count once per table (``out_unit = out_ch // channels of out_group``):
integer division is the slowest instruction in these loops, and every width is a multiple of
its group's channel count (``LayerTable.validate``), so the product is exact. The input channels
per conv group are ``in_pg = kept[m, in_pg_group] x in_pg_unit // in_pg_div`` (in' // groups;
depthwise: unit 1, group -1), where ``in_pg_div`` is 1 except on a pruned grouped conv whose
input channels per kept channel are no multiple of its groups. The other integer folds (ops_per_mac
into ``ops_unit``, parameters into ``aux_*``) only reorder exact int64 products and sums.

Per configuration m, with reach[0] = 1 and reach[k+1] = max(reach[k] - exit_probs[m, k], 0):

* MAC row i: MACs = ops_unit x out' x in_pg; BitOps = MACs x wb x ab, or
  MACs x (wb*ab + wb + ab + log2(in_pg x taps)) with ``accumulator``; weights = out' x in_pg x
  weight_taps;
* ``bitops`` = sum_i BitOps_i x reach[segment_i] + sum_j (elements'_j x nonmac_cost) x
  reach[op_segment_j], each sum left to right from 0.0, then the two added, as ``evaluate`` does
  (the left-out rows' 0.0 terms change no sum);
* ``macs`` = sum_i MACs_i x reach[segment_i];
* aux = aux_fixed + sum_g aux_per_kept[g] x kept[m, g];
* ``params`` = sum_i weights_i + aux; ``storage_bits`` = sum_i weights_i x wb_i + aux x aux_bits.

Integers are int64 throughout and converted to float64 exactly where ``evaluate`` converts its
Python ints. Outputs, each of length M: ``bitops`` and ``macs`` float64 (expected over exits),
``params`` and ``storage_bits`` int64 (totals, ``extra_params`` included).

Both builds compile with numba's ``error_model="numpy"``, which the ``parallel=True`` build's
loop body gets anyway (numba's parfor lowering sets it): with the default Python error model the
one division above carries a ZeroDivisionError path that halves the serial build's speed, though
no table can reach it (``groups`` >= 1).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["batch_cost_parallel", "batch_cost_serial"]


@njit(cache=True, inline="always")
def _scaled(unit, group, kept_row):
    """Width (or element count) of a row: ``unit`` per kept channel of ``group``; ``unit`` if group < 0."""
    if group < 0:
        return unit
    return np.int64(kept_row[group]) * unit


@njit(cache=True, inline="always")
def _one_config(m, ops_unit, in_pg_unit, in_pg_group, in_pg_div, out_unit, out_group, taps, weight_taps, segment,
                op_unit, op_group, op_segment, aux_per_kept, aux_fixed,
                accumulator, nonmac_cost, aux_bits,
                w_bits, a_bits, kept, exit_probs, reach, out_bitops, out_macs, out_params, out_storage):
    """Cost of configuration m into ``out_*[m]``; ``reach`` float64[M, K+1] is scratch (writes row m only)."""
    reach_m = reach[m]
    reach_m[0] = 1.0
    for k in range(exit_probs.shape[1]):
        reach_m[k + 1] = max(reach_m[k] - exit_probs[m, k], 0.0)
    kept_row = kept[m]
    total_macs = 0.0
    total_bitops = 0.0
    weights_total = np.int64(0)
    weight_bits = np.int64(0)
    for i in range(ops_unit.shape[0]):
        in_pg = _scaled(in_pg_unit[i], in_pg_group[i], kept_row)
        if in_pg_div[i] != 1:
            in_pg //= in_pg_div[i]
        out_w = _scaled(out_unit[i], out_group[i], kept_row)
        macs = ops_unit[i] * out_w * in_pg
        wb = np.int64(w_bits[m, i])
        ab = np.int64(a_bits[m, i])
        if accumulator:
            static = macs * (np.float64(wb * ab + wb + ab) + np.log2(np.float64(in_pg * taps[i])))
        else:
            static = np.float64(macs * wb * ab)
        r = reach_m[segment[i]]
        total_macs += macs * r
        total_bitops += static * r
        weights = out_w * in_pg * weight_taps[i]
        weights_total += weights
        weight_bits += weights * wb
    op_total = 0.0
    for j in range(op_unit.shape[0]):
        elements = _scaled(op_unit[j], op_group[j], kept_row)
        op_total += np.float64(elements * nonmac_cost) * reach_m[op_segment[j]]
    aux = aux_fixed
    for g in range(aux_per_kept.shape[0]):
        aux += aux_per_kept[g] * np.int64(kept_row[g])
    out_bitops[m] = total_bitops + op_total
    out_macs[m] = total_macs
    out_params[m] = weights_total + aux
    out_storage[m] = weight_bits + aux * aux_bits


@njit(cache=True, error_model="numpy")
def batch_cost_serial(ops_unit, in_pg_unit, in_pg_group, in_pg_div, out_unit, out_group, taps, weight_taps, segment,
                      op_unit, op_group, op_segment, aux_per_kept, aux_fixed,
                      accumulator, nonmac_cost, aux_bits,
                      w_bits, a_bits, kept, exit_probs):
    """Serial build: one configuration after another (best for small M).

    Arguments as in the module docstring; returns ``(bitops, macs, params, storage_bits)``, float64[M],
    float64[M], int64[M], int64[M].
    """
    n = w_bits.shape[0]
    reach = np.empty((n, exit_probs.shape[1] + 1))
    out_bitops = np.empty(n)
    out_macs = np.empty(n)
    out_params = np.empty(n, dtype=np.int64)
    out_storage = np.empty(n, dtype=np.int64)
    for m in range(n):
        _one_config(m, ops_unit, in_pg_unit, in_pg_group, in_pg_div, out_unit, out_group, taps, weight_taps, segment,
                    op_unit, op_group, op_segment, aux_per_kept, aux_fixed,
                    accumulator, nonmac_cost, aux_bits,
                    w_bits, a_bits, kept, exit_probs, reach, out_bitops, out_macs, out_params, out_storage)
    return out_bitops, out_macs, out_params, out_storage


@njit(cache=True, error_model="numpy", parallel=True)
def batch_cost_parallel(ops_unit, in_pg_unit, in_pg_group, in_pg_div, out_unit, out_group, taps, weight_taps,
                        segment, op_unit, op_group, op_segment, aux_per_kept, aux_fixed,
                        accumulator, nonmac_cost, aux_bits,
                        w_bits, a_bits, kept, exit_probs):
    """Parallel build: configurations split across threads (``prange``); the serial build's result, bit for bit.

    Each configuration is computed by one thread, in the serial order, so no float sum is split.
    """
    n = w_bits.shape[0]
    # One scratch row per configuration, allocated once: an allocation per configuration inside
    # prange costs more than the configuration itself.
    reach = np.empty((n, exit_probs.shape[1] + 1))
    out_bitops = np.empty(n)
    out_macs = np.empty(n)
    out_params = np.empty(n, dtype=np.int64)
    out_storage = np.empty(n, dtype=np.int64)
    for m in prange(n):
        _one_config(m, ops_unit, in_pg_unit, in_pg_group, in_pg_div, out_unit, out_group, taps, weight_taps, segment,
                    op_unit, op_group, op_segment, aux_per_kept, aux_fixed,
                    accumulator, nonmac_cost, aux_bits,
                    w_bits, a_bits, kept, exit_probs, reach, out_bitops, out_macs, out_params, out_storage)
    return out_bitops, out_macs, out_params, out_storage
