"""A compression configuration of one table: per-layer bits, per-group kept channels, exit probabilities.

Builders validate at the boundary with the rules of :mod:`bitops.rules` (bits 1..32, keep ratios in
(0, 1], exit probabilities non-negative and summing to at most 1) so the evaluators and kernels can
trust their inputs.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bitops.errors import InputError
from bitops.policy import FULL_PRECISION_BITS
from bitops.rules import check_bits_array, check_exit_probs, check_keep_ratio
from bitops.table import LayerTable

__all__ = [
    "BitsRule",
    "Config",
    "bits_from_rules",
    "heads_follow_stages",
    "kept_channels",
    "kept_channels_array",
    "kept_from_ratio",
    "kept_from_mapping",
    "uniform_config",
]


@dataclass(frozen=True, eq=False)
class Config:
    """One configuration of a table: arrays of length L (layers), G (groups) and K (exits)."""

    w_bits: np.ndarray
    a_bits: np.ndarray
    kept: np.ndarray
    exit_probs: np.ndarray

    def check(self, table: LayerTable) -> None:
        """Raise :class:`InputError` unless this config fits ``table`` and every rule holds."""
        for name, arr, length in (("w_bits", self.w_bits, table.num_layers), ("a_bits", self.a_bits, table.num_layers),
                                  ("kept", self.kept, table.num_groups), ("exit_probs", self.exit_probs, table.num_exits)):
            if arr.shape != (length,):
                raise InputError(f"{name} must have {length} entries for {table.model}, got shape {arr.shape}")
        for name, bits in (("w_bits", self.w_bits), ("a_bits", self.a_bits)):
            check_bits_array(name, bits, table.layers["name"], "layer")
        derived = table.complete_kept(self.kept)
        wrong = np.flatnonzero(derived != self.kept)
        if wrong.size:
            g = int(wrong[0])
            raise InputError(f"kept channels of group {table.group_labels[g]} (a concatenation) must be the sum of its "
                             f"parts' kept channels, {int(derived[g])}, got {int(self.kept[g])}")
        bad = np.flatnonzero((self.kept < 1) | (self.kept > table.group_channels))
        if bad.size:
            g = int(bad[0])
            raise InputError(f"kept channels of group {table.group_labels[g]} must be in 1..{int(table.group_channels[g])}, "
                             f"got {int(self.kept[g])}")
        split = np.flatnonzero(self.kept % table.group_divisions)
        if split.size:
            g = int(split[0])
            raise InputError(f"kept channels of group {table.group_labels[g]} must be a multiple of its "
                             f"{int(table.group_divisions[g])} conv groups (whole channels per group), got {int(self.kept[g])}")
        pruned = np.flatnonzero(self.kept < table.group_channels)
        if pruned.size:
            check_prunable(table, "kept")
        check_exit_probs("exit_probs", self.exit_probs, table.exit_names)


def kept_channels(channels: int, keep_ratio: float, parts: int = 1) -> int:
    """Channels a group keeps at ``keep_ratio``, rounded exactly as torch-pruning does.

    torch-pruning's local (per-group) pruning keeps ``int(C * (1 - pruning_ratio))`` channels
    (``BasePruner``: ``n_pruned = C - int(C * (1 - ratio))``). The trainer passes
    ``pruning_ratio = 1 - keep_ratio``, so the same float expression is evaluated here. A group
    pruned in ``parts`` equal parts (a grouped conv's groups) keeps that many channels of each
    part of ``C / parts``: 48 channels in 6 parts of 8 keep 6 x int(8 x 0.7) = 30 at 0.7, not 33.
    """
    return int(kept_channels_array(np.asarray(channels), np.asarray(keep_ratio), np.asarray(parts)))


def kept_channels_array(channels: np.ndarray, keep_ratio: np.ndarray, parts: np.ndarray | int = 1) -> np.ndarray:
    """:func:`kept_channels` element-wise over broadcast arrays (the same IEEE float operations)."""
    pruning_ratio = 1.0 - np.asarray(keep_ratio, dtype=np.float64)
    parts = np.asarray(parts, dtype=np.int64)
    return parts * (np.asarray(channels, dtype=np.int64) // parts * (1 - pruning_ratio)).astype(np.int64)


def check_prunable(table: LayerTable, field: str) -> None:
    """Refuse to prune ``table`` when some of its layers follow no channel group: their pruned
    widths are not known, so no count of a pruned model would be exact."""
    if not table.groups_analysed:
        raise InputError(f"{field}: {table.model} was traced without its channel groups, so it cannot be pruned; "
                         "trace it with them (ModelSpec(groups=True), the default)")
    if table.ungrouped:
        names = list(table.ungrouped)
        shown = f"{names[0]}: {table.ungrouped[names[0]]}"
        more = f"; and {len(names) - 1} more" if len(names) > 1 else ""
        raise InputError(f"{field}: {table.model} can be counted unpruned only: {len(names)} layers have no "
                         f"channel groups ({shown}{more})")


def kept_from_ratio(table: LayerTable, keep_ratio: float, field: str = "keep_ratio") -> np.ndarray:
    """Kept channels of every group at one uniform keep ratio in (0, 1]; errors name ``field``."""
    check_keep_ratio(field, keep_ratio)
    if keep_ratio < 1:
        check_prunable(table, field)
    kept = kept_channels_array(table.group_channels, float(keep_ratio), table.group_divisions)
    empty = np.flatnonzero(kept < 1)
    if empty.size:
        g = int(empty[0])
        raise InputError(f"{field} {keep_ratio} keeps 0 of the {int(table.group_channels[g])} channels of group "
                         f"{table.group_labels[g]}; it must keep at least 1")
    return table.complete_kept(kept)


def kept_from_mapping(table: LayerTable, ratios: Mapping[str, float], default: float = 1.0) -> np.ndarray:
    """Kept channels from ``{group label or glob: keep ratio}``; unmatched groups keep ``default``.
    Concatenations are not matched: they follow their parts.

    Errors name ``default`` or the entry, ``ratios['layer3.*']``."""
    kept = kept_from_ratio(table, default, "default")
    labels = [label for g, label in enumerate(table.group_labels) if not table.concatenations[g]]
    for pattern, ratio in ratios.items():
        hits = [g for g, label in enumerate(table.group_labels)
                if not table.concatenations[g] and fnmatch.fnmatchcase(label, pattern)]
        if not hits:
            raise InputError(f"group {pattern!r} matches no channel group of {table.model}; "
                             f"groups are named {', '.join(labels)}")
        check_keep_ratio(f"ratios[{pattern!r}]", ratio)
        for g in hits:
            if ratio < 1:
                check_prunable(table, f"ratios[{pattern!r}]")
            kept[g] = kept_channels(int(table.group_channels[g]), float(ratio), int(table.group_divisions[g]))
            if kept[g] < 1:
                raise InputError(f"ratios[{pattern!r}] {ratio} keeps 0 channels of group "
                                 f"{table.group_labels[g]}; it must keep at least 1")
    return table.complete_kept(kept)


def heads_follow_stages(table: LayerTable, kept: np.ndarray) -> np.ndarray:
    """Kept channels where every exit head's own channels follow the stage it reads (order P before E).

    The trainer builds such a head for the pruned backbone (``bitops.zoo.exit_head`` at the
    stage's current width), so a head-only group of width C_h reading a stage group of width C_s
    keeps ``kept[s] * C_h // C_s`` channels.
    """
    out = np.array(table.complete_kept(kept), dtype=np.int64, copy=True)
    for h in np.flatnonzero(table.head_source_groups >= 0):
        src = table.head_source_groups[h]
        out[..., h] = np.minimum(table.group_channels[h],
                                 out[..., src] * table.group_channels[h] // table.group_channels[src])
    return out


@dataclass(frozen=True)
class BitsRule:
    """Bits for the layers whose name matches ``pattern`` (a name or an fnmatch glob)."""

    pattern: str
    w_bits: int | None = None
    a_bits: int | None = None


def bits_from_rules(table: LayerTable, rules: Sequence[BitsRule], w_bits: int, a_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer bits: ``w_bits``/``a_bits`` everywhere, then each rule in order (later rules win)."""
    w = np.full(table.num_layers, w_bits, dtype=np.int64)
    a = np.full(table.num_layers, a_bits, dtype=np.int64)
    names = table.layers["name"]
    for rule in rules:
        hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, rule.pattern)]
        if not hits:
            raise InputError(f"layer {rule.pattern!r} matches no layer of {table.model} "
                             f"(layers look like {names[0]!r}, {names[-1]!r})")
        if rule.w_bits is not None:
            w[hits] = rule.w_bits
        if rule.a_bits is not None:
            a[hits] = rule.a_bits
    return w, a


def uniform_config(
    table: LayerTable,
    *,
    w_bits: int = FULL_PRECISION_BITS,
    a_bits: int = FULL_PRECISION_BITS,
    keep_ratio: float = 1.0,
    exit_probs: Sequence[float] | None = None,
) -> Config:
    """The same bits everywhere, one keep ratio, and the given exit probabilities (default none leave)."""
    probs = np.zeros(table.num_exits) if exit_probs is None else np.asarray(exit_probs, dtype=np.float64)
    config = Config(
        w_bits=np.full(table.num_layers, w_bits, dtype=np.int64),
        a_bits=np.full(table.num_layers, a_bits, dtype=np.int64),
        kept=kept_from_ratio(table, keep_ratio),
        exit_probs=probs,
    )
    config.check(table)
    return config
