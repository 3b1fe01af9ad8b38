"""``chaincomp simulate``, ``orders``, ``fit`` and ``confirm``: parse, call the simulator's entry
point, print."""

from __future__ import annotations

import argparse
import sys

from chaincomp.cli.options import add_execution_options, add_json, emit, execution_options, log
from chaincomp.cli.train import CONFIRM_TRAINING, add_training_options, training_options
from simulator.confirm_report import DEFAULT_BUDGET, DEFAULT_TOP
from simulator.grid import (BOOTSTRAP, DEFAULT_BENCH_BUDGETS, DEFAULT_BENCH_CONFIDENCE, DEFAULT_BENCH_SEEDS,
                            DEFAULT_BUDGETS, DEFAULT_CONFIDENCE)

__all__ = ["add_benchmark", "add_confirm", "add_fit", "add_orders", "add_simulate"]


def _add_simulation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", metavar="FILE.json", help="stage profile (default: the one shipped, measured on digits)")
    p.add_argument("--grid", metavar="M=V,...;...",
                   help="hyperparameters per method, e.g. 'P=0.1:0.7:13;Q=1,2,4,8;E=0.5,0.9;D=resnet8' "
                        "(a:b:n = n values from a to b); default: the profile's measured values, P densified")
    p.add_argument("--budget", dest="budgets", default=",".join(f"{b:g}" for b in DEFAULT_BUDGETS),
                   help="accuracy-loss budgets in points, each in (0, 100] (default %(default)s)")


def add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="predict every order's accuracy and exact cost from stage profiles",
                       description="Every order over the hyperparameter grid: the Pareto front of (BitOpsCR, "
                                   "accuracy), the paper's Table-1 layout (max BitOpsCR within each accuracy-loss "
                                   "budget, one column per order) and a ranking. No torch, no training.")
    p.add_argument("--orders", default="all", help="'all' (the 24 orders of D, P, Q, E) or a comma list, e.g. DPQE,PQ")
    p.add_argument("--allow-repeat", action="store_true", help="allow D, P, Q to repeat within an order")
    _add_simulation_options(p)
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help="rank by the largest BitOpsCR whose loss stays within each budget at this confidence "
                        "(predicted accuracy less its normal quantile of spreads); 0.5 takes the mean prediction "
                        "(default %(default)s)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the Pareto front of every order")
    add_json(p)
    p.set_defaults(run=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    from bitops.jsonio import check_plot
    from simulator.simulate import simulate

    if args.plot:
        check_plot("plot", args.plot)
    result = simulate(args.profile, args.grid, args.budgets, args.orders, args.allow_repeat, args.confidence)
    if args.plot:
        result.plot(args.plot)
    return emit(result, args.json)


def add_orders(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("orders", help="pairwise order analysis: precedence graph, topological sort, cycles",
                       description="For each pair of methods, which order wins and by how much; the precedence "
                                   "graph, its topological sort and whether it is unique, cycles (listed, never "
                                   "hidden), and the insertion check of the paper's section 4.")
    _add_simulation_options(p)
    add_json(p)
    p.set_defaults(run=run_orders)


def run_orders(args: argparse.Namespace) -> int:
    from simulator.simulate import analyse_orders

    return emit(analyse_orders(args.profile, args.grid, args.budgets), args.json)


def add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="estimate the order-interaction terms of a profile from trainer run records",
                       description="Least squares over the stage increments of RUN records (chaincomp train): the "
                                   "accuracy term of every ordered pair of methods and (in log space, per threshold and "
                                   "exit) the exit-rate scales of every pair with E and of E, D and a P or Q with E "
                                   "before D, on top of the single-method curves of --profile. Terms the runs "
                                   "cannot identify are listed with the reason and left out of the output.")
    p.add_argument("runs", nargs="*", metavar="RUN.json", help="run records of the profile's setup (status complete)")
    p.add_argument("-o", "--out", required=True, metavar="PROFILE.json",
                   help="profile to write: --profile with its interactions replaced by the fitted terms")
    p.add_argument("--profile", metavar="FILE.json", help="base profile (default: the one shipped)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="use the finished stages of runs whose status is not 'complete'")
    p.add_argument("--refine-deltas", action="store_true",
                   help="also correct the profile's single-stage delta at each measured point a run's first stage "
                        "uses, and take the runs' mean base accuracy as the profile's")
    p.add_argument("--triples", default="", metavar="IJK,...",
                   help="three-method terms to fit too, e.g. DPQ,DQP (Q after P, both after D); the later two "
                        "letters are P, Q or E; every other three-method term is taken as 0")
    p.add_argument("--ridge", type=float, default=0.0, metavar="LAMBDA",
                   help="ridge penalty on the accuracy terms, LAMBDA * term^2 each, like LAMBDA equations saying "
                        "the term is 0 (default 0: least squares)")
    p.add_argument("--select", action="store_true",
                   help="choose the ridge penalty and which term families (a pair at every value, a three-method "
                        "term) to keep by cross-validation over the runs: leave one seed out and leave one order out, "
                        "pooled rmse of the final model's accuracy change; a family is kept only where it lowers it; "
                        "calibrates the spreads as --calibrate-spread does")
    p.add_argument("--calibrate-spread", action="store_true",
                   help="add to every predicted spread the training noise (floor + per-point x predicted loss, in "
                        "quadrature) that makes the 90%% interval hold 90%% of the runs held out by seed and by order, "
                        "the sharpest such; the profile's 'spread'")
    add_json(p)
    p.set_defaults(run=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from simulator.fit_report import fit

    triples = tuple(t.strip() for t in args.triples.split(",") if t.strip())
    result = fit(args.runs, args.out, profile=args.profile, allow_incomplete=args.allow_incomplete,
                 refine_deltas=args.refine_deltas, triples=triples, ridge=args.ridge, select=args.select,
                 calibrate=args.calibrate_spread,
                 command="chaincomp " + " ".join(args.argv))
    return emit(result, args.json)


def _interrupted(command: str, out_dir: str) -> int:
    """Ctrl-C in a command that trains into ``out_dir``: what is kept, how to go on; exit 130."""
    print(f"chaincomp {command}: interrupted; {out_dir} keeps the finished runs and stages (run the same "
          "command again to continue)", file=sys.stderr)
    return 130


def _add_trained_profile(p: argparse.ArgumentParser) -> None:
    """--profile, --grid, --orders of the commands that train the profile's orders (confirm, benchmark)."""
    p.add_argument("--profile", metavar="FILE.json", help="stage profile (default: the one shipped); its setup "
                                                          "(teacher, student, dataset, input size) is what is trained")
    p.add_argument("--grid", metavar="M=V,...;...", help="hyperparameters per method, as for simulate")
    p.add_argument("--orders", default="all", help="'all' (the 24 orders of D, P, Q, E) or a comma list")


def add_confirm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("confirm", help="train the predicted best order and rivals for real; predicted vs measured",
                       description="Simulate, take the best order and --top - 1 rivals spread over the ranking (the "
                                   "predicted worst included), train each at its max-BitOpsCR point within --budget "
                                   "(run records in --out-dir, reused when complete, so confirm resumes; the orders' "
                                   "shared stage prefixes trained once, on --jobs or --ray), and report "
                                   "predicted vs measured accuracy and BitOpsCR with Kendall's tau.")
    _add_trained_profile(p)
    p.add_argument("--top", type=int, help="orders to train: the best, the predicted worst and the rest spread "
                                           f"between (default {DEFAULT_TOP}, or every order when fewer)")
    p.add_argument("--budget", default=f"{DEFAULT_BUDGET:g}", help="accuracy-loss budget in points the ranking and "
                                                                    "the hyperparameters are chosen at "
                                                                    "(default %(default)s)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="folder for the run records, one ORDER.json each")
    add_json(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw predicted vs measured accuracy and BitOpsCR")
    group = p.add_argument_group("training (as for train; the setup comes from the profile)")
    add_training_options(group, CONFIRM_TRAINING, from_profile=("epochs", "lr"))
    add_execution_options(p)
    p.set_defaults(run=run_confirm)


def run_confirm(args: argparse.Namespace) -> int:
    from bitops.jsonio import check_plot
    from simulator.confirm_report import confirm

    if args.plot:
        check_plot("plot", args.plot)
    try:
        result = confirm(args.out_dir, profile=args.profile, grid=args.grid, orders=args.orders, top=args.top,
                         budget=args.budget, log=log, **training_options(args, CONFIRM_TRAINING),
                         **execution_options(args))
    except KeyboardInterrupt:
        return _interrupted("confirm", args.out_dir)
    if args.plot:
        result.plot(args.plot)
    return emit(result, args.json)



def add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="judge the simulator on every order at held-out seeds, beside baselines",
                       description="Every order at its operating point (max predicted BitOpsCR within each budget) "
                                   "trained at seeds the profile never saw (records in --out-dir, reused when "
                                   "complete; shared prefixes trained once, on --jobs or --ray), then predicted vs "
                                   "measured with bootstrap intervals for the simulator and three baselines "
                                   "(additive: no interaction terms; cost-only; seed-noise: the other seed's run), "
                                   "the predicted interval's coverage, and the pick per budget with its regret.")
    _add_trained_profile(p)
    p.add_argument("--budget", dest="budgets", default=",".join(f"{b:g}" for b in DEFAULT_BENCH_BUDGETS),
                   help="accuracy-loss budgets in points, one operating point per order each (default %(default)s)")
    p.add_argument("--seeds", default=",".join(map(str, DEFAULT_BENCH_SEEDS)),
                   help="held-out seeds to train at, none the profile's (default %(default)s)")
    p.add_argument("--confidence", type=float, default=DEFAULT_BENCH_CONFIDENCE,
                   help="operating points keep their loss within the budget at this confidence, as simulate "
                        "--confidence (default %(default)s)")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="bootstrap resamples of the orders for the "
                                                                    "intervals (default %(default)s)")
    p.add_argument("--challenger", metavar="FILE.json",
                   help="another profile of the same setup (e.g. fit --select's), judged on the same trained points "
                        "beside --profile: its predictions at their settings and its pick among them")
    p.add_argument("--pick-confidence", type=float, metavar="C",
                   help="also train each profile's own pick per budget at confidence C (as simulate --confidence C "
                        "ranks: the largest BitOpsCR whose loss stays within the budget at C) and report whether it "
                        "stayed within, and its regret")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="folder for the run records, NAME_sSEED.json each")
    add_json(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw predicted vs measured accuracy (every predictor) and "
                                                      "BitOpsCR of every trained run")
    group = p.add_argument_group("training (as for train; the setup comes from the profile)")
    add_training_options(group, tuple(n for n in CONFIRM_TRAINING if n != "seed"), from_profile=("epochs", "lr"))
    add_execution_options(p)
    p.set_defaults(run=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> int:
    from bitops.jsonio import check_plot
    from simulator.benchmark import benchmark

    if args.plot:
        check_plot("plot", args.plot)
    try:
        result = benchmark(args.out_dir, profile=args.profile, grid=args.grid, orders=args.orders,
                           budgets=args.budgets, seeds=args.seeds, confidence=args.confidence,
                           bootstrap=args.bootstrap, challenger=args.challenger,
                           pick_confidence=args.pick_confidence, log=log,
                           **training_options(args, tuple(n for n in CONFIRM_TRAINING if n != "seed")),
                           **execution_options(args))
    except KeyboardInterrupt:
        return _interrupted("benchmark", args.out_dir)
    if args.plot:
        result.plot(args.plot)
    return emit(result, args.json)
