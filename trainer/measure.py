"""BitOps, storage and their compression ratios of a real (pruned, quantized, exit-carrying) model.

Nothing is counted here: the model is traced by :func:`bitops.trace.trace_model` and costed by
:func:`bitops.evaluate`, the same code the simulator's predictions go through, so a measured and a
predicted configuration can only differ in their inputs. The inputs, read off the model:

* the table: the model's own trace. A pruned model is physically smaller, so its traced widths
  are the kept channels (every group at its full traced width);
* the bits: each row's module's ``(w_bits, a_bits)`` (:func:`trainer.quant.layer_bits`), which
  already hold the first/last-layer and input overrides, so the policy is ``Policy()``;
* the exit probabilities: measured exit rates by exit name (an exit without a rate: 0).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from bitops.config import Config
from bitops.cost import evaluate, reference_totals
from bitops.errors import InputError
from bitops.policy import FULL_PRECISION_BITS, Policy
from bitops.table import LayerTable
from bitops.trace import trace_model
from trainer.quant import float_view, layer_bits

__all__ = ["measure_cost", "measure_costs"]


def _row_bits(row: str, bits: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """Bits of a table row: its module's (``name#2``: a repeated call of ``name``; a functional op
    ``scope.matmul``: the module ``scope``), else full precision."""
    name = row.split("#")[0]
    for candidate in (name, name.rpartition(".")[0]):
        if candidate in bits:
            return bits[candidate]
    return FULL_PRECISION_BITS, FULL_PRECISION_BITS


def _exit_prob_array(exit_names: tuple[str, ...], exit_probs: Mapping[str, float] | None) -> np.ndarray:
    probs = dict(exit_probs or {})
    unknown = sorted(set(probs) - set(exit_names))
    if unknown:
        raise InputError(f"exit_probs: unknown exit {unknown[0]!r}; the model's exits are "
                         f"{', '.join(exit_names) or '(none)'}")
    return np.array([float(probs.get(name, 0.0)) for name in exit_names], dtype=np.float64)


def measure_cost(model: nn.Module, input_shape: tuple[int, int, int], reference: LayerTable,
                 exit_probs: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Cost of ``model`` on one (C, H, W) input against the original model's table ``reference``.

    Returns macs, params, bitops, storage_bits (expected over exits where weighted), the
    reference's bitops and storage_bits (full precision, no exits), bitops_cr, cr, the exit names
    and probabilities used, and each table row's ``[w_bits, a_bits]``.

    The model is traced as a CPU copy, so its device, train/eval modes and parameters are left as
    they were. Raises InputError for an exit name the model does not have, or probabilities that
    are negative or sum over 1.
    """
    return measure_costs(model, input_shape, reference, [exit_probs])[0]


def measure_costs(model: nn.Module, input_shape: tuple[int, int, int], reference: LayerTable,
                  exit_probs: Sequence[Mapping[str, float] | None]) -> list[dict[str, Any]]:
    """:func:`measure_cost` for several sets of exit probabilities (one per threshold), tracing once."""
    twin = copy.deepcopy(model).cpu()
    with float_view(twin):  # the quantizers' own ops must not enter the trace as layers
        # traced at its physical widths and costed unpruned: no channel groups needed
        table = trace_model(twin, input_shape, name=type(model).__name__, groups=False)
    module_bits = layer_bits(twin)
    row_bits = [_row_bits(row, module_bits) for row in table.layers["name"]]
    ref = reference_totals(reference)
    results = []
    for probs_by_name in exit_probs:
        probs = _exit_prob_array(table.exit_names, probs_by_name)
        config = Config(
            w_bits=np.array([w for w, _ in row_bits], dtype=np.int64),
            a_bits=np.array([a for _, a in row_bits], dtype=np.int64),
            kept=table.group_channels.copy(),
            exit_probs=probs,
        )
        totals = evaluate(table, config, Policy()).totals
        results.append({
            "macs": totals.macs,
            "params": totals.params,
            "bitops": totals.bitops,
            "storage_bits": totals.storage_bits,
            "reference_bitops": ref.bitops,
            "reference_storage_bits": ref.storage_bits,
            "bitops_cr": ref.bitops / totals.bitops,
            "cr": ref.storage_bits / totals.storage_bits,
            "exits": list(table.exit_names),
            "exit_probs": probs.tolist(),
            "layer_bits": {row: [w, a] for row, (w, a) in zip(table.layers["name"], row_bits)},
        })
    return results
