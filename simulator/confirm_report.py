"""``chaincomp confirm`` around the analysis of :mod:`simulator.confirm`: the report (JSON for
machines, text for people, the predicted-vs-measured plot) and :func:`confirm`, the one entry point
the command and the Python API call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bitops.errors import InputError
from bitops.result import Result
from bitops.jsonio import check_plot, hold_lock, write_checked
from bitops.rules import check_integer
from simulator.confirm import Candidate, chain_config, compare, measure, select
from simulator.grid import parse_budgets, parse_orders
from simulator.profile import Profile
from simulator.simulate import GridSpec, Simulation
from trainer.config import ChainConfig
from trainer.options import TrainingOptions
from trainer.options import chain_config as training_chain_config

__all__ = ["DEFAULT_BUDGET", "DEFAULT_TOP", "ConfirmResult", "check_out_dir", "confirm", "confirm_json", "format_confirm",
           "place_labels", "plot_confirm"]

REPORT_TYPE = "chaincomp.Confirmation"
REPORT_VERSION = 1
DEFAULT_BUDGET = 1.0  # accuracy-loss points the orders are ranked and their settings chosen at
DEFAULT_TOP = 6  # orders trained: the best, the predicted worst and four spread between


def confirm_json(profile: Profile, profile_path: str | None, budget: float, orders_ranked: int,
                 candidates: Sequence[Candidate], results: Sequence[tuple[dict[str, Any], bool]],
                 out_dir: Path) -> dict[str, Any]:
    rows, summary = compare(candidates, results, profile.base_accuracy, budget, out_dir)
    return {"_type": REPORT_TYPE, "_version": REPORT_VERSION,
            "profile": {"path": profile_path or "(shipped default)", "setup": profile.setup,
                        "base_accuracy": profile.base_accuracy,
                        "interaction_terms": len(profile.accuracy_terms) + len(profile.exit_scales) + len(profile.triple_terms)
                                            + len(profile.exit_tables)},
            "budget": budget, "orders_ranked": orders_ranked, "out_dir": str(out_dir), "orders": rows,
            "summary": summary}


def _settings_text(settings: dict[str, Any]) -> str:
    return " ".join(f"{m}={v:g}" if isinstance(v, float) else f"{m}={v}" for m, v in settings.items())


def _tau_text(k: dict[str, float | None]) -> str:
    if k["tau"] is None:
        return "Kendall tau undefined (fewer than 2 orders, or all values equal)"
    return f"Kendall tau {k['tau']:+.2f}" + ("" if k["p_value"] is None else f" (p {k['p_value']:.2g})")


def format_confirm(report: dict[str, Any]) -> str:
    rows = report["orders"]
    lines = [f"confirm: {len(rows)} of {report['orders_ranked']} orders (best, predicted worst and spread between, "
             f"ranked by max BitOpsCR within {report['budget']:g} point{'s' if report['budget'] != 1 else ''} of loss); "
             f"profile {report['profile']['path']}, base {report['profile']['base_accuracy']:.2f}%",
             f"{'rank':>4} {'order':<6} {'settings':<32} {'acc pred':>12} {'meas':>7} {'error':>7} "
             f"{'BitOpsCR pred':>13} {'meas':>9} {'ratio':>6}  record"]
    for r in rows:
        p, m = r["predicted"], r["measured"]
        note = " (reused)" if r["reused"] else ""
        flags = ("" if r["within_budget"] else " *") + (" †" if r["outside_measured_range"] else "")
        lines.append(f"{r['rank']:>4} {r['order']:<6} {_settings_text(r['settings']) + flags:<32} "
                     f"{p['accuracy']:>6.2f}±{p['accuracy_std']:<5.2f} {m['accuracy']:>7.2f} {r['error']['accuracy']:>+7.2f} "
                     f"{p['bitops_cr']:>12.1f}x {m['bitops_cr']:>8.1f}x {r['error']['bitops_cr_ratio']:>6.2f}  "
                     f"{r['record']}{note}")
    s = report["summary"]
    a, b = s["accuracy"], s["bitops_cr"]
    lines += ["",
              f"accuracy (points): mean |error| {a['mean_abs_error']:.2f}, bias {a['bias']:+.2f}, rmse {a['rmse']:.2f}, "
              f"max |error| {a['max_abs_error']:.2f}; {_tau_text(a['kendall'])}",
              f"BitOpsCR: measured / predicted {b['geometric_mean_ratio']:.3f} (geometric mean; "
              f"{b['min_ratio']:.3f}..{b['max_ratio']:.3f}); {_tau_text(b['kendall'])}",
              f"ranking score (BitOpsCR within the budget, else 1): {s['ranking']['within_budget_measured']} of "
              f"{len(rows)} trained points measured within it ({s['ranking']['within_budget_predicted']} predicted); "
              f"{_tau_text(s['ranking']['kendall'])}"]
    if any(not r["within_budget"] for r in rows):
        lines.append("* no point of this order is predicted within the budget: its most accurate point was trained")
    if any(r["outside_measured_range"] for r in rows):
        lines.append("† a hyperparameter outside the profile's measured range (its curve is clamped there)")
    if report["profile"]["interaction_terms"] == 0:
        lines.append("note: the profile has no interaction terms, so predicted accuracy ignores the order; "
                     f"`chaincomp fit {report['out_dir']}/*.json -o PROFILE.json` estimates them from these runs")
    return "\n".join(lines)


def plot_confirm(report: dict[str, Any], path: Path) -> None:
    """Predicted vs measured accuracy and BitOpsCR, one labelled point per order, with y = x (the
    predicted accuracy with its spread as a horizontal bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, label, log in ((axes[0], "accuracy", "accuracy (%)", False), (axes[1], "bitops_cr", "BitOpsCR", True)):
        predicted = [r["predicted"][key] for r in report["orders"]]
        measured = [r["measured"][key] for r in report["orders"]]
        ax.scatter(predicted, measured, zorder=3)
        if key == "accuracy":
            ax.errorbar(predicted, measured, xerr=[r["predicted"]["accuracy_std"] for r in report["orders"]],
                        fmt="none", ecolor="tab:blue", alpha=0.4, lw=1, zorder=2)
        low, high = min(predicted + measured), max(predicted + measured)
        if key == "accuracy":
            spread = [r["predicted"]["accuracy_std"] for r in report["orders"]]
            low = min(low, *(p - e for p, e in zip(predicted, spread)))
            high = min(100.0, max(high, *(p + e for p, e in zip(predicted, spread))))  # an accuracy ends at 100%
        pad = (high / low) ** 0.05 if log else 0.05 * (high - low or 1.0)
        span = [low / pad, high * pad] if log else [low - pad, high + pad]
        ax.plot(span, span, color="grey", ls=":", lw=1, label="y = x")
        if not log:
            ax.set_xlim(span)
            ax.set_ylim(span)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # plain numbers; a range under a decade gets linear-spaced ticks
                if high / low < 10:
                    axis.set_major_locator(MaxNLocator(5))
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
                axis.set_minor_formatter(NullFormatter())
        tau = report["summary"][key]["kendall"]["tau"]
        ax.set_title(f"{label}: Kendall tau {'-' if tau is None else f'{tau:+.2f}'}", fontsize=9)
        ax.set_xlabel(f"predicted {label}")
        ax.set_ylabel(f"measured {label}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()  # labels are placed once the axes have their final size
    for ax, key in ((axes[0], "accuracy"), (axes[1], "bitops_cr")):
        place_labels(ax, [(r["predicted"][key], r["measured"][key]) for r in report["orders"]],
                     [r["order"] for r in report["orders"]])
    fig.savefig(path, dpi=120)
    plt.close(fig)


# Where a label may sit around its point (offsets in points), tried in this order.
_LABEL_OFFSETS = [(4, 4), (4, -10), (-26, 4), (-26, -10), (4, 12), (-26, 12), (4, -18), (-26, -18),
                  (14, -4), (-36, -4), (4, 20), (-26, 20), (4, -26), (-26, -26)]


def place_labels(ax: Any, points: list[tuple[float, float]], labels: list[str], fontsize: float = 7) -> None:
    """Annotate each point with its label where the label's box overlaps no label placed before it
    and no point (greedy over :data:`_LABEL_OFFSETS`, the least overlap when none is free); a label
    moved off its first place gets a thin leader line."""
    transform = ax.transData
    scale = ax.figure.dpi / 72.0
    centres = [transform.transform(p) for p in points]
    width, height = 0.7 * fontsize * scale, 1.25 * fontsize * scale
    placed: list[tuple[float, float, float, float]] = []

    def overlap(box: tuple[float, float, float, float]) -> float:
        x0, y0, x1, y1 = box
        area = sum(max(0.0, min(x1, b[2]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[1])) for b in placed)
        hits = sum(x0 - 2 <= cx <= x1 + 2 and y0 - 2 <= cy <= y1 + 2 for cx, cy in centres)
        return area + hits * width * height

    for (px, py), (cx, cy), label in zip(points, centres, labels):
        best = None
        for dx, dy in _LABEL_OFFSETS:
            x0, y0 = cx + dx * scale, cy + dy * scale
            box = (x0, y0, x0 + width * len(label), y0 + height)
            cost = overlap(box)
            if best is None or cost < best[0]:
                best = (cost, (dx, dy), box)
            if cost == 0:
                break
        _, (dx, dy), box = best
        placed.append(box)
        arrow = None if (dx, dy) == _LABEL_OFFSETS[0] else {"arrowstyle": "-", "lw": 0.4, "color": "0.5"}
        ax.annotate(label, (px, py), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                    arrowprops=arrow)


@dataclass(frozen=True)
class ConfirmResult(Result):
    """Predicted vs measured for the trained orders; ``to_dict()`` is ``confirm --json``."""

    def format(self) -> str:
        return format_confirm(self.data)

    def plot(self, path: str | Path) -> None:
        """Draw predicted vs measured accuracy and BitOpsCR (atomic PNG)."""
        check_plot("plot", path)
        write_checked("plot", path, lambda tmp: plot_confirm(self.data, tmp))


def _training_template(profile: Profile, order: str, epochs: int | None, lr: float | None,
                       training: dict[str, Any]) -> ChainConfig:
    """The ChainConfig of the profile's setup (models, data, input size, base training unless
    ``epochs``/``lr`` are given) and the training options; the order and stage values are set per
    candidate by :func:`simulator.confirm.chain_config`."""
    setup = profile.setup
    shape = setup.get("input_shape")
    if not isinstance(setup.get("dataset"), str) or not isinstance(shape, list) or len(shape) != 3:
        raise InputError("profile: its setup must give the dataset and input_shape [C, H, W] it was measured on, "
                         "to train its orders")
    base_training = setup.get("base_training") if isinstance(setup.get("base_training"), dict) else {}
    options = replace(TrainingOptions(**training), teacher=setup["teacher"],
                      student=setup.get("student", TrainingOptions.student), dataset=setup["dataset"],
                      image_size=shape[-1], exit_head=setup.get("exit_head", "conv"))
    for name, given in (("epochs", epochs), ("lr", lr)):
        value = given if given is not None else base_training.get(name)
        if value is not None:
            options = replace(options, **{name: value})
    return training_chain_config(order, options)


def check_out_dir(out_dir: str | Path) -> Path:
    """The folder run records go to: a name, in an existing directory, not a file (made later, once
    everything else is checked)."""
    if not str(out_dir).strip():
        raise InputError(f"out_dir must name a folder, got {str(out_dir)!r}")
    directory = Path(out_dir)
    if not directory.parent.is_dir():
        raise InputError(f"out_dir: cannot create {str(out_dir)!r}: directory {str(directory.parent)!r} does not exist")
    if directory.exists() and not directory.is_dir():
        raise InputError(f"out_dir: {str(out_dir)!r} is a file, not a directory")
    return directory


def confirm(out_dir: str | Path, *, profile: str | Path | None = None, grid: GridSpec = None,
            orders: str | Sequence[str] = "all", top: int | None = None, budget: float | str = DEFAULT_BUDGET,
            epochs: int | None = None, lr: float | None = None, log: Callable[[str], None] = lambda message: None,
            **training: Any) -> ConfirmResult:
    """Simulate, train the best order and ``top`` - 1 rivals spread over the ranking (run records in
    ``out_dir``, reused when complete) at their max-BitOpsCR point within ``budget``, and compare.
    ``training``: :class:`trainer.options.TrainingOptions` fields (the setup itself is the profile's)
    and :class:`trainer.executors.Execution`'s (``jobs``, ``ray``, ``address``, ``cpus_per_run``,
    ``gpus_per_run``, ``threads_per_run``, ``retries``); ``epochs``/``lr`` default to the profile's
    base training."""
    from trainer.executors import Execution

    execution = Execution.take(training)
    if top is not None:
        check_integer("top", top, 1)
    budgets = parse_budgets(budget, "budget")
    if len(budgets) != 1:
        raise InputError(f"budget takes one accuracy-loss budget in points, got {budget!r}")
    directory = check_out_dir(out_dir)
    sim = Simulation.open(profile, grid, budgets)
    ranked = parse_orders(orders, False, sim.methods)
    count = min(DEFAULT_TOP, len(ranked)) if top is None else top
    if count > len(ranked):
        raise InputError(f"top must be at most the number of orders ranked ({len(ranked)}), got {count}")
    template = _training_template(sim.profile, ranked[0], epochs, lr, training)  # checked before simulating
    candidates = select([sim.predict(o) for o in ranked], sim.profile.base_accuracy, budgets[0], count)
    configs = [chain_config(template, c, sim.profile) for c in candidates]
    try:
        directory.mkdir(exist_ok=True)
    except OSError as err:
        raise InputError(f"out_dir: cannot create {str(out_dir)!r} ({err.strerror})") from None
    with hold_lock("out_dir", directory):  # one confirm per folder: two would train into the same records
        results = measure(candidates, configs, directory, int(sim.profile.setup.get("num_classes", 10)), log=log,
                          execution=execution)
    return ConfirmResult(confirm_json(sim.profile, sim.profile_path, budgets[0], len(ranked), candidates, results,
                                      directory))
