"""LayerTable: the one data structure every cost is computed from.

A table is columnar: parallel numpy arrays, one entry per row.

* **MAC rows** (``layers``): one per multiply-accumulate op (conv, linear, matmul), in execution
  order. The MACs of a row at any pruning are ``macs_unit * out' * in'/groups`` where ``out'`` and
  ``in'`` are its kept output/input channels (a depthwise conv: ``macs_unit * out'``).
* **Other ops** (``ops``): BN, activations, adds, pools... with their output element counts, listed
  so a policy can count them and so nothing is silently dropped.
* **Channel groups**: channels that structured pruning must keep together (joined by a residual add
  or tied by a depthwise conv). Group ``-1`` means "never pruned" (the image channels, classifier
  outputs). A *concatenation* group (``group_parts[g]`` not empty: DenseNet's and Inception's
  ``torch.cat`` of several groups) is pruned only through its parts: its kept channels are
  always the sum of theirs (:meth:`LayerTable.complete_kept`), so a row reading it shrinks by each
  part's own rounding, as torch-pruning prunes it.
* **Exits**: ``exit_names[k]`` is the k-th exit point in depth order. A backbone row in segment
  ``s`` runs for samples that did not leave at exits ``0..s-1``; exit head ``k``'s rows are in
  segment ``k`` (they run for every sample that reaches exit ``k``).

Tables are saved as versioned JSON (``_type``/``_version``); :func:`load_table` rejects anything
else with an :class:`~bitops.errors.InputError`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from bitops.errors import InputError
from bitops.jsonio import read_json, write_json_atomic

__all__ = ["FORMAT_TYPE", "FORMAT_VERSION", "GROUPS_NOT_ANALYSED", "LayerTable", "load_table", "save_table"]

FORMAT_TYPE = "chaincomp.LayerTable"
FORMAT_VERSION = 1
# Why a traced table's layers have no channel groups when the trace was asked for none (a count
# that prunes nothing): ``ungrouped`` then holds every conv and linear with this reason.
GROUPS_NOT_ANALYSED = "channel groups not analysed (no pruning was asked)"

# Column name -> numpy dtype. Strings are kept as tuples of str, not numpy arrays.
LAYER_INT_COLUMNS = (
    "macs_unit",  # MACs per (kept output channel x kept input channel per group); conv: oh*ow*kh*kw
    "in_ch",  # input channels (linear: in_features; matmul: the reduction length)
    "out_ch",  # output channels (linear: out_features; matmul: 1)
    "groups",  # conv groups (1 for linear/matmul)
    "taps",  # weights per (output, input-per-group) pair: kh*kw for conv, 1 for linear/matmul
    "kernel_h",
    "kernel_w",
    "out_h",
    "out_w",
    "in_group",  # channel group of the input channels, -1 = never pruned
    "out_group",  # channel group of the output channels, -1 = never pruned
    "segment",  # exit segment (see module docstring)
    "exit_index",  # -1 for the backbone, k for a row of exit head k
)
LAYER_BOOL_COLUMNS = ("has_weight", "has_bias", "depthwise")
LAYER_STR_COLUMNS = ("name", "kind")
OP_INT_COLUMNS = ("elements", "channels", "group", "params", "segment", "exit_index")
OP_STR_COLUMNS = ("name", "kind", "category")
OP_CATEGORIES = ("act", "add", "bn", "other", "pool")
MAC_KINDS = ("conv", "linear", "matmul")


def _int_array(values: Sequence[int] | np.ndarray, where: str = "column") -> np.ndarray:
    """A flat int64 array; anything but a flat sequence of integers (a float, a bool, a nested list) is refused."""
    arr = np.asarray(values)
    if arr.ndim != 1 and arr.size:
        raise InputError(f"{where} must be a flat list of integers, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_):
        raise InputError(f"{where} must hold integers, got {arr.dtype.name} values")
    return np.ascontiguousarray(arr.astype(np.int64).reshape(-1))


def _bool_array(values: Sequence[bool] | np.ndarray, where: str = "column") -> np.ndarray:
    """A flat bool array; only true/false values are accepted (not "false", not 0/1)."""
    arr = np.asarray(values)
    if arr.size and (arr.ndim != 1 or arr.dtype != np.bool_):
        raise InputError(f"{where} must be a flat list of true/false values, got {arr.dtype.name} values")
    return np.ascontiguousarray(arr.astype(np.bool_).reshape(-1))


@dataclass(frozen=True, eq=False)
class LayerTable:
    """A traced model as flat columns; build it with :meth:`from_columns` or :func:`load_table`."""

    model: str
    input_shape: tuple[int, ...]
    layers: Mapping[str, Any]
    ops: Mapping[str, Any]
    group_channels: np.ndarray
    group_labels: tuple[str, ...]
    exit_names: tuple[str, ...]
    extra_params: int = 0  # learnable parameters no row owns (kept at full size; never pruned)
    unsupported_ops: Mapping[str, int] = field(default_factory=dict)
    # Parts torch-pruning prunes each group in, keeping whole channels per part (a grouped conv's groups).
    group_divisions: np.ndarray = field(default_factory=lambda: np.ones(0, dtype=np.int64))
    # Rows/modules whose channels follow no group, and why: pruning a table that has any is refused.
    ungrouped: Mapping[str, str] = field(default_factory=dict)
    # {module: parameters} of modules that never ran in the traced pass (not in extra_params).
    unused: Mapping[str, int] = field(default_factory=dict)
    # Per group: () for a group pruned on its own, ((part group, copies), ...) for a concatenation.
    group_parts: tuple[tuple[tuple[int, int], ...], ...] = ()
    notes: tuple[str, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_columns(
        cls,
        *,
        model: str,
        input_shape: Sequence[int],
        layers: Mapping[str, Sequence[Any]],
        ops: Mapping[str, Sequence[Any]],
        group_channels: Sequence[int],
        group_labels: Sequence[str],
        exit_names: Sequence[str] = (),
        extra_params: int = 0,
        unsupported_ops: Mapping[str, int] | None = None,
        notes: Sequence[str] = (),
        provenance: Mapping[str, Any] | None = None,
        group_divisions: Sequence[int] | None = None,
        ungrouped: Mapping[str, str] | None = None,
        unused: Mapping[str, int] | None = None,
        group_parts: Sequence[Sequence[Sequence[int]]] | None = None,
    ) -> LayerTable:
        """Build and validate a table from plain sequences (the JSON layout)."""
        lay: dict[str, Any] = {}
        for col in LAYER_STR_COLUMNS:
            lay[col] = tuple(str(v) for v in _required(layers, col, "layers"))
        for col in LAYER_INT_COLUMNS:
            lay[col] = _int_array(_required(layers, col, "layers"), f"layers.{col}")
        for col in LAYER_BOOL_COLUMNS:
            lay[col] = _bool_array(_required(layers, col, "layers"), f"layers.{col}")
        opc: dict[str, Any] = {}
        for col in OP_STR_COLUMNS:
            opc[col] = tuple(str(v) for v in _required(ops, col, "ops"))
        for col in OP_INT_COLUMNS:
            opc[col] = _int_array(_required(ops, col, "ops"), f"ops.{col}")
        table = cls(
            model=str(model),
            input_shape=tuple(int(v) for v in input_shape),
            layers=lay,
            ops=opc,
            group_channels=_int_array(group_channels, "group_channels"),
            group_labels=tuple(str(v) for v in group_labels),
            exit_names=tuple(str(v) for v in exit_names),
            extra_params=int(extra_params),
            unsupported_ops=dict(unsupported_ops or {}),
            notes=tuple(str(v) for v in notes),
            provenance=dict(provenance or {}),
            group_divisions=_int_array([1] * len(group_channels) if group_divisions is None else group_divisions,
                                       "group_divisions"),
            ungrouped=_str_mapping(ungrouped, "ungrouped", str),
            unused=_str_mapping(unused, "unused", int),
            group_parts=_group_parts(group_parts, len(group_channels)),
        )
        table.validate()
        return table

    def validate(self) -> None:
        """Check every cross-column invariant; raise :class:`InputError` naming the first broken."""
        n_layers = len(self.layers["name"])
        for col in (*LAYER_STR_COLUMNS, *LAYER_INT_COLUMNS, *LAYER_BOOL_COLUMNS):
            _check(len(self.layers[col]) == n_layers, f"layers.{col} must have {n_layers} entries, got {len(self.layers[col])}")
        n_ops = len(self.ops["name"])
        for col in (*OP_STR_COLUMNS, *OP_INT_COLUMNS):
            _check(len(self.ops[col]) == n_ops, f"ops.{col} must have {n_ops} entries, got {len(self.ops[col])}")
        _check(n_layers > 0, "a LayerTable needs at least one MAC-bearing layer, got 0")
        n_groups = len(self.group_channels)
        _check(len(self.group_labels) == n_groups, f"group_labels must have {n_groups} entries, got {len(self.group_labels)}")
        _check(bool(np.all(self.group_channels >= 1)), "group_channels must all be >= 1")
        _check(len(self.group_divisions) == n_groups, f"group_divisions must have {n_groups} entries, "
                                                      f"got {len(self.group_divisions)}")
        _check(bool(np.all(self.group_divisions >= 1)) and bool(np.all(self.group_channels % np.maximum(
            self.group_divisions, 1) == 0)), "group_divisions must be >= 1 and divide group_channels")
        _check(all(v >= 0 for v in self.unused.values()), "unused parameter counts must be >= 0")
        _check(len(self.group_parts) == n_groups, f"group_parts must have {n_groups} entries, got {len(self.group_parts)}")
        for g, parts in enumerate(self.group_parts):
            if not parts:
                continue
            label = self.group_labels[g]
            _check(all(0 <= p < n_groups and p != g and not self.group_parts[p] and copies >= 1 for p, copies in parts),
                   f"group_parts: concatenation {label} must list other, non-concatenation groups with copies >= 1")
            _check(int(self.group_channels[g]) == sum(copies * int(self.group_channels[p]) for p, copies in parts),
                   f"group_parts: concatenation {label} has {int(self.group_channels[g])} channels, not the sum of its parts'")
            _check(int(self.group_divisions[g]) == 1, f"group_divisions: concatenation {label} must have 1")
        n_exits = len(self.exit_names)
        _check(len(set(self.exit_names)) == n_exits, f"exit_names must be unique, got {list(self.exit_names)}")
        lay = self.layers
        for kind in set(lay["kind"]):
            _check(kind in MAC_KINDS, f"layers.kind must be one of {list(MAC_KINDS)}, got {kind!r}")
        for col in ("macs_unit", "in_ch", "out_ch", "groups", "taps"):
            _check(bool(np.all(lay[col] >= 1)), f"layers.{col} must be >= 1 in every row")
        _check(bool(np.all(lay["in_ch"] % lay["groups"] == 0)), "layers.in_ch must be a multiple of layers.groups")
        for col in ("in_group", "out_group"):
            _check(bool(np.all((lay[col] >= -1) & (lay[col] < n_groups))), f"layers.{col} must be -1 or a group index < {n_groups}")
            for row in np.flatnonzero(lay[col] >= 0):
                width = lay["in_ch" if col == "in_group" else "out_ch"][row]
                _check(width % self.group_channels[lay[col][row]] == 0,
                       f"layers.{col}: {lay['name'][row]} has {width} channels, not a multiple of its group's "
                       f"{self.group_channels[lay[col][row]]}")
        dw = lay["depthwise"]
        _check(bool(np.all(~dw | ((lay["groups"] == lay["in_ch"]) & (lay["in_ch"] == lay["out_ch"])
                                   & (lay["in_group"] == lay["out_group"])))),
               "a depthwise layer must have groups == in_ch == out_ch and in_group == out_group")
        opc = self.ops
        for cat in set(opc["category"]):
            _check(cat in OP_CATEGORIES, f"ops.category must be one of {list(OP_CATEGORIES)}, got {cat!r}")
        _check(bool(np.all(opc["channels"] >= 1)), "ops.channels must be >= 1 in every row")
        _check(bool(np.all(opc["elements"] % opc["channels"] == 0)), "ops.elements must be a multiple of ops.channels")
        _check(bool(np.all(opc["params"] % opc["channels"] == 0)), "ops.params must be a multiple of ops.channels")
        _check(bool(np.all((opc["group"] >= -1) & (opc["group"] < n_groups))), f"ops.group must be -1 or a group index < {n_groups}")
        for row in np.flatnonzero(opc["group"] >= 0):
            _check(opc["channels"][row] % self.group_channels[opc["group"][row]] == 0,
                   f"ops.group: {opc['name'][row]} has {opc['channels'][row]} channels, not a multiple of its group's")
        for part, cols in (("layers", lay), ("ops", opc)):
            seg, ex = cols["segment"], cols["exit_index"]
            _check(bool(np.all((seg >= 0) & (seg <= n_exits))), f"{part}.segment must be in 0..{n_exits}")
            _check(bool(np.all((ex >= -1) & (ex < n_exits))), f"{part}.exit_index must be -1 or < {n_exits}")
            heads = ex >= 0
            _check(bool(np.all(seg[heads] == ex[heads])), f"{part}: an exit head row must sit in the segment of its exit")
        _check(self.extra_params >= 0, f"extra_params must be >= 0, got {self.extra_params}")

    # ---- derived views ------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers["name"])

    @property
    def num_ops(self) -> int:
        return len(self.ops["name"])

    @property
    def num_groups(self) -> int:
        return len(self.group_channels)

    @property
    def num_exits(self) -> int:
        return len(self.exit_names)

    @cached_property
    def concatenations(self) -> np.ndarray:
        """Bool (G,): groups that concatenate others (pruned only through their parts)."""
        return np.array([bool(parts) for parts in self.group_parts], dtype=bool)

    def complete_kept(self, kept: np.ndarray) -> np.ndarray:
        """``kept`` (shape (..., G)) with every concatenation's entry set to the sum of its parts'
        kept channels (times their copies); the same array when the table has none."""
        if not self.concatenations.any():
            return kept
        out = np.array(kept, dtype=np.int64, copy=True)
        for g in np.flatnonzero(self.concatenations):
            out[..., g] = sum(copies * out[..., p] for p, copies in self.group_parts[g])
        return out

    @cached_property
    def backbone_rows(self) -> np.ndarray:
        return np.flatnonzero(self.layers["exit_index"] < 0)

    @cached_property
    def first_layer(self) -> int:
        """Index of the first backbone MAC row: the stem conv the policy's first-layer bits target."""
        return int(self.backbone_rows[0])

    @cached_property
    def last_layer(self) -> int:
        """Index of the last backbone MAC row: the classifier the policy's last-layer bits target."""
        return int(self.backbone_rows[-1])

    @cached_property
    def activation_products(self) -> np.ndarray:
        """Rows that multiply two activations (kind ``matmul``: no weights), as indices."""
        return np.flatnonzero(np.array([kind == "matmul" for kind in self.layers["kind"]], dtype=bool))

    @property
    def groups_analysed(self) -> bool:
        """False for a table traced without the channel-group analysis (:data:`GROUPS_NOT_ANALYSED`)."""
        return GROUPS_NOT_ANALYSED not in self.ungrouped.values()

    @cached_property
    def head_only_groups(self) -> np.ndarray:
        """Bool (G,): groups whose channels only exit-head rows produce (a head's own inner channels)."""
        lay = self.layers
        heads = set(lay["out_group"][lay["exit_index"] >= 0].tolist())
        backbone = set(lay["out_group"][lay["exit_index"] < 0].tolist())
        return np.array([g in heads and g not in backbone for g in range(self.num_groups)], dtype=bool)

    @cached_property
    def head_source_groups(self) -> np.ndarray:
        """Int (G,): for a head-only group, the group of the stage channels its head reads; else -1.

        A head added after pruning (order P before E) is built for its pruned stage, so its own
        channels follow that stage's kept width (:func:`bitops.config.heads_follow_stages`).
        """
        lay = self.layers
        source = np.full(self.num_groups, -1, dtype=np.int64)
        for row in np.flatnonzero(lay["exit_index"] >= 0):
            out = lay["out_group"][row]
            if out >= 0 and self.head_only_groups[out] and source[out] < 0:
                source[out] = lay["in_group"][row]
        return source

    def with_exits(self, names: Sequence[str] | None) -> LayerTable:
        """A table keeping only the named exit heads (``None``: all, ``[]``: none).

        Dropping exit ``j`` merges the backbone segments on either side of it; channel groups used
        only by dropped heads are dropped too (the remaining groups keep their order).
        """
        if names is None or list(names) == list(self.exit_names):
            return self
        unknown = [n for n in names if n not in self.exit_names]
        if unknown:
            raise InputError(f"--exits: unknown exit {unknown[0]!r} for {self.model}; "
                             f"available: {', '.join(self.exit_names) or '(none)'}")
        keep = [k for k, n in enumerate(self.exit_names) if n in set(names)]
        new_index = np.full(self.num_exits + 1, -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        # Backbone segment s follows exits 0..s-1; after the drop it follows the kept ones among them.
        kept_before = np.concatenate([[0], np.cumsum(np.isin(np.arange(self.num_exits), keep))])

        def remap(cols: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
            ex = cols["exit_index"]
            rows = np.flatnonzero((ex < 0) | np.isin(ex, keep))
            out = {c: _take(v, rows) for c, v in cols.items()}
            head = out["exit_index"] >= 0
            out["exit_index"] = np.where(head, new_index[np.maximum(out["exit_index"], 0)], -1)
            out["segment"] = np.where(head, out["exit_index"], kept_before[out["segment"]])
            return rows, out

        _, layers = remap(self.layers)
        _, ops = remap(self.ops)
        # Groups only the dropped heads used go too, so nothing reports or prunes a channel group
        # that no longer exists.
        used = np.unique(np.concatenate([layers["in_group"], layers["out_group"], ops["group"]]))
        used = used[used >= 0]
        used = np.unique(np.concatenate([used, [p for g in used for p, _ in self.group_parts[g]]])).astype(np.int64)
        new_group = np.full(self.num_groups + 1, -1, dtype=np.int64)  # index -1 maps "never pruned" to itself
        new_group[used] = np.arange(used.size)
        for cols, names in ((layers, ("in_group", "out_group")), (ops, ("group",))):
            for name in names:
                cols[name] = new_group[cols[name]]
        return LayerTable.from_columns(
            model=self.model, input_shape=self.input_shape, layers=layers, ops=ops,
            group_channels=self.group_channels[used], group_labels=[self.group_labels[g] for g in used],
            exit_names=[self.exit_names[k] for k in keep], extra_params=self.extra_params,
            unsupported_ops=self.unsupported_ops, notes=self.notes, provenance=self.provenance,
            group_divisions=self.group_divisions[used], ungrouped=self.ungrouped, unused=self.unused,
            group_parts=[[(int(new_group[p]), copies) for p, copies in self.group_parts[g]] for g in used],
        )

    def counting_unused(self) -> LayerTable:
        """This table with the parameters of modules that never ran counted as stored (``extra_params``)."""
        if not self.unused:
            return self
        return dataclasses.replace(self, extra_params=self.extra_params + sum(self.unused.values()), unused={})

    # ---- serialisation ------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        def plain(cols: Mapping[str, Any]) -> dict[str, list[Any]]:
            return {c: (list(v) if isinstance(v, tuple) else v.tolist()) for c, v in cols.items()}

        return {
            "_type": FORMAT_TYPE,
            "_version": FORMAT_VERSION,
            "model": self.model,
            "input_shape": list(self.input_shape),
            "exit_names": list(self.exit_names),
            "group_channels": self.group_channels.tolist(),
            "group_labels": list(self.group_labels),
            "group_divisions": self.group_divisions.tolist(),
            "group_parts": [[list(part) for part in parts] for parts in self.group_parts],
            "extra_params": self.extra_params,
            "ungrouped": dict(self.ungrouped),
            "unused": dict(self.unused),
            "unsupported_ops": dict(self.unsupported_ops),
            "notes": list(self.notes),
            "provenance": dict(self.provenance),
            "layers": plain(self.layers),
            "ops": plain(self.ops),
        }

    @classmethod
    def from_json_dict(cls, data: Any, source: str = "table") -> LayerTable:
        if not isinstance(data, dict):
            raise InputError(f"{source}: a LayerTable file must hold a JSON object, got {type(data).__name__}")
        if data.get("_type") != FORMAT_TYPE:
            raise InputError(f"{source}: _type must be {FORMAT_TYPE!r}, got {data.get('_type')!r}")
        version = data.get("_version")
        if isinstance(version, bool) or version != FORMAT_VERSION:
            raise InputError(f"{source}: _version must be {FORMAT_VERSION} (this chaincomp's format), "
                             f"got {data.get('_version')!r}; re-create it with `chaincomp count ... --save-table`")
        try:
            return cls.from_columns(
                model=data["model"], input_shape=data["input_shape"], layers=data["layers"], ops=data["ops"],
                group_channels=data["group_channels"], group_labels=data["group_labels"],
                exit_names=data.get("exit_names", []), extra_params=data.get("extra_params", 0),
                unsupported_ops=data.get("unsupported_ops"), notes=data.get("notes", []),
                provenance=data.get("provenance"), group_divisions=data.get("group_divisions"),
                ungrouped=data.get("ungrouped"), unused=data.get("unused"), group_parts=data.get("group_parts"),
            )
        except InputError as err:
            raise InputError(f"{source}: {err}") from None
        except KeyError as err:
            raise InputError(f"{source}: missing field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise InputError(f"{source}: malformed LayerTable ({err})") from None


def _str_mapping(values: Any, where: str, kind: type) -> dict[str, Any]:
    """A {str: kind} mapping (None: empty); anything else is refused naming ``where``."""
    if values is None:
        return {}
    if not isinstance(values, Mapping) or not all(
            isinstance(k, str) and isinstance(v, kind) and not isinstance(v, bool) for k, v in values.items()):
        raise InputError(f"{where} must map names to {kind.__name__} values")
    return dict(values)


def _group_parts(values: Any, n_groups: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """``group_parts`` as tuples (None: no concatenations); anything but lists of [group, copies]
    integer pairs is refused."""
    if values is None:
        return ((),) * n_groups

    def pair(part: Any) -> tuple[int, int]:
        if not (isinstance(part, (list, tuple)) and len(part) == 2
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in part)):
            raise InputError(f"group_parts must hold lists of [group, copies] integer pairs, got {part!r}")
        return int(part[0]), int(part[1])

    if not isinstance(values, (list, tuple)) or not all(isinstance(parts, (list, tuple)) for parts in values):
        raise InputError("group_parts must be a list with one list of [group, copies] pairs per group")
    return tuple(tuple(pair(part) for part in parts) for parts in values)


def _required(cols: Mapping[str, Any], col: str, part: str) -> Any:
    if not isinstance(cols, Mapping) or col not in cols:
        raise InputError(f"{part}.{col} is missing")
    return cols[col]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def _take(values: Any, rows: np.ndarray) -> Any:
    if isinstance(values, tuple):
        return tuple(values[i] for i in rows)
    return values[rows]


def save_table(table: LayerTable, path: str | os.PathLike[str]) -> None:
    """Write ``table`` as JSON atomically: a crash never leaves a partial file at ``path``."""
    write_json_atomic(table.to_json_dict(), path)


def load_table(path: str | os.PathLike[str]) -> LayerTable:
    """Read a table written by :func:`save_table`; any problem is an :class:`InputError`."""
    data = read_json(path, f"table file {str(path)!r}")
    return LayerTable.from_json_dict(data, source=f"table file {str(path)!r}")
