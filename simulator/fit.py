"""Fit a profile's pairwise order-interaction terms from trainer run records (least squares).

The chain model (``simulator.model``, its structure in ``simulator.structure``) predicts an
order's accuracy as the base accuracy plus the single-method delta of every stage that reaches the
final model plus the term ``I[i][j](h_j)`` of every applicable ordered pair (i before j), taken at
the later method's hyperparameter ``h_j``; its exit rates are the profile's rates at the threshold
times the ``exit_scale`` of every applicable pair with E. A run record (``trainer/chain.py``)
measures the model after every stage, so every prefix of a run is an order with a measured
accuracy. Stage k gives one equation, the increment from prefix k-1 to prefix k, so that each
run's own base model cancels::

    acc_k - acc_{k-1} - (model's fixed part of prefix k - of prefix k-1)
        = (the terms of prefix k) - (the terms of prefix k-1)                        + noise

(for most stages: the terms of the earlier stages with stage k's method; a D also removes the
deltas and terms of the P and Q it undoes). An E stage that reports its accuracy at every
threshold gives one equation per threshold. Each term is one unknown per value of ``h_j`` the
runs measured it at, so a term measured at several values comes out as a curve over ``h_j``.
Three-method terms asked for (``triples``, e.g. DPQ: Q after P, both after D) add one unknown per
pair of values of the later two; the rest are taken as 0.
Once E has run, one equation in log space for the share of samples leaving at an exit::

    log(share_E / profile_share(t))      = sum of log s over the pairs with E of prefix E
    log(share_k / share_{k-1})           = that sum for prefix k - for prefix k-1

The unknowns are solved by ordinary least squares through the SVD.
A term is *identified* when it is a function of the equations, i.e. its unit vector lies in the row
space of the design matrix (every least-squares solution agrees on it); otherwise it is left out of
the fitted profile — never written as 0 — and reported with the reason: no run has that pair in
that order, or the runs only ever see it together with other terms (it lies in the null space with
them, e.g. only DPQE runs confound D->Q with P->Q).

With ``refine_deltas`` each measured profile point that some run's first stage uses gets one more
unknown, a correction to its delta (added wherever the stage's delta applies): a stage that runs
first measures the method alone on the run's own base model, so it pins it, as the profile's own
measurement did; and the profile's base accuracy becomes the runs' mean base accuracy. Without it
the profile's deltas are taken as exact, and any offset between the profile's training and the
runs' (another seed, another base model) shows up in the interaction terms — in every term of the
method at that point, so an order with several earlier stages counts it several times.

No torch: records are read as JSON.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitops.errors import InputError
from simulator.profile import METHODS, PARAMETERS, Profile, parse_profile
from simulator.structure import structure

__all__ = ["ACCURACY_PAIRS", "EXIT_PAIRS", "DeltaFit", "Equation", "FitResult", "LinearFit", "Run", "Stage", "TermFit",
           "Unidentified", "check_run", "delta_columns", "fit_json", "fit_runs", "fitted_profile", "format_fit",
           "measured_point", "read_run", "read_runs", "solve"]

RECORD_TYPE = "chaincomp.RunRecord"  # trainer/chain.py; not imported from there, which would import torch
RECORD_VERSION = 1
ACCURACY_PAIRS = tuple((i, j) for i, j in itertools.permutations(METHODS, 2))  # the 12 ordered pairs
EXIT_PAIRS = tuple(p for p in ACCURACY_PAIRS if "E" in p)  # the 6 whose exit rates may scale
# The stage config field that holds each method's profiled hyperparameter (trainer/stages.py).
CONFIG_FIELD = {"D": "student", "P": "ratio", "Q": "w_bits", "E": "threshold"}
# Singular values below this fraction of the largest count as 0: the design matrices hold small
# integer counts, so their nonzero singular values are far above it.
RANK_TOLERANCE = 1e-9


# ---- run records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """One stage of a run as the fit reads it."""

    method: str
    value: Any  # the profiled hyperparameter: student name, pruning ratio, weight bits, threshold
    accuracy: float
    exit_shares: dict[str, float] | None  # exit point -> measured rate, once E has run
    threshold: float | None  # the operating threshold the exit rates were measured at
    threshold_accuracy: tuple[tuple[float, float], ...] = ()  # E stage: (threshold, accuracy) it reported


@dataclass(frozen=True)
class Run:
    """A run record reduced to what the fit needs."""

    path: str
    order: str
    status: str
    base_accuracy: float
    stages: tuple[Stage, ...]  # the stages after the base, in order (only the finished ones)
    setup: dict[str, Any]  # teacher, dataset, input_shape, num_classes the run was made in


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def read_run(path: str | Path) -> Run:
    """Read and check one run record; every problem is an InputError naming the file."""
    where = f"run record {str(path)!r}"
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{where}: cannot read ({err.strerror})") from None
    except ValueError as err:
        raise InputError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(record, dict) or record.get("_type") != RECORD_TYPE:
        got = record.get("_type") if isinstance(record, dict) else type(record).__name__
        raise InputError(f"{where}: not a chaincomp run record (_type must be {RECORD_TYPE!r}, got {got!r})")
    if isinstance(record.get("_version"), bool) or record.get("_version") != RECORD_VERSION:
        raise InputError(f"{where}: _version must be {RECORD_VERSION}, got {record.get('_version')!r}")
    config, stages = record.get("config"), record.get("stages")
    if not isinstance(config, dict) or not isinstance(config.get("order"), str):
        raise InputError(f"{where}: 'config' must be an object with the run's 'order'")
    if not isinstance(stages, list) or not stages or not isinstance(stages[0], dict) or stages[0].get("stage") != "base":
        raise InputError(f"{where}: 'stages' must be a list starting with the base model's entry")
    order = config["order"]
    if not order or any(m not in METHODS for m in order):
        raise InputError(f"{where}: config.order must be letters of D, P, Q, E, got {order!r}")
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    if len(stages) - 1 > len(order):
        raise InputError(f"{where}: {len(stages) - 1} stages recorded for order {order!r}")
    parsed = []
    for k, entry in enumerate(stages[1:], start=1):
        at = f"{where}: stages[{k}]"
        if not isinstance(entry, dict) or entry.get("stage") != order[k - 1]:
            raise InputError(f"{at} must be stage {order[k - 1]!r} of order {order!r}")
        method = order[k - 1]
        stage_config = entry.get("config")
        if not isinstance(stage_config, dict) or CONFIG_FIELD[method] not in stage_config:
            raise InputError(f"{at}.config must give {method}'s {CONFIG_FIELD[method]!r}")
        shares, threshold = None, None
        if "exit" in entry:
            exit_entry = entry["exit"]
            rates = exit_entry.get("rates") if isinstance(exit_entry, dict) else None
            if not isinstance(rates, dict):
                raise InputError(f"{at}.exit must hold the measured 'rates'")
            shares = {e: _number(r, f"{at}.exit.rates.{e}") for e, r in rates.items() if e != "final"}
            threshold = _number(exit_entry.get("threshold"), f"{at}.exit.threshold")
        reported: tuple[tuple[float, float], ...] = ()
        if method == "E" and isinstance(entry.get("exit"), dict):
            listed = entry["exit"].get("thresholds") or []
            if not isinstance(listed, list) or not all(isinstance(t, dict) for t in listed):
                raise InputError(f"{at}.exit.thresholds must be a list of objects")
            reported = tuple((_number(t.get("threshold"), f"{at}.exit.thresholds.threshold"),
                              _number(t.get("accuracy"), f"{at}.exit.thresholds.accuracy")) for t in listed)
        parsed.append(Stage(method, stage_config[CONFIG_FIELD[method]], _number(entry.get("accuracy"), f"{at}.accuracy"),
                            shares, threshold, reported))
    return Run(path=str(path), order=order, status=str(record.get("status")),
               base_accuracy=_number(stages[0].get("accuracy"), f"{where}: stages[0].accuracy"),
               stages=tuple(parsed),
               setup={"teacher": config.get("teacher"), "dataset": data.get("name"),
                      "input_shape": data.get("input_shape"), "num_classes": data.get("num_classes")})


def check_run(run: Run, profile: Profile, allow_incomplete: bool) -> None:
    """Refuse a run that is unfinished or was made in another setup than the profile's."""
    where = f"run record {run.path!r}"
    if run.status != "complete" and not allow_incomplete:
        raise InputError(f"{where}: status is {run.status!r}, not 'complete' ({len(run.stages)} of {len(run.order)} "
                         "stages); finish it with chaincomp train --resume, or pass --allow-incomplete to use "
                         "the finished stages")
    for key, got in run.setup.items():
        wanted = profile.setup.get(key)
        if wanted is not None and got != wanted:
            raise InputError(f"{where}: {key} is {got!r}, the profile's setup has {wanted!r}; a fit needs runs "
                             "of the profile's own setup")
    for stage in run.stages:
        if stage.method not in profile.curves:
            raise InputError(f"{where}: the order {run.order!r} has {stage.method}, which the profile does not measure "
                             f"(it covers {', '.join(profile.curves)})")
        if stage.method == "D" and stage.value not in profile.curves["D"].values:
            raise InputError(f"{where}: student is {stage.value!r}, the profile measured D for "
                             f"{', '.join(map(str, profile.curves['D'].values))} only; a fit needs runs of the "
                             "profile's own setup")
    if run.status != "complete" and not run.stages:
        raise InputError(f"{where}: no stage after the base finished; nothing to fit")


def read_runs(paths: Sequence[str | Path], profile: Profile, allow_incomplete: bool = False) -> list[Run]:
    if not paths:
        raise InputError("give at least one run record (RUN.json, written by chaincomp train)")
    seen: dict[Path, str] = {}
    runs = []
    for path in paths:
        key = Path(path).resolve()
        if key in seen:
            raise InputError(f"run record {str(path)!r} is given twice (as {seen[key]!r}); each run counts once")
        seen[key] = str(path)
        run = read_run(path)
        check_run(run, profile, allow_incomplete)
        runs.append(run)
    return runs


# ---- the linear algebra --------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearFit:
    """Least squares ``design @ x ~ observed`` with what the equations can and cannot determine."""

    estimate: np.ndarray  # the minimum-norm solution; only its identified entries mean anything
    std_error: np.ndarray  # nan where unidentified or without residual degrees of freedom
    identified: np.ndarray  # bool per unknown
    confounded: list[list[int]]  # per unknown, the other unknowns it shares a null direction with
    residuals: np.ndarray
    rank: int

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(self.residuals ** 2))) if self.residuals.size else float("nan")

    @property
    def dof(self) -> int:
        return len(self.residuals) - self.rank


def solve(design: np.ndarray, observed: np.ndarray) -> LinearFit:
    """OLS through the SVD; an unknown is identified when its unit vector is in the row space.

    Standard errors: ``sigma^2 (A^T A)^+`` on the diagonal, sigma^2 = RSS / (n - rank).
    """
    n, p = design.shape
    if n == 0:
        nothing = np.full(p, np.nan)
        return LinearFit(nothing, nothing, np.zeros(p, bool), [[] for _ in range(p)], np.zeros(0), 0)
    u, s, vt = np.linalg.svd(design, full_matrices=True)
    rank = int(np.sum(s > RANK_TOLERANCE * max(s.max(initial=0.0), 1.0)))
    v_r, s_r, u_r = vt[:rank].T, s[:rank], u[:, :rank]
    estimate = v_r @ ((u_r.T @ observed) / s_r)
    residuals = observed - design @ estimate
    null = vt[rank:].T  # p x (p - rank): directions the equations cannot see
    identified = np.linalg.norm(null, axis=1) < 1e-8 if null.size else np.ones(p, dtype=bool)
    overlap = null @ null.T
    confounded = [[k for k in range(p) if k != j and abs(overlap[j, k]) > 1e-8] for j in range(p)]
    dof = n - rank
    variance = float(residuals @ residuals) / dof if dof > 0 else float("nan")
    cov_diag = np.einsum("ij,j,ij->i", v_r, 1.0 / s_r ** 2, v_r) * variance
    std_error = np.where(identified, np.sqrt(cov_diag), np.nan)
    return LinearFit(estimate=np.where(identified, estimate, np.nan), std_error=std_error, identified=identified,
                     confounded=confounded, residuals=residuals, rank=rank)


# ---- equations -----------------------------------------------------------------------------------

Key = tuple  # a column: ("term", i, j, value of j) or ("delta", method, measured value)


def _value_key(method: str, value: Any) -> Any:
    """A hyperparameter as a column key: student names as they are, numbers rounded (JSON floats)."""
    return value if method == "D" else round(float(value), 9)


@dataclass(frozen=True)
class Equation:
    """One observation: which run and stage, what was measured, what the fixed part predicts."""

    run: str
    stage: int  # position in the run's order, 1-based (0 is the base)
    method: str
    observed: float  # accuracy increment (points) or log exit-share ratio
    fixed: float  # the profile's single-stage part; 0 for exit equations
    row: np.ndarray  # weight of each unknown in this equation
    outside: bool  # a stage's hyperparameter lies outside the profile's measured range
    threshold: float | None = None  # E's threshold, for the equations of an E stage at every reported one


def measured_point(profile: Profile, method: str, value: Any) -> int | None:
    """Index (in the curve's sorted values) of the profile's measured point at ``value``, if any."""
    values = profile.curve(method).values
    for i, v in enumerate(values):
        if (v == value) if method == "D" else math.isclose(float(v), float(value), rel_tol=1e-9, abs_tol=1e-12):
            return i
    return None


def delta_columns(runs: Sequence[Run], profile: Profile) -> list[tuple[str, Any]]:
    """(method, value) of every measured profile point some run's FIRST stage uses (an E first stage:
    at every threshold it reports), in D, P, Q, E order.

    Only measured points are refined: a correction at a value between them would need a new point
    (and, for E, exit rates nobody measured). Only points a first stage pins are: where the method
    only ever runs after others, its correction would be confounded with their terms, and leaving
    it out keeps those terms identified (against the profile's delta there)."""
    keys = {}
    for run in runs:
        if not run.stages:
            continue
        first = run.stages[0]
        for value in [first.value, *(t for t, _ in first.threshold_accuracy)]:
            i = measured_point(profile, first.method, value)
            if i is not None:
                keys[(first.method, i)] = profile.curve(first.method).values[i]
    return [(m, keys[(m, i)]) for m, i in sorted(keys, key=lambda k: (METHODS.index(k[0]), k[1]))]


def _features(profile: Profile, order: str, values: Sequence[Any], refined: set[tuple[str, Any]],
              triples: frozenset[str] = frozenset()) -> tuple[float, dict[Key, float], bool]:
    """The chain model's accuracy of ``order`` at ``values`` as fixed part + unknowns (weights).

    The same structure as ``simulator.model.predict`` (``structure``): the profile's delta of every
    kept stage, one unknown per applicable pair at the later stage's value, one per applicable
    three-method term asked for (``triples``) at the later two's values, and (refining) the
    correction of each kept stage's delta at a measured point."""
    shape = structure(order)
    fixed, weights, outside = 0.0, {}, False
    for pos in shape.kept:
        method, value = order[pos], values[pos]
        curve = profile.curve(method)
        query = np.asarray([value], dtype=object if method == "D" else np.float64)
        fixed += float(curve.at(query, curve.delta)[0])
        outside |= bool(curve.outside(query)[0])
        point = measured_point(profile, method, value)
        if point is not None and (method, curve.values[point]) in refined:
            key = ("delta", method, curve.values[point])
            weights[key] = weights.get(key, 0.0) + 1.0
    for i, j in shape.pairs:
        key = ("term", order[i], order[j], _value_key(order[j], values[j]))
        weights[key] = weights.get(key, 0.0) + 1.0
    for i, j, k in shape.triples:
        if order[i] + order[j] + order[k] in triples:
            key = ("triple", order[i], order[j], order[k], _value_key(order[j], values[j]),
                   _value_key(order[k], values[k]))
            weights[key] = weights.get(key, 0.0) + 1.0
    return fixed, weights, outside


def _difference(now: dict[Key, float], before: dict[Key, float]) -> dict[Key, float]:
    keys = dict.fromkeys([*now, *before])
    return {k: now.get(k, 0.0) - before.get(k, 0.0) for k in keys if now.get(k, 0.0) != before.get(k, 0.0)}


def _stage_increments(run: Run, profile: Profile, refined: set[tuple[str, Any]], triples: frozenset[str]):
    """(stage k, method, observed increment, fixed, weights, outside, threshold) per measurement.

    Each stage gives one increment; an E stage that reports accuracies at several thresholds gives
    one per threshold (its later stages run at the operating threshold)."""
    values = [stage.value for stage in run.stages]
    previous_accuracy = run.base_accuracy
    before = (0.0, {}, False)
    for k, stage in enumerate(run.stages, start=1):
        prefix = run.order[:k]
        measurements = stage.threshold_accuracy or ((None, stage.accuracy),)
        for threshold, accuracy in measurements:
            at = values[:k] if threshold is None else [*values[:k - 1], threshold]
            fixed, weights, outside = _features(profile, prefix, at, refined, triples)
            yield (k, stage.method, accuracy - previous_accuracy, fixed - before[0], _difference(weights, before[1]),
                   outside, threshold)
        before = _features(profile, prefix, values[:k], refined, triples)
        previous_accuracy = stage.accuracy


def _sort_key(key: Key) -> tuple:
    kind, a, b = key[0], key[1], key[2]
    if kind == "term":
        return (0, ACCURACY_PAIRS.index((a, b)), str(key[3]) if a == "D" or b == "D" else float(key[3]))
    if kind == "triple":
        return (1, tuple(METHODS.index(m) for m in key[1:4]), float(key[4]), float(key[5]))
    return (2, METHODS.index(a), str(b) if a == "D" else float(b))


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def column_name(key: Key) -> str:
    if key[0] == "term":
        return f"{key[1]}{key[2]}@{_value_text(key[3])}"
    if key[0] == "triple":
        return f"{key[1]}{key[2]}{key[3]}@{_value_text(key[4])},{_value_text(key[5])}"
    return f"delta {_delta_name(key[1], key[2])}"


def accuracy_equations(runs: Sequence[Run], profile: Profile, deltas: Sequence[tuple[str, Any]] = (),
                       triples: Sequence[str] = ()) -> tuple[list[Equation], list[Key]]:
    """One equation per finished stage (per reported threshold for E): increment minus the profile's
    part = the pair terms (and the three-method terms asked for) that change with that stage
    (+ delta corrections); and the columns."""
    refined = set(deltas)
    raw = [(run, *item) for run in runs for item in _stage_increments(run, profile, refined, frozenset(triples))]
    columns = sorted({key for item in raw for key in item[5]} | {("delta", m, v) for m, v in deltas}, key=_sort_key)
    index = {key: c for c, key in enumerate(columns)}
    equations = []
    for run, k, method, observed, fixed, weights, outside, threshold in raw:
        row = np.zeros(len(columns))
        for key, weight in weights.items():
            row[index[key]] += weight
        equations.append(Equation(run.path, k, method, observed, fixed, row, outside, threshold))
    return equations, columns


def _profile_share(profile: Profile, threshold: float, exits: Sequence[str]) -> float:
    curve = profile.curve("E")
    return float(sum(curve.at(np.array([threshold]), curve.exit_rates[e])[0] for e in exits))


def _exit_row(order: str) -> np.ndarray:
    """How often each exit-scale pair applies to ``order`` (the model's ``exit_scale``)."""
    row = np.zeros(len(EXIT_PAIRS))
    for i, j in structure(order).exit_pairs:
        row[EXIT_PAIRS.index((order[i], order[j]))] += 1
    return row


def exit_equations(runs: Sequence[Run], profile: Profile) -> tuple[list[Equation], list[str]]:
    """Log-space equations for the exit scales, and notes on the stages that could not give one.

    The share compared is the total rate of the exits both the run and the profile have. A share
    of 0 has no logarithm: such a stage gives no equation (and the next one none either).
    """
    equations, notes = [], []
    if "E" not in profile.curves:
        return equations, notes
    profiled = set(profile.curves["E"].exit_rates)
    for run in runs:
        if "E" not in run.order[:len(run.stages)]:
            continue
        e_pos = run.order.index("E") + 1
        previous: float | None = None
        for k, stage in enumerate(run.stages, start=1):
            if k < e_pos:
                continue
            if stage.exit_shares is None:
                notes.append(f"{run.path} stage {k} ({stage.method}): no exit rates recorded")
                previous = None
                continue
            exits = sorted(profiled & set(stage.exit_shares))
            share = sum(stage.exit_shares[e] for e in exits)
            row = _exit_row(run.order[:k])
            if k == e_pos:
                reference = _profile_share(profile, stage.threshold, exits)
                curve = profile.curves["E"]
                outside = bool(curve.outside(np.array([stage.threshold]))[0])
            else:
                row = row - _exit_row(run.order[:k - 1])
                reference, outside = previous, False
            if not exits or share <= 0 or reference is None or reference <= 0:
                why = ("none of its exits is in the profile" if not exits else
                       "its exit share is 0" if share <= 0 else
                       "the stage before it gave no usable exit share" if reference is None else
                       "the profile's exit share at its threshold is 0")
                notes.append(f"{run.path} stage {k} ({stage.method}): no exit equation, {why}")
            else:
                equations.append(Equation(run.path, k, stage.method, math.log(share / reference), 0.0, row, outside))
            previous = share if share > 0 else None
    return equations, notes


# ---- the fit -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TermFit:
    before: str
    after: str
    kind: str  # "accuracy" (points) or "exit_scale" (a factor; estimated as its logarithm)
    estimate: float  # points, or the factor exp(log estimate)
    std_error: float | None  # points, or of the log factor; None without residual degrees of freedom
    equations: int  # equations the term appears in
    value: Any = None  # accuracy terms: the later method's hyperparameter the term holds at
    first: str | None = None  # a three-method term: the method both follow (before, after: the other two)
    before_value: Any = None  # a three-method term: the middle method's hyperparameter


@dataclass(frozen=True)
class Unidentified:
    before: str
    after: str
    kind: str
    reason: str
    value: Any = None  # accuracy terms: at which value of the later method (None: the whole pair)
    first: str | None = None  # a three-method term (as in TermFit)
    before_value: Any = None


@dataclass(frozen=True)
class DeltaFit:
    """A single-stage delta refined at a measured point: the profile's value plus the correction."""

    method: str
    value: Any
    profile_delta: float
    correction: float | None  # None: not identified (see ``reason``)
    std_error: float | None
    equations: int
    reason: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.correction is None else self.profile_delta + self.correction


@dataclass(frozen=True)
class FitResult:
    runs: list[Run]
    accuracy: LinearFit
    accuracy_equations: list[Equation]
    accuracy_columns: list[Key]
    exit: LinearFit
    exit_equations: list[Equation]
    exit_notes: list[str]
    terms: list[TermFit]
    unidentified: list[Unidentified]
    deltas: list[DeltaFit]  # empty unless the deltas were refined
    base_accuracy: float | None = None  # refining: the runs' mean base accuracy (None otherwise)


def _confounded(fit: LinearFit, c: int, names: Sequence[str]) -> str:
    others = fit.confounded[c]
    return (f"confounded with {', '.join(names[k] for k in others)}: the runs only ever see {names[c]} together with "
            f"{'it' if len(others) == 1 else 'them'}, so only their sum is determined")


def _standard_error(fit: LinearFit, c: int) -> float | None:
    return None if math.isnan(fit.std_error[c]) else float(fit.std_error[c])


def _accuracy_terms(fit: LinearFit, design: np.ndarray, columns: Sequence[Key]
                    ) -> tuple[list[TermFit], list[Unidentified]]:
    names = [column_name(key) for key in columns]
    terms, missing = [], []
    for c, key in enumerate(columns):
        if key[0] == "term":
            _, i, j, value = key
            first, before_value = None, None
        elif key[0] == "triple":
            _, first, i, j, before_value, value = key
        else:
            continue
        if fit.identified[c]:
            terms.append(TermFit(i, j, "accuracy", float(fit.estimate[c]), _standard_error(fit, c),
                                 int(np.count_nonzero(design[:, c])), value, first, before_value))
        else:
            missing.append(Unidentified(i, j, "accuracy", _confounded(fit, c, names), value, first, before_value))
    seen = {(key[1], key[2]) for key in columns if key[0] == "term"}
    missing += [Unidentified(i, j, "accuracy", f"no run applies {j} after {i} with both reaching the final model")
                for i, j in ACCURACY_PAIRS if (i, j) not in seen]
    return terms, missing


def _exit_terms(fit: LinearFit, used: np.ndarray, covered: set[tuple[str, str]]
                ) -> tuple[list[TermFit], list[Unidentified]]:
    names = [i + j for i, j in EXIT_PAIRS]
    terms, missing = [], []
    for c, (i, j) in enumerate(EXIT_PAIRS):
        if fit.identified[c]:
            terms.append(TermFit(i, j, "exit_scale", math.exp(float(fit.estimate[c])), _standard_error(fit, c),
                                 int(np.count_nonzero(used[:, c]))))
        elif not used[:, c].any():
            reason = (f"the runs with {i} before {j} give no usable exit-rate measurement (exit shares of 0)"
                      if (i, j) in covered else f"no run applies {j} after {i}")
            missing.append(Unidentified(i, j, "exit_scale", reason))
        else:
            missing.append(Unidentified(i, j, "exit_scale", _confounded(fit, c, names)))
    return terms, missing


def _covered(runs: Sequence[Run]) -> set[tuple[str, str]]:
    """Ordered pairs whose terms some run's finished stages apply (i before j, both reaching its model)."""
    pairs = set()
    for run in runs:
        done = run.order[:len(run.stages)]
        shape = structure(done)
        pairs |= {(done[i], done[j]) for i, j in (*shape.pairs, *shape.exit_pairs)}
    return pairs


def _delta_name(method: str, value: Any) -> str:
    return f"{method}={value:g}" if isinstance(value, float) else f"{method}={value}"


def fit_runs(runs: Sequence[Run], profile: Profile, refine_deltas: bool = False,
             triples: Sequence[str] = ()) -> FitResult:
    """Least-squares interaction terms (accuracy and exit scales) from checked runs.

    ``refine_deltas``: also fit a correction to the profile's delta at each measured point a run's
    first stage uses (one more unknown each; that stage pins it, as a single-method profile does),
    and take the runs' mean base accuracy as the profile's.
    ``triples``: three-method terms to fit too ("DPQ": Q after P, both after D), one unknown per
    pair of values of the later two; every other three-method term is taken as 0.
    """
    keys = delta_columns(runs, profile) if refine_deltas else []
    acc_eq, columns = accuracy_equations(runs, profile, keys, triples)
    acc_design = np.array([e.row for e in acc_eq]).reshape(len(acc_eq), len(columns))
    acc_fit = solve(acc_design, np.array([e.observed - e.fixed for e in acc_eq]))
    exit_eq, notes = exit_equations(runs, profile)
    exit_design = np.array([e.row for e in exit_eq]).reshape(len(exit_eq), len(EXIT_PAIRS))
    exit_fit = solve(exit_design, np.array([e.observed for e in exit_eq]))
    terms, missing = _accuracy_terms(acc_fit, acc_design, columns)
    if "E" in profile.curves:
        exit_terms, exit_missing = _exit_terms(exit_fit, exit_design, _covered(runs))
    else:
        exit_terms = []
        exit_missing = [Unidentified(i, j, "exit_scale", "the profile has no E curve to compare exit rates with")
                        for i, j in EXIT_PAIRS]
    names = [column_name(key) for key in columns]
    deltas = []
    for method, value in keys:
        c = columns.index(("delta", method, value))
        curve = profile.curve(method)
        base = float(curve.delta[curve.values.index(value)])
        count = int(np.count_nonzero(acc_design[:, c]))
        if acc_fit.identified[c]:
            deltas.append(DeltaFit(method, value, base, float(acc_fit.estimate[c]), _standard_error(acc_fit, c), count))
        else:
            deltas.append(DeltaFit(method, value, base, None, None, count, _confounded(acc_fit, c, names)))
    base = float(np.mean([run.base_accuracy for run in runs])) if refine_deltas else None
    return FitResult(list(runs), acc_fit, acc_eq, columns, exit_fit, exit_eq, notes, terms + exit_terms,
                     missing + exit_missing, deltas, base)


# ---- output --------------------------------------------------------------------------------------

def _files(paths: Sequence[str]) -> str:
    names = [Path(p).name for p in paths]
    return ", ".join(names) if len(names) <= 4 else ", ".join(names[:3]) + f" and {len(names) - 3} more"


def _fit_summary(fit: LinearFit, equations: Sequence[Equation]) -> dict[str, Any]:
    return {"equations": len(equations), "rank": fit.rank, "dof": fit.dof,
            "rms": None if not equations else fit.rms,
            "outside_measured_range": sum(e.outside for e in equations)}


def fitted_profile(profile: Profile, result: FitResult, run_paths: Sequence[str], base_path: str | None,
                   command: str = "") -> dict[str, Any]:
    """The base profile with its interactions replaced by the fitted (identified) terms."""
    data = copy.deepcopy(profile.raw)
    residual = {"accuracy": f"residual rms {result.accuracy.rms:.3g} points over {len(result.accuracy_equations)} "
                            "equations",
                "exit_scale": f"residual rms {result.exit.rms:.3g} (log share) over {len(result.exit_equations)} "
                              "equations"}
    interactions = []
    grouped: dict[tuple[str, str], list[TermFit]] = {}
    for t in result.terms:
        if t.kind == "accuracy" and t.first is None:
            grouped.setdefault((t.before, t.after), []).append(t)
    for (before, after), fits in grouped.items():
        interactions.append({"before": before, "after": after, "parameter": PARAMETERS[after],
                             "points": [{"value": t.value, "accuracy": t.estimate, "std_error": t.std_error,
                                         "equations": t.equations} for t in fits],
                             "source": f"fit of RUN files {_files(run_paths)}, {residual['accuracy']}"})
    for (first, before, after), fits in _triple_groups(result.terms).items():
        interactions.append({"first": first, "before": before, "after": after,
                             "points": [{"before_value": t.before_value, "value": t.value, "accuracy": t.estimate,
                                         "std_error": t.std_error, "equations": t.equations} for t in fits],
                             "source": f"fit of RUN files {_files(run_paths)}, {residual['accuracy']}"})
    for t in result.terms:
        if t.kind == "exit_scale":
            interactions.append({"before": t.before, "after": t.after, "exit_scale": t.estimate,
                                 "log_std_error": t.std_error,
                                 "source": f"fit of RUN files {_files(run_paths)}, {residual['exit_scale']}"})
    data["interactions"] = interactions
    for d in result.deltas:
        if d.correction is None:
            continue
        point = next(p for p in data["methods"][d.method]["points"]
                     if measured_point(profile, d.method, p["value"]) == profile.curve(d.method).values.index(d.value))
        point["delta"] = d.delta
        if isinstance(point.get("accuracy"), (int, float)):
            point["accuracy"] = point["accuracy"] + d.correction
        point["fit"] = {"profile_delta": d.profile_delta, "correction": d.correction, "std_error": d.std_error,
                        "source": f"fit of RUN files {_files(run_paths)}, {residual['accuracy']}"}
    if result.base_accuracy is not None:
        data["base"]["fit"] = {"profile_accuracy": data["base"]["accuracy"], "runs": len(result.runs),
                               "source": "mean base accuracy of the RUN files (--refine-deltas)"}
        data["base"]["accuracy"] = result.base_accuracy
    provenance = dict(data.get("provenance", {}))
    provenance["fitted_from"] = [str(p) for p in run_paths]
    provenance["fit"] = {
        "base_profile": base_path or "(shipped default)",
        "command": command,
        "accuracy": _fit_summary(result.accuracy, result.accuracy_equations),
        "exit_scale": _fit_summary(result.exit, result.exit_equations),
        "unidentified": [_unidentified_json(u) for u in [*result.unidentified, *_incomplete_triples(result)]],
        "replaced_interactions": profile.raw.get("interactions", []),
        "refined_deltas": [_delta_json(d) for d in result.deltas],
    }
    data["provenance"] = provenance
    parse_profile(data, "the fitted profile")  # what we write must read back
    return data


def _delta_json(d: DeltaFit) -> dict[str, Any]:
    return {"method": d.method, "value": d.value, "profile_delta": d.profile_delta, "correction": d.correction,
            "delta": d.delta, "std_error": d.std_error, "equations": d.equations, "reason": d.reason}


def _triple_groups(terms: Sequence[TermFit]) -> dict[tuple[str, str, str], list[TermFit]]:
    """The identified three-method terms that form a full grid (a profile needs one to interpolate)."""
    groups: dict[tuple[str, str, str], list[TermFit]] = {}
    for t in terms:
        if t.first is not None:
            groups.setdefault((t.first, t.before, t.after), []).append(t)
    full = {}
    for key, fits in groups.items():
        cells = {(t.before_value, t.value) for t in fits}
        if len(cells) == len({t.before_value for t in fits}) * len({t.value for t in fits}):
            full[key] = fits
    return full


def _incomplete_triples(result: FitResult) -> list[Unidentified]:
    """Three-method terms left out because the identified points do not form a full grid."""
    kept = _triple_groups(result.terms)
    out, seen = [], set()
    for t in result.terms:
        key = (t.first, t.before, t.after)
        if t.first is not None and key not in kept and key not in seen:
            seen.add(key)
            out.append(Unidentified(t.before, t.after, "accuracy", "its identified points do not form a full grid of "
                                    f"{t.before} x {t.after} values, so it cannot be interpolated; left out",
                                    None, t.first, None))
    return out


def _unidentified_json(u: Unidentified) -> dict[str, Any]:
    return {"first": u.first, "before": u.before, "after": u.after, "kind": u.kind, "before_value": u.before_value,
            "value": u.value, "reason": u.reason}


def _equation_json(e: Equation, residual: float, names: Sequence[str]) -> dict[str, Any]:
    return {"run": e.run, "stage": e.stage, "method": e.method, "threshold": e.threshold, "observed": e.observed,
            "profile_part": e.fixed,
            "unknowns": {name: float(w) for name, w in zip(names, e.row) if w},
            "residual": residual, "outside_measured_range": e.outside}


def fit_json(result: FitResult, out: str, base_path: str | None) -> dict[str, Any]:
    return {
        "_type": "chaincomp.Fit", "_version": 1, "out": out, "base_profile": base_path or "(shipped default)",
        "base_accuracy": result.base_accuracy,
        "runs": [{"path": r.path, "order": r.order, "status": r.status, "stages": len(r.stages)} for r in result.runs],
        "terms": [{"first": t.first, "before": t.before, "after": t.after, "kind": t.kind, "before_value": t.before_value,
                   "value": t.value, "estimate": t.estimate, "std_error": t.std_error, "equations": t.equations}
                  for t in result.terms],
        "unidentified": [_unidentified_json(u) for u in [*result.unidentified, *_incomplete_triples(result)]],
        "deltas": [_delta_json(d) for d in result.deltas],
        "accuracy": {**_fit_summary(result.accuracy, result.accuracy_equations),
                     "residuals": [_equation_json(e, float(r), [column_name(k) for k in result.accuracy_columns])
                                   for e, r in zip(result.accuracy_equations, result.accuracy.residuals)]},
        "exit_scale": {**_fit_summary(result.exit, result.exit_equations),
                       "residuals": [_equation_json(e, float(r), [i + j for i, j in EXIT_PAIRS]) for e, r in
                                     zip(result.exit_equations, result.exit.residuals)],
                       "notes": result.exit_notes},
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_fit(report: dict[str, Any], largest: int = 10) -> str:
    acc, ex = report["accuracy"], report["exit_scale"]
    lines = [f"fit of {len(report['runs'])} run records against {report['base_profile']} -> {report['out']}", "",
             f"accuracy terms (points j gains when it runs after i, at j's value): {acc['equations']} equations, "
             f"rank {acc['rank']}, residual rms {_fmt(acc['rms'], '.3f')}",
             f"  {'term':<6} {'at':>8} {'estimate':>9} {'std err':>8} {'equations':>9}"]
    for t in (t for t in report["terms"] if t["kind"] == "accuracy" and t["first"] is None):
        at = f"{t['value']:g}" if isinstance(t["value"], (int, float)) else str(t["value"])
        lines.append(f"  {t['before'] + t['after']:<6} {at:>8} {t['estimate']:>+9.3f} {_fmt(t['std_error'], '8.3f'):>8} "
                     f"{t['equations']:>9}")
    triples = [t for t in report["terms"] if t["kind"] == "accuracy" and t["first"] is not None]
    if triples:
        lines += ["", "three-method terms (points k gains after j, both after i, beyond the pair terms):",
                  f"  {'term':<6} {'at':>12} {'estimate':>9} {'std err':>8} {'equations':>9}"]
        for t in triples:
            at = f"{t['before_value']:g},{t['value']:g}"
            lines.append(f"  {t['first'] + t['before'] + t['after']:<6} {at:>12} {t['estimate']:>+9.3f} "
                         f"{_fmt(t['std_error'], '8.3f'):>8} {t['equations']:>9}")
    lines += ["", f"exit-rate scales (fitted in log space): {ex['equations']} equations, rank {ex['rank']}, "
                  f"residual rms {_fmt(ex['rms'], '.3f')} (log share)",
              f"  {'term':<6} {'scale':>9} {'x/÷ se':>8} {'equations':>9}"]
    for t in (t for t in report["terms"] if t["kind"] == "exit_scale"):
        spread = None if t["std_error"] is None else math.exp(t["std_error"])
        lines.append(f"  {t['before'] + t['after']:<6} {t['estimate']:>9.3f} {_fmt(spread, '8.3f'):>8} {t['equations']:>9}")
    for note in ex["notes"]:
        lines.append(f"  note: {note}")
    if report["base_accuracy"] is not None:
        lines += ["", f"base accuracy: the runs' mean, {report['base_accuracy']:.3f}%"]
    if report["deltas"]:
        lines += ["", "single-stage deltas refined at the profile's measured points a run's first stage uses (points):",
                  f"  {'point':<12} {'profile':>8} {'fitted':>8} {'std err':>8} {'equations':>9}"]
        for d in report["deltas"]:
            value = f"{d['value']:g}" if isinstance(d["value"], float) else str(d["value"])
            fitted = "-" if d["delta"] is None else f"{d['delta']:+8.3f}"
            lines.append(f"  {d['method'] + '=' + value:<12} {d['profile_delta']:>+8.3f} {fitted:>8} "
                         f"{_fmt(d['std_error'], '8.3f'):>8} {d['equations']:>9}" + (f"  {d['reason']}" if d["reason"] else ""))
    if report["unidentified"]:
        lines += ["", "not identified by these runs (left out of the profile):"]
        lines += [f"  {(u['first'] or '') + u['before'] + u['after']}"
                  f"{'' if u['before_value'] is None else '@' + str(u['before_value']) + ','}"
                  f"{'' if u['value'] is None else ('' if u['before_value'] is not None else '@') + str(u['value'])} "
                  f"{u['kind']}: {u['reason']}" for u in report["unidentified"]]
    rows = sorted(acc["residuals"], key=lambda r: -abs(r["residual"]))[:largest]
    if rows:
        lines += ["", f"largest accuracy residuals ({len(rows)} of {len(acc['residuals'])}; all in --json):",
                  f"  {'run':<24} {'stage':>5} {'observed':>9} {'profile':>7} {'residual':>9}"]
        for r in rows:
            flag = "  (outside measured range)" if r["outside_measured_range"] else ""
            lines.append(f"  {Path(r['run']).name:<24} {r['stage']:>3} {r['method']} {r['observed']:>+9.3f} "
                         f"{r['profile_part']:>+7.3f} {r['residual']:>+9.3f}{flag}")
    outside = acc["outside_measured_range"] + ex["outside_measured_range"]
    if outside:
        lines.append(f"note: {outside} equations use a hyperparameter outside the profile's measured range "
                     "(its curve is clamped there)")
    return "\n".join(lines)
