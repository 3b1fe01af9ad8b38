"""Batch kernels: the cost of M configurations of one table in one pass.

One module-level function body, :func:`_batch_cost`, compiled twice with numba (``cache=True``):
:func:`batch_cost_serial` and, with ``parallel=True``, :func:`batch_cost_parallel` (in the
serial build ``prange`` is ``range``). No objects, dicts or validation inside: the Python layer
in :mod:`bitops.batch` owns those, builds the table argument (:func:`bitops.batch.kernel_table`)
and holds the numpy route that computes the same numbers for small batches without numba. Per
configuration m, the kernels compute exactly what :func:`bitops.cost.evaluate` computes row by
row, in the same order of float operations, so the two agree to the last bit.

Arguments ``(table, w_bits, a_bits, kept, exit_probs)``, with L MAC rows, C counted op rows,
G channel groups, K exits and M configurations:

* ``table``: a :class:`bitops.batch.KernelTable` (a NamedTuple, which numba takes as a tuple) of

  - MAC rows, int64[L]: ``ops_unit``, MACs per (kept output channel x input channel per conv
    group) times ``ops_per_mac`` (1, or 2 under ``ops="flops"``); ``in_pg_unit, in_pg_group,
    in_pg_div`` (input channels per conv group, below); ``out_unit, out_group``; ``taps``
    (log2's fan-in is in_pg x taps); ``weight_taps``, weights per such pair (``taps``, or 0 for a
    row with no weights); ``segment``;
  - the non-MAC op rows whose BitOps the policy counts: ``op_unit, op_group, op_segment``
    int64[C] (output elements, a unit); the rows it does not count cost 0.0 and are left out;
  - parameters stored at ``aux_bits`` (MAC-row biases, BN and other per-channel op parameters,
    the table's ``extra_params``): ``aux_per_kept`` int64[G], how many per kept channel of group
    g, and ``aux_fixed`` int, how many are never pruned;
  - scalars: ``accumulator`` (bool: Baskin et al.'s term), ``nonmac_cost`` (int: BitOps per
    element of a counted op, nonmac_bits^2 x ops_per_mac), ``aux_bits`` (int);

* configurations: ``w_bits, a_bits`` uint8[M, L] (policy overrides already applied),
  ``kept`` int32[M, G], ``exit_probs`` float64[M, K], all C-contiguous.

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

import types

import numpy as np
from numba import njit, prange

__all__ = ["batch_cost_parallel", "batch_cost_serial"]


@njit(cache=True, inline="always")
def _scaled(unit, group, kept_row):
    """Width (or element count) of a row: ``unit`` per kept channel of ``group``; ``unit`` if group < 0."""
    if group < 0:
        return unit
    return np.int64(kept_row[group]) * unit


def _batch_cost(table, w_bits, a_bits, kept, exit_probs):
    """Cost of M configurations: ``(bitops, macs, params, storage_bits)``, float64[M], float64[M],
    int64[M], int64[M]; arguments and math in the module docstring.

    Each configuration is computed by one thread of the parallel build, in the serial order, so no
    float sum is split and both builds give the same bits.
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
        reach_m = reach[m]
        reach_m[0] = 1.0
        for k in range(exit_probs.shape[1]):
            reach_m[k + 1] = max(reach_m[k] - exit_probs[m, k], 0.0)
        kept_row = kept[m]
        total_macs = 0.0
        total_bitops = 0.0
        weights_total = np.int64(0)
        weight_bits = np.int64(0)
        for i in range(table.ops_unit.shape[0]):
            in_pg = _scaled(table.in_pg_unit[i], table.in_pg_group[i], kept_row)
            if table.in_pg_div[i] != 1:
                in_pg //= table.in_pg_div[i]
            out_w = _scaled(table.out_unit[i], table.out_group[i], kept_row)
            macs = table.ops_unit[i] * out_w * in_pg
            wb = np.int64(w_bits[m, i])
            ab = np.int64(a_bits[m, i])
            if table.accumulator:
                static = macs * (np.float64(wb * ab + wb + ab) + np.log2(np.float64(in_pg * table.taps[i])))
            else:
                static = np.float64(macs * wb * ab)
            r = reach_m[table.segment[i]]
            total_macs += macs * r
            total_bitops += static * r
            weights = out_w * in_pg * table.weight_taps[i]
            weights_total += weights
            weight_bits += weights * wb
        op_total = 0.0
        for j in range(table.op_unit.shape[0]):
            elements = _scaled(table.op_unit[j], table.op_group[j], kept_row)
            op_total += np.float64(elements * table.nonmac_cost) * reach_m[table.op_segment[j]]
        aux = table.aux_fixed
        for g in range(table.aux_per_kept.shape[0]):
            aux += table.aux_per_kept[g] * np.int64(kept_row[g])
        out_bitops[m] = total_bitops + op_total
        out_macs[m] = total_macs
        out_params[m] = weights_total + aux
        out_storage[m] = weight_bits + aux * table.aux_bits
    return out_bitops, out_macs, out_params, out_storage


def _build(name: str, doc: str, **options: bool):
    """``_batch_cost`` compiled under its own ``name``.

    numba's on-disk cache is keyed by a function's module, qualified name and bytecode, not by
    its compile options: two builds of one function object would load each other's machine code.
    A copy of the function per build, named after it, keeps one cache entry per build.
    """
    body = _batch_cost
    func = types.FunctionType(body.__code__, body.__globals__, name, body.__defaults__, body.__closure__)
    func.__qualname__ = name
    func.__doc__ = f"{doc}\n\n{body.__doc__}"
    return njit(cache=True, error_model="numpy", **options)(func)


batch_cost_serial = _build("batch_cost_serial", "Serial build: one configuration after another.")
batch_cost_parallel = _build("batch_cost_parallel", "Parallel build: configurations split across threads "
                             "(``prange``); the serial build's result, bit for bit.", parallel=True)
