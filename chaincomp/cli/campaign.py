"""``chaincomp campaign plan`` and ``chaincomp campaign run``: parse, call :func:`trainer.campaign.plan`
/ :func:`trainer.campaign.run`, print."""

from __future__ import annotations

import argparse
import sys

from bitops.errors import InputError
from chaincomp.cli.options import add_execution_options, add_json, emit, execution_options, int_list, log
from chaincomp.cli.train import add_training_options, training_options

__all__ = ["add_campaign"]


def add_campaign(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="plan and run the many trainings a profile, fit or confirm needs",
                       description="A campaign is a file of runs (each a full train configuration and its record "
                                   "path). `plan` writes one; `run` trains it on a local process pool or a Ray "
                                   "cluster, training each shared prefix (base model, D, DP, ...) once.")
    commands = p.add_subparsers(dest="campaign_command", metavar="plan|run", required=True)
    add_plan(commands)
    add_run(commands)


def add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="write a campaign file",
                       description="Plan runs from sections (combine any): --single, each method alone over its "
                                   "grid; --pairs, both orders of every pair, the later method over its grid (what "
                                   "fit estimates order interactions from); --triples, three-method orders over the "
                                   "grids of their P and Q; --orders, orders at the given values. Every section "
                                   "repeats over --seeds. Records go to runs/NAME.json beside the campaign file.")
    p.add_argument("--out", required=True, metavar="CAMPAIGN.json", help="campaign file to write")
    p.add_argument("--single", default="", metavar="LETTERS", help="methods to run alone over their grids, e.g. DPQE")
    p.add_argument("--pairs", default="", metavar="LETTERS",
                   help="methods whose pairs run in both orders, the later one over its grid, e.g. DPQE")
    p.add_argument("--triples", default="", metavar="ORDER,...",
                   help="three-method orders to run over the grids of their P and Q, e.g. DPQ,DQP")
    p.add_argument("--orders", default="", metavar="all|ORDER,...",
                   help="orders to run at the options' values ('all': the 24 orders of DPQE)")
    p.add_argument("--seeds", default="0", help="seeds every section repeats over, e.g. 0,1 (default 0)")
    p.add_argument("--grid", dest="grids", action="append", default=[], metavar="M=V,...",
                   help="a method's grid, e.g. P=0.25,0.5 or Q=1,2,4,8 (default: P 0.25,0.5,0.75; Q 1,2,4,8; "
                        "D the --student; E the --thresholds); repeat for more methods")
    p.add_argument("--triple-grid", dest="triple_grids", action="append", default=[], metavar="M=V,...",
                   help="a grid for --triples only, e.g. Q=1,2,8")
    add_json(p)
    add_training_options(p)
    p.set_defaults(run=run_plan, command_parser=p, command_name="campaign plan")


def add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train a campaign's runs (skipping those done); resumable",
                       description="Train every run of CAMPAIGN whose complete record is not there yet; a record "
                                   "made with other settings is refused. Shared prefixes are trained once and "
                                   "handed on. A failed training is retried (--retries), then reported. Ctrl-C "
                                   "keeps every finished record; the same command continues.")
    p.add_argument("campaign", metavar="CAMPAIGN.json", help="campaign file (chaincomp campaign plan)")
    add_execution_options(p)
    add_json(p)
    p.set_defaults(run=run_run, command_parser=p, command_name="campaign run")


def _grids(option: str, items: list[str]) -> dict[str, str]:
    grids: dict[str, str] = {}
    for item in items:
        method, sep, values = item.partition("=")
        if not sep or method.strip() not in ("D", "P", "Q", "E"):
            raise InputError(f"{option} must be METHOD=V,... with METHOD one of D, P, Q, E, got {item!r}")
        if method.strip() in grids:
            raise InputError(f"{option} gives {method.strip()}'s grid twice, got {item!r}")
        grids[method.strip()] = values
    return grids


def run_plan(args: argparse.Namespace) -> int:
    from trainer.campaign import plan

    triples = [t.strip() for t in args.triples.split(",") if t.strip()]
    result = plan(args.out, single=args.single, pairs=args.pairs, triples=triples, orders=args.orders,
                  seeds=int_list("seeds", args.seeds), grids=_grids("grids", args.grids),
                  triple_grids=_grids("triple_grids", args.triple_grids), command="chaincomp " + " ".join(args.argv),
                  **training_options(args))
    return emit(result, args.json)


def run_run(args: argparse.Namespace) -> int:
    from trainer.campaign import run

    try:
        result = run(args.campaign, log=log, **execution_options(args))
    except KeyboardInterrupt:
        print(f"chaincomp campaign run: interrupted; the finished runs' records are kept, and the prefixes trained "
              f"so far (local runs); run the same command to continue {args.campaign}", file=sys.stderr)
        return 130
    emit(result, args.json)
    return 0 if result.data["failed"] == 0 else 1
