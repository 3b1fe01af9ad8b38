"""Where a campaign's trainings run: in this process (``jobs`` 1), on a local process pool
(``jobs`` N), or as Ray tasks (one machine or a cluster). Torch-free to import; a training imports
torch in whichever process runs it.

Every executor runs :func:`train_node` (one node of a campaign's prefix tree) and offers the same
small interface to :class:`trainer.campaign._Driver`: ``slots`` (how many nodes to keep in flight),
``submit(config, stages, parent) -> handle``, ``wait(handles) -> finished handles``,
``result(handle) -> (what the record gains, checkpoint)`` (raising what the training raised),
``close(abort)``, ``local`` (whether checkpoints come back to this machine) and ``describe()``.

Torch's thread count is fixed per training (``threads``): results agree to the last bit between
executors only when it is the same, since a reduction split over more threads adds in another order.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from bitops.errors import InputError

__all__ = ["Execution", "LocalExecutor", "RayExecutor", "SerialExecutor", "train_node"]


def train_node(config: dict[str, Any], stages: int, parent: bytes | None, threads: int) -> tuple[dict[str, Any], bytes]:
    """One node of a campaign's prefix tree, trained with ``threads`` torch threads
    (:func:`trainer.chain.train_prefix`); the thread count of the process is restored after it."""
    import torch

    from trainer.chain import train_prefix
    from trainer.config import ChainConfig

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return train_prefix(ChainConfig.from_json(config), stages, parent)
    finally:
        torch.set_num_threads(previous)


def default_threads(jobs: int) -> int:
    """Cores shared evenly between ``jobs`` trainings, at least one each."""
    return max(1, (os.cpu_count() or 1) // jobs)


class SerialExecutor:
    """One training at a time, in this process."""

    local = True
    slots = 1

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._queued: dict[int, tuple[Any, ...]] = {}
        self._results: dict[int, tuple[Any, BaseException | None]] = {}
        self._next = 0

    def submit(self, config: dict[str, Any], stages: int, parent: Any) -> int:
        self._next += 1
        self._queued[self._next] = (config, stages, parent)
        return self._next

    def wait(self, handles: Sequence[int]) -> list[int]:
        handle = handles[0]
        try:
            self._results[handle] = (train_node(*self._queued.pop(handle), self.threads), None)
        except Exception as err:  # reported through result(), as the other executors do
            self._results[handle] = (None, err)
        return [handle]

    def result(self, handle: int) -> tuple[dict[str, Any], bytes]:
        value, error = self._results.pop(handle)
        if error is not None:
            raise error
        return value

    def close(self, abort: bool) -> None:
        self._queued.clear()

    def describe(self) -> dict[str, Any]:
        return {"kind": "serial", "jobs": 1, "threads_per_run": self.threads}


def _ignore_interrupts() -> None:
    """Ctrl-C reaches the whole process group: the driver handles it and stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# What the local pool's fork server imports before forking workers (what every training imports).
_PRELOADED = ["trainer.chain", "torch_pruning", "fvcore.nn.jit_analysis"]


class LocalExecutor:
    """``jobs`` worker processes on this machine, forked from a fresh server process that has
    imported torch and the trainer once and run nothing (so no torch threads or state are forked):
    each worker starts without importing them again, about a second sooner than a spawned one on
    2 cores."""

    local = True

    def __init__(self, jobs: int, threads: int) -> None:
        self.slots, self.threads = jobs, threads
        self._pool: Any = None

    def _ensure_pool(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOADED)
            self._pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=context,
                                             initializer=_ignore_interrupts)
        return self._pool

    def submit(self, config: dict[str, Any], stages: int, parent: Any) -> Any:
        return self._ensure_pool().submit(train_node, config, stages, parent, self.threads)

    def wait(self, handles: Sequence[Any]) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Any) -> tuple[dict[str, Any], bytes]:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return handle.result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the pool cannot be used again; a new one
            # takes the retries, and the death is this training's failure.
            self.close(abort=True)
            raise RuntimeError("the worker process running it died (killed, or out of memory)") from None

    def close(self, abort: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if abort:
            for process in list(getattr(pool, "_processes", {}).values()):  # no public way to stop them
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "jobs": self.slots, "threads_per_run": self.threads}


class RayExecutor:
    """Each training a Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs. What the record
    gains comes back through Ray's object store; checkpoints stay there (on the workers), handed to
    the tasks that extend them, so workers need no shared filesystem."""

    local = False

    def __init__(self, address: str | None, cpus_per_run: float, gpus_per_run: float, threads: int,
                 num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("ray: Ray is not installed; install it with `pip install 'chaincomp[ray]'` "
                             "(every worker of a cluster needs chaincomp and Ray too)") from None
        self._ray = ray
        self.address, self.threads = address, threads
        self._payloads: dict[Any, Any] = {}  # a task's first return -> its checkpoint's ref
        self._started = not ray.is_initialized()
        if self._started:
            try:
                if address is None:  # a local Ray instance for this campaign
                    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise InputError(f"ray: cannot join the Ray cluster at {address!r} ({first}); start one with "
                                 "`ray start --head`, or leave the address out for a local instance") from None
        resources = ray.cluster_resources()
        if cpus_per_run > resources.get("CPU", 0) or gpus_per_run > resources.get("GPU", 0):
            self.close(abort=True)
            raise InputError(f"cpus_per_run {cpus_per_run:g} / gpus_per_run {gpus_per_run:g}: the Ray cluster has "
                             f"{resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs, so no run "
                             "could ever start")
        fits = [resources.get("CPU", 0) / cpus_per_run if cpus_per_run else float("inf"),
                resources.get("GPU", 0) / gpus_per_run if gpus_per_run else float("inf")]
        self.slots = max(1, int(min(fits)))
        self._task = ray.remote(train_node).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, num_returns=2,
                                                    max_retries=0)
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run

    def submit(self, config: dict[str, Any], stages: int, parent: Any) -> Any:
        gained, payload = self._task.remote(config, stages, parent, self.threads)
        self._payloads[gained] = payload
        return gained

    def wait(self, handles: Sequence[Any]) -> list[Any]:
        ready, _ = self._ray.wait(list(handles), num_returns=1)
        return ready

    def result(self, handle: Any) -> tuple[dict[str, Any], Any]:
        payload = self._payloads.pop(handle)
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(handle), payload
        except exceptions.RayTaskError as err:  # what the training raised, as it raised it
            cause = getattr(err, "cause", None)
            raise (cause if isinstance(cause, Exception) else RuntimeError(str(err).splitlines()[0])) from None
        except exceptions.RayError as err:  # the worker or its node died
            raise RuntimeError(f"the Ray worker running it was lost ({type(err).__name__})") from None

    def close(self, abort: bool) -> None:
        if abort:
            for handle in list(self._payloads):
                self._ray.cancel(handle, force=True)
        self._payloads.clear()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()

    def describe(self) -> dict[str, Any]:
        return {"kind": "ray", "address": self.address or "local", "cpus_per_run": self.cpus_per_run,
                "gpus_per_run": self.gpus_per_run, "threads_per_run": self.threads, "slots": self.slots}


@dataclass(frozen=True)
class Execution:
    """Where and how a campaign's trainings run: the options ``campaign run``, ``profile`` and
    ``confirm`` share. ``threads_per_run`` defaults to the cores per job (local) or
    ``cpus_per_run`` (Ray); a failed training is tried ``retries`` more times."""

    jobs: int = 1
    ray: bool = False
    address: str | None = None  # with ray: a cluster's address, "auto", or None for a local instance
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    threads_per_run: int | None = None
    retries: int = 1

    def __post_init__(self) -> None:
        from bitops.rules import check_integer

        check_integer("jobs", self.jobs, 1)
        check_integer("retries", self.retries, 0)
        if self.threads_per_run is not None:
            check_integer("threads_per_run", self.threads_per_run, 1)
        if self.address is not None and not self.ray:
            raise InputError(f"address {self.address!r} is for Ray; add `ray` (--ray ADDRESS on the command line)")
        if self.ray and self.jobs != 1:
            raise InputError(f"jobs {self.jobs} is for the local pool; with `ray` the cluster's resources set how "
                             "many runs train at once (`cpus_per_run`, `gpus_per_run`)")
        for name in ("cpus_per_run", "gpus_per_run"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.ray and self.cpus_per_run == 0 and self.gpus_per_run == 0:
            raise InputError("cpus_per_run: a run needs a CPU or a GPU; got 0 of both")

    @classmethod
    def take(cls, options: dict[str, Any]) -> Execution:
        """The Execution fields popped from ``options`` (an API call's keyword arguments)."""
        return cls(**{f.name: options.pop(f.name) for f in fields(cls) if f.name in options})

    def executor(self, ray_cpus: int | None = None) -> Any:
        """A new executor (a Ray one joins or starts Ray now); ``ray_cpus`` sizes a local Ray instance."""
        if self.ray:
            threads = self.threads_per_run or max(1, int(self.cpus_per_run))
            return RayExecutor(self.address, self.cpus_per_run, self.gpus_per_run, threads, ray_cpus)
        if self.jobs == 1:
            return SerialExecutor(self.threads_per_run or default_threads(1))
        return LocalExecutor(self.jobs, self.threads_per_run or default_threads(self.jobs))

