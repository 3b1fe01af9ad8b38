"""``chaincomp fit`` around the analysis of :mod:`simulator.fit`: reading the run records, the fitted
profile and the report (JSON for machines, text for people), and :func:`fit`, the one entry point
the command and the Python API call.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bitops.errors import InputError
from bitops.result import Result
from bitops.jsonio import check_writable, write_checked
from bitops.orders import CONFIG_FIELDS, METHODS, PARAMETERS, exit_value, is_triple
from simulator.exit_fit import table_json
from simulator.fit import (DeltaFit, Equation, FitResult, LinearFit, Run, Stage, TermFit, Unidentified,
                           column_name, fit_runs, measured_point)
from simulator.fit_select import CVDesign, Selection, select_model
from simulator.model import Grid, predict
from simulator.profile import Profile, load_profile, parse_profile
from simulator.search import confidence_z
from trainer.record import read_record

__all__ = ["FitReport", "check_run", "fit", "fit_json", "fitted_profile", "format_fit", "read_run", "read_runs"]


# ---- run records ---------------------------------------------------------------------------------

def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def read_run(path: str | Path) -> Run:
    """Read and check one run record; every problem is an InputError naming the file."""
    where = f"run record {str(path)!r}"
    record = read_record(path)  # the format's checks: type, version, config.order, stages from the base
    config, stages = record["config"], record["stages"]
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
        if not isinstance(stage_config, dict) or CONFIG_FIELDS[method] not in stage_config:
            raise InputError(f"{at}.config must give {method}'s {CONFIG_FIELDS[method]!r}")
        shares, threshold = None, None
        if "exit" in entry:
            exit_entry = entry["exit"]
            rates = exit_entry.get("rates") if isinstance(exit_entry, dict) else None
            if not isinstance(rates, dict):
                raise InputError(f"{at}.exit must hold the measured 'rates'")
            shares = {e: _number(r, f"{at}.exit.rates.{e}") for e, r in rates.items() if e != "final"}
            threshold = _number(exit_entry.get("threshold"), f"{at}.exit.threshold")
        reported: tuple[tuple[float, float], ...] = ()
        rows: list[tuple[float, dict[str, float]]] = []
        if isinstance(entry.get("exit"), dict) and isinstance(entry["exit"].get("thresholds"), list):
            for n, listed in enumerate(entry["exit"]["thresholds"]):
                rates = listed.get("rates") if isinstance(listed, dict) else None
                if not isinstance(rates, dict):
                    raise InputError(f"{at}.exit.thresholds[{n}] must hold the measured 'rates'")
                rows.append((_number(listed.get("threshold"), f"{at}.exit.thresholds[{n}].threshold"),
                             {e: _number(r, f"{at}.exit.thresholds[{n}].rates.{e}") for e, r in rates.items()
                              if e != "final"}))
        if method == "E" and isinstance(entry.get("exit"), dict):
            listed = entry["exit"].get("thresholds") or []
            if not isinstance(listed, list) or not all(isinstance(t, dict) for t in listed):
                raise InputError(f"{at}.exit.thresholds must be a list of objects")
            reported = tuple((_number(t.get("threshold"), f"{at}.exit.thresholds.threshold"),
                              _number(t.get("accuracy"), f"{at}.exit.thresholds.accuracy")) for t in listed)
        sweep: tuple[tuple[float, float], ...] = ()
        if method != "E" and rows and all(isinstance(t.get("accuracy"), (int, float)) and not isinstance(
                t.get("accuracy"), bool) for t in entry["exit"]["thresholds"]):
            sweep = tuple((t, _number(listed["accuracy"], f"{at}.exit.thresholds[{n}].accuracy"))
                          for n, ((t, _), listed) in enumerate(zip(rows, entry["exit"]["thresholds"])))
        parsed.append(Stage(method, stage_config[CONFIG_FIELDS[method]], _number(entry.get("accuracy"), f"{at}.accuracy"),
                            shares, threshold, reported, tuple(rows), sweep))
    return Run(path=str(path), order=order, status=str(record.get("status")),
               base_accuracy=_number(stages[0].get("accuracy"), f"{where}: stages[0].accuracy"),
               stages=tuple(parsed),
               setup={"teacher": config.get("teacher"), "dataset": data.get("name"),
                      "input_shape": data.get("input_shape"), "num_classes": data.get("num_classes")},
               base_training=config.get("base") if isinstance(config.get("base"), dict) else None,
               seed=config["seed"] if isinstance(config.get("seed"), int) and not isinstance(config["seed"], bool)
               else None,
               test_samples=_test_size(data))


def _test_size(data: dict[str, Any]) -> int | None:
    sizes = data.get("sizes")
    test = sizes.get("test") if isinstance(sizes, dict) else None
    return test if isinstance(test, int) and not isinstance(test, bool) and test > 0 else None


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


# ---- output --------------------------------------------------------------------------------------

def _files(paths: Sequence[str]) -> str:
    names = [Path(p).name for p in paths]
    return ", ".join(names) if len(names) <= 4 else ", ".join(names[:3]) + f" and {len(names) - 3} more"


def _fit_summary(fit: LinearFit, equations: Sequence[Equation]) -> dict[str, Any]:
    return {"equations": len(equations), "rank": fit.rank, "dof": fit.dof,
            "rms": None if not equations else fit.rms,
            "outside_measured_range": sum(e.outside for e in equations)}


def _exit_summary(result: FitResult) -> dict[str, Any]:
    ex = result.exit
    return {"equations": len(ex.equations), "cells": ex.cells, "rank": ex.rank,
            "rms": None if not ex.equations else ex.rms, "smoothing": ex.smoothing}


def fitted_profile(profile: Profile, result: FitResult, run_paths: Sequence[str], base_path: str | None,
                   command: str = "", selection: Selection | None = None) -> dict[str, Any]:
    """The base profile with its interactions replaced by the fitted (identified) terms."""
    data = copy.deepcopy(profile.raw)
    residual = {"accuracy": f"residual rms {result.accuracy.rms:.3g} points over {len(result.accuracy_equations)} "
                            "equations",
                "exit_scale": f"residual rms {result.exit.rms:.3g} (log share) over {len(result.exit.equations)} "
                              f"equations in {result.exit.cells} (threshold, exit) cells"}
    interactions = []
    grouped: dict[tuple[str, str], list[TermFit]] = {}
    for t in result.terms:
        if t.kind == "accuracy" and t.first is None:
            grouped.setdefault((t.before, t.after), []).append(t)
    for (before, after), fits in grouped.items():
        interactions.append({"before": before, "after": after, "parameter": PARAMETERS[after],
                             "points": [{**({} if t.threshold is None else {"threshold": t.threshold}),
                                         "value": t.value, "accuracy": t.estimate, "std_error": t.std_error,
                                         "equations": t.equations} for t in fits],
                             "source": f"fit of RUN files {_files(run_paths)}, {residual['accuracy']}"})
    for (first, before, after), fits in _triple_groups(result.terms).items():
        interactions.append({"first": first, "before": before, "after": after,
                             "points": [{"before_value": t.before_value, "value": t.value, "accuracy": t.estimate,
                                         "std_error": t.std_error, "equations": t.equations} for t in fits],
                             "source": f"fit of RUN files {_files(run_paths)}, {residual['accuracy']}"})
    for table in result.exit.tables:
        interactions.append(table_json(table, result.exit.smoothing,
                                       f"fit of RUN files {_files(run_paths)}, {residual['exit_scale']}"))
    data["interactions"] = interactions
    data.pop("spread", None)  # calibrated for the terms replaced here; fit --select calibrates anew
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
        "exit_scale": _exit_summary(result),
        "unidentified": [_unidentified_json(u) for u in [*result.unidentified, *_incomplete_triples(result)]],
        "replaced_interactions": profile.raw.get("interactions", []),
        "refined_deltas": [_delta_json(d) for d in result.deltas],
        "ridge": result.ridge,
        "dropped": list(result.dropped),
        "selection": None if selection is None else {k: v for k, v in selection.to_dict().items() if k != "tried"},
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
            "value": u.value, "threshold": u.threshold, "reason": u.reason}


def _equation_json(e: Equation, residual: float, names: Sequence[str]) -> dict[str, Any]:
    return {"run": e.run, "stage": e.stage, "method": e.method, "threshold": e.threshold, "observed": e.observed,
            "profile_part": e.fixed,
            "unknowns": {name: float(w) for name, w in zip(names, e.row) if w},
            "residual": residual, "outside_measured_range": e.outside}


def base_training_warnings(runs: Sequence[Run], profile: Profile) -> list[str]:
    """Runs whose base model trained otherwise than the profile's: their deltas and terms mix the two
    trainings' accuracy levels (allowed: another budget is a real use; said, never silent)."""
    wanted = profile.setup.get("base_training")
    if not isinstance(wanted, dict):
        return []
    warnings = []
    for run in runs:
        got = run.base_training or {}
        differ = [f"{k} {got.get(k)!r} (profile {v!r})" for k, v in wanted.items() if k in got and got[k] != v]
        if differ:
            warnings.append(f"{Path(run.path).name}: base training {', '.join(differ)}")
    return warnings


def fit_json(result: FitResult, out: str, base_path: str | None, warnings: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "_type": "chaincomp.Fit", "_version": 1, "out": out, "base_profile": base_path or "(shipped default)",
        "base_accuracy": result.base_accuracy, "warnings": list(warnings), "ridge": result.ridge,
        "dropped": list(result.dropped),
        "runs": [{"path": r.path, "order": r.order, "status": r.status, "stages": len(r.stages)} for r in result.runs],
        "terms": [{"first": t.first, "before": t.before, "after": t.after, "kind": t.kind, "before_value": t.before_value,
                   "value": t.value, "threshold": t.threshold, "estimate": t.estimate, "std_error": t.std_error,
                   "equations": t.equations}
                  for t in result.terms],
        "unidentified": [_unidentified_json(u) for u in [*result.unidentified, *_incomplete_triples(result)]],
        "deltas": [_delta_json(d) for d in result.deltas],
        "accuracy": {**_fit_summary(result.accuracy, result.accuracy_equations),
                     "residuals": [_equation_json(e, float(r), [column_name(k) for k in result.accuracy_columns])
                                   for e, r in zip(result.accuracy_equations, result.accuracy.residuals)]},
        "exit_scale": {**_exit_summary(result),
                       "tables": [{"term": t.letters, "parameter": PARAMETERS[exit_value(t.letters)],
                                   "values": list(t.values), "thresholds": list(t.thresholds), "exits": list(t.exits),
                                   "scale": np.exp(t.log_scale).tolist(),
                                   "log_std_error": [[[None if math.isnan(x) else x for x in row] for row in value]
                                                     for value in t.log_std_error.tolist()],
                                   "equations": list(t.equations)} for t in result.exit.tables],
                       "residuals": [{"run": e.run, "stage": e.stage, "method": e.method, "threshold": e.threshold,
                                      "exit": e.exit, "observed": e.observed,
                                      "unknowns": {f"{k[0]}@{k[1]}": w for k, w in e.row.items()},
                                      "residual": None if math.isnan(r) else float(r)}
                                     for e, r in zip(result.exit.equations, result.exit.residuals)],
                       "notes": result.exit.notes},
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_fit(report: dict[str, Any], largest: int = 10) -> str:
    acc, ex = report["accuracy"], report["exit_scale"]
    lines = [f"fit of {len(report['runs'])} run records against {report['base_profile']} -> {report['out']}"
             + (f" (ridge {report['ridge']:g} on the accuracy terms)" if report.get("ridge") else "")]
    lines += [f"warning: {w}" for w in report["warnings"]] + [""]
    lines += [f"accuracy terms (points j gains when it runs after i, at j's value, and E's threshold when i is E): "
              f"{acc['equations']} equations, "
              f"rank {acc['rank']}, residual rms {_fmt(acc['rms'], '.3f')}",
              f"  {'term':<6} {'at':>8} {'estimate':>9} {'std err':>8} {'equations':>9}"]
    for t in (t for t in report["terms"] if t["kind"] == "accuracy" and t["first"] is None):
        at = f"{t['value']:g}" if isinstance(t["value"], (int, float)) else str(t["value"])
        at += "" if t.get("threshold") is None else f",E={t['threshold']:g}"
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
    lines += ["", f"exit-rate tables (scale of the rate at each exit, smoothed by {_fmt(ex['smoothing'], '.4g')}; fitted "
                  f"in log space per threshold and exit): {ex['equations']} equations in {ex['cells']} cells, "
                  f"rank {ex['rank']}, residual rms {_fmt(ex['rms'], '.3f')} (log share)"]
    for table in ex["tables"]:
        shown = sorted({0, len(table["thresholds"]) // 2, len(table["thresholds"]) - 1})
        if table is ex["tables"][0]:
            lines.append(f"  {'term':<6} {'at':>8} {'exit':<8} "
                         + " ".join(f"{'t=' + format(table['thresholds'][t], 'g'):>8}" for t in shown)
                         + f" {'equations':>9}")
        for v, value in enumerate(table["values"]):
            at = f"{value:g}" if isinstance(value, (int, float)) else str(value)
            for x, name in enumerate(table["exits"]):
                lines.append(f"  {table['term']:<6} {at:>8} {name:<8} "
                             + " ".join(f"{'x' + format(table['scale'][v][t][x], '.3g'):>8}" for t in shown)
                             + f" {table['equations'][v]:>9}")
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
                  f"{'' if u['value'] is None else ('' if u['before_value'] is not None else '@') + str(u['value'])}"
                  f"{'' if u.get('threshold') is None else ',E=' + format(u['threshold'], 'g')} "
                  f"{u['kind']}: {u['reason']}" for u in report["unidentified"]]
    rows = sorted(acc["residuals"], key=lambda r: -abs(r["residual"]))[:largest]
    if rows:
        lines += ["", f"largest accuracy residuals ({len(rows)} of {len(acc['residuals'])}; all in --json):",
                  f"  {'run':<24} {'stage':>5} {'observed':>9} {'profile':>7} {'residual':>9}"]
        for r in rows:
            flag = "  (outside measured range)" if r["outside_measured_range"] else ""
            lines.append(f"  {Path(r['run']).name:<24} {r['stage']:>3} {r['method']} {r['observed']:>+9.3f} "
                         f"{r['profile_part']:>+7.3f} {r['residual']:>+9.3f}{flag}")
    outside = acc["outside_measured_range"]
    if outside:
        lines.append(f"note: {outside} equations use a hyperparameter outside the profile's measured range "
                     "(its curve is clamped there)")
    cv = report.get("cross_validation")
    if cv:
        f, a = cv["fitted"], cv["additive"]
        lines += ["", f"cross-validated, leave one seed out ({cv['runs']} runs; seeds {cv['seeds']}): the final "
                  f"model's loss, mean |error| {f['mean_abs_error']:.2f} points with the fitted terms (rmse "
                  f"{f['rmse']:.2f}), {a['mean_abs_error']:.2f} without them (additive; rmse {a['rmse']:.2f})"]
    lines += _selection_lines(report.get("selection"))
    spread = report.get("spread")
    if spread:
        lines += ["", f"spreads calibrated on held-out runs ({spread['runs']}, each held out by seed and by order): "
                  f"training noise of {spread['floor']:.2f} + {spread['per_point']:.3f} x the predicted loss added in "
                  f"quadrature, so the predicted 90% interval holds {spread['coverage_after']:.0%} of them (it held "
                  f"{spread['coverage_before']:.0%}; median spread {spread['median_spread_before']:.2f} -> "
                  f"{spread['median_spread_after']:.2f})"]
    return "\n".join(lines)


def _selection_lines(selection: dict[str, Any] | None) -> list[str]:
    if not selection:
        return []
    schemes = [s for s in ("seed", "order") if s in selection["chosen"]]
    lines = ["", f"model chosen by cross-validation (--select; {selection['criterion']}): ridge "
             f"{selection['ridge']:g}, kept {', '.join(selection['kept']) or 'no term'}; left out "
             f"{', '.join(selection['dropped']) or 'none'}",
             f"  {'held out by':<20}" + "".join(f"{'one ' + s + ': |err|, rmse':>24}" for s in schemes)]
    for label, key in (("chosen", "chosen"), ("all terms, no ridge", "least_squares"), ("additive", "additive")):
        cells = [selection[key][s] for s in schemes]
        lines.append(f"  {label:<20}" + "".join(f"{_fmt(c['mean_abs_error'], '.2f') + ', ' + _fmt(c['rmse'], '.2f'):>24}"
                                                for c in cells))
    lines.append("  (errors of the final model's accuracy change, in points; the choice was made on these same "
                 "folds, so the chosen model's are optimistic: judge it on held-out seeds with chaincomp benchmark)")
    return lines


# ---- the entry point -----------------------------------------------------------------------------

@dataclass(frozen=True)
class FitReport(Result):
    """A fit: ``to_dict()`` is ``fit --json``; ``profile`` the profile written to ``out``."""

    profile: dict[str, Any]

    def format(self) -> str:
        return format_fit(self.data)


def _final_loss(profile: Profile, run: Run, load: Any) -> float:
    """The accuracy ``run``'s final model loses against the base, as ``profile`` predicts it."""
    settings = {stage.method: stage.value for stage in run.stages}
    grid = Grid({m: (v,) for m, v in settings.items()})
    prediction = predict(profile, run.order[:len(run.stages)], grid, load, profile.setup["teacher"])
    return profile.base_accuracy - float(prediction.accuracy[0])


def _table_loader(profile: Profile) -> Any:
    from functools import cache

    from bitops.models import ModelSpec, load_model_table

    setup = profile.setup

    @cache
    def load(name: str) -> Any:
        return load_model_table(ModelSpec(name, input_shape=tuple(setup.get("input_shape", (3, 32, 32))),
                                          num_classes=int(setup.get("num_classes", 10)),
                                          exit_head=setup.get("exit_head", "conv")))

    return load


def _held_out(runs: Sequence[Run], profile: Profile, refine_deltas: bool, triples: Sequence[str], ridge: float,
              dropped: Sequence[str], by: str):
    """(fitted profile, held-out runs) per fold: one seed, or one order, held out; the held-out runs
    are those the chain model predicts (no repeated method)."""
    label = (lambda r: r.seed) if by == "seed" else (lambda r: r.order[:len(r.stages)])
    usable = [r for r in runs if label(r) is not None and r.stages and len(set(r.order)) == len(r.order)]
    groups = sorted({label(r) for r in usable}, key=str)
    if len(groups) < 2:
        return
    for group in groups:
        train = [r for r in runs if label(r) != group]
        held = [r for r in usable if label(r) == group]
        if train and held:
            fit = fit_runs(train, profile, refine_deltas, list(triples), ridge, dropped)
            yield parse_profile(fitted_profile(profile, fit, [], None)), held


def cross_validate(runs: Sequence[Run], profile: Profile, refine_deltas: bool, triples: Sequence[str],
                   ridge: float = 0.0, dropped: Sequence[str] = ()) -> dict[str, Any] | None:
    """Leave one seed out: fit on the other seeds' runs, predict the held-out runs' final loss
    (against their own base model), for the fitted profile and for it without interaction terms
    (additive). None when the runs hold fewer than two seeds, or repeat a method (not simulated)."""
    load = _table_loader(profile)
    errors: dict[str, list[float]] = {"fitted": [], "additive": []}
    for fitted, held in _held_out(runs, profile, refine_deltas, triples, ridge, dropped, "seed"):
        additive = replace(fitted, accuracy_terms={}, exit_scales={}, triple_terms={}, exit_tables={})
        for run in held:
            measured = run.base_accuracy - run.stages[-1].accuracy
            errors["fitted"].append(measured - _final_loss(fitted, run, load))
            errors["additive"].append(measured - _final_loss(additive, run, load))
    if not errors["fitted"]:
        return None
    return {"by": "seed", "seeds": sorted({r.seed for r in runs if r.seed is not None}), "runs": len(errors["fitted"]),
            **{name: {"mean_abs_error": float(np.mean(np.abs(e))), "rmse": float(np.sqrt(np.mean(np.square(e))))}
               for name, e in errors.items()}}


Z90 = confidence_z(0.95)  # the two-sided 90% interval is the prediction +- Z90 spreads


def calibrate_spread(runs: Sequence[Run], profile: Profile, refine_deltas: bool, triples: Sequence[str],
                     ridge: float = 0.0, dropped: Sequence[str] = ()) -> dict[str, Any] | None:
    """The noise of a new training, added in quadrature to the chain model's spreads, that makes its
    90% interval hold 90% of held-out runs: each run held out by seed and by order (as ``fit
    --select``), its measured final accuracy against the fitted profile's predicted accuracy, loss
    L (against the fold's base accuracy) and spread s (the base accuracy's included: a new seed
    trains a new base model). The noise is ``floor + per_point * max(L, 0)``: the models miss more
    the more they predict lost (a collapse is hard to place). A run's interval holds it once the
    noise reaches n = sqrt(max(0, (error / 1.645)^2 - s^2)); for each candidate floor (0 and every
    run's n) the smallest per_point that holds 90% of the runs, and of those the pair with the
    smallest mean spread. None when no fold can be held out."""
    load = _table_loader(profile)
    needed, spreads, errors, losses = [], [], [], []
    for by in ("seed", "order"):
        for fitted, held in _held_out(runs, profile, refine_deltas, triples, ridge, dropped, by):
            for run in held:
                grid = Grid({stage.method: (stage.value,) for stage in run.stages})
                p = predict(fitted, run.order[:len(run.stages)], grid, load, fitted.setup["teacher"])
                error, spread = run.stages[-1].accuracy - float(p.accuracy[0]), float(p.accuracy_std[0])
                needed.append(math.sqrt(max(0.0, (error / Z90) ** 2 - spread ** 2)))
                spreads.append(spread)
                errors.append(abs(error))
                losses.append(max(0.0, fitted.base_accuracy - float(p.accuracy[0])))
    if not needed:
        return None
    need, loss, spread = np.asarray(needed), np.asarray(losses), np.asarray(spreads)
    held = math.ceil(0.9 * len(need) - 1e-9)  # runs the interval must hold
    best = None
    for floor in sorted({0.0, *need.tolist()}):
        # per run, the per_point it needs on top of this floor (inf: only a larger floor would do)
        short = np.maximum(need - floor, 0.0)
        wanted = np.where(short == 0, 0.0, np.divide(short, loss, out=np.full_like(short, np.inf), where=loss > 0))
        per_point = float(np.sort(wanted)[held - 1])
        if not math.isfinite(per_point):
            continue
        mean = float(np.mean(np.sqrt(spread ** 2 + (floor + per_point * loss) ** 2)))
        if best is None or mean < best[0] - 1e-12:
            best = (mean, floor, per_point)
    _, floor, per_point = best
    after = np.sqrt(spread ** 2 + (floor + per_point * loss) ** 2)
    return {"floor": floor, "per_point": per_point, "runs": len(need), "by": ["seed", "order"],
            "coverage_before": float(np.mean(np.asarray(errors) <= Z90 * spread)),
            "coverage_after": float(np.mean(np.asarray(errors) <= Z90 * after + 1e-9)),
            "median_spread_before": float(np.median(spread)), "median_spread_after": float(np.median(after)),
            "mean_spread_after": float(np.mean(after)),
            "source": "fit --select: training noise floor + per_point x predicted loss, the sharpest whose 90% "
                      "intervals hold 90% of the runs held out by seed and by order "
                      "(simulator.fit_report.calibrate_spread)"}


def fit(runs: Sequence[str | Path], out: str | Path, *, profile: str | Path | None = None,
        allow_incomplete: bool = False, refine_deltas: bool = False, triples: Sequence[str] = (),
        ridge: float = 0.0, select: bool = False, calibrate: bool = False, command: str = "") -> FitReport:
    """Fit the interaction terms of ``profile`` (default: the shipped one) from run records and
    write the fitted profile to ``out`` (atomically, after the fit succeeded).

    ``ridge``: a penalty on the accuracy terms. ``select``: choose the penalty and the term
    families kept by cross-validation over the runs (:mod:`simulator.fit_select`) instead; it
    calibrates the spreads too. ``calibrate``: calibrate the spreads (:func:`calibrate_spread`)
    of the model fitted as asked, without selecting."""
    if not runs:
        raise InputError("runs: give at least one run record (RUN.json, written by chaincomp train)")
    target = check_writable("out", out)
    if any(Path(r).resolve() == target.resolve() for r in runs):
        raise InputError(f"out {str(out)!r} is one of the run records; choose another file")
    for triple in triples:
        if not is_triple(triple):
            raise InputError(f"triples entries are three different letters of D, P, Q, E, the last two P, Q or E; "
                             f"got {triple!r}")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
        raise InputError(f"ridge must be a finite number >= 0, got {ridge!r}")
    if select and ridge:
        raise InputError(f"ridge: give a penalty (got {ridge!r}) or select, not both: select chooses the penalty")
    base = load_profile(profile)
    paths = [str(r) for r in runs]
    read = read_runs(paths, base, allow_incomplete)
    selection, dropped = None, ()
    if select:
        selection = select_model(CVDesign.build(read, base, refine_deltas, list(triples)))
        if selection is None:
            raise InputError("select: the runs hold neither two seeds nor two orders to hold out; give more runs, "
                             "or fit without select")
        ridge, dropped = selection.ridge, selection.dropped
    result = fit_runs(read, base, refine_deltas, list(triples), float(ridge), dropped)
    base_path = None if profile is None else str(profile)
    data = fitted_profile(base, result, paths, base_path, command, selection)
    calibration = None
    if select or calibrate:
        calibration = calibrate_spread(read, base, refine_deltas, triples, float(ridge), dropped)
        if calibration is None and calibrate:
            raise InputError("calibrate: the runs hold neither two seeds nor two orders to hold out; give more runs, "
                             "or fit without calibrating")
    if calibration is not None:
        data["spread"] = calibration
        parse_profile(data, "the fitted profile")
    text = json.dumps(data, indent=1) + "\n"
    write_checked("out", target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    report = fit_json(result, str(out), base_path, base_training_warnings(result.runs, base))
    report["cross_validation"] = cross_validate(read, base, refine_deltas, triples, float(ridge), dropped)
    report["selection"] = None if selection is None else selection.to_dict()
    report["spread"] = calibration
    return FitReport(report, data)
