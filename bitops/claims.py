"""Claims files: reported BitOpsCR / CR rows, as TOML, with what the paper states and leaves open.

One ``[[claim]]`` per reported row::

    [[claim]]
    name = "ResNet34 CIFAR-10 DPQE"
    source = "Shen et al., Chain of Compression, Table 3, row CIFAR10"
    reference = "resnet34_cifar"           # the original (teacher) model, a zoo name
    student = "resnet18_cifar"             # distilled into (omit when there is no D)
    student_width_mult = 1.0
    student_note = "section 7: ResNet34 -> a shallower ResNet"   # why: a visible assumption
    student_alternatives = ["resnet20", "resnet56@0.5"]   # other students to try (name@width_mult)
    order = "DPQE"                         # required: whether exits count, and their heads (P before E: unpruned)
    dataset = "CIFAR10"
    num_classes = 10
    input = [3, 32, 32]
    w_bits = 1                              # omit what the source does not state
    a_bits = 8
    bitops_cr = 859
    cr = 114
    accuracy = 93.33
    reference_accuracy = 93.42
    # stated conventions / settings (anything omitted stays open):
    # first_last_bits = "same" | 8 | 32;  input_bits = "same" | 8 | 32;  bn = "folded" | "counted"
    # aux_bits = 32 | 0;  keep_ratio = 0.7;  exits = ["layer1", "layer2"];  exit_probs = [0.3, 0.2]

Reported ratios are taken at the precision written: ``114`` means [113.5, 114.5), ``113.85``
means [113.845, 113.855). Write the number as the source prints it (a TOML string keeps trailing
zeros: ``bitops_cr = "858.70"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bitops.errors import InputError
from bitops.files import read_toml
from bitops.orders import METHODS
from bitops.rules import check_bits, check_exit_probs, check_keep_ratio

__all__ = ["CLAIM_KEYS", "CONVENTION_KEYS", "EXAMPLES", "Claim", "Reported", "check_conventions", "load_claims",
           "parse_claims"]

EXAMPLES = {"paper": Path(__file__).parent / "claims" / "paper.toml"}  # shipped claims files
# The conventions a user may pin for every claim, and the values each may take.
CONVENTION_KEYS = ("w_bits", "a_bits", "first_last_bits", "input_bits", "bn", "aux_bits", "reference")
CONVENTION_CHOICES = {"bn": ("folded", "counted"), "reference": ("teacher", "student")}
CLAIM_KEYS = frozenset({
    "name", "source", "reference", "student", "student_width_mult", "student_note", "student_alternatives",
    "order", "dataset", "num_classes", "input", "w_bits", "a_bits", "bitops_cr", "cr", "accuracy",
    "reference_accuracy", "first_last_bits", "input_bits", "bn", "aux_bits", "keep_ratio", "exits", "exit_probs",
})


def check_conventions(conventions: dict[str, Any]) -> dict[str, Any]:
    """The pinned conventions, checked: bits as integers (first/last and input bits may be None,
    meaning 'same'; aux bits may be 0), bn and reference one of their words."""
    for key, value in conventions.items():
        if key not in CONVENTION_KEYS:
            raise InputError(f"conventions: keys must be among {', '.join(CONVENTION_KEYS)}, got {key!r}")
        if key in CONVENTION_CHOICES:
            if value not in CONVENTION_CHOICES[key]:
                raise InputError(f"conventions: {key} must be {' or '.join(CONVENTION_CHOICES[key])}, got {value!r}")
            continue
        try:
            check_bits(key, value, optional=key in ("first_last_bits", "input_bits"), allow_zero=key == "aux_bits")
        except InputError as err:
            raise InputError(f"conventions: {err}") from None
    return dict(conventions)


@dataclass(frozen=True)
class Reported:
    """A reported ratio and the interval its printed precision allows."""

    text: str
    value: float
    low: float
    high: float

    @classmethod
    def parse(cls, raw: Any, where: str) -> Reported:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise InputError(f"{where} must be a number (or a string such as \"858.70\"), got {raw!r}")
        text = str(raw).strip().rstrip("xX×").strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise InputError(f"{where} must be a number, got {raw!r}") from None
        if not number.is_finite() or number <= 0:
            raise InputError(f"{where} must be a positive number, got {raw!r}")
        exponent = number.as_tuple().exponent
        half_unit = Decimal(1).scaleb(exponent if isinstance(exponent, int) and exponent < 0 else 0) / 2
        return cls(text=text, value=float(number), low=float(number - half_unit), high=float(number + half_unit))


@dataclass(frozen=True)
class Claim:
    """One reported row; ``None`` means the source leaves it open."""

    name: str
    source: str
    reference: str
    student: str | None
    student_width_mult: float
    student_note: str
    student_alternatives: tuple[tuple[str, float], ...]  # (zoo name, width_mult)
    order: str
    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]
    w_bits: int | None
    a_bits: int | None
    bitops_cr: Reported | None
    cr: Reported | None
    accuracy: float | None
    reference_accuracy: float | None
    first_last_bits: int | str | None
    input_bits: int | str | None
    bn: str | None
    aux_bits: int | None
    keep_ratio: float | None
    exits: tuple[str, ...] | None
    exit_probs: tuple[float, ...] | None

    @property
    def has_exits(self) -> bool:
        return "E" in self.order

    @property
    def heads_pruned(self) -> bool:
        """E before P: the heads exist when pruning runs and are pruned with the backbone (EP)."""
        return "E" in self.order and "P" in self.order and self.order.index("E") < self.order.index("P")


def _get(entry: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if key not in entry:
        return default
    value = entry[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InputError(f"{where}.{key} has the wrong type: expected {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise InputError(f"{where}.{key} has the wrong type: expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _bits(entry: Mapping[str, Any], key: str, where: str, allow_same: bool = False, low: int = 1) -> int | str | None:
    value = _get(entry, key, (int, str) if allow_same else int, where)
    if value is None or (allow_same and value == "same"):
        return value
    if isinstance(value, str):
        raise InputError(f"{where}.{key} must be 'same' or an integer in 1..32, got {value!r}")
    return check_bits(f"{where}.{key}", value, allow_zero=low == 0)


def _alternative(raw: Any, where: str) -> tuple[str, float]:
    """``"name"`` or ``"name@width_mult"``."""
    if not isinstance(raw, str) or not raw:
        raise InputError(f"{where} must list zoo names (optionally name@width_mult), got {raw!r}")
    name, _, width = raw.partition("@")
    try:
        value = float(width) if width else 1.0
    except ValueError:
        raise InputError(f"{where}: width in {raw!r} must be a number, got {width!r}") from None
    if not value > 0:
        raise InputError(f"{where}: width in {raw!r} must be > 0")
    return name, value


def _parse_claim(entry: Any, index: int, known_models: tuple[str, ...]) -> Claim:
    where = f"claim #{index + 1}"
    if not isinstance(entry, dict):
        raise InputError(f"{where} must be a table ([[claim]]), got {entry!r}")
    if isinstance(entry.get("name"), str):
        where = f"claim #{index + 1} ({entry['name']!r})"
    unknown = sorted(set(entry) - CLAIM_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(CLAIM_KEYS))}")
    for key in ("name", "reference"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise InputError(f"{where}: '{key}' is required and must be a non-empty string")
    if "bitops_cr" not in entry and "cr" not in entry:
        raise InputError(f"{where}: give at least one of 'bitops_cr' and 'cr' (the reported ratios to audit)")
    student = _get(entry, "student", str, where)
    raw_alternatives = _get(entry, "student_alternatives", list, where, [])
    alternatives = tuple(_alternative(a, f"{where}.student_alternatives") for a in raw_alternatives)
    for model in [entry["reference"], *([student] if student else []), *(name for name, _ in alternatives)]:
        if model not in known_models:
            raise InputError(f"{where}: unknown model {model!r}; claims use zoo models: {', '.join(known_models)}")
    order = _get(entry, "order", str, where)
    if order is None:  # a guess here decides whether early exit may explain a ratio: never guessed
        raise InputError(f"{where}.order is not stated: give the methods the claim applied, in order (e.g. "
                         f"\"DPQE\", or \"PQ\" without early exit); it decides whether exits may explain the ratio")
    if not order or any(c not in METHODS for c in order) or len(set(order)) != len(order):
        raise InputError(f"{where}.order must be distinct letters from {METHODS}, got {order!r}")
    if student and "D" not in order:
        raise InputError(f"{where}: a student is given but order {order!r} has no D")
    shape = _get(entry, "input", list, where, [3, 32, 32])
    if len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise InputError(f"{where}.input must be [C, H, W] with positive integers, got {shape!r}")
    num_classes = _get(entry, "num_classes", int, where, 10)
    if num_classes < 1:
        raise InputError(f"{where}.num_classes must be >= 1, got {num_classes}")
    width = float(_get(entry, "student_width_mult", (int, float), where, 1.0))
    if not width > 0:
        raise InputError(f"{where}.student_width_mult must be > 0, got {width}")
    keep = _get(entry, "keep_ratio", (int, float), where)
    if keep is not None:
        check_keep_ratio(f"{where}.keep_ratio", keep)
    bn = _get(entry, "bn", str, where)
    if bn is not None and bn not in ("folded", "counted"):
        raise InputError(f"{where}.bn must be 'folded' or 'counted', got {bn!r}")
    aux = _bits(entry, "aux_bits", where, low=0)
    exits = _get(entry, "exits", list, where)
    if exits is not None and any(not isinstance(e, str) for e in exits):
        raise InputError(f"{where}.exits must be a list of exit point names, got {exits!r}")
    if exits is not None and len(set(exits)) != len(exits):
        raise InputError(f"{where}.exits names an exit twice: {exits!r}")
    if (exits is not None or "exit_probs" in entry) and "E" not in order:
        raise InputError(f"{where}: exits/exit_probs are given but order {order!r} has no E")
    probs = _get(entry, "exit_probs", list, where)
    if probs is not None:
        check_exit_probs(f"{where}.exit_probs", probs)
        if exits is None or len(exits) != len(probs):
            raise InputError(f"{where}.exit_probs needs 'exits' with one name per probability")
    accuracy = {k: _get(entry, k, (int, float), where) for k in ("accuracy", "reference_accuracy")}
    return Claim(
        name=entry["name"], source=_get(entry, "source", str, where, ""), reference=entry["reference"],
        student=student, student_width_mult=width, student_note=_get(entry, "student_note", str, where, ""),
        student_alternatives=alternatives, order=order, dataset=_get(entry, "dataset", str, where, ""),
        num_classes=num_classes, input_shape=tuple(shape),
        w_bits=_bits(entry, "w_bits", where), a_bits=_bits(entry, "a_bits", where),
        bitops_cr=Reported.parse(entry["bitops_cr"], f"{where}.bitops_cr") if "bitops_cr" in entry else None,
        cr=Reported.parse(entry["cr"], f"{where}.cr") if "cr" in entry else None,
        accuracy=accuracy["accuracy"], reference_accuracy=accuracy["reference_accuracy"],
        first_last_bits=_bits(entry, "first_last_bits", where, allow_same=True),
        input_bits=_bits(entry, "input_bits", where, allow_same=True), bn=bn, aux_bits=aux,
        keep_ratio=None if keep is None else float(keep),
        exits=None if exits is None else tuple(exits), exit_probs=None if probs is None else tuple(float(p) for p in probs),
    )


def parse_claims(data: Any, known_models: tuple[str, ...], source: str = "claims") -> list[Claim]:
    if not isinstance(data, dict) or set(data) - {"claim"}:
        extra = sorted(set(data) - {"claim"}) if isinstance(data, dict) else []
        raise InputError(f"{source}: expected only [[claim]] tables" + (f", found {extra[0]!r}" if extra else ""))
    entries = data.get("claim")
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{source}: no [[claim]] tables found")
    claims = [_parse_claim(entry, i, known_models) for i, entry in enumerate(entries)]
    names = [c.name for c in claims]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InputError(f"{source}: claim names must be unique, {duplicate!r} appears twice")
    return claims


def load_claims(path: str | Path, known_models: tuple[str, ...]) -> list[Claim]:
    """Read and validate a claims file; every problem is an :class:`InputError` naming the field."""
    try:
        return parse_claims(read_toml(path, "claims file"), known_models, source=f"claims file {str(path)!r}")
    except InputError as err:
        message = str(err)
        prefix = f"claims file {str(path)!r}"
        raise InputError(message if message.startswith(prefix) else f"{prefix}: {message}") from None
