"""``chaincomp benchmark``: the simulator judged on trainings it never saw, beside baselines.

1. Every order of the profile's methods (the 24 of D, P, Q, E by default) at its operating point
   for each accuracy-loss budget: the largest predicted BitOpsCR whose loss stays within the
   budget at ``confidence`` (:func:`simulator.search.best_within`); an order with no such point
   at a budget is left out there (and counted as such).
2. Each distinct (order, settings) trained at every held-out seed (seeds the profile was not
   measured on), as one campaign through the campaign executors (shared prefixes train once;
   complete records are reused, so an interrupted benchmark continues).
3. Predicted vs measured, per seed, then averaged over the seeds, with bootstrap intervals that
   resample orders (an order's points at every budget go together): Kendall's tau and Spearman's
   rho of accuracy, BitOpsCR and the ranking score (the geometric mean over the budgets of the
   BitOpsCR within the budget, 1 where the measured loss is beyond it), the accuracy's mean
   |error| and RMSE, the measured / predicted BitOpsCR, and how often the predicted 90% interval
   holds the measured accuracy (coverage).
4. The same numbers for three baselines on the same runs: ``additive`` (the profile without its
   interaction terms), ``cost-only`` (every order's accuracy predicted the same, so the ranking is
   by predicted BitOpsCR) and ``seed-noise`` (the other held-out seed's measurement of the same
   run: what no predictor can beat).
5. The pick: per budget and seed, the order ranked first; its measured loss (against the base
   model of the same seed), whether it stayed within the budget, and its regret (the best measured
   BitOpsCR within the budget among all trained orders / the pick's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bitops.errors import InputError
from bitops.jsonio import check_plot, hold_lock, write_checked
from bitops.result import Result
from bitops.rules import check_confidence, check_integer
from simulator.confirm import Candidate, _plain, chain_config
from simulator.confirm_report import _training_template, check_out_dir
from simulator.model import Grid, Prediction, predict
from simulator.profile import Profile, load_profile
from simulator.search import best_within, confidence_z
from simulator.simulate import GridSpec, Simulation
from simulator.grid import (BOOTSTRAP, DEFAULT_BENCH_BUDGETS, DEFAULT_BENCH_CONFIDENCE, DEFAULT_BENCH_SEEDS,
                            parse_budgets, parse_orders)

__all__ = ["DEFAULT_BENCH_BUDGETS", "DEFAULT_BENCH_SEEDS", "BenchmarkResult", "benchmark", "format_benchmark"]

REPORT_TYPE = "chaincomp.Benchmark"
REPORT_VERSION = 1
INTERVAL = 0.9  # the level of the bootstrap intervals and of the predicted accuracy interval coverage checks
PREDICTORS = ("simulator", "challenger", "additive", "cost-only", "seed-noise")


@dataclass(frozen=True)
class Point:
    """An order at its operating point for one budget, as the simulator and the additive baseline predict it."""

    order: str
    budget: float
    settings: dict[str, Any]
    accuracy: float
    accuracy_std: float
    bitops_cr: float
    additive_accuracy: float
    additive_std: float
    challenger: tuple[float, float, float] | None = None  # --challenger's accuracy, std, BitOpsCR at these settings

    @property
    def run(self) -> str:
        """The run's name (its record is ``NAME_sSEED.json``): the order and its settings."""
        parts = [self.order] + [f"{m}{v:g}" if isinstance(v, float) else f"{m}{v}" for m, v in self.settings.items()]
        return re.sub(r"[^A-Za-z0-9_.-]", "-", "_".join(parts))


def operating_points(sim: Simulation, additive: Profile, orders: Sequence[str], budgets: Sequence[float],
                     confidence: float, challenger: Profile | None = None
                     ) -> tuple[list[Point], dict[float, list[str]]]:
    """Each order's operating point per budget, and per budget the orders that have none; with
    ``challenger``, its predictions at the same settings too."""
    z = confidence_z(confidence)
    base = sim.profile.base_accuracy
    points, missing = [], {b: [] for b in budgets}
    for order in orders:
        p = sim.predict(order)
        for budget in budgets:
            hit = best_within(p, base, budget, z)
            if hit is None:
                missing[budget].append(order)
                continue
            i = hit[1]
            settings = {order[pos]: _plain(values[i]) for pos, values in p.settings.items()}
            a = _predict_one(additive, order, settings, sim)
            c = None if challenger is None else _predict_one(challenger, order, settings, sim)
            points.append(Point(order, budget, settings, float(p.accuracy[i]), float(p.accuracy_std[i]),
                                float(p.bitops_cr[i]), float(a.accuracy[0]), float(a.accuracy_std[0]),
                                None if c is None else (float(c.accuracy[0]), float(c.accuracy_std[0]),
                                                        float(c.bitops_cr[0]))))
    return points, missing


def _predict_one(profile: Profile, order: str, settings: dict[str, Any], sim: Simulation) -> Prediction:
    grid = Grid({m: (v,) for m, v in settings.items()})
    return predict(profile, order, grid, sim.table, profile.setup["teacher"])


def without_terms(profile: Profile) -> Profile:
    """The additive baseline: the profile's single-method curves alone."""
    return replace(profile, accuracy_terms={}, exit_scales={}, triple_terms={}, exit_tables={})


# ---- statistics ------------------------------------------------------------------------------------

def _signs(values: Sequence[float]) -> np.ndarray:
    """sign(x_i - x_j) for every pair, 0 where the two are equal to a relative 1e-9 (predictions
    summed in another order of stages differ in the last bits, and must not be ranked on that)."""
    x = np.asarray(values, dtype=np.float64)
    d = x[:, None] - x[None, :]
    tol = np.maximum(1e-9 * np.maximum(np.abs(x)[:, None], np.abs(x)[None, :]), 1e-9)
    return np.where(np.abs(d) <= tol, 0.0, np.sign(d))


def _tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b: concordant minus discordant pairs over the pairs untied in each; None
    where undefined (fewer than 2 values, or one side constant)."""
    if len(x) < 2:
        return None
    sx, sy = _signs(x), _signs(y)
    norm = math.sqrt(float((sx * sx).sum()) * float((sy * sy).sum()))
    return None if norm == 0 else float((sx * sy).sum()) / norm


def _rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: the correlation of the (tie-averaged) ranks; None where undefined."""
    if len(x) < 2:
        return None
    rx, ry = _signs(x).sum(axis=1), _signs(y).sum(axis=1)  # rank * 2 - (n - 1): the same correlation
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return None if norm == 0 else float(rx @ ry) / norm


def _geometric_score(values: Sequence[float | None]) -> float:
    """:func:`simulator.search.score`: the geometric mean, an unreachable budget counting as 1x."""
    return math.exp(math.fsum(math.log(v) if v is not None else 0.0 for v in values) / len(values))


def _metrics(rows: list[dict[str, Any]], budgets: Sequence[float], orders: Sequence[str]) -> dict[str, float | None]:
    """One predictor on one seed's rows (each: order, budget, predicted acc/std/cr, measured acc/loss/cr)."""
    out: dict[str, float | None] = {}
    have_acc = [r for r in rows if r["pred_acc"] is not None]
    if have_acc:
        pred = [r["pred_acc"] for r in have_acc]
        meas = [r["acc"] for r in have_acc]
        err = np.subtract(meas, pred)
        out["accuracy_tau"] = _tau(pred, meas)
        out["accuracy_spearman"] = _rho(pred, meas)
        out["mean_abs_error"] = float(np.abs(err).mean())
        out["rmse"] = math.sqrt(float((err ** 2).mean()))
        z = confidence_z(0.5 + INTERVAL / 2)
        held = [abs(r["acc"] - r["pred_acc"]) <= z * r["pred_std"] for r in have_acc if r["pred_std"] is not None]
        out["coverage"] = sum(held) / len(held) if held else None
    else:
        out.update(accuracy_tau=None, accuracy_spearman=None, mean_abs_error=None, rmse=None, coverage=None)
    out["bitops_cr_tau"] = _tau([r["pred_cr"] for r in rows], [r["cr"] for r in rows])
    ratios = [r["cr"] / r["pred_cr"] for r in rows]
    out["bitops_cr_ratio"] = math.exp(math.fsum(map(math.log, ratios)) / len(ratios)) if rows else None
    out["bitops_cr_within_5pct"] = sum(abs(q - 1) <= 0.05 for q in ratios) / len(ratios) if rows else None
    # the ranking score per order: geometric mean over the budgets of the BitOpsCR within it (1 where not)
    by_order: dict[str, dict[float, dict[str, Any]]] = {o: {} for o in orders}
    for r in rows:
        by_order[r["order"]][r["budget"]] = r
    predicted, measured = [], []
    for order in orders:
        mine = by_order[order]
        predicted.append(_geometric_score([mine[b]["pred_score"] if b in mine else None for b in budgets]))
        measured.append(_geometric_score([mine[b]["cr"] if b in mine and mine[b]["loss"] <= b + 1e-12 else None
                                          for b in budgets]))
    out["score_tau"] = _tau(predicted, measured)
    out["score_spearman"] = _rho(predicted, measured)
    return out


def _summaries(rows_by_seed: dict[int, list[dict[str, Any]]], budgets: Sequence[float], orders: Sequence[str],
               rng: np.random.Generator, draws: int) -> dict[str, dict[str, Any]]:
    """Each metric averaged over the seeds, with a bootstrap interval over orders."""
    grouped = [{o: [r for r in rows if r["order"] == o] for o in orders} for rows in rows_by_seed.values()]

    def averaged(choice: Sequence[str]) -> dict[str, float | None]:
        per_seed = []
        for groups in grouped:
            # a resample may hold an order twice: its rows are renamed so they count twice
            picked = [dict(r, order=f"{o}#{k}") for k, o in enumerate(choice) for r in groups[o]]
            per_seed.append(_metrics(picked, budgets, [f"{o}#{k}" for k, o in enumerate(choice)]))
        keys = per_seed[0].keys()
        return {k: (None if any(m[k] is None for m in per_seed) else float(np.mean([m[k] for m in per_seed])))
                for k in keys}

    point = averaged(list(orders))
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(draws):
        draw = averaged(list(rng.choice(list(orders), size=len(orders), replace=True)))
        for k, v in draw.items():
            if v is not None:
                samples[k].append(v)
    tail = (1 - INTERVAL) / 2
    return {k: {"value": v, "interval": (None if v is None or len(samples[k]) < draws / 2 else
                                         [float(np.quantile(samples[k], tail)), float(np.quantile(samples[k], 1 - tail))])}
            for k, v in point.items()}


# ---- the benchmark ---------------------------------------------------------------------------------

def _rows(points: Sequence[Point], records: dict[tuple[str, int], dict[str, Any]], seed: int, other: int | None,
          predictor: str, base_accuracy: float, challenger_base: float | None = None) -> list[dict[str, Any]]:
    """One seed's runs as ``predictor`` sees them. ``pred_score`` is the point's part of the ranking
    score: its predicted BitOpsCR where its predicted loss is within the budget (always, for
    cost-only), None (1x) where not."""
    rows = []
    for p in points:
        record = records[(p.run, seed)]
        base, final = record["stages"][0]["accuracy"], record["stages"][-1]
        row = {"order": p.order, "budget": p.budget, "acc": final["accuracy"], "loss": base - final["accuracy"],
               "cr": final["cost"]["bitops_cr"], "pred_cr": p.bitops_cr}
        if predictor == "simulator":
            row.update(pred_acc=p.accuracy, pred_std=p.accuracy_std, pred_loss=base_accuracy - p.accuracy)
        elif predictor == "challenger":
            acc, std, cr = p.challenger
            row.update(pred_acc=acc, pred_std=std, pred_cr=cr, pred_loss=challenger_base - acc)
        elif predictor == "additive":
            row.update(pred_acc=p.additive_accuracy, pred_std=p.additive_std,
                       pred_loss=base_accuracy - p.additive_accuracy)
        elif predictor == "cost-only":
            row.update(pred_acc=None, pred_std=None, pred_loss=0.0)
        else:  # seed-noise: the same run at the other held-out seed predicts this one
            twin = records[(p.run, other)]["stages"]
            row.update(pred_acc=twin[-1]["accuracy"], pred_std=None, pred_cr=twin[-1]["cost"]["bitops_cr"],
                       pred_loss=twin[0]["accuracy"] - twin[-1]["accuracy"])
        row["pred_score"] = row["pred_cr"] if row["pred_loss"] <= p.budget + 1e-12 else None
        rows.append(row)
    return rows


def _picks(points: Sequence[Point], records: dict[tuple[str, int], dict[str, Any]], budgets: Sequence[float],
           seeds: Sequence[int], chooser: Callable[[float, Sequence[Point]], Point | None] | None = None
           ) -> list[dict[str, Any]]:
    """Per (budget, seed): the predicted best order, its measured loss, within budget, regret.
    ``chooser(budget, points)``: another predictor's pick among the trained points (default: the
    simulator's, the largest predicted BitOpsCR; every point of a budget is within it)."""
    picks = []
    for budget in budgets:
        here = [p for p in points if p.budget == budget]
        pick = max(here, key=lambda p: p.bitops_cr) if chooser is None and here else (
            chooser(budget, here) if here else None)
        if pick is None:
            picks.append({"budget": budget, "order": None})
            continue
        for seed in seeds:
            def measured(p: Point) -> tuple[float, float]:
                record = records[(p.run, seed)]
                return record["stages"][0]["accuracy"] - record["stages"][-1]["accuracy"], \
                    record["stages"][-1]["cost"]["bitops_cr"]

            loss, cr = measured(pick)
            within = [measured(p)[1] for p in here if measured(p)[0] <= budget + 1e-12]
            best = max(within) if within else None
            ok = loss <= budget + 1e-12
            picks.append({"budget": budget, "seed": seed, "order": pick.order, "settings": pick.settings,
                          "predicted_bitops_cr": pick.bitops_cr if chooser is None else pick.challenger[2], "measured_loss": loss, "measured_bitops_cr": cr,
                          "within_budget": ok, "best_within_bitops_cr": best,
                          "regret": (best / cr) if ok and best else None})
    return picks


def benchmark_json(sim: Simulation, points: Sequence[Point], missing: dict[float, list[str]],
                   records: dict[tuple[str, int], dict[str, Any]], budgets: Sequence[float], seeds: Sequence[int],
                   confidence: float, orders: Sequence[str], draws: int = BOOTSTRAP,
                   bootstrap_seed: int = 0, challenger: Profile | None = None,
                   challenger_path: str | None = None) -> dict[str, Any]:
    predictors = {}
    for name in PREDICTORS:
        if (name == "seed-noise" and len(seeds) < 2) or (name == "challenger" and challenger is None):
            continue
        by_seed = {s: _rows(points, records, s, seeds[(k + 1) % len(seeds)], name, sim.profile.base_accuracy,
                            None if challenger is None else challenger.base_accuracy)
                   for k, s in enumerate(seeds)}
        predictors[name] = _summaries(by_seed, budgets, orders, np.random.default_rng(bootstrap_seed), draws)
    picks = _picks(points, records, budgets, seeds)
    challenger_picks = None
    if challenger is not None:
        z = confidence_z(confidence)

        def choose(budget: float, here: Sequence[Point]) -> Point | None:
            within = [p for p in here if challenger.base_accuracy - (p.challenger[0] - z * p.challenger[1])
                      <= budget + 1e-12]
            return max(within, key=lambda p: p.challenger[2]) if within else None

        challenger_picks = _picks(points, records, budgets, seeds, choose)
    runs = []
    for p in points:
        for s in seeds:
            final = records[(p.run, s)]["stages"][-1]
            runs.append({"order": p.order, "budget": p.budget, "seed": s, "settings": p.settings, "run": p.run,
                         "predicted": {"accuracy": p.accuracy, "accuracy_std": p.accuracy_std, "bitops_cr": p.bitops_cr,
                                       "additive_accuracy": p.additive_accuracy,
                                       **({} if p.challenger is None else {"challenger": list(p.challenger)})},
                         "measured": {"accuracy": final["accuracy"],
                                      "base_accuracy": records[(p.run, s)]["stages"][0]["accuracy"],
                                      "bitops_cr": final["cost"]["bitops_cr"]}})
    return {
        "_type": REPORT_TYPE, "_version": REPORT_VERSION,
        "profile": {"path": sim.profile_path or "(shipped default)", "setup": sim.profile.setup,
                    "seeds": sim.profile.provenance.get("seeds"), "base_accuracy": sim.profile.base_accuracy},
        "budgets": list(budgets), "seeds": list(seeds), "confidence": confidence, "orders": list(orders),
        "interval": INTERVAL, "bootstrap": draws,
        "points": len(points), "runs": len({p.run for p in points}) * len(seeds),
        "unreachable": {f"{b:g}": v for b, v in missing.items() if v},
        "challenger": None if challenger is None else {"path": challenger_path,
                                                        "base_accuracy": challenger.base_accuracy},
        "predictors": predictors,
        "picks": picks,
        "pick_summary": _pick_summary(picks),
        "challenger_picks": challenger_picks,
        "challenger_pick_summary": None if challenger_picks is None else _pick_summary(challenger_picks),
        "measurements": runs,
    }


def _pick_summary(picks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    held = [p for p in picks if p["order"] is not None]
    regrets = [p["regret"] for p in held if p["regret"] is not None]
    return {"cases": len(held), "within_budget": sum(p["within_budget"] for p in held),
            "median_regret": float(np.median(regrets)) if regrets else None,
            "max_regret": float(max(regrets)) if regrets else None}


def _cell(metric: dict[str, Any], fmt: str) -> str:
    v = metric["value"]
    if v is None:
        return "-"
    text = format(v, fmt)
    if metric["interval"]:
        lo, hi = metric["interval"]
        text += f" [{format(lo, fmt)}, {format(hi, fmt)}]"
    return text


COLUMNS = (("accuracy_tau", "acc tau", "+.2f"), ("accuracy_spearman", "acc rho", "+.2f"),
           ("mean_abs_error", "acc |err|", ".2f"), ("rmse", "acc rmse", ".2f"), ("coverage", "cover 90%", ".2f"),
           ("bitops_cr_tau", "BitOpsCR tau", "+.2f"), ("bitops_cr_ratio", "meas/pred", ".3f"),
           ("bitops_cr_within_5pct", "within 5%", ".2f"), ("score_tau", "score tau", "+.2f"),
           ("score_spearman", "score rho", "+.2f"))


def format_benchmark(report: dict[str, Any]) -> str:
    prof = report["profile"]
    lines = [f"benchmark: {len(report['orders'])} orders x budgets {', '.join(f'{b:g}' for b in report['budgets'])} "
             f"points at confidence {report['confidence']:g}: {report['points']} operating points, "
             f"{report['runs']} trainings at held-out seeds {', '.join(map(str, report['seeds']))} "
             f"(profile {prof['path']}, measured at seeds {prof['seeds']})"]
    if report.get("challenger"):
        lines.append(f"challenger: {report['challenger']['path']}, judged on the same trained points")
    for budget, orders in report["unreachable"].items():
        lines.append(f"  no point predicted within {budget} points for {len(orders)} orders: {', '.join(orders)}")
    lines += ["", f"metric (mean over the seeds; [{report['interval']:.0%} bootstrap interval over orders])"]
    names = list(report["predictors"])
    width = 24
    lines.append(f"{'':<13}" + "".join(f"{n:>{width}}" for n in names))
    for key, label, fmt in COLUMNS:
        lines.append(f"{label:<13}" + "".join(f"{_cell(report['predictors'][n][key], fmt):>{width}}" for n in names))
    lines += _pick_lines("pick (the order ranked first per budget, trained)", report["pick_summary"], report["picks"])
    if report.get("challenger_picks") is not None:
        lines += _pick_lines(f"challenger's pick (among the same trained points; {report['challenger']['path']})",
                             report["challenger_pick_summary"], report["challenger_picks"])
    confident = report.get("confident_picks")
    if confident:
        goal = confident["goal"]
        for name in ("simulator", "challenger"):
            if name not in confident:
                continue
            c = confident[name]
            lines += ["", f"{name}'s own pick at confidence {confident['confidence']:g} (simulate --confidence), "
                      f"trained: within budget in {c['within_budget']} of {c['cases']} (budget, seed) cases, regret "
                      f"<= {goal['regret']:g}x in {c['regret_within_goal']}; median regret "
                      + ("-" if c["median_regret"] is None else f"{c['median_regret']:.2f}x")
                      + (f"; no pick within {', '.join(f'{b:g}' for b in c['unpicked_budgets'])} points"
                         if c["unpicked_budgets"] else "")]
            for p in c["picks"]:
                regret = "-" if p["regret"] is None else f"{p['regret']:.2f}x"
                lines.append(f"  {p['budget']:g} points, seed {p['seed']}: {p['order']} "
                             f"({', '.join(f'{m}={v}' for m, v in p['settings'].items())}) lost "
                             f"{p['measured_loss']:.2f} ({'within' if p['within_budget'] else 'OVER'}), BitOpsCR "
                             f"{p['measured_bitops_cr']:.0f}x (predicted {p['predicted_bitops_cr']:.0f}x), regret {regret}")
    return "\n".join(lines)


def _pick_lines(title: str, s: dict[str, Any], picks: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["", f"{title}: within budget in {s['within_budget']} of {s['cases']} (budget, seed) cases; regret median "
             + ("-" if s["median_regret"] is None else f"{s['median_regret']:.2f}x")
             + ", max " + ("-" if s["max_regret"] is None else f"{s['max_regret']:.2f}x")]
    for p in picks:
        if p["order"] is None:
            lines.append(f"  {p['budget']:g} points: no order predicted within it")
            continue
        regret = "-" if p["regret"] is None else f"{p['regret']:.2f}x"
        lines.append(f"  {p['budget']:g} points, seed {p['seed']}: {p['order']} lost {p['measured_loss']:.2f} "
                     f"({'within' if p['within_budget'] else 'OVER'}), BitOpsCR {p['measured_bitops_cr']:.0f}x "
                     f"(predicted {p['predicted_bitops_cr']:.0f}x), regret {regret}")
    return lines


# predictor -> (where its predicted accuracy is in a measurement's "predicted", marker, colour)
_PLOTTED = {"simulator": ("accuracy", "o", "tab:blue"), "challenger": ("challenger", "s", "tab:orange"),
            "additive": ("additive_accuracy", "^", "tab:grey")}


def plot_benchmark(report: dict[str, Any], path: Path) -> None:
    """Left: predicted vs measured accuracy of every trained run, one marker per predictor, with
    y = x and each predictor's mean |error| and coverage in the legend. Right: predicted vs
    measured BitOpsCR (log), the budgets in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    runs = report["measurements"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    values = []
    for name, (key, marker, colour) in _PLOTTED.items():
        if name not in report["predictors"]:
            continue
        predicted = [r["predicted"][key][0] if key == "challenger" else r["predicted"][key] for r in runs]
        measured = [r["measured"]["accuracy"] for r in runs]
        values += predicted + measured
        stats = report["predictors"][name]
        mae, cover = stats["mean_abs_error"]["value"], stats["coverage"]["value"]
        label = f"{name}: |err| {mae:.2f}" + ("" if cover is None else f", 90% interval holds {cover:.0%}")
        left.scatter(predicted, measured, s=14, marker=marker, color=colour, alpha=0.6, label=label)
    low, high = min(values), min(100.0, max(values))
    pad = 0.04 * (high - low or 1.0)
    span = [low - pad, high + pad]
    left.plot(span, span, color="grey", ls=":", lw=1)
    left.set_xlim(span)
    left.set_ylim(span)
    left.set_xlabel("predicted accuracy (%)")
    left.set_ylabel("measured accuracy (%)")
    left.set_title(f"accuracy at {len(runs)} operating points x seeds ({report['runs']} trainings, held-out seeds "
                   f"{', '.join(map(str, report['seeds']))})", fontsize=9)
    left.legend(fontsize=7, loc="upper left")
    cmap = plt.get_cmap("viridis")
    budgets = report["budgets"]
    for k, budget in enumerate(budgets):
        mine = [r for r in runs if r["budget"] == budget]
        right.scatter([r["predicted"]["bitops_cr"] for r in mine], [r["measured"]["bitops_cr"] for r in mine], s=14,
                      color=cmap(k / max(len(budgets) - 1, 1)), alpha=0.7, label=f"budget {budget:g} points")
    crs = [r["predicted"]["bitops_cr"] for r in runs] + [r["measured"]["bitops_cr"] for r in runs]
    span = [min(crs) / 1.2, max(crs) * 1.2]
    right.plot(span, span, color="grey", ls=":", lw=1)
    right.set_xscale("log")
    right.set_yscale("log")
    for axis in (right.xaxis, right.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        axis.set_minor_formatter(NullFormatter())
    ratio = report["predictors"]["simulator"]["bitops_cr_ratio"]["value"]
    right.set_title(f"BitOpsCR (simulator): measured / predicted {ratio:.3f}", fontsize=9)
    right.set_xlabel("predicted BitOpsCR")
    right.set_ylabel("measured BitOpsCR")
    right.legend(fontsize=7, loc="upper left")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class BenchmarkResult(Result):
    """The benchmark's report; ``to_dict()`` is ``benchmark --json``."""

    def format(self) -> str:
        return format_benchmark(self.data)

    def plot(self, path: str | Path) -> None:
        """Draw predicted vs measured accuracy and BitOpsCR of every trained run (atomic PNG)."""
        check_plot("plot", path)
        write_checked("plot", path, lambda tmp: plot_benchmark(self.data, tmp))


def _train(points: Sequence[Point], seeds: Sequence[int], sim: Simulation, directory: Path, training: dict[str, Any],
           epochs: int | None, lr: float | None, execution: Any, log: Callable[[str], None]
           ) -> dict[tuple[str, int], dict[str, Any]]:
    from trainer.campaign import run_campaign
    from trainer.campaign_format import Campaign, CampaignRun, write_campaign
    from trainer.record import read_record

    unique = {p.run: p for p in points}
    runs = []
    num_classes = int(sim.profile.setup.get("num_classes", 10))
    for seed in seeds:
        for name, p in unique.items():
            template = _training_template(sim.profile, p.order, epochs, lr, {**training, "seed": seed})
            candidate = Candidate(p.order, 0, 0.0, p.settings, True, p.accuracy, p.accuracy_std, p.bitops_cr, 0.0, False)
            config = chain_config(template, candidate, sim.profile)
            config.check_before_training(num_classes)
            runs.append(CampaignRun(f"{name}_s{seed}", f"{name}_s{seed}.json", config))
    campaign = Campaign(tuple(runs), command="chaincomp benchmark")
    path = directory / ".benchmark.campaign.json"
    write_campaign(campaign, path)
    result = run_campaign(campaign, path, execution.executor(), retries=execution.retries, log=log)
    failed = [row for row in result.data["runs"] if row["status"] == "failed"]
    if failed:
        raise InputError(f"{len(failed)} of the {len(runs)} trainings failed ({failed[0]['name']}: {failed[0]['error']}); "
                         f"the finished ones are kept in {str(directory)!r}: run the same command again to continue")
    return {(name, seed): read_record(directory / f"{name}_s{seed}.json") for seed in seeds for name in unique}


def benchmark(out_dir: str | Path, *, profile: str | Path | None = None, grid: GridSpec = None,
              orders: str | Sequence[str] = "all", budgets: str | Sequence[float] = DEFAULT_BENCH_BUDGETS,
              seeds: Sequence[int] = DEFAULT_BENCH_SEEDS, confidence: float = DEFAULT_BENCH_CONFIDENCE,
              epochs: int | None = None, lr: float | None = None, bootstrap: int = BOOTSTRAP,
              challenger: str | Path | None = None, pick_confidence: float | None = None,
              log: Callable[[str], None] = lambda message: None, **training: Any) -> BenchmarkResult:
    """Train every order at its operating point per budget at held-out ``seeds`` (records in
    ``out_dir``, reused when complete) and judge the simulator and three baselines on them.
    ``challenger``: another profile of the same setup, judged on the same trained points (its
    predictions at their settings; its pick among them).
    ``pick_confidence``: also train each profile's own pick per budget at that confidence (as
    ``simulate --confidence`` ranks) and report whether it stayed within the budget, and its regret.
    ``training``: as :func:`simulator.confirm_report.confirm`'s."""
    from trainer.executors import Execution

    execution = Execution.take(training)
    check_confidence("confidence", confidence)
    check_integer("bootstrap", bootstrap, 1)
    parsed = parse_budgets(budgets, "budgets")
    seeds = _check_seeds(seeds)
    directory = check_out_dir(out_dir)
    sim = Simulation.open(profile, grid, parsed)
    seen = set(sim.profile.provenance.get("seeds") or ())
    reused = sorted(seen & set(seeds))
    if reused:
        raise InputError(f"seeds: {reused[0]} is a seed the profile was measured on ({sorted(seen)}); a benchmark "
                         "judges the simulator on seeds it never saw")
    names = parse_orders(orders, False, sim.methods)
    rival = None
    if challenger is not None:
        rival = load_profile(challenger)
        if rival.setup != sim.profile.setup:
            raise InputError(f"challenger: {str(challenger)!r} is a profile of another setup ({rival.setup}) than "
                             f"--profile's ({sim.profile.setup}); a challenger is judged on the same trainings")
    points, missing = operating_points(sim, without_terms(sim.profile), names, parsed, confidence, rival)
    if not points:
        raise InputError("budgets: no order has a point predicted within any of them; give larger budgets")
    confident: dict[str, list[Point]] = {}
    if pick_confidence is not None:
        check_confidence("pick_confidence", pick_confidence)
        confident["simulator"] = pick_points(sim, names, parsed, pick_confidence)
        if rival is not None:
            confident["challenger"] = pick_points(Simulation.open(challenger, grid, parsed), names, parsed,
                                                  pick_confidence)
    trained = [*points, *(p for picks in confident.values() for p in picks)]
    try:
        directory.mkdir(exist_ok=True)
    except OSError as err:
        raise InputError(f"out_dir: cannot create {str(out_dir)!r} ({err.strerror})") from None
    log(f"benchmark: {len(points)} operating points"
        + (f" and {sum(map(len, confident.values()))} picks at confidence {pick_confidence:g}" if confident else "")
        + f", {len({p.run for p in trained})} distinct runs x {len(seeds)} seeds")
    with hold_lock("out_dir", directory):
        records = _train(trained, seeds, sim, directory, training, epochs, lr, execution, log)
    report = benchmark_json(sim, points, missing, records, parsed, seeds, confidence, names, bootstrap,
                            challenger=rival, challenger_path=None if challenger is None else str(challenger))
    if pick_confidence is not None:
        report["confident_picks"] = confident_picks_json(confident, trained, records, parsed, seeds, pick_confidence)
    return BenchmarkResult(report)


def pick_points(sim: Simulation, orders: Sequence[str], budgets: Sequence[float], confidence: float) -> list[Point]:
    """Per budget, the order ``simulate --confidence`` ranks first there: the largest predicted
    BitOpsCR, over every order, whose loss stays within the budget at ``confidence`` (none where
    no order has one)."""
    points, _ = operating_points(sim, without_terms(sim.profile), orders, budgets, confidence)
    picks = []
    for budget in budgets:
        here = [p for p in points if p.budget == budget]
        if here:
            picks.append(max(here, key=lambda p: p.bitops_cr))
    return picks


REGRET_GOAL = 1.25  # the goal: the pick within budget in >= 90% of cases, with regret <= 1.25x
WITHIN_GOAL = 0.9


def confident_picks_json(confident: dict[str, list[Point]], trained: Sequence[Point],
                         records: dict[tuple[str, int], dict[str, Any]], budgets: Sequence[float],
                         seeds: Sequence[int], confidence: float) -> dict[str, Any]:
    """Each predictor's pick per budget at ``confidence``, trained at every seed: its measured loss,
    within the budget or not, and its regret against the best measured BitOpsCR within the budget
    among every run the benchmark trained at that seed (the operating points of every budget and
    the picks)."""
    def measured(p: Point, seed: int) -> tuple[float, float]:
        stages = records[(p.run, seed)]["stages"]
        return stages[0]["accuracy"] - stages[-1]["accuracy"], stages[-1]["cost"]["bitops_cr"]

    unique = list({p.run: p for p in trained}.values())
    out: dict[str, Any] = {"confidence": confidence, "goal": {"within_budget": WITHIN_GOAL, "regret": REGRET_GOAL}}
    for name, picks in confident.items():
        rows = []
        for p in picks:
            for seed in seeds:
                loss, cr = measured(p, seed)
                within = [c for q in unique for lq, c in [measured(q, seed)] if lq <= p.budget + 1e-12]
                ok = loss <= p.budget + 1e-12
                rows.append({"budget": p.budget, "seed": seed, "order": p.order, "settings": p.settings, "run": p.run,
                             "predicted_accuracy": p.accuracy, "predicted_std": p.accuracy_std,
                             "predicted_bitops_cr": p.bitops_cr, "measured_loss": loss, "measured_bitops_cr": cr,
                             "within_budget": ok, "best_within_bitops_cr": max(within) if within else None,
                             "regret": max(within) / cr if ok and within else None})
        regrets = [r["regret"] for r in rows if r["regret"] is not None]
        out[name] = {"picks": rows, "cases": len(rows), "within_budget": sum(r["within_budget"] for r in rows),
                     "regret_within_goal": sum(r <= REGRET_GOAL + 1e-12 for r in regrets),
                     "median_regret": float(np.median(regrets)) if regrets else None,
                     "max_regret": float(max(regrets)) if regrets else None,
                     "unpicked_budgets": [b for b in budgets if b not in {p.budget for p in picks}]}
    return out


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"seeds must be comma-separated integers, got {seeds!r}") from None
    values = tuple(seeds)
    if not values:
        raise InputError("seeds must list at least one seed")
    for s in values:
        check_integer("seeds", s, 0)
    if len(set(values)) != len(values):
        raise InputError(f"seeds must be distinct, got {list(values)}")
    return values
