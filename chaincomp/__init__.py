"""chaincomp: tooling for combinational CNN compression (distillation, pruning, quantization and
early exit chained), as a command line (``chaincomp``, :mod:`chaincomp.cli`) and this Python API.

Each function takes the options of the command of the same name, with the same defaults, and
returns a result whose ``to_dict()`` is what the command prints with ``--json`` (``format()`` is
its text)::

    chaincomp.count(model, **options)           # bitops.count.CountRequest fields + bitops.Policy fields
    chaincomp.audit(claims=None, example=None, conventions=None)
    chaincomp.simulate(profile=None, grid=None, budgets=(0.2, 0.6, 1, 2), orders="all", allow_repeat=False,
                       confidence=0.5)
    chaincomp.orders(profile=None, grid=None, budgets=(0.2, 0.6, 1, 2))
    chaincomp.fit(runs, out, profile=None, allow_incomplete=False, refine_deltas=False, triples=(), ridge=0.0,
                  select=False, calibrate=False)
    chaincomp.train(order, out, resume=False, allow_repeat=False, **training)   # trainer.options.TrainingOptions
    chaincomp.sweep(run, thresholds=None, stage=None)   # early exit at any threshold, from a run record
    chaincomp.profile(method, out, grid=None, seeds=(0,), **training)
    chaincomp.confirm(out_dir, profile=None, grid=None, orders="all", top=None, budget=1, **training)
    chaincomp.benchmark(out_dir, profile=None, grid=None, orders="all", budgets=(1, 2, 4), seeds=(2, 3),
                        confidence=0.5, bootstrap=2000, challenger=None,
                        pick_confidence=None, **training)
    chaincomp.campaign.plan(out, single="", pairs="", triples=(), orders=(), seeds=(0,), grids=None, **training)
    chaincomp.campaign.run(campaign, jobs=1, ray=False, address=None, cpus_per_run=1, gpus_per_run=0, retries=1)

``import chaincomp`` imports neither torch nor numba: each function loads what it uses when it is
first looked up (only train, profile, confirm and benchmark import torch, when they train).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# API name -> (module, function): the library entry point itself, so options and defaults have one source.
_API = {
    "audit": ("bitops.audit_report", "audit"),
    "campaign": ("trainer.campaign", None),  # a namespace: campaign.plan(out, ...), campaign.run(file, ...)
    "confirm": ("simulator.confirm_report", "confirm"),
    "benchmark": ("simulator.benchmark", "benchmark"),
    "count": ("chaincomp.api", "count"),
    "fit": ("simulator.fit_report", "fit"),
    "orders": ("simulator.simulate", "analyse_orders"),
    "profile": ("trainer.run", "profile"),
    "simulate": ("simulator.simulate", "simulate"),
    "sweep": ("trainer.exit_sweep", "sweep_run"),
    "train": ("trainer.run", "train"),
}

__all__ = ["__version__", "audit", "benchmark", "campaign", "confirm", "count", "fit", "orders", "profile", "simulate",
           "sweep", "train"]


def _version() -> str:
    """The installed distribution's version (looked up on first use: importlib.metadata costs ~50 ms)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chaincomp")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    if name not in _API:
        raise AttributeError(f"module 'chaincomp' has no attribute {name!r}")
    module, function = _API[name]
    value = import_module(module) if function is None else getattr(import_module(module), function)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
