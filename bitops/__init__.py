"""bitops: the exact BitOps / storage cost model of chaincomp.

``import bitops`` loads numpy only: tracing (:mod:`bitops.trace`) and the zoo (:mod:`bitops.zoo`)
import torch when they are imported themselves, and the numba kernels load on the first large
batch (``bitops.batch.NUMPY_MAX_CONFIGS``); smaller ones take a numpy path with equal results.
"""

from __future__ import annotations

from bitops.batch import BatchResult, evaluate_batch
from bitops.config import BitsRule, Config, bits_from_rules, kept_channels, kept_from_mapping, kept_from_ratio, uniform_config
from bitops.cost import CostReport, Totals, evaluate, reach_probabilities, reference_totals
from bitops.errors import InputError
from bitops.policy import Policy
from bitops.table import LayerTable, load_table, save_table

__all__ = [
    "BatchResult",
    "BitsRule",
    "Config",
    "CostReport",
    "InputError",
    "LayerTable",
    "Policy",
    "Totals",
    "bits_from_rules",
    "evaluate",
    "evaluate_batch",
    "kept_channels",
    "kept_from_mapping",
    "kept_from_ratio",
    "load_table",
    "reach_probabilities",
    "reference_totals",
    "save_table",
    "uniform_config",
]
