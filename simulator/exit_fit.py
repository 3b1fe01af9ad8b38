"""Fit a profile's exit-rate tables from run records: least squares in log space, one cell at a time.

Once E has run, every later stage of a run record reports the share of test samples that leaves at
each exit at each threshold of E's grid. For one threshold ``t`` and one exit ``x`` (a *cell*), the
stage ``k`` of a run gives one equation::

    log((r_k + eps) / (r_{k-1} + eps)) = (log scales of the exit terms of prefix k)
                                         - (those of prefix k-1)                      + noise

where ``r_k`` is the rate after stage k, the E stage's own rate is compared with the profile's E
curve at ``t`` (heads trained on the base model), and ``eps`` is half a test sample (``0.5 / n``
for the runs' test split of ``n`` samples), so that a rate measured at 0 (heads a later stage made
useless, the case that matters most for cost) still counts instead of having no logarithm. When
the records do not say their test size, ``eps`` is 0 and such a stage gives no equation (noted).

The unknowns are one log scale per exit term and value of the term's other method: the pairs of E
with the stages its heads saw (``simulator.structure``: ``exit_pairs``) and the three-stage terms
``bitops.orders.EXIT_TRIPLES`` (E, the last D and a P or Q). Every cell is solved on its own through
:func:`simulator.fit.solve`, so a term may scale the rate at a low threshold and at a high one
differently, and move samples from one exit to the next. A term at a value goes into the profile
(:class:`simulator.profile.ExitTable`) when some threshold identifies it at every exit; a threshold
that does not (no run measured the value there) takes the nearest one that does, as every curve is
clamped outside its measured range. Otherwise it is left out and reported with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitops.orders import EXIT_TRIPLES, METHODS, PARAMETERS, exit_value
from simulator.fit import LinearFit, Run, Unidentified, solve
from simulator.profile import Profile
from simulator.structure import structure

__all__ = ["ExitEquation", "ExitFit", "ExitTableFit", "exit_terms", "fit_exit_tables", "smoothing"]

ExitKey = tuple[str, Any]  # (letters of the term, value of its other method)
# Every exit term: the pairs of E with another method, both ways, and the three-stage ones.
EXIT_TERMS = (*(m + "E" for m in METHODS if m != "E"), *("E" + m for m in METHODS if m != "E"), *EXIT_TRIPLES)


@dataclass(frozen=True)
class ExitEquation:
    run: str
    stage: int  # 1-based index of the stage in its run
    method: str
    threshold: float
    exit: str
    observed: float  # the log ratio of smoothed rates
    row: dict[ExitKey, int]  # how often each unknown enters prefix k minus prefix k-1


@dataclass(frozen=True)
class ExitTableFit:
    """One term's fitted grid: per value of its other method, threshold and exit, a log scale."""

    letters: str  # "EQ", "QE", "EDQ"
    values: tuple[Any, ...]
    thresholds: tuple[float, ...]
    exits: tuple[str, ...]
    log_scale: np.ndarray  # (values, thresholds, exits)
    log_std_error: np.ndarray  # nan without residual degrees of freedom
    equations: tuple[int, ...]  # per value: the equations (all cells) it appears in


@dataclass(frozen=True)
class ExitFit:
    tables: list[ExitTableFit]
    unidentified: list[Unidentified]
    equations: list[ExitEquation]
    residuals: np.ndarray  # per equation, in the order of ``equations`` (nan where its cell was not solved)
    rank: int  # the largest rank over the cells
    cells: int  # cells with equations
    notes: list[str]
    smoothing: float

    @property
    def rms(self) -> float:
        finite = self.residuals[np.isfinite(self.residuals)]
        return float(np.sqrt(np.mean(finite ** 2))) if finite.size else float("nan")


def exit_terms(order: str, values: Sequence[Any]) -> dict[ExitKey, int]:
    """The exit terms (with the value of each one's other method) that apply to ``order``, counted."""
    shape = structure(order)
    counts: dict[ExitKey, int] = {}
    for positions in (*shape.exit_pairs, *shape.exit_triples):
        letters = "".join(order[p] for p in positions)
        method = exit_value(letters)
        value = values[next(p for p in positions if order[p] == method)]
        counts[(letters, value)] = counts.get((letters, value), 0) + 1
    return counts


def smoothing(runs: Sequence[Run]) -> float:
    """Half a test sample of the runs' test split (the median size over the runs that state it)."""
    sizes = [r.test_samples for r in runs if r.test_samples]
    return 0.5 / float(np.median(sizes)) if sizes else 0.0


def _key(threshold: float) -> float:
    return round(float(threshold), 9)


def _stage_rows(stage: Any) -> dict[float, dict[str, float]]:
    """Threshold -> {exit: rate} a stage reports (its operating point alone when it lists none)."""
    if stage.exit_rows:
        return {_key(t): rates for t, rates in stage.exit_rows}
    if stage.exit_shares is not None and stage.threshold is not None:
        return {_key(stage.threshold): stage.exit_shares}
    return {}


def exit_equations(runs: Sequence[Run], profile: Profile, eps: float
                   ) -> tuple[list[ExitEquation], list[str], set[ExitKey]]:
    """Every (run, stage after E, threshold it reports, exit) equation, notes on the stages that
    could give none, and every term (with its value) some finished stage applies."""
    curve = profile.curves.get("E")
    if curve is None:
        return [], [], set()
    exits = sorted(curve.exit_rates)

    def base(t: float) -> dict[str, float]:  # the heads' own rates, trained on the base model
        return {x: float(curve.at(np.array([t]), curve.exit_rates[x])[0]) for x in exits}

    equations: list[ExitEquation] = []
    notes: list[str] = []
    seen: set[ExitKey] = set()
    for run in runs:
        done = run.order[:len(run.stages)]
        if "E" not in done:
            continue
        e = done.index("E")
        values = [s.value for s in run.stages]
        previous: dict[float, dict[str, float]] | None = None
        for k in range(e, len(done)):
            stage = run.stages[k]
            now = exit_terms(done[:k + 1], values)
            seen |= set(now)
            rows = _stage_rows(stage)
            if k == e and rows:
                previous = {t: base(t) for t in rows}
            if not rows or previous is None:
                why = "no exit rates recorded" if not rows else "the stage before it recorded none"
                notes.append(f"{run.path} stage {k + 1} ({stage.method}): no exit equation, {why}")
                previous = rows or None
                continue
            before = exit_terms(done[:k], values) if k > e else {}
            row = {key: now.get(key, 0) - before.get(key, 0) for key in {*now, *before}}
            row = {key: w for key, w in row.items() if w}
            skipped = 0
            for t in sorted(rows):
                rates, reference = rows[t], previous.get(t)
                if reference is None:
                    continue
                for x in exits:
                    if x not in rates or x not in reference:
                        continue
                    a, b = rates[x] + eps, reference[x] + eps
                    if a <= 0 or b <= 0:
                        skipped += 1
                        continue
                    equations.append(ExitEquation(run.path, k + 1, stage.method, t, x, math.log(a / b), row))
            if skipped:
                notes.append(f"{run.path} stage {k + 1} ({stage.method}): {skipped} threshold/exit rate(s) of 0 give "
                             "no equation (the records do not say their test size, so no smoothing)")
            previous = rows
    return equations, notes, seen


def _sort_key(key: ExitKey) -> tuple:
    letters, value = key
    return (len(letters), letters, isinstance(value, str), value if not isinstance(value, str) else 0,
            str(value))


def fit_exit_tables(runs: Sequence[Run], profile: Profile) -> ExitFit:
    """The exit tables the runs identify, each cell (threshold, exit) solved on its own."""
    eps = smoothing(runs)
    equations, notes, seen = exit_equations(runs, profile, eps)
    if "E" not in profile.curves:
        return ExitFit([], [_missing(letters, "the profile has no E curve to compare exit rates with")
                            for letters in EXIT_TERMS], [], np.zeros(0), 0, 0, [], eps)
    columns = sorted({key for eq in equations for key in eq.row}, key=_sort_key)
    index = {key: c for c, key in enumerate(columns)}
    cells = sorted({(eq.threshold, eq.exit) for eq in equations})
    estimate = np.full((len(cells), len(columns)), np.nan)  # nan where a cell does not identify the unknown
    std = np.full((len(cells), len(columns)), np.nan)
    counts = np.zeros(len(columns), dtype=np.int64)
    residuals = np.full(len(equations), np.nan)
    reasons: dict[int, str] = {}
    rank = 0
    names = [f"{letters}@{value}" for letters, value in columns]
    for n, cell in enumerate(cells):
        rows = [i for i, eq in enumerate(equations) if (eq.threshold, eq.exit) == cell]
        design = np.zeros((len(rows), len(columns)))
        for r, i in enumerate(rows):
            for key, w in equations[i].row.items():
                design[r, index[key]] = w
        fit: LinearFit = solve(design, np.array([equations[i].observed for i in rows]))
        rank = max(rank, fit.rank)
        residuals[rows] = fit.residuals
        counts += np.count_nonzero(design, axis=0)
        for c in range(len(columns)):
            if fit.identified[c]:
                estimate[n, c], std[n, c] = fit.estimate[c], fit.std_error[c]
            elif design[:, c].any() and c not in reasons:
                others = [names[o] for o in fit.confounded[c]]
                reasons[c] = (f"confounded with {', '.join(others)} at threshold {cell[0]:g}, exit {cell[1]}: the runs "
                              "only ever see them together, so only their sum is determined")
    thresholds = tuple(sorted({t for t, _ in cells}))
    exits = tuple(sorted({x for _, x in cells}))
    tables: list[ExitTableFit] = []
    missing: list[Unidentified] = []
    for letters in dict.fromkeys(key[0] for key in columns):
        kept, grids, stds = [], [], []
        for c, key in enumerate(columns):
            if key[0] != letters:
                continue
            grid, grid_std, why = _grid(estimate[:, c], std[:, c], cells, thresholds, exits)
            if grid is None:
                missing.append(_missing(letters, reasons.get(c, why), key[1]))
                continue
            kept.append(c)
            grids.append(grid)
            stds.append(grid_std)
        if kept:
            tables.append(ExitTableFit(letters, tuple(columns[c][1] for c in kept), thresholds, exits,
                                       np.stack(grids), np.stack(stds), tuple(int(counts[c]) for c in kept)))
    for key in sorted(seen - set(columns), key=_sort_key):
        missing.append(_missing(key[0], "the runs that apply it give no usable exit-rate measurement (rates of 0, "
                                "and no test size to smooth them)", key[1]))
    applied = {key[0] for key in seen}
    missing += [_missing(letters, f"no run applies {letters[1]} after {letters[0]}" if len(letters) == 2 else
                         f"no run applies {letters[0]}, {letters[1]} and {letters[2]} in that order") for letters in EXIT_TERMS
                if letters not in applied]
    return ExitFit(tables, missing, equations, residuals, rank, len(cells), notes, eps)


def _missing(letters: str, reason: str, value: Any = None) -> Unidentified:
    return Unidentified(letters[-2], letters[-1], "exit_scale", reason, value, letters[0] if len(letters) == 3 else None)


def _grid(estimate: np.ndarray, std: np.ndarray, cells: Sequence[tuple[float, str]], thresholds: Sequence[float],
          exits: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray, str]:
    """One unknown's (thresholds, exits) grid from its per-cell estimates: a threshold where no cell
    identified it takes the nearest threshold that did at the same exit (as every curve is clamped
    outside its measured range; its standard error stays nan). None, with the reason, when an exit
    has no identified threshold at all."""
    grid = np.full((len(thresholds), len(exits)), np.nan)
    grid_std = np.full(grid.shape, np.nan)
    for n, (t, x) in enumerate(cells):
        grid[thresholds.index(t), exits.index(x)] = estimate[n]
        grid_std[thresholds.index(t), exits.index(x)] = std[n]
    for k, name in enumerate(exits):
        known = np.flatnonzero(np.isfinite(grid[:, k]))
        if not known.size:
            return None, grid_std, f"no run measures it at exit {name}"
        for t in np.flatnonzero(~np.isfinite(grid[:, k])):
            grid[t, k] = grid[known[np.argmin(np.abs(np.asarray(thresholds)[known] - thresholds[t]))], k]
    return grid, grid_std, ""


def table_json(table: ExitTableFit, eps: float, source: str) -> dict[str, Any]:
    """A fitted table as a profile interaction (``trainer.profile_format``)."""
    letters = table.letters
    entry: dict[str, Any] = {"first": letters[0]} if len(letters) == 3 else {}
    entry.update({"before": letters[-2], "after": letters[-1], "parameter": PARAMETERS[exit_value(letters)],
                  "smoothing": eps, "exit_scales": [], "source": source})
    for v, value in enumerate(table.values):
        for t, threshold in enumerate(table.thresholds):
            for x, name in enumerate(table.exits):
                se = table.log_std_error[v, t, x]
                entry["exit_scales"].append({"value": value, "threshold": threshold, "exit": name,
                                             "scale": math.exp(float(table.log_scale[v, t, x])),
                                             "log_std_error": None if math.isnan(se) else float(se)})
    return entry
