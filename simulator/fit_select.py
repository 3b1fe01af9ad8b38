"""Choosing the accuracy model out of sample: shrinkage and the terms kept, by cross-validation.

The fit (:mod:`simulator.fit`) is linear: every run's stage increments are equations in the
unknowns (the pair terms, the three-method terms asked for, the delta corrections), and so is
the chain model's prediction of a run's final model: its accuracy against its own base model is
the profile's part (``fixed``) plus the final order's features times the unknowns. So a
cross-validated error needs no profile to be written and read back: per fold, solve on the
training runs' equations, predict the held-out runs' final loss. (``fit_report.cross_validate``
does the same through the written profile and the chain model; a test holds the two equal.)

Two ways to hold runs out, both reported and pooled for the choice:

- **by seed**: fit on the other seeds' runs, predict this seed's (a new training of settings
  the fit saw);
- **by order**: fit on the runs of every other order, predict this order's (its own pair or
  three-method terms are then unidentified and count as 0: what the other orders' terms say
  about an order no run measured, as for a four-stage order the profile never trained).

The model is chosen by the pooled root mean square error of the held-out final losses:

1. the ridge penalty ``lambda`` on the interaction terms (never on the delta corrections, which
   a first stage measures directly) from :data:`RIDGE_GRID`, ``lambda`` acting like that many
   equations saying "this term is 0";
2. then, at that penalty, whole term families (a pair ``IJ`` over all its values, a
   three-method term ``IJK``) are dropped one at a time while dropping one does not raise the
   held-out error (backward elimination: a term is kept only where it lowers it);
3. then the penalty is chosen again for the families kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.fit import Run, _features, accuracy_equations, delta_columns, family, solve
from simulator.profile import Profile

__all__ = ["RIDGE_GRID", "CVDesign", "Selection", "cv_errors", "select_model"]

# Ridge penalties tried, in "equations saying the term is 0"; 0 is least squares.
RIDGE_GRID = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
SCHEMES = ("seed", "order")


@dataclass(frozen=True)
class CVDesign:
    """The fit's equations and every run's final-model features, built once for all the folds."""

    columns: list[tuple]
    rows: np.ndarray  # equations x columns
    observed: np.ndarray  # per equation: the increment minus the profile's part
    equation_run: np.ndarray  # per equation: the index of its run
    final_rows: np.ndarray  # runs x columns: the final model's features
    final_fixed: np.ndarray  # per run: the profile's part of the final model's accuracy change
    measured: np.ndarray  # per run: the final model's accuracy change against its own base (points)
    seeds: list[int | None]
    orders: list[str]
    usable: np.ndarray  # runs whose final model the chain model predicts (no method repeated)
    families: list[str] = field(default_factory=list)  # the droppable families present, sorted

    @classmethod
    def build(cls, runs: Sequence[Run], profile: Profile, refine_deltas: bool, triples: Sequence[str]) -> "CVDesign":
        deltas = delta_columns(runs, profile) if refine_deltas else []
        equations, columns = accuracy_equations(runs, profile, deltas, triples)
        index = {key: c for c, key in enumerate(columns)}
        run_index = {run.path: k for k, run in enumerate(runs)}
        refined, wanted = set(deltas), frozenset(triples)
        final_rows = np.zeros((len(runs), len(columns)))
        final_fixed = np.zeros(len(runs))
        for k, run in enumerate(runs):
            if not run.stages:
                continue
            done = run.order[:len(run.stages)]
            fixed, weights, _ = _features(profile, done, [s.value for s in run.stages], refined, wanted)
            final_fixed[k] = fixed
            for key, weight in weights.items():
                if key in index:  # a key no equation has is unidentified: 0 in every fold
                    final_rows[k, index[key]] += weight
        rows = np.array([e.row for e in equations]).reshape(len(equations), len(columns))
        names = sorted({f for f in map(family, columns) if f is not None})
        return cls(columns=columns, rows=rows, observed=np.array([e.observed - e.fixed for e in equations]),
                   equation_run=np.array([run_index[e.run] for e in equations], dtype=int),
                   final_rows=final_rows, final_fixed=final_fixed,
                   measured=np.array([(run.stages[-1].accuracy - run.base_accuracy) if run.stages else 0.0
                                      for run in runs]),
                   seeds=[run.seed for run in runs], orders=[run.order[:len(run.stages)] for run in runs],
                   usable=np.array([bool(run.stages) and len(set(run.order)) == len(run.order) for run in runs]),
                   families=names)

    def folds(self, scheme: str) -> list[np.ndarray]:
        """Boolean masks of the held-out runs, one per fold; none with fewer than two groups."""
        labels = self.seeds if scheme == "seed" else self.orders
        groups = sorted({g for g, ok in zip(labels, self.usable) if ok and g is not None}, key=str)
        if len(groups) < 2:
            return []
        return [np.array([g == label for label in labels]) & self.usable for g in groups]

    def penalty(self, ridge: float, dropped: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
        """(columns kept, ridge penalty per kept column)."""
        fam = [family(key) for key in self.columns]
        keep = np.array([f is None or f not in dropped for f in fam])
        penalty = np.array([0.0 if f is None else ridge for f, k in zip(fam, keep) if k])
        return keep, penalty


def _estimate(rows: np.ndarray, observed: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """The fit's unknowns with what it cannot identify at 0 (as the written profile leaves them out)."""
    fit = solve(rows, observed, penalty)
    return np.where(fit.identified, np.nan_to_num(fit.estimate), 0.0)


def cv_errors(design: CVDesign, scheme: str, ridge: float = 0.0, dropped: frozenset[str] = frozenset()
              ) -> np.ndarray:
    """Held-out errors (measured - predicted final accuracy change, points), one per usable run in
    a fold of ``scheme`` ("seed" or "order"); empty when the runs hold fewer than two groups."""
    keep, penalty = design.penalty(ridge, dropped)
    errors = []
    for held in design.folds(scheme):
        train = ~held[design.equation_run]
        x = _estimate(design.rows[train][:, keep], design.observed[train], penalty)
        predicted = design.final_fixed[held] + design.final_rows[held][:, keep] @ x
        errors.append(design.measured[held] - predicted)
    return np.concatenate(errors) if errors else np.zeros(0)


def _summary(errors: np.ndarray) -> dict[str, Any]:
    if not errors.size:
        return {"runs": 0, "mean_abs_error": None, "rmse": None}
    return {"runs": int(errors.size), "mean_abs_error": float(np.abs(errors).mean()),
            "rmse": float(math.sqrt(float((errors ** 2).mean())))}


@dataclass(frozen=True)
class Selection:
    """The model chosen, and the held-out errors it was chosen on."""

    ridge: float
    dropped: tuple[str, ...]
    kept: tuple[str, ...]
    criterion: float  # pooled held-out RMSE of the chosen model
    table: list[dict[str, Any]]  # every model tried: ridge, dropped, per-scheme errors, pooled rmse
    chosen: dict[str, Any]  # per scheme: the chosen model's errors
    least_squares: dict[str, Any]  # per scheme: every family, no penalty (the fit without selection)
    additive: dict[str, Any]  # per scheme: no family at all (only the delta corrections, if refined)

    def to_dict(self) -> dict[str, Any]:
        return {"criterion": "pooled rmse of the held-out final accuracy change, leave one seed out and leave "
                             "one order out", "ridge_grid": list(RIDGE_GRID), "ridge": self.ridge,
                "dropped": list(self.dropped), "kept": list(self.kept), "pooled_rmse": self.criterion,
                "chosen": self.chosen, "least_squares": self.least_squares, "additive": self.additive,
                "tried": self.table}


def select_model(design: CVDesign, grid: Sequence[float] = RIDGE_GRID) -> Selection | None:
    """Choose the ridge penalty and the families kept by pooled held-out RMSE (see the module's
    doc); None when neither scheme has two groups to hold out."""
    from threadpoolctl import threadpool_limits

    schemes = [s for s in SCHEMES if design.folds(s)]
    if not schemes:
        return None
    with threadpool_limits(1):  # thousands of small solves: a BLAS thread pool only contends (85x slower under load)
        return _select(design, schemes, grid)


def _select(design: CVDesign, schemes: Sequence[str], grid: Sequence[float]) -> Selection:
    table: list[dict[str, Any]] = []
    memo: dict[tuple[float, frozenset[str]], float] = {}

    def score(ridge: float, dropped: frozenset[str]) -> float:
        if (ridge, dropped) not in memo:
            errors = {s: cv_errors(design, s, ridge, dropped) for s in schemes}
            pooled = np.concatenate(list(errors.values()))
            memo[(ridge, dropped)] = float(math.sqrt(float((pooled ** 2).mean())))
            table.append({"ridge": ridge, "dropped": sorted(dropped), **{s: _summary(e) for s, e in errors.items()},
                          "pooled_rmse": memo[(ridge, dropped)]})
        return memo[(ridge, dropped)]

    def best_ridge(dropped: frozenset[str]) -> float:
        # ties go to the larger penalty (the simpler model)
        return min(reversed(grid), key=lambda r: score(r, dropped))

    dropped: frozenset[str] = frozenset()
    ridge = best_ridge(dropped)
    while True:
        current = score(ridge, dropped)
        options = [f for f in design.families if f not in dropped]
        if not options:
            break
        trial = min(options, key=lambda f: score(ridge, dropped | {f}))
        if score(ridge, dropped | {trial}) > current:
            break
        dropped = dropped | {trial}
    ridge = best_ridge(dropped)
    everything = frozenset(design.families)
    return Selection(ridge=ridge, dropped=tuple(sorted(dropped)),
                     kept=tuple(f for f in design.families if f not in dropped), criterion=score(ridge, dropped),
                     table=table,
                     chosen={s: _summary(cv_errors(design, s, ridge, dropped)) for s in schemes},
                     least_squares={s: _summary(cv_errors(design, s)) for s in schemes},
                     additive={s: _summary(cv_errors(design, s, 0.0, everything)) for s in schemes})
