"""Resolve a MODEL argument to a LayerTable, from shipped tables when possible (no torch).

MODEL is one of:

* a zoo name (``resnet34_cifar``...): the pre-traced table shipped in ``bitops/shipped/`` for
  10 or 100 classes at width 1 (and the narrower MobileNetV2 students), all exit heads present
  (select them with ``with_exits``); any other variant is traced from :mod:`bitops.zoo`;
* ``torchvision:NAME``, ``timm:NAME`` (timm installed), ``module.path:callable`` or
  ``path/to/file.py:callable``: built (random weights, builder ``kwargs``) and traced;
* a path to a LayerTable ``.json`` (``chaincomp count ... --save-table`` writes one).

``python -m bitops.models`` re-traces the zoo and rewrites the shipped tables.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from bitops.architectures import check_exit_head
from bitops.errors import InputError
from bitops.table import LayerTable, load_table, save_table

__all__ = ["SHIPPED_CLASSES", "SHIPPED_DIR", "SHIPPED_HEADS", "SHIPPED_INPUTS", "SHIPPED_WIDTHS", "ModelSpec",
           "load_model_table", "shipped_table", "shipped_variants", "zoo_names"]

SHIPPED_DIR = Path(__file__).parent / "shipped"
SHIPPED_CLASSES = (10, 100)  # CIFAR-10 / SVHN / CINIC-10 heads, and CIFAR-100 heads
# Narrower widths shipped too: the paper's MobileNetV2 student is a narrower MobileNetV2 (section 7).
SHIPPED_WIDTHS = {"mobilenetv2_cifar": (0.5, 0.75)}
# Other input sizes shipped too: the trainer's offline default (digits upsampled to 16x16), so the
# simulator's default setup is costed without torch.
SHIPPED_INPUTS = {"resnet8": ((3, 16, 16),), "resnet20": ((3, 16, 16),)}
# Other exit head designs shipped too, at each of the model's shipped sizes: the trainer's default
# teacher and student with pool heads, so a profile measured with them is costed without torch.
SHIPPED_HEADS = {"resnet8": ("pool", "pool4"), "resnet20": ("pool", "pool4")}
ZOO_INPUT_SHAPE = (3, 32, 32)


def _shipped_path(name: str, num_classes: int, width_mult: float = 1.0,
                  input_shape: tuple[int, ...] = ZOO_INPUT_SHAPE, exit_head: str = "conv") -> Path:
    width = "" if width_mult == 1.0 else f"-w{width_mult:g}"
    size = "" if tuple(input_shape) == ZOO_INPUT_SHAPE else f"-s{input_shape[1]}"
    head = "" if exit_head == "conv" else f"-h{exit_head}"
    return SHIPPED_DIR / f"{name}{width}{size}{head}-c{num_classes}.json"


def shipped_variants() -> list[tuple[str, int, float, tuple[int, ...], str]]:
    """Every shipped table as (name, num_classes, width_mult, input_shape, exit_head)."""
    from bitops.architectures import ZOO_NAMES

    variants = []
    for name in ZOO_NAMES:
        sizes = [(w, ZOO_INPUT_SHAPE) for w in (1.0, *SHIPPED_WIDTHS.get(name, ()))]
        sizes += [(1.0, tuple(shape)) for shape in SHIPPED_INPUTS.get(name, ())]
        heads = ("conv", *SHIPPED_HEADS.get(name, ()))
        for (width, shape), head, classes in itertools.product(sizes, heads, SHIPPED_CLASSES):
            if head == "conv" or width == 1.0:
                variants.append((name, classes, width, shape, head))
    return variants


def zoo_names() -> tuple[str, ...]:
    """Zoo models with shipped tables (a test checks this equals ``bitops.architectures.ZOO_NAMES``)."""
    return tuple(sorted({p.name.rsplit("-c", 1)[0].split("-w")[0].split("-s")[0].split("-h")[0]
                         for p in SHIPPED_DIR.glob("*-c*.json")}))


def shipped_table(name: str, num_classes: int = 10, width_mult: float = 1.0,
                  input_shape: tuple[int, ...] = ZOO_INPUT_SHAPE, exit_head: str = "conv") -> LayerTable | None:
    if len(input_shape) != 3 or input_shape[0] != 3 or input_shape[1] != input_shape[2]:
        return None
    path = _shipped_path(name, num_classes, width_mult, input_shape, exit_head)
    return load_table(path) if path.exists() else None


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for: MODEL plus the options that change the traced architecture."""

    model: str
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    width_mult: float = 1.0
    kwargs: tuple[tuple[str, Any], ...] = ()  # keyword arguments of a torchvision, timm or user builder
    exits: tuple[str, ...] = ()  # modules to attach exit heads after (not zoo: its tables hold every head)
    exit_head: str = "conv"  # exit head design (bitops.architectures.EXIT_HEADS)
    group_seconds: float | None = None  # bound on torch-pruning's analysis (None: trace.GROUP_SECONDS)
    groups: bool = True  # run that analysis when tracing (False: a table that cannot be pruned)

    @property
    def is_zoo(self) -> bool:
        return ":" not in self.model and not self.model.endswith(".json")


def _trace_zoo(spec: ModelSpec, input_shape: tuple[int, ...]) -> LayerTable:
    from bitops import trace, zoo

    def build():
        return zoo.build(spec.model, num_classes=spec.num_classes or 10, width_mult=spec.width_mult, exits=True,
                         exit_head_kind=spec.exit_head)

    head = {} if spec.exit_head == "conv" else {"exit_head": spec.exit_head}
    return trace.build_and_trace(build, input_shape, name=spec.model, what="`input_shape` or `width_mult`",
                                 group_seconds=spec.group_seconds, groups=spec.groups,
                                 provenance={"zoo": spec.model, "num_classes": spec.num_classes or 10,
                                             "width_mult": spec.width_mult, **head})


def load_model_table(spec: ModelSpec) -> LayerTable:
    """The table of ``spec``: shipped, loaded from JSON, or traced (imports torch only then)."""
    check_exit_head("exit_head", spec.exit_head)
    if spec.kwargs and (spec.is_zoo or spec.model.endswith(".json")):
        raise InputError(f"kwargs apply to torchvision, timm and your own builders, not to {spec.model}")
    if spec.model.endswith(".json") and spec.exit_head != "conv":
        raise InputError(f"exit_head: {spec.model} is a saved table; its exit heads are traced in it")
    if spec.model.endswith(".json"):
        if spec.num_classes is not None or spec.width_mult != 1.0 or spec.input_shape is not None:
            raise InputError(f"MODEL: {spec.model} is a saved table; `num_classes`, `width_mult` and `input_shape` "
                             "cannot change it (re-trace the model instead)")
        return load_table(spec.model)
    if spec.is_zoo:
        names = zoo_names()
        if spec.model not in names:
            raise InputError(f"MODEL: unknown model {spec.model!r}; expected a zoo name ({', '.join(names)}), "
                             "torchvision:NAME, timm:NAME, module.path:callable, path/to/file.py:callable, or a LayerTable .json file")
        input_shape = tuple(spec.input_shape or ZOO_INPUT_SHAPE)
        table = shipped_table(spec.model, spec.num_classes or 10, spec.width_mult, input_shape, spec.exit_head)
        return table if table is not None else _trace_zoo(spec, input_shape)
    if spec.width_mult != 1.0:
        raise InputError(f"width_mult applies to zoo models only, got {spec.width_mult} for {spec.model}")
    from bitops import trace

    kwargs = dict(spec.kwargs)
    if spec.model.startswith(("torchvision:", "timm:")):
        native = trace.timm_input_shape if spec.model.startswith("timm:") else trace.torchvision_input_shape
        return trace.build_and_trace(lambda: trace.module_from_spec(spec.model, spec.num_classes, kwargs),
                                     spec.input_shape or native(spec.model), name=spec.model, what="`input_shape`",
                                     exits=spec.exits, exit_head=spec.exit_head, group_seconds=spec.group_seconds,
                                     groups=spec.groups)
    factory = trace.user_callable(spec.model)
    shape = spec.input_shape or _documented_input(spec.model, factory)
    if spec.num_classes is not None:
        kwargs["num_classes"] = spec.num_classes
    return trace.build_and_trace(lambda: trace.build_user(spec.model, factory, kwargs), shape,
                                 name=spec.model, what="`input_shape`", exits=spec.exits, exit_head=spec.exit_head,
                                 group_seconds=spec.group_seconds, groups=spec.groups)


def _documented_input(model: str, factory: object) -> tuple[int, ...]:
    """The input shape a user's builder documents as its ``input_shape`` attribute (C, H, W); there
    is no default to fall back on, since a wrong size counts a wrong model without a word."""
    shape = getattr(factory, "input_shape", None)
    if shape is None:
        raise InputError(f"input_shape: {model} is not a zoo or torchvision model, so give its input (C,H,W), "
                         "or give the callable an attribute input_shape = (C, H, W)")
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
        raise InputError(f"input_shape: {model}.input_shape must be three positive integers (C, H, W), got {shape!r}")
    return tuple(shape)


def regenerate_shipped(names: Sequence[str], out_dir: Path = SHIPPED_DIR) -> list[Path]:
    """Trace the :func:`shipped_variants` of zoo models ``names`` and write their tables."""
    written = []
    for name, classes, width, shape, head in shipped_variants():
        if name not in names:
            continue
        spec = ModelSpec(name, input_shape=shape, num_classes=classes, width_mult=width, exit_head=head)
        path = out_dir / _shipped_path(name, classes, width, shape, head).name
        save_table(_trace_zoo(spec, shape), path)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from bitops.architectures import ZOO_NAMES

    parser = argparse.ArgumentParser(prog="python -m bitops.models", description="Re-trace the zoo into bitops/shipped/.")
    parser.add_argument("names", nargs="*", default=list(ZOO_NAMES), help="zoo models (default: all)")
    args = parser.parse_args(argv)
    for path in regenerate_shipped(args.names):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
