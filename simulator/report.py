"""``chaincomp simulate`` / ``orders`` output: JSON for machines, text for people, the fronts plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitops.orders import PARAMETERS
from simulator.model import Grid, Prediction
from simulator.profile import Profile
from simulator.search import PairResult, budget_table, confidence_z, pareto_front, rank_orders

__all__ = ["format_orders", "format_simulation", "front_points", "orders_json", "plot_fronts", "simulation_json"]

REPORT_TYPE = "chaincomp.Simulation"
REPORT_VERSION = 1
RANKING_SHOWN = 8  # orders the text ranking line names
FRONT_SHOWN = 8  # Pareto points the text shows
PLOT_HIGHLIGHT = 5  # orders the fronts plot draws in colour (the rest grey)
PLOT_BANDS = 2  # of those, the ones drawn with their ±1 std band (more hide each other)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _point(p: Prediction, i: int) -> dict[str, Any]:
    settings = [{"stage": p.order[pos], PARAMETERS[p.order[pos]]: _plain(values[i])}
                for pos, values in p.settings.items()]
    return {"settings": settings, "accuracy": float(p.accuracy[i]), "accuracy_std": float(p.accuracy_std[i]),
            "bitops_cr": float(p.bitops_cr[i]), "cr": float(p.cr[i]), "bitops": float(p.bitops[i]),
            "outside_measured_range": bool(p.outside[i])}


def front_points(front: Sequence[dict[str, Any]], base_accuracy: float, budget: float,
                 count: int) -> tuple[list[dict[str, Any]], int]:
    """At most ``count`` points of ``front`` (by rising BitOpsCR) that lose at most ``budget``
    points, spread evenly over them and always including both ends, and how many are within the
    budget. With none within it, the most accurate point alone."""
    within = [p for p in front if base_accuracy - p["accuracy"] <= budget + 1e-12]
    if not within:
        return ([max(front, key=lambda p: p["accuracy"])] if front else []), 0
    if len(within) <= count:
        return within, len(within)
    picks = sorted({round(i * (len(within) - 1) / (count - 1)) for i in range(count)})
    return [within[i] for i in picks], len(within)


def simulation_json(profile: Profile, profile_path: str | None, grid: Grid, budgets: Sequence[float],
                    predictions: Sequence[Prediction], confidence: float = 0.5) -> dict[str, Any]:
    table = budget_table(predictions, profile.base_accuracy, budgets, confidence_z(confidence))
    ranking = rank_orders(table)
    return {
        "_type": REPORT_TYPE, "_version": REPORT_VERSION,
        "profile": {"path": profile_path or "(shipped default)", "provenance": profile.provenance,
                    "setup": profile.setup, "base_accuracy": profile.base_accuracy,
                    "interaction_terms": len(profile.accuracy_terms) + len(profile.exit_scales) + len(profile.triple_terms)
                    + len(profile.exit_tables),
                    "spread_floor": profile.spread_floor, "spread_per_point": profile.spread_per_point,
                    "terms": [{"before": b, "after": a, "kind": kind, "source": source}
                              for (b, a, kind), source in sorted(profile.term_sources.items())]},
        "grid": {m: [_plain(v) for v in values] for m, values in grid.values.items()},
        "budgets": list(budgets),
        "confidence": confidence,
        "budget_table": table,
        "ranking": [{"order": o, "score": s} for o, s in ranking],
        "orders": {p.order: {"combinations": p.size, "outside_measured_range": int(p.outside.sum()),
                             "front": [_point(p, i) for i in pareto_front(p)]} for p in predictions},
    }


def format_simulation(report: dict[str, Any]) -> str:
    prof = report["profile"]
    prov = prof["provenance"]
    lines = [f"profile    {prof['path']} ({prov.get('source', '?')}"
             + (f", seeds {prov['seeds']}" if prov.get("seeds") else "") + f"); base {prof['setup'].get('teacher')} "
             f"{prof['base_accuracy']:.2f}%; {prof['interaction_terms']} interaction terms"
             + (f"; spreads include training noise {prof['spread_floor']:.2f} + {prof['spread_per_point']:.3f} x loss"
                if prof.get("spread_floor") or prof.get("spread_per_point") else ""),
             "grid       " + "  ".join(f"{m}: {len(v)} values" for m, v in report["grid"].items()), "",
             "max BitOpsCR within an accuracy-loss budget (the paper's Table 1 layout)"
             + ("" if report["confidence"] == 0.5 else
                f", at confidence {report['confidence']:g}: predicted accuracy - {confidence_z(report['confidence']):.2f} "
                "std within the budget")]
    orders = [r["order"] for r in report["ranking"]]
    lines.append(f"{'loss':<8}" + "".join(f"{o:>9}" for o in orders))
    for b, budget in enumerate(report["budgets"]):
        row = [report["budget_table"][o][b] for o in orders]
        lines.append(f"{f'<={budget:g}%':<8}" + "".join(f"{'-' if v is None else f'{v:.0f}x':>9}" for v in row))
    if all(v is None for row in report["budget_table"].values() for v in row):
        best = max(point["accuracy"] for o in report["orders"].values() for point in o["front"])
        lines.append(f"note: no combination stays within these budgets; the smallest loss any order reaches is "
                     f"{prof['base_accuracy'] - best:.2f} points (try --budget with larger losses)")
    shown = report["ranking"][:RANKING_SHOWN]
    hidden = len(report["ranking"]) - len(shown)
    lines += ["", f"ranking of {len(report['ranking'])} orders (geometric mean over the budgets"
              + (f"; the top {len(shown)} shown, every order in --json" if hidden else "") + "): "
              + ", ".join(f"{i + 1}. {r['order']} {r['score']:.0f}x" for i, r in enumerate(shown))]
    best = report["ranking"][0]["order"]
    front = report["orders"][best]["front"]
    loss = max(report["budgets"])
    picked, within = front_points(front, prof["base_accuracy"], loss, FRONT_SHOWN)
    lines += ["", f"Pareto front of {best} within the largest budget ({loss:g} points; BitOpsCR, accuracy, settings):"]
    for point in picked:
        settings = " ".join(f"{s['stage']}={next(v for k, v in s.items() if k != 'stage')}" for s in point["settings"])
        flag = "  (outside measured range)" if point["outside_measured_range"] else ""
        lines.append(f"  {point['bitops_cr']:>9.1f}x  {point['accuracy']:6.2f}% ±{point['accuracy_std']:.2f}  "
                     f"CR {point['cr']:.1f}x  {settings}{flag}")
    if not within:
        lines.append(f"  (none of its {len(front)} points is within {loss:g} points; the most accurate is shown)")
    elif len(picked) < len(front):
        lines.append(f"  ({len(picked)} of {len(front)} points shown: {within - len(picked)} more within the budget, "
                     f"{len(front) - within} beyond it; all in --json)")
    outside = sum(o["outside_measured_range"] for o in report["orders"].values())
    if outside:
        lines.append(f"note: {outside} combinations use a hyperparameter outside the profile's measured range "
                     "(clamped to the nearest measurement, flagged in --json)")
    if prof["interaction_terms"] == 0:
        lines.append("note: the profile has no interaction terms, so order changes only the exact cost; "
                     "`chaincomp fit` estimates them from trainer runs")
    return "\n".join(lines)


def plot_fronts(predictions: Sequence[Prediction], base_accuracy: float, path: Path,
                budgets: Sequence[float] = (), confidence: float = 0.5) -> None:
    """Every order's predicted Pareto front: the :data:`PLOT_HIGHLIGHT` best by ``budgets`` (their
    ranking score) in colour with distinct markers, the first :data:`PLOT_BANDS` with a ±1 std
    band, the rest thin and grey; a dashed line at each budget's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = [o for o, _ in rank_orders(budget_table(predictions, base_accuracy, budgets or (1.0,),
                                                     confidence_z(confidence)))]
    top = ranked[:PLOT_HIGHLIGHT]
    by_order = {p.order: p for p in predictions}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    grey = 0
    for p in predictions:
        if p.order in top:
            continue
        front = pareto_front(p)
        ax.step(p.bitops_cr[front], p.accuracy[front], where="post", color="0.7", lw=0.8, zorder=1,
                label=None if grey else f"other orders ({len(predictions) - len(top)})")
        grey += 1
    colours = plt.get_cmap("tab10").colors
    for rank, (order, marker) in enumerate(zip(top, "osD^v")):
        p = by_order[order]
        front = pareto_front(p)
        x, y, spread = p.bitops_cr[front], p.accuracy[front], p.accuracy_std[front]
        colour = colours[rank % len(colours)]
        if rank < PLOT_BANDS:
            ax.fill_between(x, y - spread, y + spread, step="post", color=colour, alpha=0.1, lw=0, zorder=2)
        ax.step(x, y, where="post", color=colour, lw=1.6, marker=marker, ms=4, zorder=3, label=f"{rank + 1}. {order}")
    ax.axhline(base_accuracy, color="black", ls=":", lw=1, label="base model")
    for budget in budgets:
        ax.axhline(base_accuracy - budget, color="tab:red", ls="--", lw=0.6, alpha=0.6)
        ax.annotate(f"-{budget:g}", (1, base_accuracy - budget), xycoords=("axes fraction", "data"),
                    xytext=(2, 0), textcoords="offset points", fontsize=7, color="tab:red", va="center")
    # the budgets' region, with room below it: fronts reach far lower (1-bit points), where no budget looks
    ax.set_ylim(max(0.0, base_accuracy - max(4 * max(budgets, default=1.0), 6.0)), min(100.0, base_accuracy + 1.5))
    ax.set_xscale("log")
    ax.set_xlabel("BitOpsCR (log)")
    ax.set_ylabel(f"predicted accuracy (%); band: ±1 std of the top {PLOT_BANDS}")
    ax.set_title(f"Predicted Pareto fronts of {len(predictions)} orders; the top {len(top)} by max BitOpsCR within "
                 f"{', '.join(f'{b:g}' for b in budgets)} points highlighted", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def orders_json(pairs: Sequence[PairResult], order: list[str], cycles: list[list[str]], unique: bool,
                insertion: list[dict[str, Any]], budgets: Sequence[float]) -> dict[str, Any]:
    return {"_type": "chaincomp.OrderAnalysis", "_version": 1, "budgets": list(budgets),
            "pairs": [{"methods": p.first + p.second, "winner": p.winner, "margin": p.margin, "scores": p.scores}
                      for p in pairs],
            "edges": [p.winner for p in pairs if p.winner], "topological_order": "".join(order), "unique": unique,
            "cycles": ["".join(c) for c in cycles], "insertion": insertion}


def format_orders(report: dict[str, Any]) -> str:
    lines = ["pairwise orders (score: geometric mean of max BitOpsCR over the budgets)"]
    for p in report["pairs"]:
        if not p["winner"]:
            a, b = p["scores"]
            lines.append(f"  {a} ties {b} ({p['scores'][a]:.0f}x): the profile cannot order them (no edge)")
            continue
        loser = next(o for o in p["scores"] if o != p["winner"])
        lines.append(f"  {p['winner']} beats {loser} by {p['margin']:.2f}x "
                     f"({p['scores'][p['winner']]:.0f}x vs {p['scores'][loser]:.0f}x)")
    lines.append("precedence graph: " + ", ".join(f"{e[0]}->{e[1]}" for e in report["edges"]))
    if report["cycles"]:
        lines.append("cycles: " + "; ".join(" -> ".join(c) + f" -> {c[0]}" for c in report["cycles"]))
        lines.append(f"topological sort (methods outside the cycles): {report['topological_order'] or '-'}")
    else:
        lines.append(f"topological sort: {report['topological_order']} ({'unique' if report['unique'] else 'not unique'})")
    broken = [r for r in report["insertion"] if not r["survives"]]
    lines.append(f"insertion check: {len(report['insertion']) - len(broken)}/{len(report['insertion'])} pairwise orders "
                 "survive a third method inserted between them")
    for r in broken:
        lines.append(f"  {r['pair']} flips with {r['inserted']} inserted: " +
                     ", ".join(f"{o} {s:.0f}x" for o, s in r["orders"].items()))
    return "\n".join(lines)
