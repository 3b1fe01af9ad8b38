"""Campaigns: plan the many trainings a profile, a fit or a confirm needs, and run them once each,
sharing what they share, on an executor (:mod:`trainer.executors`). Torch-free: the trainings run
in the executor's workers.

**Plan** (:func:`plan`, :func:`plan_runs`): runs from sections a user combines: each method alone over its grid; both
orders of every pair of methods, the later one over its grid (what ``fit`` estimates the pairwise
terms from); three-method orders over the grids of their P and Q; given orders at the options'
values. Every section repeats over the seeds.

**Prefix tree** (:func:`prefix_tree`): a run is its base model followed by one stage after another,
and runs that agree on the base (teacher, data, base training, seed, device) and on their first k
stages (letters and the stage's configs) share those k stages. Each distinct prefix is a node,
trained once from its parent's checkpoint; the driver hands the checkpoint, RNG state included, to
the nodes that extend it, so a run continued from a shared prefix draws what it would have drawn
alone (:func:`trainer.chain.train_prefix`).

**Run** (:func:`run`, :func:`run_campaign`): a run whose complete record exists with the same configuration is
skipped; a record of other settings is refused before anything trains; a node that fails is tried
again up to ``retries`` times, then every run below it is reported failed (with a record holding its
finished stages and the reason, when the base finished). Records are written by the driver,
atomically, as runs complete, so an interruption keeps every finished run; with a local executor
the checkpoints of shared prefixes are kept in ``NAME.prefixes/`` beside the campaign until every run
is complete, so running the same command again continues from them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bitops.errors import InputError
from bitops.jsonio import hold_lock, read_json, write_atomic, write_json_atomic
from bitops.orders import METHODS
from bitops.result import Result
from trainer.campaign_format import Campaign, CampaignRun
from trainer.config import ChainConfig
from trainer.options import DEFAULT_GRIDS, TrainingOptions, chain_config
from trainer.record import RECORD_TYPE, RECORD_VERSION, config_differences, read_record, write_record

__all__ = ["CampaignResult", "Node", "PlanRequest", "PlanResult", "plan", "plan_runs", "prefix_tree", "run",
           "run_campaign", "stage_trainings"]

Log = Callable[[str], None]
PART = {"D": "distill", "P": "prune", "Q": "quant", "E": "exits"}  # each stage's config in a ChainConfig


# ---------------------------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class PlanRequest:
    """Which runs to plan; ``grids`` overrides :data:`trainer.options.DEFAULT_GRIDS` (D: the
    ``student`` option, E: the ``thresholds`` option by default), ``triple_grids`` overrides them
    for the three-method runs only."""

    options: TrainingOptions = TrainingOptions()
    seeds: tuple[int, ...] = (0,)
    single: str = ""
    pairs: str = ""
    triples: tuple[str, ...] = ()
    orders: tuple[str, ...] = ()
    grids: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    triple_grids: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, letters in (("single", self.single), ("pairs", self.pairs)):
            if any(m not in METHODS for m in letters) or len(set(letters)) != len(letters):
                raise InputError(f"{name} must be distinct letters from D, P, Q, E, got {letters!r}")
        if self.pairs and len(self.pairs) < 2:
            raise InputError(f"pairs needs at least two methods to pair, got {self.pairs!r}")
        for triple in self.triples:
            if len(triple) != 3 or any(m not in METHODS for m in triple) or len(set(triple)) != 3:
                raise InputError(f"triples must be orders of three distinct methods from D, P, Q, E, got {triple!r}")
        if not (self.single or self.pairs or self.triples or self.orders):
            raise InputError("nothing to plan: give `single`, `pairs`, `triples` or `orders`")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds must list distinct seeds, got {list(self.seeds)}")
        for name, grids in (("grids", self.grids), ("triple_grids", self.triple_grids)):
            for method, values in grids.items():
                if method not in METHODS or not values or len(set(values)) != len(values):
                    raise InputError(f"{name}: a grid is a method (D, P, Q or E) with distinct values, got "
                                     f"{method}={list(values)}")
                for value in values if method != "E" else [values]:
                    try:
                        chain_config(method, _with(self.options, method, value))
                    except InputError as err:
                        raise InputError(f"{name}: {method}={value} is refused ({err})") from None

    def grid(self, method: str, triple: bool = False) -> tuple[Any, ...]:
        if triple and method in self.triple_grids:
            return self.triple_grids[method]
        if method in self.grids:
            return self.grids[method]
        return {**DEFAULT_GRIDS, "D": (self.options.student,), "E": tuple(self.options.thresholds)}[method]


def _with(options: TrainingOptions, method: str, value: Any) -> TrainingOptions:
    """``options`` with ``method``'s grid value: D a student, P a ratio, Q weight bits, E thresholds."""
    if method == "D":
        return replace(options, student=value)
    if method == "P":
        return replace(options, prune_ratio=float(value))
    if method == "Q":
        return replace(options, w_bits=int(value))
    return replace(options, thresholds=tuple(float(v) for v in value))


def run_name(config: ChainConfig, default_student: str) -> str:
    """``ORDER-p0.5-q1-s0``: the order, the value of each method that varies in plans, the seed."""
    parts = [config.order]
    if "D" in config.order and config.distill.student != default_student:
        parts.append(f"d{config.distill.student}")
    if "P" in config.order:
        parts.append(f"p{config.prune.ratio:g}")
    if "Q" in config.order:
        parts.append(f"q{config.quant.w_bits}")
    parts.append(f"s{config.seed}")
    return "-".join(parts)


def _variants(order: str, request: PlanRequest, varied: str, triple: bool = False) -> list[TrainingOptions]:
    """The options of ``order``'s runs with the methods in ``varied`` over their grids (E: one run
    measures every threshold) and the rest at the options' values."""
    axes = []
    for method in order:
        if method not in varied:
            continue
        grid = request.grid(method, triple)
        axes.append([(method, grid)] if method == "E" else [(method, value) for value in grid])
    variants = []
    for combination in itertools.product(*axes):
        options = request.options
        for method, value in combination:
            options = _with(options, method, value)
        variants.append(options)
    return variants


def plan_runs(request: PlanRequest, command: str = "") -> Campaign:
    """The campaign of ``request``: runs in section order, a run planned twice kept once."""
    specs: list[tuple[str, TrainingOptions]] = []
    for method in request.single:
        specs += [(method, o) for o in _variants(method, request, method)]
    for first, later in itertools.permutations(request.pairs, 2):
        specs += [(first + later, o) for o in _variants(first + later, request, later)]
    for triple in request.triples:
        specs += [(triple, o) for o in _variants(triple, request, "PQ", triple=True)]
    for order in request.orders:
        specs.append((order, request.options))
    runs: dict[str, CampaignRun] = {}
    for seed in request.seeds:
        for order, options in specs:
            config = chain_config(order, replace(options, seed=seed))
            name = run_name(config, request.options.student)
            if name in runs and runs[name].config != config:
                raise InputError(f"two planned runs would both be named {name!r} with other settings; plan them in "
                                 "separate campaigns")
            runs.setdefault(name, CampaignRun(name, f"runs/{name}.json", config))
    return Campaign(tuple(runs.values()), command)


# --------------------------------------------------------------------------------------- prefix tree

@dataclass(frozen=True)
class Node:
    """A distinct prefix: the base model (``stages`` 0) or the first ``stages`` stages of ``config``'s
    order, trained once from ``parent``'s checkpoint; ``runs``: the runs that pass through it."""

    key: str
    stages: int
    config: ChainConfig  # the first run through it; all of them agree on what this prefix depends on
    parent: str | None
    runs: tuple[str, ...]

    @property
    def letters(self) -> str:
        return self.config.order[:self.stages] or "base"


def prefix_key(config: ChainConfig, stages: int) -> str:
    """What the first ``stages`` stages of a run depend on, hashed: the base (teacher, data, base
    training, seed, device) and each stage's letter and config (E's includes the thresholds every
    later stage is measured at)."""
    c = config.to_json()
    parts = {k: c[k] for k in ("teacher", "data", "base", "device", "seed")}
    parts["stages"] = [[letter, c[PART[letter]]] for letter in config.order[:stages]]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def prefix_tree(runs: Sequence[CampaignRun]) -> tuple[dict[str, Node], dict[str, list[str]]]:
    """The nodes the runs pass through (by key, parents first) and each run's path of node keys."""
    through: dict[str, list[str]] = {}
    first: dict[str, tuple[ChainConfig, int, str | None]] = {}
    paths: dict[str, list[str]] = {}
    for run in runs:
        path: list[str] = []
        for stages in range(len(run.config.order) + 1):
            key = prefix_key(run.config, stages)
            first.setdefault(key, (run.config, stages, path[-1] if path else None))
            through.setdefault(key, []).append(run.name)
            path.append(key)
        paths[run.name] = path
    nodes = {key: Node(key, stages, config, parent, tuple(through[key]))
             for key, (config, stages, parent) in first.items()}
    return nodes, paths


def stage_trainings(runs: Sequence[CampaignRun]) -> dict[str, int]:
    """Base and stage trainings with shared prefixes trained once, and without."""
    nodes, _ = prefix_tree(runs)
    return {"runs": len(runs), "base": sum(n.stages == 0 for n in nodes.values()),
            "stages": sum(n.stages > 0 for n in nodes.values()),
            "base_unshared": len(runs), "stages_unshared": sum(len(r.config.order) for r in runs)}


# ----------------------------------------------------------------------------------------------- run

@dataclass(frozen=True)
class CampaignResult(Result):
    """What a campaign run did; ``to_dict()`` is ``campaign run --json``."""

    def format(self) -> str:
        d = self.data
        lines = [f"{'run':<28} {'status':<9} {'from prefix':<12} {'accuracy':>9} {'BitOpsCR':>10}  record"]
        for run in d["runs"]:
            acc = "" if run.get("accuracy") is None else f"{run['accuracy']:.2f}"
            cr = "" if run.get("bitops_cr") is None else f"{run['bitops_cr']:.2f}"
            lines.append(f"{run['name']:<28} {run['status']:<9} {run.get('started_from') or '':<12} {acc:>9} "
                         f"{cr:>10}  {run['record']}")
            if run.get("error"):
                lines.append(f"    {run['error']}")
        t = d["trainings"]
        lines.append(f"{d['complete']} of {len(d['runs'])} runs complete ({d['skipped']} already were), "
                     f"{d['failed']} failed; {t['trained']} trainings this time ({t['from_cache']} prefixes taken "
                     f"from {d['prefix_dir'] or 'nowhere'}); shared prefixes: {t['base']} base + {t['stages']} stage "
                     f"trainings instead of {t['base_unshared']} + {t['stages_unshared']}; {d['wall_s']:.1f} s")
        return "\n".join(lines)


def _existing(run: CampaignRun, path: Path) -> dict[str, Any] | None:
    """The run's record when it exists; refused when unreadable or made with other settings."""
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except InputError as err:
        raise InputError(f"run {run.name!r}: {err}; remove it to train the run again") from None
    if record["config"] != run.config.to_json():
        differ = config_differences(record["config"], run.config.to_json())
        raise InputError(f"run {run.name!r}: {str(path)!r} holds a run with other settings "
                         f"({'; '.join(differ[:3])}); remove it or give the run another record path")
    return record


@dataclass
class _Progress:
    """Runs done / failed / running / left, and an ETA from the nodes' throughput so far."""

    log: Log
    total: int
    nodes: int
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    failed: int = 0
    nodes_done: int = 0

    def line(self, running: int, event: str) -> None:
        left = self.total - self.done - self.failed - running
        elapsed = time.perf_counter() - self.started
        eta = "?" if self.nodes_done == 0 else _duration(elapsed / self.nodes_done * (self.nodes - self.nodes_done))
        self.log(f"campaign: {self.done} done, {self.failed} failed, {running} running, {left} left "
                 f"(ETA {eta}) | {event}")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _reason(err: BaseException) -> str:
    """A training's failure in one line: an InputError's own words, else the exception's type and
    first line."""
    first = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, InputError):
        return first or type(err).__name__
    return f"{type(err).__name__}: {first}".rstrip(": ")


def _record(run: CampaignRun, head: dict[str, Any], entries: list[dict[str, Any]], started_from: str,
            campaign_file: str, status: str, error: str | None = None) -> dict[str, Any]:
    record = {**head, "_type": RECORD_TYPE, "_version": RECORD_VERSION, "status": status,
              "config": run.config.to_json(), "stages": [head["stages"][0], *entries],
              "campaign": {"file": campaign_file, "run": run.name, "started_from": started_from}}
    if error is not None:
        record["error"] = error
    return record


def run_campaign(campaign: Campaign, campaign_path: Path, executor: Any, *, retries: int = 1,
                 keep_prefixes: bool = True, checkpoints: bool = True, log: Log = lambda message: None
                 ) -> CampaignResult:
    """Run every run of ``campaign`` (records relative to ``campaign_path``'s folder) on ``executor``
    (:mod:`trainer.executors`); see the module's docstring for what is skipped, shared and retried.
    ``checkpoints``: write each finished run's model beside its record (RUN.pt), local executors only."""
    started = time.perf_counter()
    folder = campaign_path.parent
    with hold_lock("campaign", campaign_path):  # one driver per campaign
        existing = {run.name: _existing(run, folder / run.record) for run in campaign.runs}  # all checked first
        pending = [run for run in campaign.runs if (existing[run.name] or {}).get("status") != "complete"]
        nodes, paths = prefix_tree(pending)
        counts = stage_trainings(campaign.runs)
        prefix_dir = folder / f"{campaign_path.stem}.prefixes" if keep_prefixes and executor.local else None
        driver = _Driver(campaign, campaign_path, executor, nodes, paths, pending, retries, prefix_dir, checkpoints,
                         log)
        driver.go()
        if prefix_dir is not None and prefix_dir.exists() and all(s == "complete" for s in driver.status.values()):
            shutil.rmtree(prefix_dir, ignore_errors=True)  # kept for a campaign that continues; this one is done
    rows = []
    for run in campaign.runs:
        status = "skipped" if run not in pending else driver.status.get(run.name, "failed")
        row: dict[str, Any] = {"name": run.name, "record": str(folder / run.record), "status": status,
                               "started_from": driver.started_from.get(run.name)}
        record = existing[run.name] if status == "skipped" else driver.records.get(run.name)
        if record is not None and record["status"] == "complete":
            final = record["stages"][-1]
            row.update(accuracy=final["accuracy"], bitops_cr=final["cost"]["bitops_cr"])
            row["started_from"] = (record.get("campaign") or {}).get("started_from", row["started_from"])
        if run.name in driver.errors:
            row["error"] = driver.errors[run.name]
        rows.append(row)
    return CampaignResult({
        "campaign": str(campaign_path), "runs": rows,
        "complete": sum(r["status"] in ("complete", "skipped") for r in rows),
        "skipped": sum(r["status"] == "skipped" for r in rows), "failed": sum(r["status"] == "failed" for r in rows),
        "trainings": {"trained": driver.trained, "from_cache": driver.from_cache, **counts},
        "executor": executor.describe(), "prefix_dir": None if prefix_dir is None else str(prefix_dir),
        "wall_s": round(time.perf_counter() - started, 3)})


class _Driver:
    """The scheduling loop of :func:`run_campaign`: submit every node whose parent is done, deepest
    first (runs finish early, checkpoints are freed early), collect, write records, retry."""

    def __init__(self, campaign: Campaign, campaign_path: Path, executor: Any, nodes: dict[str, Node],
                 paths: dict[str, list[str]], pending: list[CampaignRun], retries: int, prefix_dir: Path | None,
                 checkpoints: bool, log: Log) -> None:
        self.campaign, self.campaign_path, self.executor = campaign, campaign_path, executor
        self.nodes, self.paths, self.pending, self.retries, self.prefix_dir = nodes, paths, pending, retries, prefix_dir
        self.children: dict[str, list[str]] = {key: [] for key in nodes}
        for node in nodes.values():
            if node.parent is not None:
                self.children[node.parent].append(node.key)
        self.leaf_of = {paths[run.name][-1]: [] for run in pending}  # node -> runs ending there
        for run in pending:
            self.leaf_of[paths[run.name][-1]].append(run)
        self.gained: dict[str, dict[str, Any]] = {}
        self.payload: dict[str, Any] = {}  # key -> checkpoint (bytes, or the executor's handle)
        self.attempts: dict[str, int] = {}
        self.failed_nodes: dict[str, str] = {}
        self.status: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.started_from: dict[str, str] = {}
        self.trained = self.from_cache = 0
        self.in_flight: dict[Any, str] = {}  # the executor's handle -> node key
        self.events: list[str] = []  # progress events not yet reported (see _report)
        self.checkpoints = checkpoints  # write RUN.pt beside a finished run's record
        self.progress = _Progress(log, len(pending), len(nodes))
        self.log = log

    # -- the prefix cache (local executors): NAME.prefixes/KEY.json + KEY.pt, written atomically
    def _cached(self, key: str) -> bool:
        if self.prefix_dir is None or not self.children[key]:
            return False
        info, checkpoint = self.prefix_dir / f"{key}.json", self.prefix_dir / f"{key}.pt"
        if not (info.exists() and checkpoint.exists()):
            return False
        try:
            gained = read_json(info, f"prefix {str(info)!r}")
            self.payload[key] = checkpoint.read_bytes()
        except (InputError, OSError):
            return False  # a damaged cache entry is trained again
        self.gained[key] = gained
        self.from_cache += 1
        return True

    def _keep(self, key: str, gained: dict[str, Any], payload: Any) -> None:
        if self.prefix_dir is None or not self.children[key] or not isinstance(payload, bytes):
            return
        try:
            self.prefix_dir.mkdir(exist_ok=True)
            write_atomic(self.prefix_dir / f"{key}.pt", lambda tmp: tmp.write_bytes(payload))
            write_json_atomic(gained, self.prefix_dir / f"{key}.json")
        except OSError as err:
            self.log(f"campaign: could not keep the prefix {self.nodes[key].letters} in {self.prefix_dir} "
                     f"({err.strerror}); an interrupted campaign retrains it")

    def _running_runs(self) -> int:
        """Runs with a stage in training."""
        busy = set(self.in_flight.values())
        return sum(1 for run in self.pending if run.name not in self.status
                   and any(key in busy for key in self.paths[run.name]))

    def go(self) -> None:
        in_flight = self.in_flight
        ready = [key for key, node in self.nodes.items() if node.parent is None]
        try:
            while ready or in_flight:
                ready.sort(key=lambda k: self.nodes[k].stages)
                while ready and len(in_flight) < self.executor.slots:
                    key = ready.pop()  # deepest first
                    if self._cached(key):
                        ready += self._done(key, cached=True)
                        continue
                    node = self.nodes[key]
                    parent = None if node.parent is None else self.payload[node.parent]
                    in_flight[self.executor.submit(node.config.to_json(), node.stages, parent)] = key
                self._report()  # what finished, counted once the free slots have their next work
                if not in_flight:
                    continue
                for handle in self.executor.wait(list(in_flight)):
                    key = in_flight.pop(handle)
                    try:
                        gained, payload = self.executor.result(handle)
                    except Exception as err:  # a training's failure, whatever it was: retried, then reported
                        ready += self._failed(key, _reason(err))
                        continue
                    self.gained[key], self.payload[key] = gained, payload
                    self.trained += 1
                    self._keep(key, gained, payload)
                    ready += self._done(key)
        except BaseException:
            self.executor.close(abort=True)
            raise
        self._report()
        self.executor.close(abort=False)

    def _report(self) -> None:
        for event in self.events:
            self.progress.line(self._running_runs(), event)
        self.events.clear()

    def _done(self, key: str, cached: bool = False) -> list[str]:
        self.progress.nodes_done += 1
        node = self.nodes[key]
        for run in self.leaf_of.get(key, []):
            self._finish(run, "complete")
        event = f"{node.letters} of {', '.join(node.runs[:2])}{' …' if len(node.runs) > 2 else ''}" + \
            (" (kept from an earlier run)" if cached else "")
        self.events.append(event)
        # the parent's checkpoint is not needed once every child has it
        if node.parent is not None and all(c in self.gained or c in self.failed_nodes
                                           for c in self.children[node.parent]):
            self.payload.pop(node.parent, None)
        if not self.children[key]:
            self.payload.pop(key, None)
        return list(self.children[key])

    def _failed(self, key: str, reason: str) -> list[str]:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        node = self.nodes[key]
        if self.attempts[key] <= self.retries:
            self.log(f"campaign: {node.letters} of {node.runs[0]} failed ({reason}); trying again "
                     f"({self.attempts[key]} of {self.retries} retries)")
            return [key]
        self.failed_nodes[key] = reason
        below = [run for run in self.pending if key in self.paths[run.name]]
        for run in below:
            self._finish(run, "failed", f"{node.letters} failed after {self.attempts[key]} tries: {reason}")
        self.events.append(f"{node.letters} failed: {reason}")
        return []

    def _finish(self, run: CampaignRun, status: str, error: str | None = None) -> None:
        path = self.paths[run.name]
        done = [key for key in path if key in self.gained]
        shared = [key for key in path[:-1] if len(self.nodes[key].runs) > 1]
        started_from = self.nodes[shared[-1]].letters if shared else ""
        self.status[run.name] = status
        self.started_from[run.name] = started_from
        if error is not None:
            self.errors[run.name] = error
            self.progress.failed += 1
        else:
            self.progress.done += 1
        if not done:  # the base never finished: the reason is in the result, there is no record to write
            return
        head = self.gained[path[0]]
        entries = [self.gained[key] for key in done[1:]]
        record = _record(run, head, entries, started_from, self.campaign_path.name, status, error)
        target = self.campaign_path.parent / run.record
        target.parent.mkdir(parents=True, exist_ok=True)
        write_record(record, target)
        self.records[run.name] = record
        if status == "complete" and self.checkpoints and isinstance(self.payload.get(path[-1]), bytes):
            payload = self.payload[path[-1]]
            write_atomic(target.with_suffix(".pt"), lambda tmp: tmp.write_bytes(payload))


# ------------------------------------------------------------------------------------ entry points

@dataclass(frozen=True)
class PlanResult(Result):
    """A planned campaign; ``to_dict()`` is the campaign file plus what sharing saves (``campaign
    plan --json``)."""

    path: Path

    def format(self) -> str:
        t = self.data["trainings"]
        orders: dict[str, int] = {}
        for run in self.data["runs"]:
            orders[run["config"]["order"]] = orders.get(run["config"]["order"], 0) + 1
        spread = ", ".join(f"{order} x{n}" for order, n in orders.items())
        return (f"{self.path}: {t['runs']} runs ({spread})\n"
                f"shared prefixes: {t['base']} base + {t['stages']} stage trainings instead of "
                f"{t['base_unshared']} + {t['stages_unshared']}\n"
                f"run it with: chaincomp campaign run {self.path} [--jobs N | --ray [ADDRESS]]")


def _grids(name: str, grids: dict[str, Any] | None) -> dict[str, tuple[Any, ...]]:
    """Grids given as ``{method: "a,b" or values}``, parsed and checked by the profile's rules."""
    from trainer.options import parse_grid

    parsed = {}
    for method, values in (grids or {}).items():
        if method not in METHODS:
            raise InputError(f"{name}: grids are keyed by D, P, Q or E, got {method!r}")
        parsed[method] = parse_grid(method, values) if isinstance(values, str) else tuple(values)
    return parsed


def plan(out: str | Path, *, single: str = "", pairs: str = "", triples: Sequence[str] = (),
         orders: Sequence[str] | str = (), seeds: Sequence[int] = (0,), grids: dict[str, Any] | None = None,
         triple_grids: dict[str, Any] | None = None, command: str = "", **training: Any) -> PlanResult:
    """Write the campaign of the runs asked for to ``out`` (see :class:`PlanRequest`); ``orders``
    ``"all"`` is every order of the four methods. ``training``: :class:`TrainingOptions` fields."""
    from bitops.jsonio import check_writable
    from bitops.orders import validate_order

    target = check_writable("out", out)
    if target.exists():
        raise InputError(f"out {str(out)!r} already exists; choose another file or remove it")
    if isinstance(orders, str):
        orders = ["".join(p) for p in itertools.permutations(METHODS)] if orders == "all" else \
            [o.strip() for o in orders.split(",") if o.strip()]
    for order in orders:
        try:
            validate_order(order)
        except InputError as err:
            raise InputError(f"orders: {err}") from None
    request = PlanRequest(TrainingOptions(**training), tuple(seeds), single, pairs, tuple(triples), tuple(orders),
                          _grids("grids", grids), _grids("triple_grids", triple_grids))
    campaign = plan_runs(request, command)
    from trainer.config import DATASET_CLASSES

    for run in campaign.runs:  # every model check before the file exists: a plan never fails a run later
        try:
            run.config.check_before_training(DATASET_CLASSES[run.config.data.dataset])
        except InputError as err:
            raise InputError(f"{err} (in the planned run {run.name})") from None
    from trainer.campaign_format import write_campaign

    with hold_lock("out", target):
        if target.exists():
            raise InputError(f"out {str(out)!r} already exists; choose another file or remove it")
        write_campaign(campaign, target)
    return PlanResult({**campaign.to_json(), "trainings": stage_trainings(campaign.runs)}, target)


def run(campaign: str | Path, *, log: Log = lambda message: None, **execution: Any) -> CampaignResult:
    """Run the campaign file ``campaign``. ``execution``: :class:`trainer.executors.Execution`'s fields
    (``jobs`` local processes, or ``ray`` with ``address`` -- a running cluster, ``"auto"`` the one this
    machine belongs to, None a local Ray instance -- and ``cpus_per_run`` / ``gpus_per_run``;
    ``threads_per_run``; ``retries``)."""
    from trainer.campaign_format import read_campaign
    from trainer.executors import Execution

    options = Execution.take(execution)
    if execution:
        raise InputError(f"{sorted(execution)[0]} is not an option of campaign run")
    path = Path(campaign)
    parsed = read_campaign(path)
    return run_campaign(parsed, path, options.executor(), retries=options.retries, log=log)
