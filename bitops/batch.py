"""Batch evaluation: validate M configurations once, then hand flat arrays to a numba kernel.

This is the Python side of :mod:`bitops.kernels`: it owns the checks, the policy overrides, the
dtype/contiguity conversions, the per-table precomputation (:func:`kernel_table`) and the choice
between the serial and the ``parallel=True`` build.

The inputs are checked in the caller's dtype and cast once; nothing the size of the batch is
copied unless it must be (a dtype or layout the kernels do not take, a first/last-layer or
input-bits override, a row broadcast over M).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitops.config import PROB_SLACK
from bitops.cost import resolved_bits
from bitops.errors import InputError
from bitops.policy import FULL_PRECISION_BITS, Policy
from bitops.table import LayerTable

__all__ = ["PARALLEL_MIN_CONFIGS", "BatchResult", "evaluate_batch", "kernel_table"]

# Below this many configurations the parallel build does not pay for itself (2-core machine, omp
# threading layer, ResNet34 table). On idle cores it breaks even at ~64 configurations; with the
# other core busy (another engineer's tests, a training run) every parallel call waits 6-10 ms for
# OpenMP's spinning workers, whatever M (gone with OMP_WAIT_POLICY=passive), and only ~32768
# configurations (8 ms serial) cover that. The default guards the busy case; pass parallel=True
# on a machine of one's own.
PARALLEL_MIN_CONFIGS = 32768


@dataclass(frozen=True, eq=False)
class BatchResult:
    """Totals of M configurations, each an array of length M (BitOps/MACs expected over exits)."""

    bitops: np.ndarray
    macs: np.ndarray
    params: np.ndarray
    storage_bits: np.ndarray


def _per_kept_channel(size: np.ndarray, group: np.ndarray, group_channels: np.ndarray) -> np.ndarray:
    """``size`` per kept channel of each row's group (``size // channels of the group``); ``size`` where group is -1."""
    if group_channels.size == 0:  # no groups: every row is never pruned
        return size.copy()
    return np.where(group < 0, size, size // group_channels[np.maximum(group, 0)])


def kernel_table(table: LayerTable, policy: Policy) -> tuple:
    """The leading arguments of the :mod:`bitops.kernels` builds: ``table``'s rows under ``policy``.

    The layout is in the kernels' module docstring. Everything is folded with integer arithmetic,
    so the kernels stay exact: widths become units (``in_ch // channels of in_group``...),
    ``ops_per_mac`` goes into the MACs per unit, op rows the policy does not count drop out, and
    every parameter stored at ``aux_bits`` (MAC-row biases, op-row parameters, ``extra_params``)
    becomes one count per kept channel of each group plus one never-pruned count.
    """
    lay, opc, gch = table.layers, table.ops, table.group_channels
    in_unit = _per_kept_channel(lay["in_ch"], lay["in_group"], gch)
    out_unit = _per_kept_channel(lay["out_ch"], lay["out_group"], gch)
    # in_pg = in' // groups (depthwise: 1) = kept[in_pg_group] x in_pg_unit // in_pg_div, divided
    # here wherever the quotient is whole per kept channel or the row is never pruned, so that only
    # a pruned grouped conv whose unit is no multiple of its groups divides in the loop.
    depthwise, groups = lay["depthwise"], lay["groups"]
    whole = depthwise | (lay["in_group"] < 0) | (in_unit % groups == 0)
    in_pg_unit = np.where(depthwise, 1, np.where(whole, in_unit // groups, in_unit))
    in_pg_group = np.where(depthwise, -1, lay["in_group"])
    in_pg_div = np.where(whole, 1, groups)
    # Op rows the policy does not count cost 0.0 BitOps, and adding 0.0 changes no sum.
    counted = np.array([policy.counts_category(c) for c in opc["category"]], dtype=bool)
    op_channels_unit = _per_kept_channel(opc["channels"], opc["group"], gch)
    op_unit = opc["elements"] // opc["channels"] * op_channels_unit
    # Stored at aux_bits: each MAC row's bias (out' values) and each op row's parameters.
    bias = lay["has_bias"]
    aux_group = np.concatenate([lay["out_group"][bias], opc["group"]])
    aux_unit = np.concatenate([out_unit[bias], opc["params"] // opc["channels"] * op_channels_unit])
    pruned = aux_group >= 0
    aux_per_kept = np.zeros(table.num_groups, dtype=np.int64)
    np.add.at(aux_per_kept, aux_group[pruned], aux_unit[pruned])
    aux_fixed = int(aux_unit[~pruned].sum()) + table.extra_params
    return (
        lay["macs_unit"] * policy.ops_per_mac, in_pg_unit, in_pg_group, in_pg_div, out_unit, lay["out_group"],
        lay["taps"], np.where(lay["has_weight"], lay["taps"], 0), lay["segment"],
        op_unit[counted], opc["group"][counted], opc["segment"][counted], aux_per_kept, aux_fixed,
        policy.bitops_formula == "accumulator", policy.nonmac_bits * policy.nonmac_bits * policy.ops_per_mac,
        policy.aux_bits,
    )


def _as_rows(name: str, values: np.ndarray, width: int) -> np.ndarray:
    """``values`` as a 2-D (rows, width) view, rows = M or 1; a (width,) vector is one row."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must be numbers, got an array of dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise InputError(f"{name} must have shape (M, {width}) or ({width},), got {np.shape(values)}")
    return arr


def _column_max(values: np.ndarray) -> np.ndarray:
    """Per-column max of (rows >= 1, width >= 1) ``values``: ``values.max(axis=0)``, NaN included, faster.

    numpy reduces axis 0 of a narrow array one short row at a time (18 ms for 1e6 x 20 int32);
    folded into rows of ``block`` configurations first, the same reduction runs over long
    contiguous rows (3 ms), and the ``block`` partial maxima plus the left-over rows are reduced last.
    """
    rows, width = values.shape
    block = max(1, 4096 // width)
    folded = rows - rows % block
    parts = [values[folded:]]
    if folded:
        parts.append(values[:folded].reshape(-1, block * width).max(axis=0).reshape(block, width))
    return np.concatenate(parts).max(axis=0)


def _check_whole(name: str, values: np.ndarray) -> None:
    """Counts (bits, channels) given as floats must be whole numbers: 7.5 bits is no configuration."""
    if values.dtype.kind == "f":
        fractional = values[values != np.trunc(values)]
        if fractional.size:
            raise InputError(f"{name} must be whole numbers, got {fractional[0]}")


def _for_kernel(rows: np.ndarray, m: int, dtype: type) -> np.ndarray:
    """(1 or m, width) rows as the kernels take them: C-contiguous (m, width) of ``dtype``."""
    if rows.shape[0] == m:
        return np.ascontiguousarray(rows, dtype=dtype)  # no copy when already so
    out = np.empty((m, rows.shape[1]), dtype=dtype)
    out[:] = rows
    return out


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
    per exit (K; default: nobody leaves early). Bits and kept channels are whole numbers of any
    numeric dtype. M may be 0 (empty results). ``parallel=None`` picks the parallel build for
    M >= :data:`PARALLEL_MIN_CONFIGS`.
    """
    from bitops import kernels  # numba is imported only when a batch is evaluated

    given = {"w_bits": (w_bits, table.num_layers), "a_bits": (a_bits, table.num_layers),
             "kept": (kept, table.num_groups),
             "exit_probs": (np.zeros(table.num_exits) if exit_probs is None else exit_probs, table.num_exits)}
    rows = {name: _as_rows(name, values, width) for name, (values, width) in given.items()}
    sizes = [r.shape[0] for r in rows.values()]
    m = 0 if 0 in sizes and max(sizes) == 1 else max(sizes)  # (0, width) beside one-row inputs: an empty batch
    for name, r in rows.items():
        if r.shape[0] not in (1, m):
            raise InputError(f"{name} must have shape (M, {r.shape[1]}) or ({r.shape[1]},), "
                             f"got {np.shape(given[name][0])}")

    # The caller's bits, before the policy's overrides: like evaluate, a 0 on the stem is an error
    # even where first_last_bits would replace it.
    for name in ("w_bits", "a_bits"):
        bits = rows[name]
        if bits.size and not (1 <= bits.min() and bits.max() <= FULL_PRECISION_BITS):
            raise InputError(f"{name} must be in 1..{FULL_PRECISION_BITS}, got values in {bits.min()}..{bits.max()}")
        _check_whole(name, bits)
    kept_rows = rows["kept"]
    if kept_rows.size and not (kept_rows.min() >= 1 and np.all(_column_max(kept_rows) <= table.group_channels)):
        raise InputError("kept channels must be in 1..channels of their group for every configuration")
    _check_whole("kept", kept_rows)
    probs = rows["exit_probs"].astype(np.float64, copy=False)
    if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.sum(axis=1).max() > 1 + PROB_SLACK):
        raise InputError("exit_probs must be finite, >= 0 and sum to at most 1 in every configuration")

    w, a = rows["w_bits"].astype(np.uint8, copy=False), rows["a_bits"].astype(np.uint8, copy=False)
    if policy.first_last_bits is not None or policy.input_bits is not None:
        w, a = resolved_bits(table, w, a, policy)  # new arrays: the caller's stay as given
    use_parallel = m >= PARALLEL_MIN_CONFIGS if parallel is None else parallel
    kernel = kernels.batch_cost_parallel if use_parallel else kernels.batch_cost_serial
    bitops, macs, params, storage = kernel(
        *kernel_table(table, policy),
        _for_kernel(w, m, np.uint8), _for_kernel(a, m, np.uint8), _for_kernel(kept_rows, m, np.int32),
        _for_kernel(probs, m, np.float64),
    )
    return BatchResult(bitops=bitops, macs=macs, params=params, storage_bits=storage)
