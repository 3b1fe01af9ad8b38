"""Which terms of E with a later method to fit per threshold of E, by cross-validation.

    .venv/bin/python scripts/cv_exit_thresholds.py RUNS_DIR [--profile SINGLE_STAGE.json]

For each choice of later methods (none, D, D and Q, D and P, D, P and Q): fit the runs with those
terms per threshold (``simulator.fit.THRESHOLD_TERMS``), holding out one seed at a time and one
order at a time (as ``fit --select`` does), and score each held-out run (a) at its operating
threshold and (b) at every threshold its last model reports where E ran before the last stage:
measured accuracy minus predicted, mean |error| and RMSE in points. The chosen set is the smallest
whose pooled mean |error| over (b) is within 0.01 points of the best. Bad input is one line on
stderr and exit 2.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitops.errors import InputError  # noqa: E402

CHOICES = ("", "D", "DQ", "DP", "DPQ")


def score(runs, profile, later: str) -> dict[str, tuple[float, float, int]]:
    """(mean |error|, rmse, n) per (fold kind, at the operating threshold or at every threshold)."""
    import simulator.fit as fit_module
    from simulator.fit_report import _held_out, _table_loader
    from simulator.model import Grid, predict

    load = _table_loader(profile)
    saved = fit_module.THRESHOLD_TERMS
    fit_module.THRESHOLD_TERMS = frozenset(later)
    try:
        out = {}
        for by in ("seed", "order"):
            operating, swept = [], []
            for fitted, held in _held_out(runs, profile, True, ["DPQ", "DQP"], 0.0, (), by):
                for run in held:
                    order = run.order[:len(run.stages)]
                    values = {stage.method: (stage.value,) for stage in run.stages}

                    def predicted(threshold=None):
                        grid = Grid(values if threshold is None else {**values, "E": (threshold,)})
                        return float(predict(fitted, order, grid, load, fitted.setup["teacher"]).accuracy[0])

                    last = run.stages[-1]
                    operating.append(last.accuracy - predicted())
                    e = order.find("E")
                    if 0 <= e < len(order) - 1:
                        swept += [accuracy - predicted(t) for t, accuracy in last.sweep_accuracy]
            for name, errors in (("operating", operating), ("every threshold", swept)):
                e = np.asarray(errors)
                out[(by, name)] = (float(np.mean(np.abs(e))), float(np.sqrt(np.mean(e ** 2))), len(e))
        return out
    finally:
        fit_module.THRESHOLD_TERMS = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="folder holding runs/*.json (a profile campaign's)")
    parser.add_argument("--profile", metavar="FILE.json",
                        help="the single-method profile the runs refine (default: RUNS_DIR/single_stage.json)")
    args = parser.parse_args(argv)
    from simulator.fit_report import load_profile, read_runs

    try:
        paths = sorted(glob.glob(str(Path(args.runs_dir) / "runs" / "*.json")))
        if not paths:
            raise InputError(f"runs_dir: no run records in {str(Path(args.runs_dir) / 'runs')!r}")
        profile = load_profile(args.profile or Path(args.runs_dir) / "single_stage.json")
        runs = read_runs(paths, profile)
    except InputError as err:
        print(f"cv_exit_thresholds: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(runs)} runs; held out by one seed and by one order; mean |error|, rmse (points)")
    print(f"  {'per threshold':<14} {'seed: operating':>16} {'every threshold':>16} "
          f"{'order: operating':>17} {'every threshold':>16}")
    pooled = {}
    for later in CHOICES:
        s = score(runs, profile, later)
        cells = [s[(by, name)] for by in ("seed", "order") for name in ("operating", "every threshold")]
        print(f"  {('E' + ',E'.join(later)) if later else 'none':<14} "
              + " ".join(f"{f'{m:.2f}, {r:.2f}':>16}" for m, r, _ in cells))
        pooled[later] = (s[("seed", "every threshold")][0] + s[("order", "every threshold")][0]) / 2
    best = min(pooled.values())
    chosen = min((c for c in CHOICES if pooled[c] <= best + 0.01), key=len)
    print(f"chosen: {('E' + ',E'.join(chosen)) if chosen else 'none'} per threshold "
          f"(pooled mean |error| at every threshold {pooled[chosen]:.3f}; best {best:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
