"""Batch evaluation: validate M configurations once, then hand flat arrays to a kernel.

This is the Python side of :mod:`bitops.kernels`: it owns the checks, the policy overrides, the
dtype/contiguity conversions, the per-table precomputation (:func:`kernel_table`) and the choice
of engine: the numba kernels (serial or ``parallel=True`` build) or :func:`numpy_batch_cost`,
the same loops with the M configurations as numpy's vector dimension. Both give the same bits.

numba costs ~0.3 s to import and ~0.7 s to load its cached machine code, far more than a few
thousand configurations cost in numpy, so a command that evaluates only small batches (``chaincomp
simulate`` on the default grid: 24 batches of 364) should never import it. ``engine="auto"``
therefore takes the numpy route for a batch below :data:`NUMPY_MAX_CONFIGS` while numba is not
loaded, and the kernels otherwise.

The inputs are checked in the caller's dtype and cast once; nothing the size of the batch is
copied unless it must be (a dtype or layout the kernels do not take, a first/last-layer or
input-bits override, a row broadcast over M).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from bitops.cost import resolved_bits
from bitops.errors import InputError
from bitops.policy import Policy
from bitops.rules import PROB_SLACK, check_bits_array
from bitops.table import LayerTable

__all__ = ["ENGINES", "NUMPY_MAX_CONFIGS", "PARALLEL_MIN_CONFIGS", "BatchResult", "Engine", "KernelTable",
           "evaluate_batch", "kernel_table", "numpy_batch_cost"]

# Below this many configurations the parallel build does not pay for itself (2-core machine, omp
# threading layer, ResNet34 table). On idle cores it breaks even at ~64 configurations; with the
# other core busy (another engineer's tests, a training run) every parallel call waits 6-10 ms for
# OpenMP's spinning workers, whatever M (gone with OMP_WAIT_POLICY=passive), and only ~32768
# configurations (8 ms serial) cover that. The default guards the busy case; pass parallel=True
# on a machine of one's own.
PARALLEL_MIN_CONFIGS = 32768

# engine="auto" evaluates a batch of fewer configurations than this with numpy while numba is not
# loaded. Measured on the ResNet34 table (37 MAC rows, 2-core machine): importing numba and loading
# the cached kernels costs ~1 s once; per configuration the numpy route costs ~0.9 us and the
# serial kernel ~0.28 us. A batch below 8192 costs numpy under ~8 ms, <1 % of that load, so a
# process needs well over a hundred such batches before loading numba would have paid off (the
# default `chaincomp simulate` makes 24 of 364); a larger one is the mark of a dense search,
# which makes many. Once the kernels are loaded, auto uses them for every batch.
NUMPY_MAX_CONFIGS = 8192

# Elements (rows x configurations) per work array of numpy_batch_cost, which goes through a batch
# in chunks of this / rows configurations: 256 KiB of int64, sized to the cache. Measured on
# ResNet34 (37 rows), configurations per chunk -> ns per configuration: 128 -> 2500, 512 -> 1150,
# 1024 -> 900, 4096 -> 2400 (numpy's per-call overhead below, work arrays past the cache above).
_NUMPY_CHUNK_ELEMENTS = 32768

Engine = Literal["auto", "numpy", "numba"]
ENGINES: tuple[Engine, ...] = ("auto", "numpy", "numba")


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


class KernelTable(NamedTuple):
    """A table's rows under a policy, folded for the kernels (shapes, dtypes, math: :mod:`bitops.kernels`).

    A NamedTuple so that numba takes it as one tuple argument. The field order is that of the
    kernels' former positional arguments (``benches/baseline_kernels.py`` takes it unpacked).
    """

    ops_unit: np.ndarray
    in_pg_unit: np.ndarray
    in_pg_group: np.ndarray
    in_pg_div: np.ndarray
    out_unit: np.ndarray
    out_group: np.ndarray
    taps: np.ndarray
    weight_taps: np.ndarray
    segment: np.ndarray
    op_unit: np.ndarray
    op_group: np.ndarray
    op_segment: np.ndarray
    aux_per_kept: np.ndarray
    aux_fixed: int
    accumulator: bool
    nonmac_cost: int
    aux_bits: int


def kernel_table(table: LayerTable, policy: Policy) -> KernelTable:
    """The first argument of the kernels (and of :func:`numpy_batch_cost`): ``table``'s rows under ``policy``.

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
    return KernelTable(
        ops_unit=lay["macs_unit"] * policy.ops_per_mac, in_pg_unit=in_pg_unit, in_pg_group=in_pg_group,
        in_pg_div=in_pg_div, out_unit=out_unit, out_group=lay["out_group"], taps=lay["taps"],
        weight_taps=np.where(lay["has_weight"], lay["taps"], 0), segment=lay["segment"],
        op_unit=op_unit[counted], op_group=opc["group"][counted], op_segment=opc["segment"][counted],
        aux_per_kept=aux_per_kept, aux_fixed=aux_fixed, accumulator=policy.bitops_formula == "accumulator",
        nonmac_cost=policy.nonmac_bits * policy.nonmac_bits * policy.ops_per_mac, aux_bits=policy.aux_bits,
    )


def _exact_log2(values: np.ndarray) -> np.ndarray:
    """``math.log2`` of each positive integer of ``values``: the kernels' scalar log2 and ``evaluate``'s.

    numpy's vectorised ``np.log2`` differs from them in the last bit for some integers (1621,
    3242...), so each distinct value goes through ``math.log2`` once.
    """
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.array([math.log2(v) for v in distinct.tolist()], dtype=np.float64)[inverse].reshape(values.shape)


def numpy_batch_cost(table: KernelTable, w_bits: np.ndarray, a_bits: np.ndarray, kept: np.ndarray,
                     exit_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the :mod:`bitops.kernels` builds compute, same arguments and results, in numpy."""
    m = w_bits.shape[0]
    chunk = max(1, _NUMPY_CHUNK_ELEMENTS // max(table.ops_unit.shape[0], table.op_unit.shape[0], 1))
    outputs = (np.empty(m), np.empty(m), np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64))
    for lo in range(0, m, chunk):
        part = slice(lo, lo + chunk)
        for out, values in zip(outputs, _numpy_chunk(table, w_bits[part], a_bits[part], kept[part], exit_probs[part])):
            out[part] = values
    return outputs


def _numpy_chunk(table: KernelTable, w_bits: np.ndarray, a_bits: np.ndarray, kept: np.ndarray,
                 exit_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`numpy_batch_cost` of one chunk of M configurations.

    Arrays are (rows, M): every per-row quantity of every configuration at once, with the
    kernels' int64 arithmetic (exact, so its order is free) and the kernels' int64 -> float64
    conversions and float products, element by element. Only the float sums have an order, and
    they keep the kernels': a Python loop over the rows adds one (M,) row at a time, left to
    right from 0.0 (never ``np.sum``, which adds pairwise).
    """
    m = w_bits.shape[0]
    # (G + 1, M): the kept channels of each group, then a row of ones that group -1 (never
    # pruned) indexes, so that every row's width is kept_ones[group] x unit.
    kept_ones = np.ones((kept.shape[1] + 1, m), dtype=np.int64)
    kept_ones[:-1] = kept.T

    def scaled(unit: np.ndarray, group: np.ndarray) -> np.ndarray:
        """(rows, M): ``unit`` per kept channel of ``group``, or ``unit`` where group is -1."""
        return kept_ones[group] * unit[:, None]

    reach = np.empty((exit_probs.shape[1] + 1, m))
    reach[0] = 1.0
    for k in range(exit_probs.shape[1]):
        reach[k + 1] = np.maximum(reach[k] - exit_probs[:, k], 0.0)

    in_pg = scaled(table.in_pg_unit, table.in_pg_group)
    divided = np.flatnonzero(table.in_pg_div != 1)  # integer division is slow: only where it divides
    in_pg[divided] //= table.in_pg_div[divided, None]
    out_w = scaled(table.out_unit, table.out_group)
    macs = table.ops_unit[:, None] * out_w * in_pg
    wb = np.ascontiguousarray(w_bits.T, dtype=np.int64)
    ab = np.ascontiguousarray(a_bits.T, dtype=np.int64)
    if table.accumulator:
        static = macs * ((wb * ab + wb + ab).astype(np.float64) + _exact_log2(in_pg * table.taps[:, None]))
    else:
        static = (macs * wb * ab).astype(np.float64)
    r = reach[table.segment]
    layer_macs, layer_bitops = macs * r, static * r
    op_bitops = (scaled(table.op_unit, table.op_group) * table.nonmac_cost).astype(np.float64) * reach[table.op_segment]

    total_macs, total_bitops, op_total = np.zeros(m), np.zeros(m), np.zeros(m)
    for i in range(layer_macs.shape[0]):
        total_macs += layer_macs[i]
        total_bitops += layer_bitops[i]
    for j in range(op_bitops.shape[0]):
        op_total += op_bitops[j]
    weights = out_w * in_pg * table.weight_taps[:, None]
    aux = table.aux_fixed + table.aux_per_kept @ kept_ones[:-1]
    return (total_bitops + op_total, total_macs, weights.sum(axis=0) + aux,
            (weights * wb).sum(axis=0) + aux * table.aux_bits)


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
    engine: Engine = "auto",
) -> BatchResult:
    """Cost of M configurations. Each input is (M, width) or (width,), broadcast over M.

    ``w_bits``/``a_bits`` are per MAC layer (L), ``kept`` per channel group (G), ``exit_probs``
    per exit (K; default: nobody leaves early); a concatenation group's kept channels are always
    its parts' sum (:meth:`LayerTable.complete_kept`), whatever is given there. Bits and kept
    channels are whole numbers of any numeric dtype. M may be 0 (empty results).

    ``engine``: ``"numba"`` (the kernels), ``"numpy"`` (:func:`numpy_batch_cost`, no numba
    import) or ``"auto"`` (numpy for M < :data:`NUMPY_MAX_CONFIGS` while numba is not loaded,
    the kernels otherwise). The result is the same bits either way.
    ``parallel=True`` asks for the kernels' parallel build (so for numba), ``False`` for a serial
    route; ``None`` picks the parallel build for M >= :data:`PARALLEL_MIN_CONFIGS`.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "numpy" and parallel:
        raise InputError("parallel=True needs engine='numba' or 'auto', got engine='numpy'")

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
        check_bits_array(name, bits)
        _check_whole(name, bits)
    kept_rows = rows["kept"]
    _check_whole("kept", kept_rows)
    if kept_rows.size:
        kept_rows = table.complete_kept(kept_rows)
    if kept_rows.size and not (kept_rows.min() >= 1 and np.all(_column_max(kept_rows) <= table.group_channels)):
        raise InputError("kept channels must be in 1..channels of their group for every configuration")
    probs = rows["exit_probs"].astype(np.float64, copy=False)
    if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.sum(axis=1).max() > 1 + PROB_SLACK):
        raise InputError("exit_probs must be finite, >= 0 and sum to at most 1 in every configuration")

    w, a = rows["w_bits"].astype(np.uint8, copy=False), rows["a_bits"].astype(np.uint8, copy=False)
    if policy.first_last_bits is not None or policy.input_bits is not None or (
            policy.matmul_bits == "activation" and table.activation_products.size):
        w, a = resolved_bits(table, w, a, policy)  # new arrays: the caller's stay as given
    bitops, macs, params, storage = _engine(engine, parallel, m)(
        kernel_table(table, policy),
        _for_kernel(w, m, np.uint8), _for_kernel(a, m, np.uint8), _for_kernel(kept_rows, m, np.int32),
        _for_kernel(probs, m, np.float64),
    )
    return BatchResult(bitops=bitops, macs=macs, params=params, storage_bits=storage)


def _engine(engine: Engine, parallel: bool | None, m: int) -> Callable[..., tuple[np.ndarray, ...]]:
    """The function that evaluates a batch of ``m``: :func:`numpy_batch_cost` or a kernel build."""
    if engine == "auto" and not parallel and m < NUMPY_MAX_CONFIGS and "bitops.kernels" not in sys.modules:
        engine = "numpy"
    if engine == "numpy":
        return numpy_batch_cost
    from bitops import kernels  # numba is imported only here

    use_parallel = m >= PARALLEL_MIN_CONFIGS if parallel is None else parallel
    return kernels.batch_cost_parallel if use_parallel else kernels.batch_cost_serial
