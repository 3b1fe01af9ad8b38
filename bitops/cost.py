"""Cost of one configuration, row by row: the plain-Python reference every kernel is tested against.

``evaluate`` walks the table's rows with Python ints and floats (no numpy arithmetic in the loop),
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
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitops.config import Config, uniform_config
from bitops.policy import FULL_PRECISION_BITS, Policy
from bitops.table import LayerTable

__all__ = ["CostReport", "Totals", "evaluate", "reach_probabilities", "reference_totals", "resolved_bits"]


def reach_probabilities(exit_probs: Sequence[float]) -> list[float]:
    """P(a sample reaches segment s), s = 0..K: one minus the probabilities of the exits before it."""
    reach = [1.0]
    for q in exit_probs:
        reach.append(reach[-1] - float(q))
    return reach


def resolved_bits(table: LayerTable, w_bits: np.ndarray, a_bits: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Apply the policy's first/last-layer and network-input overrides to per-layer bits.

    Works on (L,) and (M, L) arrays alike; returns new arrays.
    """
    w, a = np.array(w_bits, copy=True), np.array(a_bits, copy=True)
    if policy.first_last_bits is not None:
        for row in (table.first_layer, table.last_layer):
            w[..., row] = policy.first_last_bits
            a[..., row] = policy.first_last_bits
    if policy.input_bits is not None:
        a[..., table.first_layer] = policy.input_bits
    return w, a


def _effective_width(width: int, group: int, kept: Sequence[int], group_channels: Sequence[int]) -> int:
    if group < 0:
        return width
    return int(kept[group]) * (width // int(group_channels[group]))


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
    kept, gch = [int(v) for v in config.kept], [int(v) for v in table.group_channels]
    reach_by_segment = reach_probabilities(config.exit_probs)
    factor, aux = policy.ops_per_mac, policy.aux_bits
    lay = table.layers

    report_cols: dict[str, list[Any]] = {k: [] for k in ("in_width", "out_width", "reach", "layer_macs", "layer_bitops",
                                                          "layer_params", "layer_storage_bits")}
    for i in range(table.num_layers):
        in_w = _effective_width(int(lay["in_ch"][i]), int(lay["in_group"][i]), kept, gch)
        out_w = _effective_width(int(lay["out_ch"][i]), int(lay["out_group"][i]), kept, gch)
        in_per_group = 1 if lay["depthwise"][i] else in_w // int(lay["groups"][i])
        taps = int(lay["taps"][i])
        macs = int(lay["macs_unit"][i]) * out_w * in_per_group * factor
        wb, ab = w_bits[i], a_bits[i]
        if policy.bitops_formula == "accumulator":
            bitops_static: float = macs * (wb * ab + wb + ab + math.log2(in_per_group * taps))
        else:
            bitops_static = macs * wb * ab
        reach = reach_by_segment[int(lay["segment"][i])]
        weights = out_w * in_per_group * taps if lay["has_weight"][i] else 0
        bias = out_w if lay["has_bias"][i] else 0
        report_cols["in_width"].append(in_w)
        report_cols["out_width"].append(out_w)
        report_cols["reach"].append(reach)
        report_cols["layer_macs"].append(macs * reach)
        report_cols["layer_bitops"].append(bitops_static * reach)
        report_cols["layer_params"].append(weights + bias)
        report_cols["layer_storage_bits"].append(weights * wb + bias * aux)

    opc = table.ops
    op_elements, op_bitops, op_params, op_storage = [], [], [], []
    nonmac_cost = policy.nonmac_bits * policy.nonmac_bits * factor
    for j in range(table.num_ops):
        channels = int(opc["channels"][j])
        width = _effective_width(channels, int(opc["group"][j]), kept, gch)
        elements = int(opc["elements"][j]) // channels * width
        params = int(opc["params"][j]) // channels * width
        counted = policy.counts_category(opc["category"][j])
        op_elements.append(elements)
        op_bitops.append(elements * nonmac_cost * reach_by_segment[int(opc["segment"][j])] if counted else 0.0)
        op_params.append(params)
        op_storage.append(params * aux)

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

    Storage of the reference counts every parameter at 32 bits, whatever ``aux_bits`` says.
    """
    original = reference.with_exits([])
    ref_policy = policy.for_reference()
    config = uniform_config(original, w_bits=FULL_PRECISION_BITS, a_bits=FULL_PRECISION_BITS)
    totals = evaluate(original, config, ref_policy).totals
    return Totals(macs=totals.macs, bitops=totals.bitops, params=totals.params,
                  storage_bits=totals.params * FULL_PRECISION_BITS)
