"""One count request, one entry point: what ``chaincomp count`` and ``chaincomp.count`` call.

:class:`CountRequest` holds what a user asks (the model, bits, pruning, exits, conventions),
checked once on construction; :func:`count` loads the tables, builds the configuration and
returns a :class:`CountResult` whose ``to_dict()`` is the report ``count --json`` prints. Errors
are :class:`bitops.InputError` messages that start with the field they are about.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitops.architectures import check_exit_head
from bitops.config import Config, bits_from_rules, heads_follow_stages, kept_from_mapping, kept_from_ratio
from bitops.errors import InputError
from bitops.result import Result
from bitops.files import read_bits_file, read_keep_file
from bitops.jsonio import check_writable, write_checked
from bitops.models import ModelSpec, load_model_table
from bitops.policy import FULL_PRECISION_BITS, Policy
from bitops.report import count_report, format_count
from bitops.rules import check_bits, check_exit_probs, check_keep_ratio

__all__ = ["CountRequest", "CountResult", "count"]


@dataclass(frozen=True)
class CountRequest:
    """What to count. Defaults are the command's: every layer at 32 bits, nothing pruned, no exits."""

    model: str  # zoo name, torchvision:NAME, module.path:callable or a LayerTable .json
    input_shape: tuple[int, int, int] | None = None  # (C, H, W); None: 3x32x32 (zoo), 3x224x224 (torchvision)
    num_classes: int | None = None  # None: the model's own (zoo: 10)
    width_mult: float = 1.0  # zoo width multiplier
    kwargs: tuple[tuple[str, Any], ...] = ()  # builder keyword arguments (torchvision, timm, your own)
    w_bits: int | None = None  # every layer's weight bits; None: 32 (or the bits file's [default])
    a_bits: int | None = None  # every layer's input-activation bits; None: 32
    bits_file: str | None = None  # TOML: per-layer bits by name or glob
    keep_ratio: float | None = None  # kept fraction of channels per group; None: 1 (or the keep file's default)
    keep_file: str | None = None  # TOML: keep ratio per channel group
    student: str | None = None  # distillation: count this model, ``model`` is the reference
    reference: str | None = None  # reference of BitOpsCR / CR (default: ``model`` itself)
    exits: tuple[str, ...] = ()  # exit points (zoo) or modules (any other model) to attach exit heads after
    exit_head: str = "conv"  # exit head design: bitops.architectures.EXIT_HEADS
    group_seconds: float | None = None  # bound on torch-pruning's channel-group analysis; None: 30 s
    exit_probs: tuple[float, ...] | None = None  # probability of leaving at each of ``exits``; None: 0 each
    heads_after_pruning: bool = False  # P before E: each head is built for its pruned stage
    count_unused: bool = False  # store the parameters of modules that never ran (GoogLeNet's aux heads)
    policy: Policy = field(default_factory=Policy)  # counting conventions
    save_table: str | None = None  # also write the traced LayerTable (all exit heads) here
    groups: bool = False  # list the channel groups even when nothing is pruned (labels for a keep file)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exits", tuple(self.exits))
        pairs = tuple(self.kwargs.items()) if isinstance(self.kwargs, dict) else tuple(tuple(p) for p in self.kwargs)
        if not all(len(p) == 2 and isinstance(p[0], str) and p[0].isidentifier() for p in pairs):
            raise InputError(f"kwargs must map keyword names to values, got {self.kwargs!r}")
        object.__setattr__(self, "kwargs", pairs)
        if self.exit_probs is not None:
            object.__setattr__(self, "exit_probs", tuple(float(p) for p in self.exit_probs))
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
            if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape):
                raise InputError(f"input_shape must be C,H,W with three positive integers, got {self.input_shape!r}")
            object.__setattr__(self, "input_shape", shape)
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int)
                                             or self.num_classes < 1):
            raise InputError(f"num_classes must be an integer >= 1, got {self.num_classes!r}")
        if isinstance(self.width_mult, bool) or not (isinstance(self.width_mult, (int, float))
                                                     and math.isfinite(self.width_mult) and self.width_mult > 0):
            raise InputError(f"width_mult must be a finite number > 0, got {self.width_mult!r}")
        check_bits("w_bits", self.w_bits, optional=True)
        check_bits("a_bits", self.a_bits, optional=True)
        if self.keep_ratio is not None:
            check_keep_ratio("keep_ratio", self.keep_ratio)
        if self.student is not None and self.reference is not None:
            raise InputError("student and `reference` cannot both be given (with a student, the model is the reference)")
        if not all(isinstance(n, str) and n for n in self.exits):
            raise InputError(f"exits must be exit point names, got {list(self.exits)!r}")
        repeated = next((n for n in self.exits if self.exits.count(n) > 1), None)
        if repeated:
            raise InputError(f"exits: exit {repeated!r} is named twice")
        if self.exit_probs is not None:
            if not self.exits:
                raise InputError("exit_probs needs `exits` (the exit points the probabilities belong to)")
            if len(self.exit_probs) != len(self.exits):
                raise InputError(f"exit_probs must give one probability per exit ({len(self.exits)}: "
                                 f"{','.join(self.exits)}), got {len(self.exit_probs)}")
            check_exit_probs("exit_probs", np.array(self.exit_probs), self.exits)
        check_exit_head("exit_head", self.exit_head)
        if self.group_seconds is not None and (isinstance(self.group_seconds, bool) or not isinstance(
                self.group_seconds, (int, float)) or not math.isfinite(self.group_seconds) or self.group_seconds <= 0):
            raise InputError(f"group_seconds must be a finite number of seconds > 0, got {self.group_seconds!r}")
        if not isinstance(self.policy, Policy):
            raise InputError(f"policy must be a bitops.Policy, got {type(self.policy).__name__}")


@dataclass(frozen=True)
class CountResult(Result):
    """The count report: ``to_dict()`` is ``count --json``; ``format()`` the table people read."""

    def format(self, per_layer: bool = False, groups: bool = False) -> str:
        return format_count(self.data, per_layer, groups)

    def to_csv(self, path: str | Path) -> None:
        """Write the per-layer rows (one per layer, the columns of ``to_dict()["layers"]``) as CSV,
        atomically; ``exit`` is empty for backbone layers."""
        import csv

        rows = self.data["layers"]
        columns = list(rows[0]) if rows else ["name"]

        def write(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=columns)
                writer.writeheader()
                writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)

        write_checked("csv", path, write)


def _prefixed(where: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function``; an InputError about a file's content is prefixed with the field and path."""
    try:
        return function(*args)
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def count(request: CountRequest) -> CountResult:
    """Load the tables, build the configuration, evaluate it against the reference."""
    r = request
    if r.save_table:
        check_writable("save_table", r.save_table)
    bits_defaults, rules = read_bits_file(r.bits_file) if r.bits_file else ({}, [])
    for key in bits_defaults:
        if getattr(r, key) is not None:
            raise InputError(f"bits_file {r.bits_file!r} sets [default] {key}; give it there or as `{key}`, not both")
    keep_default, keep_groups = read_keep_file(r.keep_file) if r.keep_file else (None, {})
    if keep_default is not None and r.keep_ratio is not None:
        raise InputError(f"keep_file {r.keep_file!r} sets a default keep ratio; give it there or as keep_ratio, "
                         "not both")

    counted = r.student or r.model
    traced_exits = r.exits if ":" in counted and not counted.endswith(".json") else ()
    # torch-pruning's channel-group analysis serves pruning only: a model that is traced (not a zoo
    # model's shipped table) runs it when the count prunes, lists the groups or saves the table.
    groups = r.groups or r.keep_ratio is not None or r.keep_file is not None or r.heads_after_pruning \
        or r.save_table is not None
    full_table = load_model_table(ModelSpec(counted, r.input_shape, r.num_classes, r.width_mult, r.kwargs,
                                            exits=traced_exits, exit_head=r.exit_head, group_seconds=r.group_seconds,
                                            groups=groups))
    if r.student or r.reference:
        ref_model = r.model if r.student else r.reference
        assert ref_model is not None
        saved = ref_model.endswith(".json")
        reference = load_model_table(ModelSpec(ref_model, input_shape=None if saved else full_table.input_shape,
                                               num_classes=None if saved else r.num_classes, groups=False))
    else:
        reference = full_table
    if r.count_unused:
        full_table, reference = full_table.counting_unused(), reference.counting_unused()
    table = full_table.with_exits(list(r.exits))
    # Exits are stored in depth order; the probabilities follow the order the user named them in.
    given = dict(zip(r.exits, r.exit_probs or [0.0] * len(r.exits)))
    probs = np.array([given[n] for n in table.exit_names], dtype=np.float64)

    w_bits, a_bits = _prefixed(f"bits_file {r.bits_file!r}", bits_from_rules, table, rules,
                               bits_defaults.get("w_bits", r.w_bits or FULL_PRECISION_BITS),
                               bits_defaults.get("a_bits", r.a_bits or FULL_PRECISION_BITS))
    default_keep = keep_default if keep_default is not None else (r.keep_ratio or 1.0)
    if keep_groups:
        kept = _prefixed(f"keep_file {r.keep_file!r}", kept_from_mapping, table, keep_groups, default_keep)
    else:
        kept = kept_from_ratio(table, default_keep)
    if r.heads_after_pruning:
        kept = heads_follow_stages(table, kept)
    data = count_report(table, Config(w_bits=w_bits, a_bits=a_bits, kept=kept, exit_probs=probs), r.policy, reference)
    if r.save_table:
        from bitops.table import save_table

        write_checked("save_table", r.save_table, lambda path: save_table(full_table, path))
    return CountResult(data)

