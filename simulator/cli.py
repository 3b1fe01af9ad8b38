"""The ``chaincomp`` command line: argparse subcommands built in :func:`make_parser`.

Every user mistake surfaces as :class:`bitops.InputError` and ends here as one line on stderr
(``chaincomp: error: ...``) with exit code 2 and no traceback. Output files are written only
after everything they hold has been computed, and atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitops.errors import InputError

__all__ = ["main", "make_parser"]

EXIT_USAGE = 2


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None
    return values


def _float_list(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _bits_option(text: str | None, what: str) -> int | None:
    if text is None or text == "same":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{what} must be 'same' or an integer in 1..32, got {text!r}") from None
    if not 1 <= value <= 32:
        raise InputError(f"{what} must be 'same' or an integer in 1..32, got {value}")
    return value


def _add_convention_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("counting conventions (echoed in every report)")
    group.add_argument("--flops", action="store_true", help="count one MAC as 2 ops (default: 1, as fvcore)")
    group.add_argument("--bitops-formula", choices=("product", "accumulator"), default="product",
                       help="product: MACs x bw x ba (default); accumulator: + bw + ba + log2(fan_in) (Baskin et al.)")
    group.add_argument("--first-last-bits", default="same", metavar="same|8|32",
                       help="bits (weights and activations) of the first conv and the last classifier layer")
    group.add_argument("--input-bits", default="same", metavar="same|8|32",
                       help="bits of the network input fed to the first conv (default: its activation bits)")
    group.add_argument("--bn", choices=("folded", "counted"), default="folded", help="BatchNorm cost (default folded: 0)")
    group.add_argument("--elementwise", choices=("free", "counted"), default="free",
                       help="ReLU/add/pool cost (default free)")
    group.add_argument("--nonmac-bits", type=int, default=32, help="operand bits of a counted BN/elementwise op (32)")
    group.add_argument("--aux-bits", type=int, default=32, help="storage bits of biases and BN parameters (32; 0 = not stored)")


def _policy(args: argparse.Namespace):
    from bitops.policy import Policy

    for option, value, low in (("--nonmac-bits", args.nonmac_bits, 1), ("--aux-bits", args.aux_bits, 0)):
        if not low <= value <= 32:
            raise InputError(f"{option} must be an integer in {low}..32, got {value}")
    return Policy(ops="flops" if args.flops else "macs", bitops_formula=args.bitops_formula,
                  first_last_bits=_bits_option(args.first_last_bits, "--first-last-bits"),
                  input_bits=_bits_option(args.input_bits, "--input-bits"), bn=args.bn, elementwise=args.elementwise,
                  nonmac_bits=args.nonmac_bits, aux_bits=args.aux_bits)


def _add_count(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("count", help="BitOps, BitOpsCR, storage CR of one compressed configuration",
                       description="Exact BitOps / MACs / params / storage of MODEL under per-layer bits, pruning and "
                                   "early exit, against the original full-precision reference.")
    p.add_argument("model", metavar="MODEL",
                   help="zoo name (resnet18_cifar, resnet34_cifar, vgg19_cifar, mobilenetv2_cifar, resnet8/20/32/56), "
                        "torchvision:NAME, module.path:callable, or a LayerTable .json")
    p.add_argument("--input", metavar="C,H,W", help="input shape (default 3,32,32 for the zoo, 3,224,224 for torchvision)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the model's own; zoo 10)")
    p.add_argument("--width-mult", type=float, default=1.0, help="zoo width multiplier (default 1.0)")
    p.add_argument("--w-bits", type=int, help="weight bits of every layer (default 32)")
    p.add_argument("--a-bits", type=int, help="input-activation bits of every layer (default 32)")
    p.add_argument("--bits-file", metavar="FILE.toml",
                   help="per-layer bits by layer name or glob (see README); its [default] replaces --w-bits/--a-bits")
    p.add_argument("--keep-ratio", type=float, help="uniform fraction of channels kept per group, in (0, 1]")
    p.add_argument("--keep-file", metavar="FILE.toml",
                   help="keep ratio per channel group label or glob (see README); --keep-ratio sets the rest")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--student", metavar="MODEL", help="distillation: count this student; MODEL is the teacher (reference)")
    who.add_argument("--reference", metavar="MODEL", help="reference model for BitOpsCR/CR (default: MODEL itself)")
    p.add_argument("--exits", metavar="NAME,...", help="exit points to attach (zoo: e.g. layer1,layer2)")
    p.add_argument("--exit-probs", metavar="P,...", help="probability of leaving at each of --exits (sum <= 1)")
    p.add_argument("--heads-after-pruning", action="store_true",
                   help="exit heads added after pruning (order P before E): each head is built for its pruned "
                        "stage, so its own channels follow the stage's kept width instead of --keep-ratio")
    p.add_argument("--per-layer", action="store_true", help="print the per-layer table")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--save-table", metavar="FILE.json", help="also write the traced LayerTable (all exit heads)")
    _add_convention_options(p)
    p.set_defaults(run=_run_count)


def _spec(model: str, args: argparse.Namespace):
    from bitops.models import ModelSpec

    shape = _int_list(args.input, "--input") if args.input else None
    if shape is not None and (len(shape) != 3 or min(shape) < 1):
        raise InputError(f"--input must be C,H,W with three positive integers, got {args.input!r}")
    if args.num_classes is not None and args.num_classes < 1:
        raise InputError(f"--num-classes must be >= 1, got {args.num_classes}")
    if not (math.isfinite(args.width_mult) and args.width_mult > 0):
        raise InputError(f"--width-mult must be a finite number > 0, got {args.width_mult}")
    return ModelSpec(model=model, input_shape=shape, num_classes=args.num_classes, width_mult=args.width_mult)


def _run_count(args: argparse.Namespace) -> int:
    from bitops.config import (Config, bits_from_rules, check_exit_probs, heads_follow_stages, kept_from_mapping,
                               kept_from_ratio)
    from bitops.files import read_bits_file, read_keep_file
    from bitops.models import ModelSpec, load_model_table
    from bitops.report import count_report, format_count
    from bitops.table import save_table

    policy = _policy(args)
    if args.save_table:
        _check_writable("--save-table", args.save_table)
    for name in ("w_bits", "a_bits"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= 32:
            raise InputError(f"--{name.replace('_', '-')} must be an integer in 1..32, got {value}")
    if args.keep_ratio is not None and not 0 < args.keep_ratio <= 1:
        raise InputError(f"--keep-ratio must be in (0, 1], got {args.keep_ratio}")
    if args.exit_probs and not args.exits:
        raise InputError("--exit-probs needs --exits (the exit points the probabilities belong to)")
    exit_names = args.exits.split(",") if args.exits is not None else []
    if args.exits is not None and not all(exit_names):
        raise InputError(f"--exits must be comma-separated exit point names, got {args.exits!r}")
    repeated = next((n for n in exit_names if exit_names.count(n) > 1), None)
    if repeated:
        raise InputError(f"--exits: exit {repeated!r} is named twice")
    probs = np.array(_float_list(args.exit_probs, "--exit-probs") if args.exit_probs else [0.0] * len(exit_names))
    if len(probs) != len(exit_names):
        raise InputError(f"--exit-probs must give one probability per exit ({len(exit_names)}: {args.exits}), got {len(probs)}")
    check_exit_probs(probs, exit_names)
    bits_defaults, rules = read_bits_file(args.bits_file) if args.bits_file else ({}, [])
    for key in bits_defaults:
        if getattr(args, key) is not None:
            raise InputError(f"--bits-file {args.bits_file!r} sets [default] {key}; give it there or with "
                             f"--{key.replace('_', '-')}, not both")
    keep_default, keep_groups = read_keep_file(args.keep_file) if args.keep_file else (None, {})
    if keep_default is not None and args.keep_ratio is not None:
        raise InputError(f"--keep-file {args.keep_file!r} sets a default keep ratio; give it there or with "
                         "--keep-ratio, not both")

    counted_model = args.student or args.model
    full_table = load_model_table(_spec(counted_model, args))
    if args.student or args.reference:
        ref_model = args.model if args.student else args.reference
        saved = ref_model.endswith(".json")
        ref_spec = ModelSpec(model=ref_model, input_shape=None if saved else full_table.input_shape,
                             num_classes=None if saved else args.num_classes)
        reference = load_model_table(ref_spec)
    else:
        reference = full_table
    table = full_table.with_exits(exit_names)
    # Exits are stored in depth order; the probabilities follow the order the user named them in.
    order = {n: i for i, n in enumerate(exit_names)}
    probs = np.array([probs[order[n]] for n in table.exit_names])

    w_bits, a_bits = _prefixed(f"--bits-file {args.bits_file!r}", bits_from_rules, table, rules,
                               bits_defaults.get("w_bits", args.w_bits or 32), bits_defaults.get("a_bits", args.a_bits or 32))
    default_keep = keep_default if keep_default is not None else (args.keep_ratio or 1.0)
    if keep_groups:
        kept = _prefixed(f"--keep-file {args.keep_file!r}", kept_from_mapping, table, keep_groups, default_keep)
    else:
        kept = kept_from_ratio(table, default_keep)
    if args.heads_after_pruning:
        kept = heads_follow_stages(table, kept)
    config = Config(w_bits=w_bits, a_bits=a_bits, kept=kept, exit_probs=probs)
    data = count_report(table, config, policy, reference)

    if args.save_table:
        _write("--save-table", args.save_table, lambda path: save_table(full_table, path))
    print(json.dumps(data, indent=1) if args.json else format_count(data, args.per_layer))
    return 0


def _prefixed(where: str, function: Callable[..., Any], *args: Any) -> Any:
    """Call ``function``; an InputError about a file's content is prefixed with the option and path."""
    try:
        return function(*args)
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def _check_writable(option: str, path: str) -> Path:
    """Fail before any work when an output file cannot be written where the user asked."""
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"{option}: cannot write {path!r}: directory {str(target.parent)!r} does not exist")
    if target.is_dir():
        raise InputError(f"{option}: {path!r} is a directory, not a file")
    return target


def _write(option: str, path: str, writer: Callable[[Path], None]) -> None:
    from bitops.jsonio import write_atomic

    target = _check_writable(option, path)
    try:
        write_atomic(target, writer)
    except OSError as err:
        raise InputError(f"{option}: cannot write {path!r}: {err.strerror}") from None


PIN_KEYS = {"w_bits": int, "a_bits": int, "first_last_bits": str, "input_bits": str, "bn": str, "aux_bits": int,
            "reference": str}


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="check reported BitOpsCR / CR claims and solve for what they imply",
                       description="For each [[claim]] in CLAIMS.toml: the BitOpsCR and CR reachable under every "
                                   "convention the claim leaves open, the implied keep ratio and early-exit saving, "
                                   "and a verdict in words. Runs from shipped zoo tables (no torch).")
    p.add_argument("claims", nargs="?", metavar="CLAIMS.toml", help="claims file (see README for the format)")
    p.add_argument("--example", choices=("paper",), help="audit a shipped claims file: 'paper' = the paper's Tables 2-5")
    p.add_argument("--convention", action="append", default=[], metavar="KEY=VALUE",
                   help=f"pin a convention for every claim (repeatable); keys: {', '.join(PIN_KEYS)}")
    p.add_argument("--all-conventions", action="store_true", help="print every convention combination, not just verdicts")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the reachable (CR, BitOpsCR) region of each claim")
    p.set_defaults(run=_run_audit)


def _pins(items: Sequence[str]) -> dict[str, object]:
    pins: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in PIN_KEYS:
            raise InputError(f"--convention must be KEY=VALUE with KEY one of {', '.join(PIN_KEYS)}, got {item!r}")
        if key in ("first_last_bits", "input_bits"):
            pins[key] = _bits_option(raw, f"--convention {key}")
        elif key == "bn":
            if raw not in ("folded", "counted"):
                raise InputError(f"--convention bn must be folded or counted, got {raw!r}")
            pins[key] = raw
        elif key == "reference":
            if raw not in ("teacher", "student"):
                raise InputError(f"--convention reference must be teacher or student, got {raw!r}")
            pins[key] = raw
        else:
            low = 0 if key == "aux_bits" else 1
            try:
                value = int(raw)
            except ValueError:
                value = -1
            if not low <= value <= 32:
                raise InputError(f"--convention {key} must be an integer in {low}..32, got {raw!r}")
            pins[key] = value
    return pins


def _run_audit(args: argparse.Namespace) -> int:
    from bitops.audit_report import EXAMPLES, audit_all, audit_json, format_audit, plot_audit
    from bitops.claims import load_claims
    from bitops.models import ModelSpec, load_model_table, zoo_names

    if bool(args.claims) == bool(args.example):
        raise InputError("give either a CLAIMS.toml file or --example paper (exactly one)")
    pins = _pins(args.convention)
    if args.plot:
        _check_writable("--plot", args.plot)
    claims = load_claims(args.claims or EXAMPLES[args.example], zoo_names())

    def load(name: str, num_classes: int, width_mult: float, input_shape: tuple[int, int, int]):
        return load_model_table(ModelSpec(name, input_shape=input_shape, num_classes=num_classes, width_mult=width_mult))

    with _progress(len(claims), "auditing claims") as bar:
        results = audit_all(claims, load, pins, progress=bar)
    report = audit_json(results, pins)
    if args.plot:
        _write("--plot", args.plot, lambda path: plot_audit(results, path))
    print(json.dumps(report, indent=1) if args.json else format_audit(report, args.all_conventions))
    return 0


def _progress(total: int, description: str):
    """A progress bar on stderr for long work; silent when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="claim", leave=False, disable=not sys.stderr.isatty())


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """Base model, data and stage hyperparameters shared by ``train`` and ``profile``."""
    p.add_argument("--teacher", default="resnet20", help="zoo model trained first and used as the reference")
    p.add_argument("--student", default="resnet8", help="zoo model D distils into")
    p.add_argument("--student-width-mult", type=float, default=1.0, help="width multiplier of the student (1.0)")
    p.add_argument("--dataset", default="digits", help="digits (offline default), cifar10, cifar100, svhn, cinic10")
    p.add_argument("--data-dir", help="folder holding the dataset (not needed for digits)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset into --data-dir")
    p.add_argument("--image-size", type=int, default=16, help="digits are upsampled from 8x8 to this size (16)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=15, help="epochs of the base (teacher) training")
    p.add_argument("--lr", type=float, default=0.05, help="base learning rate; stages fine-tune at lr/10")
    p.add_argument("--distill-epochs", type=int, default=15)
    p.add_argument("--temperature", type=float, default=4.0, help="KD temperature")
    p.add_argument("--alpha", type=float, default=0.9, help="KD weight of the soft targets")
    p.add_argument("--prune-ratio", type=float, default=0.5, help="fraction of channels P removes per group, in [0, 1)")
    p.add_argument("--finetune-epochs", type=int, default=15, help="fine-tuning epochs after P and after Q")
    p.add_argument("--w-bits", type=int, default=1)
    p.add_argument("--a-bits", type=int, default=8)
    p.add_argument("--first-last-bits", default="same", metavar="same|8|32")
    p.add_argument("--input-bits", default="same", metavar="same|8|32")
    p.add_argument("--exits", metavar="NAME,...", help="exit points E adds heads at (default: all of the model's)")
    p.add_argument("--thresholds", default="0.5,0.6,0.7,0.8,0.9,0.95,0.99", help="confidence thresholds E reports")
    p.add_argument("--threshold", type=float, default=0.9, help="the threshold the record's BitOps use")
    p.add_argument("--exit-epochs", type=int, default=30,
                   help="epochs training the exit heads (heads quantized from scratch, QE, need ~30)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="run an order of D, P, Q, E for real and record what it measured",
                       description="Train the teacher, apply the stages of --order one after another (each fine-tunes "
                                   "at 1/10 of --lr), and write a run record with accuracy, exit rates and the "
                                   "BitOps/BitOpsCR/CR bitops computes from the real model after every stage.")
    p.add_argument("--order", required=True, help="letters from D, P, Q, E in the order to apply them, e.g. DPQE")
    p.add_argument("--out", required=True, metavar="RUN.json", help="run record (a checkpoint RUN.pt goes beside it)")
    p.add_argument("--resume", action="store_true", help="continue the run recorded in --out")
    p.add_argument("--allow-repeat", action="store_true", help="allow D, P or Q to appear more than once")
    _add_training_options(p)
    p.set_defaults(run=_run_train)


# Config field -> the option that sets it, per config class, so errors name what the user typed.
OPTION_OF_FIELD = {
    "DataConfig": {"dataset": "--dataset", "data_dir": "--data-dir", "image_size": "--image-size",
                   "batch_size": "--batch-size", "seed": "--seed", "download": "--download"},
    "TrainConfig": {"epochs": "--epochs", "lr": "--lr"},
    "DistillConfig": {"student": "--student", "temperature": "--temperature", "alpha": "--alpha",
                      "epochs": "--distill-epochs", "width_mult": "--student-width-mult"},
    "PruneConfig": {"ratio": "--prune-ratio", "finetune_epochs": "--finetune-epochs"},
    "QuantConfig": {"w_bits": "--w-bits", "a_bits": "--a-bits", "first_last_bits": "--first-last-bits",
                    "input_bits": "--input-bits", "finetune_epochs": "--finetune-epochs"},
    "ExitConfig": {"exits": "--exits", "thresholds": "--thresholds", "threshold": "--threshold",
                   "epochs": "--exit-epochs"},
}


def _option_config(config_type: type, **kwargs: Any) -> Any:
    """Build a config; a rule it breaks is reported under the option's name, not the field's."""
    try:
        return config_type(**kwargs)
    except InputError as err:
        message = str(err)
        for field, option in OPTION_OF_FIELD.get(config_type.__name__, {}).items():
            if message.startswith(f"{field} "):
                message = option + message[len(field):]
                break
        raise InputError(message) from None


def _chain_config(args: argparse.Namespace, order: str, allow_repeat: bool = False):
    from bitops.orders import validate_order
    from trainer.chain import ChainConfig
    from trainer.data import DataConfig
    from trainer.stages import DistillConfig, ExitConfig, PruneConfig, QuantConfig, TrainConfig

    if args.exits is not None and not all(args.exits.split(",")):
        raise InputError(f"--exits must be comma-separated exit point names, got {args.exits!r}")
    return ChainConfig(
        order=_prefixed("--order", validate_order, order, allow_repeat), teacher=args.teacher,
        data=_option_config(DataConfig, dataset=args.dataset, data_dir=args.data_dir, download=args.download,
                            image_size=args.image_size, batch_size=args.batch_size, seed=args.seed),
        base=_option_config(TrainConfig, epochs=args.epochs, lr=args.lr),
        distill=_option_config(DistillConfig, student=args.student, temperature=args.temperature, alpha=args.alpha,
                               epochs=args.distill_epochs, width_mult=args.student_width_mult),
        prune=_option_config(PruneConfig, ratio=args.prune_ratio, finetune_epochs=args.finetune_epochs),
        quant=_option_config(QuantConfig, w_bits=args.w_bits, a_bits=args.a_bits,
                             first_last_bits=_bits_option(args.first_last_bits, "--first-last-bits"),
                             input_bits=_bits_option(args.input_bits, "--input-bits"),
                             finetune_epochs=args.finetune_epochs),
        exits=_option_config(ExitConfig, exits=tuple(args.exits.split(",")) if args.exits else None,
                             thresholds=tuple(_float_list(args.thresholds, "--thresholds")), threshold=args.threshold,
                             epochs=args.exit_epochs),
        device=args.device, seed=args.seed, allow_repeat=allow_repeat,
    )


def _run_train(args: argparse.Namespace) -> int:
    out = _check_writable("--out", args.out)
    if out.suffix == ".pt":
        raise InputError(f"--out {args.out!r}: the record must not end in .pt, the checkpoint beside it does")
    if out.exists() and not args.resume:
        raise InputError(f"--out {args.out!r} already exists; add --resume to continue it, or choose another file")
    if args.resume and not out.exists():
        raise InputError(f"--resume: there is no run record at {args.out!r} to continue")
    config = _chain_config(args, args.order, args.allow_repeat)
    from trainer.chain import run_chain

    try:
        record = run_chain(config, out, resume=args.resume, log=lambda m: print(m, file=sys.stderr))
    except KeyboardInterrupt:
        print(f"chaincomp train: interrupted; {args.out} holds the finished stages (continue with --resume)",
              file=sys.stderr)
        return 130
    print(format_record(record))
    return 0


def format_record(record: dict[str, Any]) -> str:
    """One line per stage: accuracy, exit rate at the chosen threshold, BitOpsCR, CR, wall time."""
    lines = [f"{'stage':<6} {'accuracy':>8} {'exited':>7} {'BitOpsCR':>9} {'CR':>8} {'wall s':>7}"]
    for stage in record["stages"]:
        exited = "" if "exit" not in stage else f"{100 * (1 - stage['exit']['rates']['final']):.0f}%"
        lines.append(f"{stage['stage']:<6} {stage['accuracy']:>8.2f} {exited:>7} {stage['cost']['bitops_cr']:>8.1f}x "
                     f"{stage['cost']['cr']:>7.1f}x {stage['wall_s']:>7.1f}")
    return "\n".join(lines)


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure each method alone on the base model over a grid (a stage profile)",
                       description="Train the base model, apply each --method on its own to a copy of it for every "
                                   "--grid value, and write the stage-profile file the simulator reads.")
    p.add_argument("--method", required=True, metavar="LETTERS",
                   help="methods to profile, e.g. P or DPQE (D: students, P: pruning ratios, Q: weight bits at "
                        "--a-bits, E: thresholds)")
    p.add_argument("--grid", help="values for a single --method (default grids: D the --student, P 0.25,0.5,0.75, "
                                  "Q 1,2,4,8, E --thresholds)")
    p.add_argument("--seeds", default="0", help="seeds to repeat the measurements over (mean and spread), e.g. 0,1,2")
    p.add_argument("--out", required=True, metavar="PROFILE.json", help="stage-profile file to write")
    _add_training_options(p)
    p.set_defaults(run=_run_profile)


def _run_profile(args: argparse.Namespace) -> int:
    out = _check_writable("--out", args.out)
    if out.exists():
        raise InputError(f"--out {args.out!r} already exists; choose another file or remove it")
    methods = args.method
    if not methods or any(m not in "DPQE" for m in methods) or len(set(methods)) != len(methods):
        raise InputError(f"--method must be distinct letters from D, P, Q, E, got {methods!r}")
    if args.grid is not None and len(methods) != 1:
        raise InputError(f"--grid applies to a single --method; got --method {methods!r} (profile one at a time, "
                         "or drop --grid for the default grids)")
    seeds = _int_list(args.seeds, "--seeds")
    from trainer.profile import DEFAULT_GRIDS, ProfileRequest, parse_grid, run_profile

    defaults = {**DEFAULT_GRIDS, "D": (args.student,), "E": tuple(_float_list(args.thresholds, "--thresholds"))}
    grids = {m: parse_grid(m, args.grid) if args.grid is not None else defaults[m] for m in methods}
    request = ProfileRequest(chain=_chain_config(args, methods), grids=grids, seeds=seeds,
                             command="chaincomp " + " ".join(args.argv))
    try:
        profile = run_profile(request, out, log=lambda m: print(m, file=sys.stderr))
    except KeyboardInterrupt:
        print("chaincomp profile: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(format_profile(profile))
    return 0


def format_profile(profile: dict[str, Any]) -> str:
    base = profile["base"]
    lines = [f"base {base['model']}: {base['accuracy']:.2f}%", f"{'method':<7} {'value':>9} {'accuracy':>9} {'delta':>7}"]
    for method, entry in profile["methods"].items():
        for point in entry["points"]:
            rates = point.get("exit_rates")
            exited = "" if rates is None else f"  exited {100 * (1 - rates['final']):.0f}%"
            lines.append(f"{method:<7} {point['value']!s:>9} {point['accuracy']:>9.2f} {point['delta']:>+7.2f}{exited}")
    return "\n".join(lines)


def _add_simulation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", metavar="FILE.json", help="stage profile (default: the one shipped, measured on digits)")
    p.add_argument("--grid", metavar="M=V,...;...",
                   help="hyperparameters per method, e.g. 'P=0.1:0.7:13;Q=1,2,4,8;E=0.5,0.9;D=resnet8' "
                        "(a:b:n = n values from a to b); default: the profile's measured values, P densified")
    p.add_argument("--budget", default="0.2,0.6,1,2", help="accuracy-loss budgets in points, each in (0, 100]")


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="predict every order's accuracy and exact cost from stage profiles",
                       description="Every order over the hyperparameter grid: the Pareto front of (BitOpsCR, "
                                   "accuracy), the paper's Table-1 layout (max BitOpsCR within each accuracy-loss "
                                   "budget, one column per order) and a ranking. No torch, no training.")
    p.add_argument("--orders", default="all", help="'all' (the 24 orders of D, P, Q, E) or a comma list, e.g. DPQE,PQ")
    p.add_argument("--allow-repeat", action="store_true", help="allow D, P, Q to repeat within an order")
    _add_simulation_options(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw the Pareto front of every order")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_run_simulate)


def _add_orders(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("orders", help="pairwise order analysis: precedence graph, topological sort, cycles",
                       description="For each pair of methods, which order wins and by how much; the precedence "
                                   "graph, its topological sort and whether it is unique, cycles (listed, never "
                                   "hidden), and the insertion check of the paper's section 4.")
    _add_simulation_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_run_orders)


def _budgets(text: str) -> list[float]:
    budgets = _float_list(text, "--budget")
    bad = [b for b in budgets if not 0 < b <= 100]
    if bad:
        raise InputError(f"--budget values must be accuracy losses in (0, 100] points, got {bad[0]:g}")
    return sorted(budgets)


def _grid(text: str | None, profile):
    from simulator.model import Grid

    values: dict[str, tuple] = {}
    for method, curve in profile.curves.items():
        measured = tuple(curve.values)
        if method == "P":  # densify between the measured ratios: costs are exact anywhere
            measured = tuple(sorted({*measured, *np.round(np.linspace(min(measured), max(measured), 13), 4)}))
        values[method] = measured
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        method, sep, raw = part.partition("=")
        method = method.strip()
        if not sep or method not in "DPQE" or len(method) != 1:
            raise InputError(f"--grid entries must look like P=0.1,0.2 or P=0.1:0.7:7, got {part!r}")
        values[method] = _grid_values(method, raw.strip())
    return Grid(values)


def _grid_values(method: str, raw: str) -> tuple:
    if method == "D":
        names = tuple(v for v in raw.split(",") if v)
        if not names:
            raise InputError("--grid D= must list at least one student")
        return names
    try:
        if raw.count(":") == 2:
            start, stop, count = raw.split(":")
            values = tuple(np.linspace(float(start), float(stop), int(count)).round(6))
        else:
            values = tuple(float(v) for v in raw.split(","))
    except ValueError:
        raise InputError(f"--grid {method}= must be numbers (a,b,c) or a range (start:stop:count), got {raw!r}") from None
    if not values:
        raise InputError(f"--grid {method}= is empty")
    rules = {"P": (lambda v: 0 <= v < 1, "pruning ratios in [0, 1)"), "Q": (lambda v: v == int(v) and 1 <= v <= 32,
             "integer weight bits in 1..32"), "E": (lambda v: 0 < v <= 1, "thresholds in (0, 1]")}
    check, rule = rules[method]
    bad = [v for v in values if not check(v)]
    if bad:
        raise InputError(f"--grid {method}= must hold {rule}, got {bad[0]:g}")
    return tuple(int(v) for v in values) if method == "Q" else values


def _simulation(args: argparse.Namespace):
    """(profile, grid, budgets, simulate(order) -> Prediction) for the simulate/orders commands."""
    from functools import cache

    from bitops.models import ModelSpec, load_model_table
    from simulator.model import predict
    from simulator.profile import load_profile

    profile = load_profile(args.profile)
    grid = _grid(args.grid, profile)
    budgets = _budgets(args.budget)
    setup = profile.setup
    shape = tuple(setup.get("input_shape", (3, 32, 32)))
    classes = int(setup.get("num_classes", 10))
    teacher = setup.get("teacher")
    if not isinstance(teacher, str):
        raise InputError("the profile's setup must name its teacher (base) model")

    @cache
    def load(name: str):
        return load_model_table(ModelSpec(name, input_shape=shape, num_classes=classes))

    @cache
    def simulate(order: str):
        return predict(profile, order, grid, load, teacher)

    return profile, grid, budgets, simulate


def _orders_list(text: str, allow_repeat: bool, methods: str = "DPQE") -> list[str]:
    from itertools import permutations

    from bitops.orders import validate_order

    if text == "all":  # every order of the methods the profile measured
        return ["".join(p) for p in permutations(methods)]
    orders = [o.strip() for o in text.split(",") if o.strip()]
    if not orders:
        raise InputError(f"--orders must be 'all' or a comma list of orders, got {text!r}")
    for order in orders:
        try:
            validate_order(order, allow_repeat)
        except InputError as err:
            raise InputError(f"--orders: {err}") from None
    return orders


def _run_simulate(args: argparse.Namespace) -> int:
    from simulator.report import format_simulation, plot_fronts, simulation_json

    if args.plot:
        _check_writable("--plot", args.plot)
    profile, grid, budgets, simulate = _simulation(args)
    orders = _orders_list(args.orders, args.allow_repeat, "".join(m for m in "DPQE" if m in profile.curves))
    predictions = [simulate(o) for o in orders]
    report = simulation_json(profile, args.profile, grid, budgets, predictions)
    if args.plot:
        _write("--plot", args.plot, lambda path: plot_fronts(predictions, profile.base_accuracy, path))
    print(json.dumps(report, indent=1) if args.json else format_simulation(report))
    return 0


def _run_orders(args: argparse.Namespace) -> int:
    from simulator.report import format_orders, orders_json
    from simulator.search import insertion_check, precedence, topological_orders

    profile, grid, budgets, simulate = _simulation(args)
    methods = "".join(m for m in "DPQE" if m in profile.curves)
    if len(methods) < 2:
        raise InputError(f"the profile measures {methods or 'no method'}; pairwise orders need at least two methods")
    pairs = precedence(simulate, profile.base_accuracy, budgets, methods)
    order, cycles, unique = topological_orders(pairs, methods)
    insertion = insertion_check(simulate, pairs, profile.base_accuracy, budgets, methods)
    report = orders_json(pairs, order, cycles, unique, insertion, budgets)
    print(json.dumps(report, indent=1) if args.json else format_orders(report))
    return 0


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="estimate the order-interaction terms of a profile from trainer run records",
                       description="Least squares over the stage increments of RUN records (chaincomp train): the "
                                   "accuracy term of every ordered pair of methods and the exit-rate scale of every "
                                   "pair with E, on top of the single-method curves of --profile. Terms the runs "
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
    p.add_argument("--json", action="store_true", help="print the fit report as JSON")
    p.set_defaults(run=_run_fit)


def _run_fit(args: argparse.Namespace) -> int:
    from bitops.jsonio import write_json_atomic
    from simulator.fit import fit_json, fit_runs, fitted_profile, format_fit, read_runs
    from simulator.profile import load_profile
    from simulator.structure import is_triple

    if not args.runs:
        raise InputError("give at least one run record (RUN.json, written by chaincomp train)")
    out = _check_writable("--out", args.out)
    if any(Path(r).resolve() == out.resolve() for r in args.runs):
        raise InputError(f"--out {args.out!r} is one of the run records; choose another file")
    triples = [t.strip() for t in args.triples.split(",") if t.strip()]
    for triple in triples:
        if not is_triple(triple):
            raise InputError(f"--triples entries are three different letters of D, P, Q, E, the last two P, Q or E; "
                             f"got {triple!r}")
    profile = load_profile(args.profile)
    runs = read_runs(args.runs, profile, args.allow_incomplete)
    result = fit_runs(runs, profile, args.refine_deltas, triples)
    data = fitted_profile(profile, result, args.runs, args.profile, "chaincomp " + " ".join(args.argv))
    _write("--out", args.out, lambda path: write_json_atomic(data, path))
    report = fit_json(result, args.out, args.profile)
    print(json.dumps(report, indent=1) if args.json else format_fit(report))
    return 0


def _add_confirm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("confirm", help="train the predicted best order and rivals for real; predicted vs measured",
                       description="Simulate, take the best order and --top - 1 rivals spread over the ranking (the "
                                   "predicted worst included), train each at its max-BitOpsCR point within --budget "
                                   "(run records in --out-dir, reused when complete, so confirm resumes), and report "
                                   "predicted vs measured accuracy and BitOpsCR with Kendall's tau.")
    p.add_argument("--profile", metavar="FILE.json", help="stage profile (default: the one shipped); its setup "
                                                          "(teacher, student, dataset, input size) is what is trained")
    p.add_argument("--grid", metavar="M=V,...;...", help="hyperparameters per method, as for simulate")
    p.add_argument("--orders", default="all", help="'all' (the 24 orders of D, P, Q, E) or a comma list to rank")
    p.add_argument("--top", type=int, help="orders to train: the best, the predicted worst and the rest spread "
                                           "between (default 6, or every order when fewer)")
    p.add_argument("--budget", default="1", help="accuracy-loss budget in points the ranking and the hyperparameters "
                                                 "are chosen at (default 1)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="folder for the run records, one ORDER.json each")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw predicted vs measured accuracy and BitOpsCR")
    group = p.add_argument_group("training (as for train; the setup comes from the profile)")
    group.add_argument("--epochs", type=int, help="base training epochs (default: the profile's base_training, else 15)")
    group.add_argument("--lr", type=float, help="base learning rate (default: the profile's base_training, else 0.05)")
    group.add_argument("--distill-epochs", type=int, default=15)
    group.add_argument("--finetune-epochs", type=int, default=15, help="fine-tuning epochs after P and after Q")
    group.add_argument("--exit-epochs", type=int, default=30)
    group.add_argument("--temperature", type=float, default=4.0, help="KD temperature")
    group.add_argument("--alpha", type=float, default=0.9, help="KD weight of the soft targets")
    group.add_argument("--batch-size", type=int, default=64)
    group.add_argument("--data-dir", help="folder holding the dataset (not needed for digits)")
    group.add_argument("--download", action="store_true", help="let torchvision download the dataset into --data-dir")
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    group.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run_confirm)


def _confirm_template(args: argparse.Namespace, profile, order: str):
    """A ChainConfig of the profile's setup and the training options (order and stage values are
    set per candidate by :func:`simulator.confirm.chain_config`)."""
    from trainer.chain import ChainConfig
    from trainer.data import DataConfig
    from trainer.stages import DistillConfig, ExitConfig, PruneConfig, QuantConfig, TrainConfig

    setup = profile.setup
    shape = setup.get("input_shape")
    if not isinstance(setup.get("dataset"), str) or not isinstance(shape, list) or len(shape) != 3:
        raise InputError("the profile's setup must give the dataset and input_shape [C, H, W] it was measured on, "
                         "to train its orders")
    base_training = setup.get("base_training") if isinstance(setup.get("base_training"), dict) else {}
    base = {"epochs": args.epochs if args.epochs is not None else base_training.get("epochs"),
            "lr": args.lr if args.lr is not None else base_training.get("lr")}
    return ChainConfig(
        order=order, teacher=setup["teacher"],
        data=_option_config(DataConfig, dataset=setup["dataset"], data_dir=args.data_dir, download=args.download,
                            image_size=shape[-1], batch_size=args.batch_size, seed=args.seed),
        base=_option_config(TrainConfig, **{k: v for k, v in base.items() if v is not None}),
        distill=_option_config(DistillConfig, student=setup.get("student", DistillConfig.student),
                               temperature=args.temperature, alpha=args.alpha, epochs=args.distill_epochs),
        prune=_option_config(PruneConfig, finetune_epochs=args.finetune_epochs),
        quant=_option_config(QuantConfig, finetune_epochs=args.finetune_epochs),
        exits=_option_config(ExitConfig, epochs=args.exit_epochs),
        device=args.device, seed=args.seed,
    )


def _run_confirm(args: argparse.Namespace) -> int:
    from simulator.confirm import chain_config, confirm_json, format_confirm, measure, plot_confirm, select

    if args.top is not None and args.top < 1:
        raise InputError(f"--top must be >= 1, got {args.top}")
    budgets = _budgets(args.budget)
    if len(budgets) != 1:
        raise InputError(f"--budget takes one accuracy-loss budget in points, got {args.budget!r}")
    out_dir = Path(args.out_dir)
    if not out_dir.parent.is_dir():
        raise InputError(f"--out-dir: cannot create {args.out_dir!r}: directory {str(out_dir.parent)!r} does not exist")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir: {args.out_dir!r} is a file, not a directory")
    if args.plot:
        _check_writable("--plot", args.plot)
    profile, _, _, simulate = _simulation(args)
    orders = _orders_list(args.orders, False, "".join(m for m in "DPQE" if m in profile.curves))
    top = min(6, len(orders)) if args.top is None else args.top
    if top > len(orders):
        raise InputError(f"--top must be at most the number of orders ranked ({len(orders)}), got {top}")
    template = _confirm_template(args, profile, orders[0])  # training options checked before simulating
    candidates = select([simulate(o) for o in orders], profile.base_accuracy, budgets[0], top)
    configs = [chain_config(template, c, profile) for c in candidates]
    out_dir.mkdir(exist_ok=True)
    try:
        results = measure(candidates, configs, out_dir, int(profile.setup.get("num_classes", 10)),
                          log=lambda m: print(m, file=sys.stderr))
    except KeyboardInterrupt:
        print(f"chaincomp confirm: interrupted; {args.out_dir} keeps the finished runs and stages (run the same "
              "command again to continue)", file=sys.stderr)
        return 130
    report = confirm_json(profile, args.profile, budgets[0], len(orders), candidates, results, out_dir)
    if args.plot:
        _write("--plot", args.plot, lambda path: plot_confirm(report, path))
    print(json.dumps(report, indent=1) if args.json else format_confirm(report))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chaincomp", description="Combinational CNN compression: exact BitOps "
                                     "and CR counts, claim audits, order simulation and a thin trainer.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_count(sub)
    _add_audit(sub)
    _add_train(sub)
    _add_profile(sub)
    _add_simulate(sub)
    _add_orders(sub)
    _add_fit(sub)
    _add_confirm(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what was asked, for records that note their command
    try:
        return args.run(args)
    except InputError as err:
        print(f"chaincomp {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("chaincomp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) closed the pipe: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
