"""Stage profiles: what each method does on its own to the base model, measured over a small grid.

:func:`run_profile` trains each method alone at each grid value, for each seed, as a campaign
(:mod:`trainer.campaign`: the base model of a seed is trained once and every grid point starts from
it, RNG state included; the runs' records are kept, so an interrupted profile continues and a
campaign's records of the same runs are reused), averages over the seeds and writes a stage profile
(``trainer/profile_format.py`` owns the format and documents it; ``chaincomp simulate --profile``
reads it).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bitops.errors import InputError
from bitops.orders import PARAMETERS
from trainer.campaign import PlanRequest, plan_runs, run_campaign
from trainer.campaign_format import Campaign, write_campaign
from trainer.config import ChainConfig
from trainer.options import DEFAULT_GRIDS, TrainingOptions, parse_grid
from trainer.profile_format import PROFILE_TYPE, PROFILE_VERSION, write_profile
from trainer.record import read_record

__all__ = ["DEFAULT_GRIDS", "ProfileRequest", "parse_grid", "profile_runs", "run_profile"]

@dataclass(frozen=True)
class ProfileRequest:
    """Which methods over which grids, on the base model that ``chain`` (order ignored) describes."""

    chain: ChainConfig
    grids: dict[str, tuple[Any, ...]]
    seeds: tuple[int, ...] = (0,)
    command: str = ""

    def __post_init__(self) -> None:
        if not self.grids:
            raise InputError("method must name at least one of D, P, Q, E")
        for method, grid in self.grids.items():
            if method not in PARAMETERS:
                raise InputError(f"method must be D, P, Q or E, got {method!r}")
            for value in grid:  # build each stage config once here, so a bad value fails before training
                _stage_config(self.chain, method, value)
        if not self.seeds:
            raise InputError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise InputError(f"seeds must not repeat a seed (a repeat adds no spread), got {list(self.seeds)}")
        for seed in self.seeds:  # every seed is checked before the first one trains
            try:
                replace(self.chain.data, seed=seed)
            except InputError as err:
                raise InputError(f"seeds: {err}") from None
        for method, grid in self.grids.items():
            if len(set(grid)) != len(grid):
                raise InputError(f"grid for {method} must not repeat a value, got {list(grid)}")

    def check_before_training(self, num_classes: int) -> None:
        """The chain's model checks for every grid point (exit points, pruning that empties a group)."""
        for method, grid in self.grids.items():
            for value in grid if method == "P" else grid[:1]:
                chain = replace(self.chain, order=method, allow_repeat=False)
                if method == "P":
                    chain = replace(chain, prune=_stage_config(chain, "P", value))
                chain.check_before_training(num_classes)


def _stage_config(chain: ChainConfig, method: str, value: Any) -> Any:
    """The stage's config at one grid value; a bad value is reported under ``grid``."""
    try:
        return _stage_config_unchecked(chain, method, value)
    except InputError as err:
        raise InputError(f"grid for {method}: {err}") from None


def _stage_config_unchecked(chain: ChainConfig, method: str, value: Any) -> Any:
    if method == "D":
        return replace(chain.distill, student=value)
    if method == "P":
        return replace(chain.prune, ratio=value)
    if method == "Q":
        return replace(chain.quant, w_bits=value)
    return replace(chain.exits, thresholds=(value,), threshold=value)


def profile_runs(request: ProfileRequest, options: TrainingOptions) -> Campaign:
    """The single-method runs that measure ``request``: each method of its grids at each value (E: one
    run measuring every threshold), each seed; named and recorded as ``campaign plan --single`` plans
    them, so a campaign's records of the same runs are the profile's too."""
    return plan_runs(PlanRequest(options, request.seeds, single="".join(request.grids), grids=dict(request.grids)),
                     request.command)


def _value(method: str, config: dict[str, Any]) -> Any:
    return {"D": config["distill"]["student"], "P": config["prune"]["ratio"], "Q": config["quant"]["w_bits"],
            "E": None}[method]


def _measured(request: ProfileRequest, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per seed, the base accuracy and every grid point's accuracy (and exit rates), from the records."""
    by_point = {(r["config"]["seed"], r["config"]["order"], _value(r["config"]["order"], r["config"])): r
                for r in records}
    runs = []
    for seed in request.seeds:
        seed_records = [r for r in records if r["config"]["seed"] == seed]
        bases = {r["stages"][0]["accuracy"] for r in seed_records}
        assert len(bases) == 1, f"seed {seed}: the runs did not share one base model ({sorted(bases)})"
        result: dict[str, Any] = {"base": bases.pop(), "points": {}, "data": seed_records[0]["data"],
                                  "environment": seed_records[0]["environment"]}
        for method, grid in request.grids.items():
            if method == "E":
                rows = {row["threshold"]: row for row in by_point[(seed, "E", None)]["stages"][-1]["exit"]["thresholds"]}
                result["points"]["E"] = [(rows[value]["accuracy"], rows[value]["rates"]) for value in grid]
                result["exits"] = [k for k in rows[grid[0]]["rates"] if k != "final"]
                continue
            result["points"][method] = [(by_point[(seed, method, value)]["stages"][-1]["accuracy"], None)
                                        for value in grid]
        runs.append(result)
    return runs


def run_profile(request: ProfileRequest, options: TrainingOptions, out: Path, runs_dir: Path, executor: Any, *,
                retries: int = 1, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Train the single-method runs of ``request`` as a campaign in ``runs_dir`` (its complete records
    of the same runs are reused; an interrupted profile continues), average them over the seeds,
    write the profile to ``out``."""
    started = time.perf_counter()
    campaign = profile_runs(request, options)
    runs_dir.mkdir(exist_ok=True)
    campaign_path = runs_dir / f"{out.stem}.campaign.json"
    write_campaign(campaign, campaign_path)
    result = run_campaign(campaign, campaign_path, executor, retries=retries, checkpoints=False, log=log)
    if result.data["failed"]:
        failed = [row for row in result.data["runs"] if row["status"] == "failed"]
        raise InputError(f"{len(failed)} of the profile's {len(campaign.runs)} runs failed ({failed[0]['name']}: "
                         f"{failed[0]['error']}); the finished runs are kept in {str(runs_dir)!r}: run the same "
                         "command again to continue")
    records = [read_record(runs_dir / run.record) for run in campaign.runs]
    runs = _measured(request, records)
    data = runs[0]["data"]
    chain = request.chain
    base_accs = [r["base"] for r in runs]
    methods: dict[str, Any] = {}
    for method, grid in request.grids.items():
        points = []
        for i, value in enumerate(grid):
            accs = [r["points"][method][i][0] for r in runs]
            point = {"value": value, "accuracy": statistics.fmean(accs), "accuracy_std": _std(accs),
                     "delta": statistics.fmean(a - b for a, b in zip(accs, base_accs))}
            if method == "E":
                rates = [r["points"]["E"][i][1] for r in runs]
                point["exit_rates"] = {k: statistics.fmean(rate[k] for rate in rates) for k in rates[0]}
            points.append(point)
        methods[method] = {"parameter": PARAMETERS[method], "points": points}
        if method == "Q":
            methods[method].update(a_bits=chain.quant.a_bits, first_last_bits=chain.quant.first_last_bits)
        if method == "E":
            methods[method]["exits"] = runs[0]["exits"]
    profile = {
        "_type": PROFILE_TYPE, "_version": PROFILE_VERSION,
        "provenance": {"source": "measured", "command": request.command, "seeds": list(request.seeds),
                       "versions": runs[0]["environment"], "runs": str(runs_dir),
                       "wall_s": round(time.perf_counter() - started, 1)},
        "setup": {"teacher": chain.teacher,
                  "student": request.grids["D"][0] if "D" in request.grids else chain.distill.student,
                  "dataset": data["name"],
                  "input_shape": list(data["input_shape"]), "num_classes": data["num_classes"],
                  "exit_head": chain.exits.head,
                  "base_training": {"epochs": chain.base.epochs, "lr": chain.base.lr}},
        "base": {"model": chain.teacher, "accuracy": statistics.fmean(base_accs), "accuracy_std": _std(base_accs)},
        "methods": methods,
        "interactions": [],
    }
    write_profile(profile, out)
    return profile


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None

