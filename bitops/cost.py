"""Cost of one configuration, row by row: the plain-Python reference every kernel is tested against.

``quantities`` computes the bit-independent part (pruned widths, MACs, weights) with numpy for
one or many pruning configurations; ``evaluate`` then walks the rows with Python ints and floats,
so it is both the per-layer report behind ``chaincomp count --per-layer`` and the independent
implementation ``bitops.kernels`` must match exactly. For one configuration it is also the fast
path: a shipped table evaluates in well under a millisecond and needs neither numba nor torch.

Formulas (pruned widths ``in'``/``out'`` from the kept channels of the row's groups):

* MACs = macs_unit x out' x in'/groups (depthwise: macs_unit x out'), times 2 under ``ops="flops"``;
* BitOps = MACs x w_bits x a_bits, or MACs x (bw*ba + bw + ba + log2(fan_in)) (accumulator);
* a counted non-MAC op: elements' x nonmac_bits^2 (one multiply-add equivalent per element);
* expected cost = sum over rows of cost x P(a sample reaches the row's segment);
* params = weights' + bias' (+ BN and other per-channel params), never probability-weighted;
* storage bits = weights' x w_bits + (bias' + other params') x aux_bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bitops.config import Config, uniform_config
from bitops.policy import FULL_PRECISION_BITS, Policy
from bitops.table import LayerTable

__all__ = ["CostReport", "Quantities", "Totals", "evaluate", "quantities", "reach_probabilities", "reference_totals", "resolved_bits"]


def reach_probabilities(exit_probs: Sequence[float]) -> list[float]:
    """P(a sample reaches segment s), s = 0..K: one minus the probabilities of the exits before it."""
    reach = [1.0]
    for q in exit_probs:
        # Clamp at 0: probabilities that sum to 1 in decimal can leave -5e-17 in binary.
        reach.append(max(reach[-1] - float(q), 0.0))
    return reach


def resolved_bits(table: LayerTable, w_bits: np.ndarray, a_bits: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Apply the policy's activation-product, first/last-layer and network-input rules to per-layer bits.

    Works on (L,) and (M, L) arrays alike; returns new arrays.
    """
    w, a = np.array(w_bits, copy=True), np.array(a_bits, copy=True)
    products = table.activation_products
    if policy.matmul_bits == "activation" and products.size:
        w, a = (np.array(x, copy=True) for x in np.broadcast_arrays(w, a))
        w[..., products] = a[..., products]
    if policy.first_last_bits is not None:
        for row in (table.first_layer, table.last_layer):
            w[..., row] = policy.first_last_bits
            a[..., row] = policy.first_last_bits
    if policy.input_bits is not None:
        a[..., table.first_layer] = policy.input_bits
    return w, a


@dataclass(frozen=True, eq=False)
class Quantities:
    """Bit-independent per-row quantities of M pruning configurations (arrays (M, L) or (M, N)).

    Everything a cost needs besides bits, the policy and exit probabilities: the pruned widths,
    MACs (one MAC = 1), weights, biases and per-channel op elements/params.
    """

    in_width: np.ndarray
    out_width: np.ndarray
    in_per_group: np.ndarray
    macs: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    op_elements: np.ndarray
    op_params: np.ndarray


def _widths(width: np.ndarray, group: np.ndarray, kept: np.ndarray, group_channels: np.ndarray) -> np.ndarray:
    """Kept channels of each row: ``kept[g] * (width / channels of g)``, or ``width`` for group -1."""
    if group_channels.size == 0:
        return np.broadcast_to(width, (kept.shape[0], width.size)).copy()
    safe = np.maximum(group, 0)
    pruned = kept[:, safe] * (width // group_channels[safe])
    return np.where(group < 0, width, pruned)


def quantities(table: LayerTable, kept: np.ndarray) -> Quantities:
    """Pruned widths, MACs, weights and op sizes for kept channels ``kept`` of shape (G,) or (M, G)."""
    kept_m = table.complete_kept(np.atleast_2d(np.asarray(kept, dtype=np.int64)))
    lay, opc, gch = table.layers, table.ops, table.group_channels
    in_w = _widths(lay["in_ch"], lay["in_group"], kept_m, gch)
    out_w = _widths(lay["out_ch"], lay["out_group"], kept_m, gch)
    in_pg = np.where(lay["depthwise"], 1, in_w // lay["groups"])
    op_w = _widths(opc["channels"], opc["group"], kept_m, gch)
    return Quantities(
        in_width=in_w, out_width=out_w, in_per_group=in_pg,
        macs=lay["macs_unit"] * out_w * in_pg,
        weights=np.where(lay["has_weight"], out_w * in_pg * lay["taps"], 0),
        bias=np.where(lay["has_bias"], out_w, 0),
        op_elements=opc["elements"] // opc["channels"] * op_w,
        op_params=opc["params"] // opc["channels"] * op_w,
    )


@dataclass(frozen=True)
class Totals:
    """Whole-model numbers of one configuration (expected over exits where weighted)."""

    macs: float
    bitops: float
    params: int
    storage_bits: int


@dataclass(frozen=True)
class CostReport:
    """Per-row costs of one configuration plus totals; rows add up to the totals exactly."""

    table: LayerTable
    policy: Policy
    w_bits: list[int]
    a_bits: list[int]
    in_width: list[int]
    out_width: list[int]
    reach: list[float]  # per MAC row
    layer_macs: list[float]  # expected (x reach)
    layer_bitops: list[float]  # expected (x reach)
    layer_params: list[int]
    layer_storage_bits: list[int]
    op_elements: list[int]
    op_bitops: list[float]  # expected (x reach); 0 where the policy does not count the op
    op_params: list[int]
    op_storage_bits: list[int]
    extra_params: int
    totals: Totals

    def layer_rows(self) -> list[dict[str, Any]]:
        lay = self.table.layers
        return [
            {
                "name": lay["name"][i],
                "kind": lay["kind"][i],
                "segment": int(lay["segment"][i]),
                "exit": self.table.exit_names[lay["exit_index"][i]] if lay["exit_index"][i] >= 0 else None,
                "in_ch": self.in_width[i],
                "out_ch": self.out_width[i],
                "keep": self.out_width[i] / int(lay["out_ch"][i]),
                "w_bits": self.w_bits[i],
                "a_bits": self.a_bits[i],
                "reach": self.reach[i],
                "macs": self.layer_macs[i],
                "bitops": self.layer_bitops[i],
                "params": self.layer_params[i],
                "storage_bits": self.layer_storage_bits[i],
            }
            for i in range(self.table.num_layers)
        ]


def evaluate(table: LayerTable, config: Config, policy: Policy = Policy()) -> CostReport:
    """Cost of ``config`` on ``table`` under ``policy``, row by row, in plain Python."""
    config.check(table)
    w_arr, a_arr = resolved_bits(table, config.w_bits, config.a_bits, policy)
    w_bits, a_bits = [int(v) for v in w_arr], [int(v) for v in a_arr]
    reach_by_segment = reach_probabilities(config.exit_probs)
    factor, aux = policy.ops_per_mac, policy.aux_bits
    lay = table.layers

    q = quantities(table, config.kept)
    in_width, out_width = q.in_width[0].tolist(), q.out_width[0].tolist()
    in_pg, macs1, weights, bias = q.in_per_group[0].tolist(), q.macs[0].tolist(), q.weights[0].tolist(), q.bias[0].tolist()
    taps, segments = lay["taps"].tolist(), lay["segment"].tolist()
    report_cols: dict[str, list[Any]] = {"in_width": in_width, "out_width": out_width, "reach": [], "layer_macs": [],
                                         "layer_bitops": [], "layer_params": [], "layer_storage_bits": []}
    for i in range(table.num_layers):
        macs = macs1[i] * factor
        wb, ab = w_bits[i], a_bits[i]
        if policy.bitops_formula == "accumulator":
            bitops_static: float = macs * (wb * ab + wb + ab + math.log2(in_pg[i] * taps[i]))
        else:
            bitops_static = macs * wb * ab
        reach = reach_by_segment[segments[i]]
        report_cols["reach"].append(reach)
        report_cols["layer_macs"].append(macs * reach)
        report_cols["layer_bitops"].append(bitops_static * reach)
        report_cols["layer_params"].append(weights[i] + bias[i])
        report_cols["layer_storage_bits"].append(weights[i] * wb + bias[i] * aux)

    opc = table.ops
    op_elements, op_params = q.op_elements[0].tolist(), q.op_params[0].tolist()
    nonmac_cost = policy.nonmac_bits * policy.nonmac_bits * factor
    op_bitops = [elements * nonmac_cost * reach_by_segment[int(seg)] if policy.counts_category(cat) else 0.0
                 for elements, cat, seg in zip(op_elements, opc["category"], opc["segment"])]
    op_storage = [params * aux for params in op_params]

    totals = Totals(
        macs=_sum(report_cols["layer_macs"]),
        bitops=_sum(report_cols["layer_bitops"]) + _sum(op_bitops),
        params=sum(report_cols["layer_params"]) + sum(op_params) + table.extra_params,
        storage_bits=sum(report_cols["layer_storage_bits"]) + sum(op_storage) + table.extra_params * aux,
    )
    return CostReport(table=table, policy=policy, w_bits=w_bits, a_bits=a_bits, op_elements=op_elements,
                      op_bitops=op_bitops, op_params=op_params, op_storage_bits=op_storage,
                      extra_params=table.extra_params, totals=totals, **report_cols)


def _sum(values: Sequence[float]) -> float:
    """Left-to-right float sum: the same order and rounding as the kernels' loops."""
    total = 0.0
    for v in values:
        total += v
    return total


def reference_totals(reference: LayerTable, policy: Policy = Policy()) -> Totals:
    """The original model: no exit heads, nothing pruned, every layer at full precision.

    Storage of the reference counts every weight at 32 bits, and biases/BN parameters at 32
    bits too unless ``aux_bits`` is 0, which leaves them out of both sides of the CR.
    """
    original = reference.with_exits([])
    ref_policy = policy.for_reference()
    config = uniform_config(original, w_bits=FULL_PRECISION_BITS, a_bits=FULL_PRECISION_BITS)
    full = replace(ref_policy, aux_bits=FULL_PRECISION_BITS if policy.aux_bits else 0)
    return evaluate(original, config, full).totals
