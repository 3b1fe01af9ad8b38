"""Stage profiles as the simulator reads them: per-method curves, interaction terms, provenance.

The file format is the trainer's (``trainer/profile.py`` documents it; ``chaincomp profile``
writes it). This module only reads and checks it, with numpy — no torch — and offers the curves
as interpolating functions:

* P: accuracy change vs pruning ratio, D: vs student (categorical), Q: vs weight bits
  (interpolated in log2 bits), E: accuracy change and per-exit rates vs threshold;
* every curve says when it is asked outside the measured range instead of extrapolating silently
  (it clamps to the nearest measured point and the prediction carries the flag).

Interaction terms (``interactions``), each ``{"before": i, "after": j, "accuracy": x}`` (method j
gains ``x`` points — loses when x < 0 — when it runs after method i, whatever j's hyperparameter),
or the same as a curve over j's hyperparameter, ``{"before": i, "after": j, "points": [{"value": h,
"accuracy": x, "std_error": s}, ...]}`` (interpolated like j's own curve, clamped and flagged outside
the measured values when there are two or more; a single point is a constant), or ``{"before": i,
"after": j, "exit_scale": s}`` (the early-exit rates are multiplied by s when i runs before j, one
of them being E), each with a ``source``. Missing terms are 0 (accuracy) and 1 (exit scale).

Three-method terms, ``{"first": i, "before": j, "after": k, "points": [{"before_value": h_j,
"value": h_k, "accuracy": x, "std_error": s}, ...]}``: what k gains after j beyond the pair terms
when both follow i (e.g. P and Q on a distilled student: first D), a grid over both
hyperparameters (every before_value with the same values), interpolated linearly along each axis
as the curves are; j and k are P, Q or E.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitops.errors import InputError
from simulator.structure import is_triple

__all__ = ["DEFAULT_PROFILE", "PARAMETERS", "PROFILE_TYPE", "PROFILE_VERSION", "Curve", "Profile", "Term", "TripleTerm",
           "load_profile", "parse_profile"]

PROFILE_TYPE = "chaincomp.StageProfile"
PROFILE_VERSION = 1
DEFAULT_PROFILE = Path(__file__).parent / "data" / "default_profile.json"
METHODS = "DPQE"
PARAMETERS = {"D": "student", "P": "prune_ratio", "Q": "w_bits", "E": "threshold"}  # each method's profiled axis


@dataclass(frozen=True)
class Curve:
    """Measured points of one method: values (sorted), accuracy deltas and their spread."""

    parameter: str
    values: tuple[Any, ...]
    delta: np.ndarray
    std: np.ndarray  # 0 where the profile gives no spread
    exit_rates: dict[str, np.ndarray] = field(default_factory=dict)  # E only: exit -> rate per value
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. Q's a_bits, E's exits

    def _axis(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query positions, measured positions) on the axis curves are interpolated along."""
        measured = np.asarray(self.values, dtype=np.float64)
        query = np.asarray(values, dtype=np.float64)
        if self.parameter == "w_bits":  # bits act multiplicatively: interpolate in log2
            return np.log2(query), np.log2(measured)
        return query, measured

    def outside(self, values: np.ndarray) -> np.ndarray:
        """Bool per query: outside the measured range (the curve is clamped there)."""
        if self.parameter == "student":
            return np.array([v not in self.values for v in values], dtype=bool)
        query, measured = self._axis(values)
        return (query < measured.min() - 1e-12) | (query > measured.max() + 1e-12)

    def at(self, values: np.ndarray, what: np.ndarray) -> np.ndarray:
        """``what`` (one entry per measured value) at the query values: linear, clamped at the ends."""
        if self.parameter == "student":
            index = {v: i for i, v in enumerate(self.values)}
            return np.array([what[index[v]] if v in index else np.nan for v in values])
        query, measured = self._axis(values)
        return np.interp(query, measured, what)


@dataclass(frozen=True)
class Term:
    """An accuracy interaction term: a constant, or a curve over the later method's hyperparameter."""

    constant: float = 0.0
    curve: Curve | None = None  # delta = the term at each measured value, std = its standard error

    def at(self, values: np.ndarray) -> np.ndarray:
        if self.curve is None:
            return np.full(len(values), self.constant)
        got = self.curve.at(values, self.curve.delta)
        return np.nan_to_num(got, nan=0.0)  # a student the term was not measured for: no term

    def std(self, values: np.ndarray) -> np.ndarray:
        if self.curve is None:
            return np.zeros(len(values))
        return np.nan_to_num(self.curve.at(values, self.curve.std), nan=0.0)

    def outside(self, values: np.ndarray) -> np.ndarray:
        """Outside the measured values, for a term measured at two or more (one point is a constant)."""
        if self.curve is None or (len(self.curve.values) < 2 and self.curve.parameter != "student"):
            return np.zeros(len(values), dtype=bool)
        return self.curve.outside(values)


@dataclass(frozen=True)
class TripleTerm:
    """A three-method term: a grid over the middle method's value (rows) and the last one's (curves)."""

    before: Curve  # the middle method's axis: values only (its delta/std unused)
    rows: tuple[Curve, ...]  # per before value, the term over the last method's value

    def _blend(self, before_values: np.ndarray, after_values: np.ndarray, what: str) -> np.ndarray:
        table = np.stack([row.at(after_values, getattr(row, what)) for row in self.rows])  # (B, N)
        if len(self.rows) == 1:
            return table[0]
        query, measured = self.before._axis(before_values)
        position = np.interp(query, measured, np.arange(len(measured), dtype=np.float64))
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, len(measured) - 1)
        weight = position - low
        columns = np.arange(table.shape[1])
        return table[low, columns] * (1 - weight) + table[high, columns] * weight

    def at(self, before_values: np.ndarray, after_values: np.ndarray) -> np.ndarray:
        return self._blend(before_values, after_values, "delta")

    def std(self, before_values: np.ndarray, after_values: np.ndarray) -> np.ndarray:
        return self._blend(before_values, after_values, "std")

    def outside(self, before_values: np.ndarray, after_values: np.ndarray) -> np.ndarray:
        flags = np.zeros(len(after_values), dtype=bool)
        if len(self.before.values) > 1:
            flags |= self.before.outside(before_values)
        if len(self.rows[0].values) > 1:
            flags |= self.rows[0].outside(after_values)
        return flags


@dataclass(frozen=True)
class Profile:
    """A checked stage profile."""

    base_accuracy: float
    base_std: float
    curves: dict[str, Curve]
    accuracy_terms: dict[tuple[str, str], Term]
    exit_scales: dict[tuple[str, str], float]
    setup: dict[str, Any]
    provenance: dict[str, Any]
    term_sources: dict[tuple[str, str, str], str]
    raw: dict[str, Any]
    triple_terms: dict[tuple[str, str, str], TripleTerm] = field(default_factory=dict)

    def curve(self, method: str) -> Curve:
        if method not in self.curves:
            raise InputError(f"the profile has no measurements for {method}; "
                             f"it covers {', '.join(self.curves) or 'no method'} (run chaincomp profile --method {method})")
        return self.curves[method]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InputError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _curve(method: str, entry: Any, where: str) -> Curve:
    if not isinstance(entry, dict) or not isinstance(entry.get("points"), list) or not entry["points"]:
        raise InputError(f"{where} must be an object with a non-empty 'points' list")
    points = entry["points"]
    parameter = entry.get("parameter")
    expected = PARAMETERS[method]
    if parameter != expected:
        raise InputError(f"{where}.parameter must be {expected!r}, got {parameter!r}")
    for i, point in enumerate(points):
        if not isinstance(point, dict) or "value" not in point or "delta" not in point:
            raise InputError(f"{where}.points[{i}] needs 'value' and 'delta'")
    if method != "D":
        for i, point in enumerate(points):
            _number(point["value"], f"{where}.points[{i}].value")
        points = sorted(points, key=lambda p: p["value"])
        values = [p["value"] for p in points]
        valid = {"P": lambda v: 0 <= v < 1, "Q": lambda v: 1 <= v <= 32, "E": lambda v: 0 < v <= 1}[method]
        rule = {"P": "pruning ratios in [0, 1)", "Q": "weight bits in 1..32", "E": "thresholds in (0, 1]"}[method]
        if not all(valid(v) for v in values):
            raise InputError(f"{where}: values must be {rule}, got {values}")
    values = tuple(p["value"] for p in points)
    if len(set(values)) != len(values):
        raise InputError(f"{where}: a value appears twice in points ({list(values)})")
    if method == "D" and not all(isinstance(v, str) and v for v in values):
        raise InputError(f"{where}: D values must be student model names, got {list(values)}")
    if method == "Q" and not all(float(v).is_integer() for v in values):
        raise InputError(f"{where}: Q values must be whole weight bits, got {list(values)}")
    delta = np.array([_number(p["delta"], f"{where}.points.delta") for p in points])
    std = np.array([0.0 if p.get("accuracy_std") is None else _number(p["accuracy_std"], f"{where}.points.accuracy_std")
                    for p in points])
    rates: dict[str, np.ndarray] = {}
    if method == "E":
        exits = entry.get("exits")
        if not isinstance(exits, list) or not all(isinstance(e, str) for e in exits):
            raise InputError(f"{where}.exits must list the exit point names")
        for i, point in enumerate(points):
            got = point.get("exit_rates")
            if not isinstance(got, dict) or set(got) != {*exits, "final"}:
                raise InputError(f"{where}.points[{i}].exit_rates must give a rate for each of {exits} and 'final'")
            total = sum(_number(v, f"{where}.points[{i}].exit_rates") for v in got.values())
            if min(got.values()) < 0 or abs(total - 1) > 1e-6:
                raise InputError(f"{where}.points[{i}].exit_rates must be >= 0 and sum to 1, got sum {total:.6g}")
        rates = {e: np.array([p["exit_rates"][e] for p in points], dtype=np.float64) for e in exits}
    extra = {k: v for k, v in entry.items() if k not in ("parameter", "points")}
    if method == "Q":
        a_bits = extra.get("a_bits", 8)
        if isinstance(a_bits, bool) or not isinstance(a_bits, int) or not 1 <= a_bits <= 32:
            raise InputError(f"{where}.a_bits must be an integer in 1..32, got {a_bits!r}")
        first_last = extra.get("first_last_bits")
        if first_last is not None and (isinstance(first_last, bool) or not isinstance(first_last, int)
                                       or not 1 <= first_last <= 32):
            raise InputError(f"{where}.first_last_bits must be null or an integer in 1..32, got {first_last!r}")
    return Curve(parameter=parameter, values=values, delta=delta, std=std, exit_rates=rates, extra=extra)


def parse_profile(data: Any, source: str = "profile") -> Profile:
    """Check a stage-profile object; every problem is an InputError naming the field."""
    try:
        return _parse(data)
    except InputError as err:
        raise InputError(f"{source}: {err}") from None


def _parse(data: Any) -> Profile:
    if not isinstance(data, dict):
        raise InputError(f"a stage profile must be a JSON object, got {type(data).__name__}")
    if data.get("_type") != PROFILE_TYPE:
        raise InputError(f"_type must be {PROFILE_TYPE!r}, got {data.get('_type')!r}")
    if isinstance(data.get("_version"), bool) or data.get("_version") != PROFILE_VERSION:
        raise InputError(f"_version must be {PROFILE_VERSION}, got {data.get('_version')!r}")
    for key in ("provenance", "setup", "base", "methods"):
        if not isinstance(data.get(key), dict):
            raise InputError(f"{key!r} must be an object")
    base = data["base"]
    accuracy = _number(base.get("accuracy"), "base.accuracy")
    std = 0.0 if base.get("accuracy_std") is None else _number(base["accuracy_std"], "base.accuracy_std")
    unknown = sorted(set(data["methods"]) - set(METHODS))
    if unknown:
        raise InputError(f"methods: unknown method {unknown[0]!r}; methods are D, P, Q, E")
    curves = {m: _curve(m, data["methods"][m], f"methods.{m}") for m in METHODS if m in data["methods"]}
    accuracy_terms: dict[tuple[str, str], Term] = {}
    exit_scales: dict[tuple[str, str], float] = {}
    sources: dict[tuple[str, str, str], str] = {}
    terms = data.get("interactions", [])
    if not isinstance(terms, list):
        raise InputError("interactions must be a list")
    triples: dict[tuple[str, str, str], TripleTerm] = {}
    for i, term in enumerate(terms):
        where = f"interactions[{i}]"
        if isinstance(term, dict) and "first" in term:
            key, triple = _triple(term, where)
            triples[key] = triple
            sources[(key[0] + key[1], key[2], "accuracy")] = str(term.get("source", ""))
            continue
        if not isinstance(term, dict) or term.get("before") not in METHODS or term.get("after") not in METHODS \
                or term["before"] == term["after"]:
            raise InputError(f"{where} needs 'before' and 'after', two different letters of D, P, Q, E")
        pair = (term["before"], term["after"])
        if "accuracy" in term and "points" in term:
            raise InputError(f"{where} gives both 'accuracy' and 'points'; an accuracy term is one or the other")
        if "accuracy" in term:
            accuracy_terms[pair] = Term(constant=_number(term["accuracy"], f"{where}.accuracy"))
            sources[(*pair, "accuracy")] = str(term.get("source", ""))
        if "points" in term:
            accuracy_terms[pair] = _term_curve(pair, term, where)
            sources[(*pair, "accuracy")] = str(term.get("source", ""))
        if "exit_scale" in term:
            if "E" not in pair:
                raise InputError(f"{where}: exit_scale applies to pairs with E, got {pair}")
            scale = _number(term["exit_scale"], f"{where}.exit_scale")
            if scale < 0:
                raise InputError(f"{where}.exit_scale must be >= 0, got {scale}")
            exit_scales[pair] = scale
            sources[(*pair, "exit_scale")] = str(term.get("source", ""))
        if "accuracy" not in term and "points" not in term and "exit_scale" not in term:
            raise InputError(f"{where} needs 'accuracy' (or 'points') and/or 'exit_scale'")
    return Profile(base_accuracy=accuracy, base_std=std, curves=curves, accuracy_terms=accuracy_terms,
                   exit_scales=exit_scales, setup=data["setup"], provenance=data["provenance"],
                   term_sources=sources, raw=data, triple_terms=triples)


def _term_curve(pair: tuple[str, str], term: dict[str, Any], where: str) -> Term:
    """An accuracy term given per value of the later method's hyperparameter, checked like a curve."""
    after = pair[1]
    points = term["points"]
    if not isinstance(points, list) or not points:
        raise InputError(f"{where}.points must be a non-empty list")
    parameter = term.get("parameter", PARAMETERS[after])
    if parameter != PARAMETERS[after]:
        raise InputError(f"{where}.parameter must be {PARAMETERS[after]!r} (the axis of {after}), got {parameter!r}")
    for i, point in enumerate(points):
        if not isinstance(point, dict) or "value" not in point or "accuracy" not in point:
            raise InputError(f"{where}.points[{i}] needs 'value' and 'accuracy'")
    as_curve = _as_curve(after, points)
    return Term(curve=_curve(after, as_curve, where))


def _triple(term: dict[str, Any], where: str) -> tuple[tuple[str, str, str], TripleTerm]:
    """A three-method term, checked: distinct letters, j and k numeric, a full grid of points."""
    key = (term.get("first"), term.get("before"), term.get("after"))
    if not all(m in METHODS for m in key) or len(set(key)) != 3:
        raise InputError(f"{where} needs 'first', 'before' and 'after', three different letters of D, P, Q, E")
    if not is_triple("".join(key)):
        raise InputError(f"{where}: a three-method term's 'before' and 'after' are P, Q or E (D is not interpolated)")
    if "accuracy" in term or "exit_scale" in term:
        raise InputError(f"{where}: a three-method term is given by 'points' only")
    points = term.get("points")
    if not isinstance(points, list) or not points:
        raise InputError(f"{where}.points must be a non-empty list")
    for n, point in enumerate(points):
        if not isinstance(point, dict) or not {"before_value", "value", "accuracy"} <= set(point):
            raise InputError(f"{where}.points[{n}] needs 'before_value', 'value' and 'accuracy'")
        _number(point["before_value"], f"{where}.points[{n}].before_value")
    rows: dict[float, list[dict[str, Any]]] = {}
    for point in points:
        rows.setdefault(float(point["before_value"]), []).append(point)
    before_axis = _curve(key[1], _as_curve(key[1], [{"value": v, "accuracy": 0.0} for v in rows]), f"{where} before_value")
    curves = [_curve(key[2], _as_curve(key[2], rows[v]), f"{where} at before_value {v:g}") for v in before_axis.values]
    if any(c.values != curves[0].values for c in curves):
        raise InputError(f"{where}.points must form a full grid: every before_value with the same values "
                         f"(got {[list(c.values) for c in curves]})")
    return key, TripleTerm(before=before_axis, rows=tuple(curves))


def _as_curve(method: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    """Term points in the shape of a method's curve, so that one checker serves both."""
    curve: dict[str, Any] = {"parameter": PARAMETERS[method], "points": [
        {"value": p["value"], "delta": p["accuracy"], "accuracy_std": p.get("std_error")} for p in points]}
    if method == "E":  # a term has no exit rates of its own: give the checker the ones it asks for
        curve["exits"] = []
        for point in curve["points"]:
            point["exit_rates"] = {"final": 1.0}
    return curve


def load_profile(path: str | Path | None = None) -> Profile:
    """Read a stage profile (default: the one shipped with chaincomp)."""
    target = Path(path) if path is not None else DEFAULT_PROFILE
    where = f"--profile {str(target)!r}"
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{where}: cannot read ({err.strerror})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON (line {err.lineno}: {err.msg})") from None
    return parse_profile(data, where)
