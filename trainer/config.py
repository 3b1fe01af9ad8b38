"""The trainer's configurations: one frozen dataclass per concept, every value checked once, on
construction, by the rules of :mod:`bitops.rules`. No torch: the CLI, the simulator and a campaign
driver build and check configs without loading it.

A rule a config breaks is an :class:`bitops.errors.InputError` whose message starts with the
field: a stage config's own field (``ratio must be in [0, 1), got 1.0``), and for the rules that
:class:`ChainConfig` checks across its parts, the dotted path inside it (``prune.ratio``,
``exits.exits``, ``distill.student``). The command line maps these names to its options.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bitops.architectures import ZOO_NAMES, check_exit_head, exit_points
from bitops.errors import InputError
from bitops.orders import validate_order
from bitops.rules import (check_bits, check_integer, check_positive, check_probability, check_prune_ratio,
                          check_threshold)

__all__ = [
    "DATASETS",
    "DATASET_CLASSES",
    "NO_DOWNLOAD",
    "ChainConfig",
    "DataConfig",
    "DistillConfig",
    "ExitConfig",
    "PruneConfig",
    "QuantConfig",
    "TrainConfig",
]

# The datasets the trainer reads, and their classes (the classifier's outputs): known without torch,
# so every model check runs before a run imports it.
DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "svhn": 10, "cinic10": 10}
DATASETS: tuple[str, ...] = tuple(DATASET_CLASSES)
# Datasets torchvision cannot download, and where to get them instead (trainer.data says so too).
NO_DOWNLOAD = {"cinic10": "torchvision has no CINIC-10 downloader; get it from https://github.com/BayesWatch/cinic-10"}
# Digits are 8x8: smaller would throw pixels away; 128 keeps the in-memory set under ~0.4 GB.
IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 8, 128
# scikit-learn and numpy take seeds in 0..2**32-1.
SEED_MAX = 2**32 - 1


def _check_zoo_name(name: str, value: Any) -> None:
    if value not in ZOO_NAMES:
        raise InputError(f"{name} must be a zoo model ({', '.join(ZOO_NAMES)}), got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which data to load and how to batch it (``trainer.data.load_data`` loads it)."""

    dataset: str = "digits"  # runs anywhere: no network, no files
    data_dir: str | None = None  # where cifar10/cifar100/svhn/cinic10 live (required for them)
    download: bool = False  # torchvision downloads into data_dir only when asked
    image_size: int = 16  # digits only (upsampled from 8x8); CIFAR-style sets are always 32
    batch_size: int = 64
    seed: int = 0  # fixes the splits and the train loader's shuffling

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise InputError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        check_integer("image_size", self.image_size, IMAGE_SIZE_MIN, IMAGE_SIZE_MAX)
        check_integer("batch_size", self.batch_size, 1)
        check_integer("seed", self.seed, 0, SEED_MAX)
        if self.download and self.dataset in NO_DOWNLOAD:
            raise InputError(f"download is not available for {self.dataset} ({NO_DOWNLOAD[self.dataset]}), "
                             f"got download=True")


@dataclass(frozen=True)
class TrainConfig:
    """Training of the base (teacher) model; ``lr`` is the initial learning rate every stage scales."""

    epochs: int = 15  # the paper trains 200 epochs on CIFAR; 15 suits the offline digits default
    lr: float = 0.05  # SGD + cosine; D and E train at it, P and Q fine-tune at lr / 10

    def __post_init__(self) -> None:
        check_integer("epochs", self.epochs)
        check_positive("lr", self.lr)


@dataclass(frozen=True)
class DistillConfig:
    """D: Hinton knowledge distillation into a fresh zoo student."""

    student: str = "resnet8"  # a bitops.zoo name; the paper distils ResNet34 -> ResNet18 and the like
    temperature: float = 4.0  # Tian et al. 2020's default for KD
    alpha: float = 0.9  # weight of the soft (teacher) term; 1 - alpha weighs the hard labels
    epochs: int = 15  # trained at the base learning rate, as the paper trains students
    width_mult: float = 1.0  # the student's zoo width, e.g. 0.5 for the paper's thin MobileNetV2

    def __post_init__(self) -> None:
        _check_zoo_name("student", self.student)
        check_positive("temperature", self.temperature)
        check_probability("alpha", self.alpha)
        check_integer("epochs", self.epochs)
        check_positive("width_mult", self.width_mult)


@dataclass(frozen=True)
class PruneConfig:
    """P: uniform structured channel pruning, then fine-tuning."""

    ratio: float = 0.5  # fraction of each channel group removed; bitops' keep_ratio is 1 - ratio
    finetune_epochs: int = 15

    def __post_init__(self) -> None:
        check_prune_ratio("ratio", self.ratio)
        check_integer("finetune_epochs", self.finetune_epochs)


@dataclass(frozen=True)
class QuantConfig:
    """Q: DoReFa fixed-point QAT at ``w_bits`` weights / ``a_bits`` activations."""

    w_bits: int = 1  # the paper's headline setting is 1w8a (Tables 2-4)
    a_bits: int = 8
    first_last_bits: int | None = None  # None: first conv and last linear at w_bits/a_bits too
    input_bits: int | None = None  # None: the image enters at the first layer's a_bits
    finetune_epochs: int = 15  # QAT fine-tuning at base_lr / 10

    def __post_init__(self) -> None:
        check_bits("w_bits", self.w_bits)
        check_bits("a_bits", self.a_bits)
        check_bits("first_last_bits", self.first_last_bits, optional=True)
        check_bits("input_bits", self.input_bits, optional=True)
        check_integer("finetune_epochs", self.finetune_epochs)


@dataclass(frozen=True)
class ExitConfig:
    """E: exit heads at ``exits`` and the max-softmax thresholds they are measured at."""

    exits: tuple[str, ...] | None = None  # exit points (stage names); None: every exit point
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # measured, one row each
    threshold: float = 0.9  # the operating point a run reports its cost at
    epochs: int = 30  # head training at the base learning rate on the frozen backbone
    head: str = "pool4"  # exit head design (bitops.architectures.EXIT_HEADS); chosen by measurement, README

    def __post_init__(self) -> None:
        # Lists (from JSON or argparse) are accepted and stored as tuples, so the config stays hashable.
        if self.exits is not None:
            if isinstance(self.exits, str) or not isinstance(self.exits, Sequence) or not self.exits:
                raise InputError(f"exits must be None or a non-empty sequence of exit point names, got {self.exits!r}")
            if not all(isinstance(p, str) for p in self.exits):
                raise InputError(f"exits must hold exit point names (strings), got {self.exits!r}")
            object.__setattr__(self, "exits", tuple(self.exits))
        if isinstance(self.thresholds, str) or not isinstance(self.thresholds, Sequence) or not self.thresholds:
            raise InputError(f"thresholds must be a non-empty sequence of numbers, got {self.thresholds!r}")
        object.__setattr__(self, "thresholds", tuple(self.thresholds))
        for value in self.thresholds:
            check_threshold("thresholds", value)
        check_threshold("threshold", self.threshold)
        check_integer("epochs", self.epochs)
        check_exit_head("head", self.head)


@dataclass(frozen=True)
class ChainConfig:
    """Everything a run depends on; stored in the run record so ``resume`` can check it."""

    order: str
    teacher: str = "resnet20"
    data: DataConfig = field(default_factory=DataConfig)
    base: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    exits: ExitConfig = field(default_factory=ExitConfig)
    device: str = "auto"  # auto: CUDA when present, CPU otherwise (trainer.loop.resolve_device)
    seed: int = 0
    allow_repeat: bool = False

    def __post_init__(self) -> None:
        try:
            validate_order(self.order, self.allow_repeat)
        except InputError as err:
            raise InputError(f"order: {err}") from None
        _check_zoo_name("teacher", self.teacher)
        check_integer("seed", self.seed, 0, SEED_MAX)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists), so a record read back compares equal."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, value: Any) -> ChainConfig:
        """The config :meth:`to_json` wrote (a run record's or a campaign's); a field left out takes
        its default. An unknown field or a bad value is an InputError naming the dotted field."""
        parts = {"data": DataConfig, "base": TrainConfig, "distill": DistillConfig, "prune": PruneConfig,
                 "quant": QuantConfig, "exits": ExitConfig}
        if not isinstance(value, dict):
            raise InputError(f"config must be an object, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, item in value.items():
            if key not in known:
                raise InputError(f"config: unknown field {key!r} (fields: {', '.join(sorted(known))})")
            if key in parts:
                if not isinstance(item, dict):
                    raise InputError(f"{key} must be an object, got {item!r}")
                part_fields = {f.name for f in fields(parts[key])}
                unknown = sorted(set(item) - part_fields)
                if unknown:
                    raise InputError(f"{key}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(part_fields))})")
                try:
                    item = parts[key](**item)
                except InputError as err:
                    raise InputError(f"{key}.{err}") from None
                except TypeError as err:  # a value of the wrong JSON type that a check compares
                    raise InputError(f"{key}: {err}") from None
            kwargs[key] = item
        if "order" not in kwargs:
            raise InputError("config: 'order' is required")
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise InputError(f"config: {err}") from None

    def check_before_training(self, num_classes: int) -> None:
        """Rules that depend on the models, checked before any training so a mistake costs nothing.

        * E: the exit points must exist on the model E sees (the teacher, or the student after D),
          and, when E comes before D (ED), on the student too (its exits distil from the teacher's);
        * P: the pruning ratio must leave every channel group of the model P sees at least 1 channel.
        """
        from bitops.config import kept_channels
        from bitops.models import ModelSpec, load_model_table

        def model_at(position: int) -> tuple[str, float]:
            before = self.order[:position]
            return (self.distill.student, self.distill.width_mult) if "D" in before else (self.teacher, 1.0)

        if "E" in self.order:
            position = self.order.index("E")
            seen = model_at(position)[0]
            points = exit_points(seen)
            wanted = self.exits.exits or points
            unknown = [e for e in wanted if e not in points]
            if unknown:
                raise InputError(f"exits.exits: {unknown[0]!r} is not an exit point of {seen} ({', '.join(points)})")
            if "D" in self.order[position:]:  # ED: the student's exits distil from the teacher's
                student_points = exit_points(self.distill.student)
                missing = [e for e in wanted if e not in student_points]
                if missing:
                    raise InputError(f"distill.student {self.distill.student} has no exit point {missing[0]!r}, which "
                                     f"E before D gives the teacher ({', '.join(student_points)} only); choose "
                                     "exits.exits both models have")
        if "P" in self.order:
            name, width = model_at(self.order.index("P"))
            table = load_model_table(ModelSpec(name, num_classes=num_classes, width_mult=width))
            for channels in table.group_channels:
                if kept_channels(int(channels), 1.0 - self.prune.ratio) < 1:
                    raise InputError(f"prune.ratio {self.prune.ratio} keeps 0 of the {int(channels)} channels of a "
                                     f"channel group of {name}; it must keep at least 1")
