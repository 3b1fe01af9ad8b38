"""``chaincomp train`` and ``chaincomp profile``: parse, call :func:`trainer.run.train` /
:func:`trainer.run.profile`, print. The training options and their defaults are
:class:`trainer.options.TrainingOptions`' (one source)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from chaincomp.cli.options import (add_execution_options, add_json, default, emit, execution_options, float_list,
                                   int_list, log, same_or_bits)
from bitops.architectures import EXIT_HEADS
from trainer.options import TrainingOptions

__all__ = ["CONFIRM_TRAINING", "TRAINING", "add_profile", "add_sweep", "add_train", "add_training_options",
           "training_options"]

# option field -> help; the default is TrainingOptions' and shows as "(default X)".
_HELP = {
    "teacher": "zoo model trained first and used as the reference",
    "student": "zoo model D distils into",
    "student_width_mult": "width multiplier of the student",
    "dataset": "digits (offline default), cifar10, cifar100, svhn, cinic10",
    "data_dir": "folder holding the dataset (not needed for digits)",
    "download": "let torchvision download the dataset into --data-dir",
    "image_size": "digits are upsampled from 8x8 to this size",
    "batch_size": "training batch size",
    "epochs": "epochs of the base (teacher) training",
    "lr": "base learning rate; stages fine-tune at lr/10",
    "distill_epochs": "epochs of D (at the base learning rate)",
    "temperature": "KD temperature",
    "alpha": "KD weight of the soft targets",
    "prune_ratio": "fraction of channels P removes per group, in [0, 1)",
    "finetune_epochs": "fine-tuning epochs after P and after Q",
    "w_bits": "weight bits of Q",
    "a_bits": "activation bits of Q",
    "first_last_bits": "bits of the first conv and last linear under Q (same: w/a bits)",
    "input_bits": "bits of the image fed to the first conv under Q (same: its a bits)",
    "exits": "exit points E adds heads at (default: all of the model's)",
    "thresholds": "confidence thresholds E reports",
    "threshold": "the threshold the record's BitOps use",
    "exit_epochs": "epochs training the exit heads (heads quantized from scratch, QE, need ~30)",
    "exit_head": "exit head design: " + "; ".join(f"{k}: {v}" for k, v in EXIT_HEADS.items()),
    "device": "auto (CUDA when present), cpu, cuda or cuda:N",
    "seed": "seed of the splits, the initialisation and the shuffling",
}
TRAINING = tuple(_HELP)
# What confirm takes from the command line: the setup (models, data, sizes) is the profile's, and
# the stage values are each candidate's; epochs and lr default to the profile's base training.
CONFIRM_TRAINING = ("epochs", "lr", "distill_epochs", "finetune_epochs", "exit_epochs", "temperature", "alpha",
                    "batch_size", "data_dir", "download", "device", "seed")
_BITS_OR_SAME = ("first_last_bits", "input_bits")


def add_training_options(p: argparse._ActionsContainer, names: tuple[str, ...] = TRAINING,
                         from_profile: tuple[str, ...] = ()) -> None:
    """One option per TrainingOptions field in ``names``; those in ``from_profile`` default to the
    profile's base training (None when not given)."""
    for name in names:
        flag = "--" + name.replace("_", "-")
        value = default(TrainingOptions, name)
        if name == "download":
            p.add_argument(flag, action="store_true", help=_HELP[name])
            continue
        if name in from_profile:
            p.add_argument(flag, type=type(value), help=f"{_HELP[name]} (default: the profile's base training, "
                                                          f"else {value})")
            continue
        if name in _BITS_OR_SAME:
            p.add_argument(flag, default="same", metavar="same|N", help=f"{_HELP[name]} (default same)")
        elif name == "thresholds":
            p.add_argument(flag, metavar="T,...", help=f"{_HELP[name]} (default {','.join(map(str, value))})")
        elif name in ("exits", "data_dir"):
            p.add_argument(flag, metavar="NAME,..." if name == "exits" else "DIR", help=_HELP[name])
        else:
            p.add_argument(flag, type=type(value), default=value, help=f"{_HELP[name]} (default %(default)s)")


def training_options(args: argparse.Namespace, names: tuple[str, ...] = TRAINING) -> dict[str, Any]:
    """The TrainingOptions fields of ``names`` as typed on the command line (None: not given, where
    the default is the profile's)."""
    values: dict[str, Any] = {}
    for name in names:
        raw = getattr(args, name)
        if name in _BITS_OR_SAME:
            values[name] = same_or_bits(name, raw)
        elif name == "exits":
            values[name] = None if raw is None else tuple(raw.split(","))
        elif name == "thresholds":
            values[name] = default(TrainingOptions, name) if raw is None else float_list(name, raw)
        else:
            values[name] = raw
    return values


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="run an order of D, P, Q, E for real and record what it measured",
                       description="Train the teacher, apply the stages of --order one after another (each fine-tunes "
                                   "at 1/10 of --lr), and write a run record with accuracy, exit rates and the "
                                   "BitOps/BitOpsCR/CR bitops computes from the real model after every stage.")
    p.add_argument("--order", required=True, help="letters from D, P, Q, E in the order to apply them, e.g. DPQE")
    p.add_argument("--out", required=True, metavar="RUN.json", help="run record (a checkpoint RUN.pt goes beside it)")
    p.add_argument("--resume", action="store_true", help="continue the run recorded in --out")
    p.add_argument("--allow-repeat", action="store_true", help="allow D, P or Q to appear more than once")
    add_json(p)
    add_training_options(p)
    p.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from trainer.run import train

    try:
        result = train(args.order, args.out, resume=args.resume, allow_repeat=args.allow_repeat, log=log,
                       **training_options(args))
    except KeyboardInterrupt:
        from pathlib import Path

        held = (f"{args.out} holds the finished stages (continue with --resume)" if Path(args.out).exists()
                else "nothing was written (the base model had not finished)")
        print(f"chaincomp train: interrupted; {held}", file=sys.stderr)
        return 130
    return emit(result, args.json)


def add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure each method alone on the base model over a grid (a stage profile)",
                       description="Train the base model, apply each --method on its own to it for every --grid "
                                   "value (a campaign: the base trained once per seed, the runs on --jobs or --ray, "
                                   "their records kept in --runs-dir), and write the stage-profile file the "
                                   "simulator reads.")
    p.add_argument("--method", required=True, metavar="LETTERS",
                   help="methods to profile, e.g. P or DPQE (D: students, P: pruning ratios, Q: weight bits at "
                        "--a-bits, E: thresholds)")
    p.add_argument("--grid", help="values for a single --method (default grids: D the --student, P 0.25,0.5,0.75, "
                                  "Q 1,2,4,8, E --thresholds)")
    p.add_argument("--seeds", default="0", help="seeds to repeat the measurements over (mean and spread), e.g. 0,1,2")
    p.add_argument("--out", required=True, metavar="PROFILE.json", help="stage-profile file to write")
    p.add_argument("--runs-dir", metavar="DIR", help="folder for the runs' records (runs/NAME.json, reused when "
                                                     "complete: a campaign's folder works; default OUT-STEM.runs "
                                                     "beside --out)")
    add_json(p)
    add_training_options(p)
    add_execution_options(p)
    p.set_defaults(run=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    from trainer.run import profile

    try:
        result = profile(args.method, args.out, grid=args.grid, seeds=int_list("seeds", args.seeds),
                         runs_dir=args.runs_dir, command="chaincomp " + " ".join(args.argv), log=log,
                         **training_options(args), **execution_options(args))
    except KeyboardInterrupt:
        print("chaincomp profile: interrupted; no profile was written, the finished runs' records are kept "
              "(run the same command to continue)", file=sys.stderr)
        return 130
    return emit(result, args.json)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="early exit at any threshold, from a run record's per-sample measurements",
                       description="Accuracy, the share leaving at each exit, expected BitOps and BitOpsCR of a "
                                   "trained model with exit heads at any max-softmax threshold, computed from the "
                                   "per-sample confidences and costs per exit path its run record keeps (no model, "
                                   "no training; at the run's own thresholds it equals the record's rows).")
    p.add_argument("record", metavar="RUN.json", help="a run record of chaincomp train (or profile, campaign)")
    p.add_argument("--thresholds", metavar="T,...|A:B:N",
                   help="thresholds in (0, 1], or N evenly spaced from A to B (default: the ones the run measured)")
    p.add_argument("--stage", type=int, help="index of the stage to sweep (default: the last with exit heads)")
    add_json(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw accuracy against BitOpsCR over the thresholds")
    p.set_defaults(run=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    from bitops.jsonio import check_plot
    from trainer.exit_sweep import sweep_run

    if args.plot:
        check_plot("plot", args.plot)
    result = sweep_run(args.record, args.thresholds, args.stage)
    if args.plot:
        result.plot(args.plot)
    return emit(result, args.json)
