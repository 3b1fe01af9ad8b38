"""``chaincomp count`` and ``chaincomp audit``: parse, call :func:`bitops.count.count` /
:func:`bitops.audit_report.audit`, print."""

from __future__ import annotations

import argparse

from bitops.architectures import EXIT_HEADS
from bitops.claims import CONVENTION_KEYS, EXAMPLES
from bitops.count import CountRequest
from bitops.errors import InputError
from bitops.jsonio import check_writable
from bitops.policy import BITOPS_FORMULAS, BN_MODES, ELEMENTWISE_MODES, MATMUL_MODES, Policy
from chaincomp.cli.options import add_json, default, emit, float_list, int_list, progress, same_or_bits, step_line

__all__ = ["add_audit", "add_count"]


def _add_conventions(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("counting conventions (echoed in every report)")
    group.add_argument("--flops", action="store_true", help="count one MAC as 2 ops (default: 1, as fvcore)")
    group.add_argument("--bitops-formula", choices=BITOPS_FORMULAS, default=default(Policy, "bitops_formula"),
                       help="product: MACs x bw x ba; accumulator: + bw + ba + log2(fan_in) (Baskin et al.) "
                            "(default %(default)s)")
    group.add_argument("--first-last-bits", default="same", metavar="same|N",
                       help="bits (weights and activations, N in 1..32; papers use 8 or 32) of the first conv and "
                            "the last classifier layer "
                            "(default %(default)s)")
    group.add_argument("--input-bits", default="same", metavar="same|N",
                       help="bits of the network input fed to the first conv (default: its activation bits)")
    group.add_argument("--bn", choices=BN_MODES, default=default(Policy, "bn"),
                       help="BatchNorm cost (default %(default)s: 0)")
    group.add_argument("--elementwise", choices=ELEMENTWISE_MODES, default=default(Policy, "elementwise"),
                       help="ReLU/add/pool cost (default %(default)s)")
    group.add_argument("--nonmac-bits", type=int, default=default(Policy, "nonmac_bits"),
                       help="operand bits of a counted BN/elementwise op (default %(default)s)")
    group.add_argument("--aux-bits", type=int, default=default(Policy, "aux_bits"),
                       help="storage bits of biases and BN parameters (default %(default)s; 0 = not stored)")
    group.add_argument("--matmul-bits", choices=MATMUL_MODES, default=default(Policy, "matmul_bits"),
                       help="a product of two activations (attention): activation = a_bits x a_bits; weight = "
                            "its second operand at the layer's w_bits (default %(default)s)")


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(ops="flops" if args.flops else "macs", bitops_formula=args.bitops_formula,
                  first_last_bits=same_or_bits("first_last_bits", args.first_last_bits),
                  input_bits=same_or_bits("input_bits", args.input_bits), bn=args.bn, elementwise=args.elementwise,
                  nonmac_bits=args.nonmac_bits, aux_bits=args.aux_bits, matmul_bits=args.matmul_bits)


def add_count(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("count", help="BitOps, BitOpsCR, storage CR of one compressed configuration",
                       description="Exact BitOps / MACs / params / storage of MODEL under per-layer bits, pruning and "
                                   "early exit, against the original full-precision reference.")
    p.add_argument("model", metavar="MODEL",
                   help="zoo name (resnet18_cifar, resnet34_cifar, vgg19_cifar, mobilenetv2_cifar, resnet8/20/32/56), "
                        "torchvision:NAME, module.path:callable, or a LayerTable .json")
    p.add_argument("--input", dest="input_shape", metavar="C,H,W",
                   help="input shape (default: 3,32,32 for the zoo; for torchvision the native size, the smallest crop of its "
                        "published weights, e.g. 3,224,224 for resnet50, 3,299,299 for inception_v3; required for "
                        "your own model unless its builder has an input_shape attribute)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the model's own; zoo 10)")
    p.add_argument("--kwargs", metavar="KEY=VALUE,...",
                   help="keyword arguments of a torchvision, timm or your own builder; values are Python literals "
                        "(numbers, True/False, None, quoted strings) or else plain strings, e.g. dropout=0.1")
    p.add_argument("--width-mult", type=float, default=default(CountRequest, "width_mult"),
                   help="zoo width multiplier (default %(default)s)")
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
    p.add_argument("--exits", metavar="NAME,...",
                   help="exit points to attach heads at: a zoo model's stages (e.g. layer1,layer2), or for any other "
                        "model the modules whose output a head reads (e.g. layer1,layer2.1 for torchvision:resnet18)")
    p.add_argument("--exit-head", choices=tuple(EXIT_HEADS), default=default(CountRequest, "exit_head"),
                   help="exit head design: " + "; ".join(f"{k}: {v}" for k, v in EXIT_HEADS.items())
                        + " (default %(default)s)")
    p.add_argument("--exit-probs", metavar="P,...", help="probability of leaving at each of --exits (sum <= 1)")
    p.add_argument("--heads-after-pruning", action="store_true",
                   help="exit heads added after pruning (order P before E): each head is built for its pruned "
                        "stage, so its own channels follow the stage's kept width instead of --keep-ratio")
    p.add_argument("--group-timeout", dest="group_seconds", type=float, metavar="SECONDS",
                   help="bound on torch-pruning's channel-group analysis (default 30), and a sixth of it on the wait "
                        "for each next group once one has come; past either the model is counted unpruned, its "
                        "layers listed as having no channel groups")
    p.add_argument("--groups", action="store_true",
                   help="analyse and list the channel groups even when nothing is pruned (their labels are what "
                        "--keep-file names); a traced model's count otherwise leaves torch-pruning's analysis out "
                        "unless --keep-ratio, --keep-file, --heads-after-pruning or --save-table asks for it")
    p.add_argument("--count-unused", action="store_true",
                   help="count the parameters of modules that never run in the traced forward pass (e.g. "
                        "GoogLeNet's auxiliary classifiers in eval mode) as stored; default: listed, not counted")
    p.add_argument("--per-layer", action="store_true", help="print the per-layer table")
    add_json(p)
    p.add_argument("--csv", metavar="FILE.csv", help="also write the per-layer table as CSV (one row per layer, "
                   "the columns of --json's layers)")
    p.add_argument("--save-table", metavar="FILE.json", help="also write the traced LayerTable (all exit heads)")
    _add_conventions(p)
    p.set_defaults(run=run_count)


def run_count(args: argparse.Namespace) -> int:
    from bitops.count import count

    exits = tuple(args.exits.split(",")) if args.exits is not None else ()
    if args.exits is not None and not all(exits):
        raise InputError(f"exits must be comma-separated exit point names, got {args.exits!r}")
    request = CountRequest(
        model=args.model, kwargs=_kwargs(args.kwargs) if args.kwargs else (), input_shape=int_list("input_shape", args.input_shape) if args.input_shape else None,
        num_classes=args.num_classes, width_mult=args.width_mult, w_bits=args.w_bits, a_bits=args.a_bits,
        bits_file=args.bits_file, keep_ratio=args.keep_ratio, keep_file=args.keep_file, student=args.student,
        reference=args.reference, exits=exits, exit_head=args.exit_head,
        exit_probs=float_list("exit_probs", args.exit_probs) if args.exit_probs else None,
        heads_after_pruning=args.heads_after_pruning, count_unused=args.count_unused,
        group_seconds=args.group_seconds, policy=_policy(args),
        save_table=args.save_table, groups=args.groups)
    if args.csv is not None:
        check_writable("csv", args.csv)  # before the work
    with step_line("chaincomp count"):
        result = count(request)
    if args.csv is not None:
        result.to_csv(args.csv)
    return emit(result, args.json, lambda: result.format(args.per_layer, args.groups))


def _kwargs(text: str) -> tuple[tuple[str, object], ...]:
    """``key=value,...`` as (key, value) pairs; a value is a Python literal where it parses as one."""
    import ast

    pairs = []
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InputError(f"kwargs must be KEY=VALUE pairs separated by commas, got {item!r}")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        pairs.append((key.strip(), value))
    return tuple(pairs)


def add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="check reported BitOpsCR / CR claims and solve for what they imply",
                       description="For each [[claim]] in CLAIMS.toml: the BitOpsCR and CR reachable under every "
                                   "convention the claim leaves open, the implied keep ratio and early-exit saving, "
                                   "and a verdict in words. Runs from shipped zoo tables (no torch).")
    p.add_argument("claims", nargs="?", metavar="CLAIMS.toml", help="claims file (see README for the format)")
    p.add_argument("--example", choices=tuple(EXAMPLES), help="audit a shipped claims file: 'paper' = the paper's "
                                                              "Tables 2-5")
    p.add_argument("--convention", dest="conventions", action="append", default=[], metavar="KEY=VALUE",
                   help=f"pin a convention for every claim (repeatable); keys: {', '.join(CONVENTION_KEYS)}")
    p.add_argument("--all-conventions", action="store_true", help="print every convention combination, not just verdicts")
    add_json(p)
    p.add_argument("--plot", metavar="FILE.png", help="draw the reachable (CR, BitOpsCR) region of each claim")
    p.set_defaults(run=run_audit)


def _pins(items: list[str]) -> dict[str, object]:
    """KEY=VALUE strings as typed values; the library checks the keys and the values' rules."""
    pins: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in CONVENTION_KEYS:
            raise InputError(f"conventions must be KEY=VALUE with KEY one of {', '.join(CONVENTION_KEYS)}, "
                             f"got {item!r}")
        if key in ("first_last_bits", "input_bits"):
            pins[key] = same_or_bits(f"conventions: {key}", raw)
        elif key in ("bn", "reference"):
            pins[key] = raw
        else:
            try:
                pins[key] = int(raw)
            except ValueError:
                raise InputError(f"conventions: {key} must be an integer, got {raw!r}") from None
    return pins


def run_audit(args: argparse.Namespace) -> int:
    from bitops.audit_report import audit
    from bitops.jsonio import check_plot

    if bool(args.claims) == bool(args.example):
        raise InputError("give either a CLAIMS.toml file or --example paper (exactly one)")
    pins = _pins(args.conventions)
    if args.plot:
        check_plot("plot", args.plot)
    result = audit(args.claims, args.example, pins, progress=progress("claim", "auditing claims"))
    if args.plot:
        result.plot(args.plot)
    return emit(result, args.json, lambda: result.format(args.all_conventions))
