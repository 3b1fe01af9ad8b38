"""The trainer's entry points: :func:`train` (one order, one run record) and :func:`profile` (each
method alone over a grid, a stage profile), what ``chaincomp train`` / ``chaincomp profile`` and the
Python API call. Importing this module does not import torch; running either function does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitops.errors import InputError
from bitops.result import Result
from bitops.jsonio import check_writable, hold_lock
from bitops.orders import METHODS
from trainer.config import DATASET_CLASSES
from trainer.options import TrainingOptions, chain_config
from trainer.report import format_profile, format_record

__all__ = ["ProfileResult", "TrainResult", "profile", "train"]

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default log: library calls stay silent unless given a log."""


@dataclass(frozen=True)
class TrainResult(Result):
    """A finished run; ``to_dict()`` is the run record (``train --json``), ``path`` where it is."""

    path: Path

    def format(self) -> str:
        return format_record(self.data)


def train(order: str, out: str | Path, *, resume: bool = False, allow_repeat: bool = False, log: Log = _quiet,
          **training: Any) -> TrainResult:
    """Train the teacher, apply ``order``'s stages and write the run record to ``out`` (a checkpoint
    ``out`` with suffix .pt beside it). ``training``: :class:`trainer.options.TrainingOptions` fields."""
    target = check_writable("out", out)
    if target.suffix == ".pt":
        raise InputError(f"out {str(out)!r}: the record must not end in .pt, the checkpoint beside it does")
    config = chain_config(order, TrainingOptions(**training), allow_repeat)  # every option, before torch loads
    config.check_before_training(DATASET_CLASSES[config.data.dataset])  # and every model check
    with hold_lock("out", target):  # one writer per record: a second run of the same out is refused
        if target.exists() and not resume:
            raise InputError(f"out {str(out)!r} already exists; add `resume` to continue it, or choose another file")
        if resume and not target.exists():
            raise InputError(f"resume: there is no run record at {str(out)!r} to continue")
        from trainer.chain import run_chain  # torch from here on

        return TrainResult(run_chain(config, target, resume=resume, log=log), target)


@dataclass(frozen=True)
class ProfileResult(Result):
    """A measured stage profile; ``to_dict()`` is the profile file (``profile --json``)."""

    path: Path

    def format(self) -> str:
        return format_profile(self.data)


def profile(method: str, out: str | Path, *, grid: str | Sequence[Any] | None = None, seeds: Sequence[int] = (0,),
            runs_dir: str | Path | None = None, command: str = "", log: Log = _quiet, **options: Any) -> ProfileResult:
    """Measure each method of ``method`` (e.g. ``'DPQE'``) on its own over its grid (default grids,
    or ``grid`` for a single method), averaged over ``seeds``, and write the profile to ``out``.

    The runs are a campaign whose records go to ``runs_dir`` (default: ``OUT-STEM.runs`` beside
    ``out``); complete records of the same runs there are reused. ``options``:
    :class:`trainer.options.TrainingOptions` fields and :class:`trainer.executors.Execution`'s
    (``jobs``, ``ray``, ``address``, ``cpus_per_run``, ``gpus_per_run``, ``threads_per_run``, ``retries``).
    """
    from trainer.executors import Execution

    target = check_writable("out", out)
    if target.exists():
        raise InputError(f"out {str(out)!r} already exists; choose another file or remove it")
    if not method or any(m not in METHODS for m in method) or len(set(method)) != len(method):
        raise InputError(f"method must be distinct letters from D, P, Q, E, got {method!r}")
    if grid is not None and len(method) != 1:
        raise InputError(f"grid applies to a single `method`; got {method!r} (profile one at a time, "
                         "or drop `grid` for the default grids)")
    execution = Execution.take(options)
    training = TrainingOptions(**options)
    chain = chain_config(method, training)
    from trainer.profile import DEFAULT_GRIDS, ProfileRequest, parse_grid, run_profile

    defaults = {**DEFAULT_GRIDS, "D": (training.student,), "E": tuple(training.thresholds)}
    grids = {m: (parse_grid(m, grid) if isinstance(grid, str) else tuple(grid)) if grid is not None else defaults[m]
             for m in method}
    request = ProfileRequest(chain=chain, grids=grids, seeds=tuple(seeds), command=command)
    request.check_before_training(DATASET_CLASSES[chain.data.dataset])  # every grid point, before any training
    folder = Path(runs_dir) if runs_dir is not None else target.parent / f"{target.stem}.runs"
    if runs_dir is not None and not folder.is_dir():
        raise InputError(f"runs_dir {str(runs_dir)!r} is not a folder")
    with hold_lock("out", target):
        if target.exists():
            raise InputError(f"out {str(out)!r} already exists; choose another file or remove it")
        return ProfileResult(run_profile(request, training, target, folder, execution.executor(),
                                         retries=execution.retries, log=log), target)
