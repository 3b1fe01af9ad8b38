"""Judge profiles on the runs a benchmark already measured, without training anything.

    .venv/bin/python scripts/judge_profiles.py REPORT.json [REPORT.json ...] --profile FILE.json [--profile ...]

For each ``chaincomp benchmark --json`` report and each profile (of the report's setup): the
profile's prediction at every measured (order, settings), and, as the benchmark reports them (the
mean over the seeds of each seed's figure), mean |error| of accuracy, the share of runs inside the
predicted 90% interval (prediction +- 1.645 spreads), BitOpsCR measured / predicted (geometric mean)
and the share within 5%. A profile trained on another machine, or refitted, is judged on the same
measured runs.

``--by-exit-terms``: also, per profile, BitOpsCR measured / predicted and the share within 5%
grouped by how many exit terms the order's exit rates combine (the profile's tables that apply to
it: pairs of E with the stages its heads saw, and three-stage terms), pooled over the seeds.

``--pick-ceiling``: also, for a report whose points were trained at two or more seeds, the best a
pick could do if it knew one seed's measurements exactly: per budget and pair of seeds, the point
with the largest measured BitOpsCR within the budget at the first seed, judged at the second
(within the budget or not, and its regret against the second seed's best within it). No predictor
can be expected to beat this seed-noise ceiling. Bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitops.errors import InputError  # noqa: E402
from bitops.jsonio import read_json  # noqa: E402

Z90 = 1.6448536269514722  # the two-sided 90% interval, as the benchmark's coverage


def judge(report: dict[str, Any], profile_path: str, by_terms: dict[str, list[float]] | None = None
          ) -> dict[str, float]:
    """The four figures of ``profile_path`` on ``report``'s measurements, each the mean over seeds.
    ``by_terms``, when given, receives each run's BitOpsCR measured / predicted under the label of
    the exit terms its order combines (:func:`exit_terms_label`)."""
    from simulator.benchmark import _predict_one
    from simulator.simulate import Simulation

    sim = Simulation.open(profile_path)
    if sim.profile.setup != report["profile"]["setup"]:
        raise InputError(f"--profile: {profile_path!r} is a profile of another setup than the report's")
    by_seed: dict[int, list[tuple[float, bool, float]]] = defaultdict(list)
    for run in report["measurements"]:
        predicted = _predict_one(sim.profile, run["order"], run["settings"], sim)
        accuracy, spread = float(predicted.accuracy[0]), float(predicted.accuracy_std[0])
        error = abs(accuracy - run["measured"]["accuracy"])
        ratio = run["measured"]["bitops_cr"] / float(predicted.bitops_cr[0])
        by_seed[run["seed"]].append((error, error <= Z90 * spread, ratio))
        if by_terms is not None:
            by_terms[exit_terms_label(sim.profile, run["order"])].append(ratio)

    def mean_over_seeds(figure: Any) -> float:
        return sum(figure(rows) for rows in by_seed.values()) / len(by_seed)

    return {
        "mean_abs_error": mean_over_seeds(lambda rows: sum(r[0] for r in rows) / len(rows)),
        "coverage": mean_over_seeds(lambda rows: sum(r[1] for r in rows) / len(rows)),
        "bitops_cr_ratio": mean_over_seeds(lambda rows: math.exp(sum(math.log(r[2]) for r in rows) / len(rows))),
        "bitops_cr_within_5pct": mean_over_seeds(lambda rows: sum(abs(r[2] - 1) <= 0.05 for r in rows) / len(rows)),
    }


def exit_terms_label(profile: Any, order: str) -> str:
    """"no E", or "P pairs + T triples": the profile's exit tables that apply to ``order``."""
    from simulator.structure import structure

    if "E" not in order:
        return "no E"
    shape = structure(order)
    pairs = sum("".join(order[p] for p in ps) in profile.exit_tables for ps in shape.exit_pairs)
    triples = sum("".join(order[p] for p in ps) in profile.exit_tables for ps in shape.exit_triples)
    return f"{pairs} pair{'s' if pairs != 1 else ''} + {triples} triple{'s' if triples != 1 else ''}"


def pick_ceiling(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per budget and ordered pair of seeds (a, b): the best point measured within the budget at a,
    its loss at b, whether that is within, and its regret at b (b's best within / its BitOpsCR)."""
    points: dict[tuple[float, str, str], dict[int, tuple[float, float]]] = defaultdict(dict)
    for run in report["measurements"]:
        measured = run["measured"]
        key = (float(run["budget"]), run["order"], repr(sorted(run["settings"].items())))
        points[key][run["seed"]] = (measured["base_accuracy"] - measured["accuracy"], measured["bitops_cr"])
    rows = []
    seeds = sorted({run["seed"] for run in report["measurements"]})
    candidates = {key[1:]: by_seed for key, by_seed in points.items()}  # a point trained for any budget counts for all
    for budget in sorted({key[0] for key in points}):
        for a in seeds:
            for b in seeds:
                if a == b:
                    continue
                both = [(k, v) for k, v in candidates.items() if a in v and b in v]
                within_a = [(k, v) for k, v in both if v[a][0] <= budget]
                within_b = [v[b][1] for _, v in both if v[b][0] <= budget]
                if not within_a or not within_b:
                    continue
                key, best = max(within_a, key=lambda kv: kv[1][a][1])
                held = best[b][0] <= budget
                rows.append({"budget": budget, "from_seed": a, "at_seed": b, "order": key[0], "loss": best[b][0],
                             "bitops_cr": best[b][1], "within": held,
                             "regret": max(within_b) / best[b][1] if held else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", metavar="REPORT.json", help="chaincomp benchmark --json reports")
    parser.add_argument("--profile", action="append", default=[], metavar="FILE.json",
                        help="a profile to judge (repeatable)")
    parser.add_argument("--by-exit-terms", action="store_true",
                        help="also BitOpsCR per number of exit terms the order combines, per profile")
    parser.add_argument("--pick-ceiling", action="store_true",
                        help="also the seed-noise ceiling of the pick (reports trained at two or more seeds)")
    args = parser.parse_args(argv)
    if not args.profile and not args.pick_ceiling:
        print("judge_profiles: error: give --profile FILE.json (repeatable), --pick-ceiling, or both", file=sys.stderr)
        return 2
    try:
        for path in args.reports:
            report = read_json(path, f"report {path!r}")
            if not isinstance(report, dict) or report.get("_type") != "chaincomp.Benchmark":
                raise InputError(f"report {path!r}: not a chaincomp benchmark --json report")
            seeds = sorted({run["seed"] for run in report["measurements"]})
            print(f"{path}: {len(report['measurements'])} measured runs at seeds {seeds}")
            if args.profile:
                print(f"  {'profile':48s} {'acc |err|':>9s} {'cover 90%':>9s} {'meas/pred':>9s} {'within 5%':>9s}")
            groups: dict[str, dict[str, list[float]]] = {}
            for profile in args.profile:
                groups[profile] = defaultdict(list)
                f = judge(report, profile, groups[profile] if args.by_exit_terms else None)
                print(f"  {profile:48s} {f['mean_abs_error']:9.2f} {f['coverage']:9.2f} {f['bitops_cr_ratio']:9.3f} "
                      f"{f['bitops_cr_within_5pct']:9.2f}")
            if args.by_exit_terms:
                for profile, by_terms in groups.items():
                    print(f"  BitOpsCR by exit terms combined, {profile} (runs pooled over seeds):")
                    for label, ratios in sorted(by_terms.items()):
                        within = sum(abs(r - 1) <= 0.05 for r in ratios)
                        mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
                        print(f"    {label:22s} {len(ratios):4d} runs  measured/predicted {mean:.3f}  "
                              f"within 5%: {within} ({within / len(ratios):.2f})")
            if args.pick_ceiling:
                rows = pick_ceiling(report)
                if not rows:
                    print("  pick ceiling: needs points trained at two or more seeds")
                    continue
                held = sum(r["within"] for r in rows)
                print(f"  pick ceiling (the best point measured at one seed, at another): within budget in {held} of "
                      f"{len(rows)} (budget, seed) cases")
                for r in rows:
                    regret = f"regret {r['regret']:.2f}x" if r["within"] else "OVER"
                    print(f"    {r['budget']:g} points, seed {r['from_seed']} -> {r['at_seed']}: {r['order']} lost "
                          f"{r['loss']:.2f}, {r['bitops_cr']:.0f}x, {regret}")
    except InputError as err:
        print(f"judge_profiles: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
