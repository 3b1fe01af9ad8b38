"""The flat training options of ``chaincomp train`` / ``profile`` / ``confirm`` and the Python API,
and the one builder of a :class:`trainer.config.ChainConfig` from them. Torch-free.

Every default is the config dataclasses' own (one source); the command line shows them in
``--help``. A rule a config breaks is reported under the flat option's name
(:func:`flat_message`): ``DistillConfig.epochs`` is ``distill_epochs`` here and ``--distill-epochs``
on the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bitops.architectures import ZOO_NAMES
from bitops.errors import InputError
from bitops.orders import validate_order
from trainer.config import ChainConfig, DataConfig, DistillConfig, ExitConfig, PruneConfig, QuantConfig, TrainConfig

__all__ = ["DEFAULT_GRIDS", "FLAT_OF_PATH", "TrainingOptions", "chain_config", "flat_message", "parse_grid"]


@dataclass(frozen=True)
class TrainingOptions:
    """Base model, data and stage hyperparameters, flat; defaults are the configs'."""

    teacher: str = ChainConfig.teacher
    student: str = DistillConfig.student
    student_width_mult: float = DistillConfig.width_mult
    dataset: str = DataConfig.dataset
    data_dir: str | None = DataConfig.data_dir
    download: bool = DataConfig.download
    image_size: int = DataConfig.image_size
    batch_size: int = DataConfig.batch_size
    epochs: int = TrainConfig.epochs
    lr: float = TrainConfig.lr
    distill_epochs: int = DistillConfig.epochs
    temperature: float = DistillConfig.temperature
    alpha: float = DistillConfig.alpha
    prune_ratio: float = PruneConfig.ratio
    finetune_epochs: int = PruneConfig.finetune_epochs  # after P and after Q
    w_bits: int = QuantConfig.w_bits
    a_bits: int = QuantConfig.a_bits
    first_last_bits: int | None = QuantConfig.first_last_bits
    input_bits: int | None = QuantConfig.input_bits
    exits: tuple[str, ...] | None = ExitConfig.exits
    thresholds: tuple[float, ...] = ExitConfig.thresholds
    threshold: float = ExitConfig.threshold
    exit_epochs: int = ExitConfig.epochs
    exit_head: str = ExitConfig.head
    device: str = ChainConfig.device
    seed: int = ChainConfig.seed


# (ChainConfig part, config field) -> flat option field; the one table between the two namings.
FLAT_OF_PATH = {
    "teacher": "teacher", "device": "device", "seed": "seed", "order": "order", "allow_repeat": "allow_repeat",
    "data.dataset": "dataset", "data.data_dir": "data_dir", "data.download": "download",
    "data.image_size": "image_size", "data.batch_size": "batch_size", "data.seed": "seed",
    "base.epochs": "epochs", "base.lr": "lr",
    "distill.student": "student", "distill.width_mult": "student_width_mult", "distill.epochs": "distill_epochs",
    "distill.temperature": "temperature", "distill.alpha": "alpha",
    "prune.ratio": "prune_ratio", "prune.finetune_epochs": "finetune_epochs",
    "quant.w_bits": "w_bits", "quant.a_bits": "a_bits", "quant.first_last_bits": "first_last_bits",
    "quant.input_bits": "input_bits", "quant.finetune_epochs": "finetune_epochs",
    "exits.exits": "exits", "exits.thresholds": "thresholds", "exits.threshold": "threshold",
    "exits.epochs": "exit_epochs", "exits.head": "exit_head",
}
_LEADING = re.compile(r"[A-Za-z_][A-Za-z_0-9.]*")


def flat_message(message: str, part: str | None = None) -> str:
    """``message`` with its leading field (``ratio`` of the ``prune`` part, or a dotted path such as
    ``prune.ratio``) renamed to the flat option (``prune_ratio``)."""
    match = _LEADING.match(message)
    if match is None:
        return message
    token = match.group(0)
    path = token if "." in token or part is None else f"{part}.{token}"
    flat = FLAT_OF_PATH.get(path)
    return message if flat is None else flat + message[match.end():]


def _part(part: str, config_type: type, **kwargs: Any) -> Any:
    try:
        return config_type(**kwargs)
    except InputError as err:
        raise InputError(flat_message(str(err), part)) from None


def chain_config(order: str, options: TrainingOptions = TrainingOptions(), allow_repeat: bool = False) -> ChainConfig:
    """The ChainConfig of ``order`` under ``options``; errors name the flat option."""
    o = options
    try:
        validate_order(order, allow_repeat)
    except InputError as err:
        raise InputError(f"order: {err}") from None
    try:
        return ChainConfig(
            order=order, teacher=o.teacher,
            data=_part("data", DataConfig, dataset=o.dataset, data_dir=o.data_dir, download=o.download,
                       image_size=o.image_size, batch_size=o.batch_size, seed=o.seed),
            base=_part("base", TrainConfig, epochs=o.epochs, lr=o.lr),
            distill=_part("distill", DistillConfig, student=o.student, temperature=o.temperature, alpha=o.alpha,
                          epochs=o.distill_epochs, width_mult=o.student_width_mult),
            prune=_part("prune", PruneConfig, ratio=o.prune_ratio, finetune_epochs=o.finetune_epochs),
            quant=_part("quant", QuantConfig, w_bits=o.w_bits, a_bits=o.a_bits, first_last_bits=o.first_last_bits,
                        input_bits=o.input_bits, finetune_epochs=o.finetune_epochs),
            exits=_part("exits", ExitConfig, exits=o.exits, thresholds=o.thresholds, threshold=o.threshold,
                        epochs=o.exit_epochs, head=o.exit_head),
            device=o.device, seed=o.seed, allow_repeat=allow_repeat,
        )
    except InputError as err:
        raise InputError(flat_message(str(err))) from None


# What each method varies when it is profiled or planned over a grid (D: students; E: thresholds).
DEFAULT_GRIDS: dict[str, tuple[Any, ...]] = {
    "D": ("resnet8",),
    "P": (0.25, 0.5, 0.75),
    "Q": (1, 2, 4, 8),
    "E": (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
}


def parse_grid(method: str, text: str) -> tuple[Any, ...]:
    """Grid values of one method from ``a,b,c`` (students for D, numbers otherwise)."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise InputError(f"grid for {method} must list at least one value, got {text!r}")
    if method == "D":
        unknown = [v for v in items if v not in ZOO_NAMES]
        if unknown:
            raise InputError(f"grid for D lists students; {unknown[0]!r} is not a zoo model ({', '.join(ZOO_NAMES)})")
        return tuple(items)
    try:
        values = tuple(int(v) if method == "Q" else float(v) for v in items)
    except ValueError:
        kind = "integer weight bits" if method == "Q" else "numbers"
        raise InputError(f"grid for {method} must be comma-separated {kind}, got {text!r}") from None
    return values
