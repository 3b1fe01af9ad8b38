"""Stage profiles as the simulator reads them: per-method curves, interaction terms, provenance.

The file format is owned by ``trainer/profile_format.py`` (type, version, every check; ``chaincomp
profile`` writes it). This module builds a checked profile into curves and terms, with numpy — no
torch — and offers the curves as interpolating functions:

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
of them being E), each with a ``source``. A term of E with a later method may give each point E's
``"threshold"`` too: a :class:`ThresholdTerm`, a curve over j's value per threshold. Missing terms
are 0 (accuracy) and 1 (exit scale).

Three-method terms, ``{"first": i, "before": j, "after": k, "points": [{"before_value": h_j,
"value": h_k, "accuracy": x, "std_error": s}, ...]}``: what k gains after j beyond the pair terms
when both follow i (e.g. P and Q on a distilled student: first D), a grid over both
hyperparameters (every before_value with the same values), interpolated linearly along each axis
as the curves are; j and k are P, Q or E.

Exit-rate tables, ``{"before": i, "after": j[, "first": h], "smoothing": eps, "exit_scales":
[{"value": h, "threshold": t, "exit": x, "scale": s}, ...]}`` (what ``fit`` writes): the scale of
the rate at exit x per value of the term's other method and threshold, interpolated like that
method's curve and linearly in the threshold (clamped and flagged outside). The rates of an order
are ``(r + eps) x product of its tables' scales - eps`` (at least 0), r the E curve's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitops.errors import InputError
from bitops.orders import METHODS, PARAMETERS, exit_value
from trainer.profile_format import check_profile, read_profile

__all__ = ["DEFAULT_PROFILE", "Curve", "ExitTable", "Profile", "Term", "ThresholdTerm", "TripleTerm", "load_profile",
           "parse_profile"]

DEFAULT_PROFILE = Path(__file__).parent / "data" / "default_profile.json"


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
        low, high, weight = _brackets(measured, query)
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
class ThresholdTerm:
    """An accuracy term of E with a later method j, per threshold of E: a curve over j's value at
    each measured threshold, linear between thresholds and clamped outside them (flagged)."""

    grid: TripleTerm  # before: the thresholds; rows: the term over j's value at each

    def at(self, values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        return np.nan_to_num(self.grid.at(thresholds, values), nan=0.0)  # an unmeasured student: no term

    def std(self, values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        return np.nan_to_num(self.grid.std(thresholds, values), nan=0.0)

    def outside(self, values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        flags = self.grid.before.outside(thresholds) if len(self.grid.before.values) > 1 else np.zeros(
            len(values), dtype=bool)
        rows = self.grid.rows
        if any(len(row.values) > 1 or row.parameter == "student" for row in rows):
            flags = flags | np.any([row.outside(values) for row in rows], axis=0)
        return flags


@dataclass(frozen=True)
class ExitTable:
    """The exit-rate scales of one term (pair with E, or three stages) over a grid of (value of its
    other method, threshold, exit), kept as logarithms."""

    axis: Curve  # the other method's values (its delta/std unused)
    thresholds: np.ndarray  # sorted
    exits: tuple[str, ...]
    log_scale: np.ndarray  # (values, thresholds, exits)
    log_std_error: np.ndarray  # the same shape; nan where the fit gave none
    smoothing: float

    def log_grid(self, values: np.ndarray, thresholds: np.ndarray, exits: Sequence[str]) -> np.ndarray:
        """(len(values), len(thresholds), len(exits)) log scales at every pair of the given values and
        thresholds; 0 at an exit the table lacks, and for a student it was not measured with."""
        low, high, weight = _brackets(self.thresholds, np.asarray(thresholds, dtype=np.float64))
        out = np.zeros((len(values), len(thresholds), len(exits)))
        for k, name in enumerate(exits):
            if name not in self.exits:
                continue
            column = self.exits.index(name)
            by_threshold = np.stack([np.nan_to_num(self.axis.at(values, self.log_scale[:, t, column]), nan=0.0)
                                     for t in range(len(self.thresholds))], axis=1)  # (values, table thresholds)
            out[:, :, k] = by_threshold[:, low] * (1 - weight) + by_threshold[:, high] * weight
        return out

    def log_at(self, values: np.ndarray, thresholds: np.ndarray, exits: Sequence[str]) -> np.ndarray:
        """(N, len(exits)) log scales at each query (value, threshold), each distinct one interpolated once."""
        unique_values, value_index = np.unique(np.asarray(values), return_inverse=True)
        unique_thresholds, threshold_index = np.unique(np.asarray(thresholds, dtype=np.float64), return_inverse=True)
        return self.log_grid(unique_values, unique_thresholds, exits)[value_index.ravel(), threshold_index.ravel()]

    def outside_grid(self, values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        """(len(values), len(thresholds)): outside the measured values or thresholds (clamped there)."""
        t = np.asarray(thresholds, dtype=np.float64)
        flags = np.broadcast_to((t < self.thresholds[0] - 1e-12) | (t > self.thresholds[-1] + 1e-12),
                                (len(values), len(t))).copy()
        if len(self.axis.values) > 1 or self.axis.parameter == "student":
            flags |= self.axis.outside(values)[:, None]
        return flags


def _brackets(axis: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query, the measured neighbours along ``axis`` and the weight of the upper one:
    linear, clamped at the ends."""
    if len(axis) == 1:
        zero = np.zeros(len(query), dtype=np.int64)
        return zero, zero, np.zeros(len(query))
    position = np.interp(query, axis, np.arange(len(axis), dtype=np.float64))
    low = np.floor(position).astype(np.int64)
    return low, np.minimum(low + 1, len(axis) - 1), position - low


@dataclass(frozen=True)
class Profile:
    """A checked stage profile."""

    base_accuracy: float
    base_std: float
    curves: dict[str, Curve]
    accuracy_terms: dict[tuple[str, str], Term | ThresholdTerm]
    exit_scales: dict[tuple[str, str], float]
    setup: dict[str, Any]
    provenance: dict[str, Any]
    term_sources: dict[tuple[str, str, str], str]
    raw: dict[str, Any]
    triple_terms: dict[tuple[str, str, str], TripleTerm] = field(default_factory=dict)
    spread_floor: float = 0.0  # training noise added in quadrature to every predicted spread (the profile's
    spread_per_point: float = 0.0  # "spread"): floor + per_point x the predicted loss
    exit_tables: dict[str, ExitTable] = field(default_factory=dict)  # "EQ", "QE", "EDQ": measured exit scales

    def curve(self, method: str) -> Curve:
        if method not in self.curves:
            raise InputError(f"the profile has no measurements for {method}; "
                             f"it covers {', '.join(self.curves) or 'no method'} (measure it: chaincomp profile --method {method})")
        return self.curves[method]


def _curve(method: str, points: list[dict[str, Any]], accuracy_key: str = "delta", std_key: str = "accuracy_std",
           entry: dict[str, Any] | None = None) -> Curve:
    """A checked method entry's (or term's) points as a curve, sorted by value (D's in file order)."""
    if method != "D":
        points = sorted(points, key=lambda p: p["value"])
    rates: dict[str, np.ndarray] = {}
    extra: dict[str, Any] = {}
    if entry is not None:
        extra = {k: v for k, v in entry.items() if k not in ("parameter", "points")}
        if method == "E":
            rates = {e: np.array([p["exit_rates"][e] for p in points], dtype=np.float64) for e in entry["exits"]}
    return Curve(parameter=PARAMETERS[method], values=tuple(p["value"] for p in points),
                 delta=np.array([float(p[accuracy_key]) for p in points]),
                 std=np.array([0.0 if p.get(std_key) is None else float(p[std_key]) for p in points]),
                 exit_rates=rates, extra=extra)


def parse_profile(data: Any, source: str = "profile") -> Profile:
    """Check a stage-profile object (``trainer.profile_format``; errors start with ``source``) and
    build its curves and terms."""
    return _build(check_profile(data, source))


def load_profile(path: str | Path | None = None) -> Profile:
    """Read a stage profile (default: the one shipped with chaincomp)."""
    target = Path(path) if path is not None else DEFAULT_PROFILE
    return _build(read_profile(target, f"profile {str(target)!r}"))


def _build(data: dict[str, Any]) -> Profile:
    base = data["base"]
    methods = data["methods"]
    curves = {m: _curve(m, methods[m]["points"], entry=methods[m]) for m in METHODS if m in methods}
    accuracy_terms: dict[tuple[str, str], Term | ThresholdTerm] = {}
    exit_scales: dict[tuple[str, str], float] = {}
    sources: dict[tuple[str, str, str], str] = {}
    triples: dict[tuple[str, str, str], TripleTerm] = {}
    tables: dict[str, ExitTable] = {}
    for term in data.get("interactions", []):
        if "exit_scales" in term:
            letters = term.get("first", "") + term["before"] + term["after"]
            tables[letters] = _exit_table(letters, term)
            sources[(letters[:-1], letters[-1], "exit_scales")] = str(term.get("source", ""))
            continue
        if "first" in term:
            key = (term["first"], term["before"], term["after"])
            triples[key] = _triple(key, term["points"])
            sources[(key[0] + key[1], key[2], "accuracy")] = str(term.get("source", ""))
            continue
        pair = (term["before"], term["after"])
        if "accuracy" in term:
            accuracy_terms[pair] = Term(constant=float(term["accuracy"]))
        if "points" in term and any("threshold" in p for p in term["points"]):
            accuracy_terms[pair] = _threshold_term(pair[1], term["points"])
        elif "points" in term:
            accuracy_terms[pair] = Term(curve=_curve(pair[1], term["points"], "accuracy", "std_error"))
        if "accuracy" in term or "points" in term:
            sources[(*pair, "accuracy")] = str(term.get("source", ""))
        if "exit_scale" in term:
            exit_scales[pair] = float(term["exit_scale"])
            sources[(*pair, "exit_scale")] = str(term.get("source", ""))
    return Profile(base_accuracy=float(base["accuracy"]),
                   base_std=0.0 if base.get("accuracy_std") is None else float(base["accuracy_std"]),
                   curves=curves, accuracy_terms=accuracy_terms, exit_scales=exit_scales, setup=data["setup"],
                   provenance=data["provenance"], term_sources=sources, raw=data, triple_terms=triples,
                   spread_floor=float(data["spread"]["floor"]) if "spread" in data else 0.0,
                   spread_per_point=float(data["spread"].get("per_point", 0.0)) if "spread" in data else 0.0,
                   exit_tables=tables)


def _exit_table(letters: str, term: dict[str, Any]) -> ExitTable:
    """A checked exit-scale grid as an :class:`ExitTable`."""
    points = term["exit_scales"]
    method = exit_value(letters)
    values = list(dict.fromkeys(p["value"] for p in points))
    if method != "D":
        values.sort()
    thresholds = sorted({float(p["threshold"]) for p in points})
    exits = tuple(sorted({p["exit"] for p in points}))
    log_scale = np.zeros((len(values), len(thresholds), len(exits)))
    std = np.full(log_scale.shape, np.nan)
    for p in points:
        cell = values.index(p["value"]), thresholds.index(float(p["threshold"])), exits.index(p["exit"])
        log_scale[cell] = math.log(p["scale"]) if p["scale"] > 0 else -math.inf
        if p.get("log_std_error") is not None:
            std[cell] = float(p["log_std_error"])
    axis = _curve(method, [{"value": v, "accuracy": 0.0} for v in values], "accuracy")
    return ExitTable(axis=axis, thresholds=np.array(thresholds), exits=exits,
                     log_scale=np.maximum(log_scale, -745.0), log_std_error=std,
                     smoothing=float(term.get("smoothing", 0.0)))


def _threshold_term(after: str, points: list[dict[str, Any]]) -> ThresholdTerm:
    """A checked per-threshold term of E with ``after`` as a grid: one curve over after's value per threshold."""
    rows: dict[float, list[dict[str, Any]]] = {}
    for point in points:
        rows.setdefault(float(point["threshold"]), []).append(point)
    axis = _curve("E", [{"value": t, "accuracy": 0.0} for t in rows], "accuracy")
    return ThresholdTerm(TripleTerm(before=axis, rows=tuple(_curve(after, rows[t], "accuracy", "std_error")
                                                            for t in axis.values)))


def _triple(key: tuple[str, str, str], points: list[dict[str, Any]]) -> TripleTerm:
    """A checked three-method term as a grid: one curve over k's value per value of j."""
    rows: dict[float, list[dict[str, Any]]] = {}
    for point in points:
        rows.setdefault(float(point["before_value"]), []).append(point)
    before_axis = _curve(key[1], [{"value": v, "accuracy": 0.0} for v in rows], "accuracy")
    return TripleTerm(before=before_axis,
                      rows=tuple(_curve(key[2], rows[v], "accuracy", "std_error") for v in before_axis.values))

