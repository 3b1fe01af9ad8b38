"""Fit a profile's pairwise order-interaction terms from trainer run records (least squares).

The chain model (``simulator.model``, its structure in ``simulator.structure``) predicts an
order's accuracy as the base accuracy plus the single-method delta of every stage that reaches the
final model plus the term ``I[i][j](h_j)`` of every applicable ordered pair (i before j), taken at
the later method's hyperparameter ``h_j``; its exit rates are the profile's rates at the threshold
through the exit tables of the terms with E that apply (``simulator.exit_fit``). A run record (``trainer/chain.py``)
measures the model after every stage, so every prefix of a run is an order with a measured
accuracy. Stage k gives one equation, the increment from prefix k-1 to prefix k, so that each
run's own base model cancels::

    acc_k - acc_{k-1} - (model's fixed part of prefix k - of prefix k-1)
        = (the terms of prefix k) - (the terms of prefix k-1)                        + noise

(for most stages: the terms of the earlier stages with stage k's method; a D also removes the
deltas and terms of the P and Q it undoes). An E stage that reports its accuracy at every
threshold gives one equation per threshold; so do the stages after it, differenced against their
operating threshold, which measures E's term with a later D per threshold (``THRESHOLD_TERMS``). Each term is one unknown per value of ``h_j`` the
runs measured it at, so a term measured at several values comes out as a curve over ``h_j``.
Three-method terms asked for (``triples``, e.g. DPQ: Q after P, both after D) add one unknown per
pair of values of the later two; the rest are taken as 0.
The exit-rate tables are fitted the same way, in log space, per threshold and exit
(:mod:`simulator.exit_fit`).

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

Reading the records, writing the fitted profile and the report are :mod:`simulator.fit_report`'s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bitops.orders import METHODS
from simulator.profile import Profile
from simulator.structure import structure

__all__ = ["ACCURACY_PAIRS", "DeltaFit", "Equation", "FitResult", "LinearFit", "Run", "Stage", "TermFit",
           "Unidentified", "column_name", "delta_columns", "family", "fit_runs", "measured_point", "solve"]

ACCURACY_PAIRS = tuple((i, j) for i, j in itertools.permutations(METHODS, 2))  # the 12 ordered pairs
# Singular values below this fraction of the largest count as 0: the design matrices hold small
# integer counts, so their nonzero singular values are far above it.
RANK_TOLERANCE = 1e-9
# Later methods whose term with an earlier E is fitted and predicted per threshold of E: a student
# distilled after E inherits the heads, and how many samples they send out early, and wrongly,
# depends on the threshold. Chosen by cross-validation over the shipped profile's runs (leave one
# seed out, leave one order out, every threshold a run's last model reports):
# scripts/cv_exit_thresholds.py; P and Q per threshold did not lower the held-out error.
THRESHOLD_TERMS = frozenset("D")


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
    exit_rows: tuple[tuple[float, dict[str, float]], ...] = ()  # once E has run: (threshold, exit -> rate) reported
    sweep_accuracy: tuple[tuple[float, float], ...] = ()  # a stage after E: (threshold, accuracy) it reported


@dataclass(frozen=True)
class Run:
    """A run record reduced to what the fit needs."""

    path: str
    order: str
    status: str
    base_accuracy: float
    stages: tuple[Stage, ...]  # the stages after the base, in order (only the finished ones)
    setup: dict[str, Any]  # teacher, dataset, input_shape, num_classes the run was made in
    base_training: dict[str, Any] | None = None  # the base model's epochs and lr, as the record states them
    seed: int | None = None  # the run's seed (config.seed), what cross-validation holds out by
    test_samples: int | None = None  # the size of the test split the rates are shares of, as the record states it


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


def solve(design: np.ndarray, observed: np.ndarray, penalty: np.ndarray | None = None) -> LinearFit:
    """OLS through the SVD; an unknown is identified when its unit vector is in the row space.

    Standard errors: ``sigma^2 (A^T A)^+`` on the diagonal, sigma^2 = RSS / (n - rank).

    ``penalty`` (one value >= 0 per unknown): ridge, the minimiser of
    ``|A x - b|^2 + sum_k penalty_k x_k^2``. What is identified is still the least-squares
    notion (the written profile leaves the rest out, whatever the penalty makes of it); the
    standard errors are the ridge estimator's, ``sigma^2 M^+ A^T A M^+`` with ``M = A^T A +
    diag(penalty)``, sigma^2 = RSS / (n - trace of the hat matrix).
    """
    n, p = design.shape
    if n == 0:
        nothing = np.full(p, np.nan)
        return LinearFit(nothing, nothing, np.zeros(p, bool), [[] for _ in range(p)], np.zeros(0), 0)
    u, s, vt = np.linalg.svd(design, full_matrices=n < p)  # vt: all p right singular vectors either way
    rank = int(np.sum(s > RANK_TOLERANCE * max(s.max(initial=0.0), 1.0)))
    v_r, s_r, u_r = vt[:rank].T, s[:rank], u[:, :rank]
    null = vt[rank:].T  # p x (p - rank): directions the equations cannot see
    identified = np.linalg.norm(null, axis=1) < 1e-8 if null.size else np.ones(p, dtype=bool)
    overlap = null @ null.T
    confounded = [[k for k in range(p) if k != j and abs(overlap[j, k]) > 1e-8] for j in range(p)]
    if penalty is not None and np.any(penalty > 0):
        gram = design.T @ design
        inverse = np.linalg.pinv(gram + np.diag(penalty), hermitian=True)
        estimate = inverse @ (design.T @ observed)
        residuals = observed - design @ estimate
        hat_trace = float(np.trace(inverse @ gram))
        variance = float(residuals @ residuals) / (n - hat_trace) if n - hat_trace > 1e-9 else float("nan")
        cov_diag = np.einsum("ij,jk,ki->i", inverse, gram, inverse) * variance
    else:
        estimate = v_r @ ((u_r.T @ observed) / s_r)
        residuals = observed - design @ estimate
        dof = n - rank
        variance = float(residuals @ residuals) / dof if dof > 0 else float("nan")
        cov_diag = np.einsum("ij,j,ij->i", v_r, 1.0 / s_r ** 2, v_r) * variance
    std_error = np.where(identified, np.sqrt(np.maximum(cov_diag, 0.0)), np.nan)
    return LinearFit(estimate=np.where(identified, estimate, np.nan), std_error=std_error, identified=identified,
                     confounded=confounded, residuals=residuals, rank=rank)


# ---- equations -----------------------------------------------------------------------------------

Key = tuple  # a column: ("term", i, j, value of j[, E's threshold when i is E]) or ("delta", method, measured value)


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
        if order[i] == "E" and order[j] in THRESHOLD_TERMS:  # per threshold of E (THRESHOLD_TERMS)
            key += (_value_key("E", values[i]),)
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


def _at_thresholds(stage: Stage) -> dict[float, float]:
    """The accuracies a stage reported per threshold of E (the E stage's own, or a later stage's sweep)."""
    return {round(float(t), 9): a for t, a in (stage.threshold_accuracy or stage.sweep_accuracy)}


def _stage_increments(run: Run, profile: Profile, refined: set[tuple[str, Any]], triples: frozenset[str]):
    """(stage k, method, observed increment, fixed, weights, outside, threshold) per measurement.

    Each stage gives one increment; an E stage that reports accuracies at several thresholds gives
    one per threshold. A stage after E where it and the stage before it both report their accuracy
    at those thresholds (the trainer sweeps every model with exits) gives, besides its increment at
    the operating threshold, one per other threshold t: its increment at t minus that one (both
    prefixes taken with E at t), where everything that does not depend on E's threshold cancels, so
    only the per-threshold terms (``THRESHOLD_TERMS``) remain; a row with nothing left is skipped."""
    values = [stage.value for stage in run.stages]
    e = run.order.find("E")
    previous_accuracy = run.base_accuracy
    before = (0.0, {}, False)
    for k, stage in enumerate(run.stages, start=1):
        prefix = run.order[:k]
        at_operating = _features(profile, prefix, values[:k], refined, triples)
        if stage.threshold_accuracy:
            for threshold, accuracy in stage.threshold_accuracy:
                fixed, weights, outside = _features(profile, prefix, [*values[:k - 1], threshold], refined, triples)
                yield (k, stage.method, accuracy - previous_accuracy, fixed - before[0],
                       _difference(weights, before[1]), outside, threshold)
            before, previous_accuracy = at_operating, stage.accuracy
            continue
        observed, fixed, weights = (stage.accuracy - previous_accuracy, at_operating[0] - before[0],
                                    _difference(at_operating[1], before[1]))
        yield k, stage.method, observed, fixed, weights, at_operating[2], None
        earlier = _at_thresholds(run.stages[k - 2]) if 0 <= e < k - 1 else {}
        operating = round(float(values[e]), 9) if earlier else None
        for threshold, accuracy in stage.sweep_accuracy if earlier else ():
            t = round(float(threshold), 9)
            if t == operating or t not in earlier:
                continue
            # the increment at t minus the one at the operating threshold: what does not depend on
            # E's threshold cancels, so these equations hold only the terms that do
            at = [threshold if p == e else v for p, v in enumerate(values[:k])]
            now, then = _features(profile, prefix, at, refined, triples), _features(profile, run.order[:k - 1],
                                                                                     at[:k - 1], refined, triples)
            row = _difference(_difference(now[1], then[1]), weights)
            if row:
                yield (k, stage.method, accuracy - earlier[t] - observed, now[0] - then[0] - fixed, row,
                       now[2], threshold)
        before, previous_accuracy = at_operating, stage.accuracy


def _sort_key(key: Key) -> tuple:
    kind, a, b = key[0], key[1], key[2]
    if kind == "term":
        return (0, ACCURACY_PAIRS.index((a, b)), str(key[3]) if a == "D" or b == "D" else float(key[3]),
                *key[4:])
    if kind == "triple":
        return (1, tuple(METHODS.index(m) for m in key[1:4]), float(key[4]), float(key[5]))
    return (2, METHODS.index(a), str(b) if a == "D" else float(b))


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def column_name(key: Key) -> str:
    if key[0] == "term":
        return f"{key[1]}{key[2]}@{_value_text(key[3])}" + (f",E={key[4]:g}" if len(key) > 4 else "")
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


# ---- the fit -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TermFit:
    before: str
    after: str
    kind: str  # "accuracy" (points); the exit scales are tables (simulator.exit_fit)
    estimate: float  # points, or the factor exp(log estimate)
    std_error: float | None  # points, or of the log factor; None without residual degrees of freedom
    equations: int  # equations the term appears in
    value: Any = None  # accuracy terms: the later method's hyperparameter the term holds at
    first: str | None = None  # a three-method term: the method both follow (before, after: the other two)
    before_value: Any = None  # a three-method term: the middle method's hyperparameter
    threshold: float | None = None  # a term of E with a later method: E's threshold it holds at


@dataclass(frozen=True)
class Unidentified:
    before: str
    after: str
    kind: str
    reason: str
    value: Any = None  # accuracy terms: at which value of the later method (None: the whole pair)
    first: str | None = None  # a three-method term (as in TermFit)
    before_value: Any = None
    threshold: float | None = None  # a term of E with a later method (as in TermFit)


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
    exit: Any  # simulator.exit_fit.ExitFit: the exit-rate tables
    terms: list[TermFit]
    unidentified: list[Unidentified]
    deltas: list[DeltaFit]  # empty unless the deltas were refined
    base_accuracy: float | None = None  # refining: the runs' mean base accuracy (None otherwise)
    ridge: float = 0.0  # the penalty on the accuracy terms
    dropped: tuple[str, ...] = ()  # the accuracy-term families left out


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
        threshold = None
        if key[0] == "term":
            _, i, j, value, *rest = key
            first, before_value = None, None
            threshold = rest[0] if rest else None
        elif key[0] == "triple":
            _, first, i, j, before_value, value = key
        else:
            continue
        if fit.identified[c]:
            terms.append(TermFit(i, j, "accuracy", float(fit.estimate[c]), _standard_error(fit, c),
                                 int(np.count_nonzero(design[:, c])), value, first, before_value, threshold))
        else:
            missing.append(Unidentified(i, j, "accuracy", _confounded(fit, c, names), value, first, before_value,
                                        threshold))
    seen = {(key[1], key[2]) for key in columns if key[0] == "term"}
    missing += [Unidentified(i, j, "accuracy", f"no run applies {j} after {i} with both reaching the final model")
                for i, j in ACCURACY_PAIRS if (i, j) not in seen]
    return terms, missing


def _delta_name(method: str, value: Any) -> str:
    return f"{method}={value:g}" if isinstance(value, float) else f"{method}={value}"


def family(key: Key) -> str | None:
    """The family of a column: "DP" for the D->P pair terms at every value, "DPQ" for a three-method
    term; None for a delta correction (never dropped nor penalised)."""
    return key[1] + key[2] if key[0] == "term" else key[1] + key[2] + key[3] if key[0] == "triple" else None


def fit_runs(runs: Sequence[Run], profile: Profile, refine_deltas: bool = False,
             triples: Sequence[str] = (), ridge: float = 0.0, dropped: Sequence[str] = ()) -> FitResult:
    """Least-squares interaction terms (accuracy and exit scales) from checked runs.

    ``refine_deltas``: also fit a correction to the profile's delta at each measured point a run's
    first stage uses (one more unknown each; that stage pins it, as a single-method profile does),
    and take the runs' mean base accuracy as the profile's.
    ``triples``: three-method terms to fit too ("DPQ": Q after P, both after D), one unknown per
    pair of values of the later two; every other three-method term is taken as 0.
    ``ridge``: a penalty on the accuracy terms (not on the delta corrections), ``ridge * x^2`` each.
    ``dropped``: accuracy-term families ("DP": the pair at every value; "DPQ") left out (taken as
    0), as ``simulator.fit_select`` chooses them.
    """
    keys = delta_columns(runs, profile) if refine_deltas else []
    acc_eq, columns = accuracy_equations(runs, profile, keys, triples)
    acc_design = np.array([e.row for e in acc_eq]).reshape(len(acc_eq), len(columns))
    families = [family(key) for key in columns]
    left_out = [key for key, f in zip(columns, families) if f is not None and f in set(dropped)]
    keep = [c for c, key in enumerate(columns) if key not in left_out]
    if left_out:
        columns = [columns[c] for c in keep]
        acc_design = acc_design[:, keep]
        acc_eq = [replace(e, row=e.row[keep]) for e in acc_eq]
    penalty = np.array([0.0 if family(key) is None else float(ridge) for key in columns])
    acc_fit = solve(acc_design, np.array([e.observed - e.fixed for e in acc_eq]), penalty if ridge else None)
    from simulator.exit_fit import fit_exit_tables  # it builds on this module's solve

    exit_fit = fit_exit_tables(runs, profile)
    terms, missing = _accuracy_terms(acc_fit, acc_design, columns)
    for name in sorted({family(key) for key in left_out}):
        why = "left out: it does not lower the cross-validated error (fit --select)"
        if len(name) == 2:
            missing = [u for u in missing if (u.before, u.after, u.first) != (name[0], name[1], None)]
            missing.append(Unidentified(name[0], name[1], "accuracy", why))
        else:
            missing.append(Unidentified(name[1], name[2], "accuracy", why, first=name[0]))
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
    return FitResult(list(runs), acc_fit, acc_eq, columns, exit_fit, terms, missing + exit_fit.unidentified, deltas,
                     base, float(ridge), tuple(sorted({family(k) for k in left_out})))
