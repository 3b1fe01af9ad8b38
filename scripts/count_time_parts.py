"""Where ``chaincomp count torchvision:resnet50``'s time goes: variants of the count against fvcore
alone, interleaved round by round in one process so that a machine's drift falls on all alike.

Run: ``.venv/bin/python scripts/count_time_parts.py [--rounds 21]``. Each variant switches one part
of ``bitops.trace`` off for its rounds (monkeypatched, restored after each round):

* ``fvcore``: ``FlopCountAnalysis(model, x).total()`` on a ResNet-50 built beforehand (the base);
* ``nothing pruned``: the count as a plain ``chaincomp count`` runs it, without torch-pruning's
  channel-group analysis (the trace and our handles);
* ``empty child``: a forked child that finds nothing (the process boundary alone);
* ``neither change``: the child without the shape-only batch-norm kernel, the parent on all torch
  threads while it works (the analysis before both changes);
* ``threads only`` / ``kernel only``: one of the two changes;
* ``with groups``: the count with the analysis as shipped (what a count that prunes, or
  ``--groups``, runs).

It prints each variant's median and its ratio to fvcore's; the bench of record is
``benches/bench_count_models.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterator

import torch
import torchvision

from bitops import trace
from bitops.models import ModelSpec, load_model_table


@contextlib.contextmanager
def _patched(**replacements: object) -> Iterator[None]:
    """``bitops.trace``'s attributes (``name`` or ``Class.name``) replaced while it holds."""
    saved = []
    for path, value in replacements.items():
        owner, name = (getattr(trace, path.split(".")[0]), path.split(".")[1]) if "." in path else (trace, path)
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def _count(groups: bool = True, **replacements: object) -> Callable[[], None]:
    def run() -> None:
        with _patched(**replacements):
            load_model_table(ModelSpec("torchvision:resnet50", groups=groups))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    model, x = torchvision.models.resnet50().eval(), torch.zeros(1, 3, 224, 224)

    def fvcore() -> None:
        from fvcore.nn import FlopCountAnalysis

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.total()

    all_threads = {"_Pending.sharing_cores": lambda _self: contextlib.nullcontext()}
    torch_kernel = {"_shape_only_batch_norm": lambda: None}
    variants = {
        "fvcore": fvcore,
        "nothing pruned": _count(groups=False),
        "empty child": _count(_child_members=lambda *_: iter(())),
        "neither change": _count(**all_threads, **torch_kernel),
        "threads only": _count(**torch_kernel),
        "kernel only": _count(**all_threads),
        "with groups": _count(),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run()  # warm-up
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["fvcore"])
    print(f"torch threads {torch.get_num_threads()}, {args.rounds} rounds, medians")
    for name, values in times.items():
        print(f"{name:16s} {statistics.median(values):.3f} s  {statistics.median(values) / base:.2f}x")


if __name__ == "__main__":
    main()
