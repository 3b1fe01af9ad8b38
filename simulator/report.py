"""``chaincomp simulate`` / ``orders`` output: JSON for machines, text for people, the fronts plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitops.orders import PARAMETERS
from simulator.model import Grid, Prediction
from simulator.profile import Profile
from simulator.search import PairResult, budget_table, pareto_front, rank_orders

__all__ = ["format_orders", "format_simulation", "orders_json", "plot_fronts", "simulation_json"]

REPORT_TYPE = "chaincomp.Simulation"
REPORT_VERSION = 1


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _point(p: Prediction, i: int) -> dict[str, Any]:
    settings = [{"stage": p.order[pos], PARAMETERS[p.order[pos]]: _plain(values[i])}
                for pos, values in p.settings.items()]
    return {"settings": settings, "accuracy": float(p.accuracy[i]), "accuracy_std": float(p.accuracy_std[i]),
            "bitops_cr": float(p.bitops_cr[i]), "cr": float(p.cr[i]), "bitops": float(p.bitops[i]),
            "outside_measured_range": bool(p.outside[i])}


def simulation_json(profile: Profile, profile_path: str | None, grid: Grid, budgets: Sequence[float],
                    predictions: Sequence[Prediction]) -> dict[str, Any]:
    table = budget_table(predictions, profile.base_accuracy, budgets)
    ranking = rank_orders(table)
    return {
        "_type": REPORT_TYPE, "_version": REPORT_VERSION,
        "profile": {"path": profile_path or "(shipped default)", "provenance": profile.provenance,
                    "setup": profile.setup, "base_accuracy": profile.base_accuracy,
                    "interaction_terms": len(profile.accuracy_terms) + len(profile.exit_scales) + len(profile.triple_terms),
                    "terms": [{"before": b, "after": a, "kind": kind, "source": source}
                              for (b, a, kind), source in sorted(profile.term_sources.items())]},
        "grid": {m: [_plain(v) for v in values] for m, values in grid.values.items()},
        "budgets": list(budgets),
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
             f"{prof['base_accuracy']:.2f}%; {prof['interaction_terms']} interaction terms",
             "grid       " + "  ".join(f"{m}: {len(v)} values" for m, v in report["grid"].items()), "",
             "max BitOpsCR within an accuracy-loss budget (the paper's Table 1 layout)"]
    orders = [r["order"] for r in report["ranking"]]
    lines.append(f"{'loss':<8}" + "".join(f"{o:>9}" for o in orders))
    for b, budget in enumerate(report["budgets"]):
        row = [report["budget_table"][o][b] for o in orders]
        lines.append(f"{f'<={budget:g}%':<8}" + "".join(f"{'-' if v is None else f'{v:.0f}x':>9}" for v in row))
    if all(v is None for row in report["budget_table"].values() for v in row):
        best = max(point["accuracy"] for o in report["orders"].values() for point in o["front"])
        lines.append(f"note: no combination stays within these budgets; the smallest loss any order reaches is "
                     f"{prof['base_accuracy'] - best:.2f} points (try --budget with larger losses)")
    lines += ["", "ranking (geometric mean over the budgets): "
              + ", ".join(f"{i + 1}. {r['order']} {r['score']:.0f}x" for i, r in enumerate(report["ranking"][:8]))]
    best = report["ranking"][0]["order"]
    lines += ["", f"Pareto front of {best} (BitOpsCR, accuracy, settings):"]
    for point in report["orders"][best]["front"][-8:]:
        settings = " ".join(f"{s['stage']}={next(v for k, v in s.items() if k != 'stage')}" for s in point["settings"])
        flag = "  (outside measured range)" if point["outside_measured_range"] else ""
        lines.append(f"  {point['bitops_cr']:>9.1f}x  {point['accuracy']:6.2f}% ±{point['accuracy_std']:.2f}  "
                     f"CR {point['cr']:.1f}x  {settings}{flag}")
    outside = sum(o["outside_measured_range"] for o in report["orders"].values())
    if outside:
        lines.append(f"note: {outside} combinations use a hyperparameter outside the profile's measured range "
                     "(clamped to the nearest measurement, flagged in --json)")
    if prof["interaction_terms"] == 0:
        lines.append("note: the profile has no interaction terms, so order changes only the exact cost; "
                     "`chaincomp fit` estimates them from trainer runs")
    return "\n".join(lines)


def plot_fronts(predictions: Sequence[Prediction], base_accuracy: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for p in predictions:
        front = pareto_front(p)
        ax.step(p.bitops_cr[front], p.accuracy[front], where="post", label=p.order, lw=1.2)
    ax.axhline(base_accuracy, color="grey", ls=":", lw=1, label="base model")
    ax.set_xscale("log")
    ax.set_xlabel("BitOpsCR")
    ax.set_ylabel("predicted accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=3)
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
