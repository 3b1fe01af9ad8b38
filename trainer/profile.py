"""Stage profiles: what each method does on its own to the base model, measured over a small grid.

:func:`run_profile` trains the base model once per seed, applies each method alone at each grid
value, averages over the seeds and writes a stage profile (``trainer/profile_format.py`` owns the
format and documents it; ``chaincomp simulate --profile`` reads it).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bitops import zoo
from bitops.errors import InputError
from bitops.orders import PARAMETERS
from trainer.chain import environment, seed_everything
from trainer.config import ChainConfig
from trainer.data import load_data
from trainer.options import DEFAULT_GRIDS, parse_grid
from trainer.loop import evaluate_accuracy, resolve_device
from trainer.profile_format import PROFILE_TYPE, PROFILE_VERSION, write_profile
from trainer.stages import add_exits, distill, exit_report, prune, quantize, train_base

__all__ = ["DEFAULT_GRIDS", "ProfileRequest", "parse_grid", "run_profile"]

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


def _measure_seed(request: ProfileRequest, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Base accuracy and every grid point's accuracy (and exit rates) for one seed."""
    chain = replace(request.chain, seed=seed, data=replace(request.chain.data, seed=seed))
    seed_everything(seed)
    device = resolve_device(chain.device)
    data = load_data(chain.data)
    request.check_before_training(data.num_classes)
    base = zoo.build(chain.teacher, num_classes=data.num_classes)
    log(f"seed {seed}: training the base model {chain.teacher}")
    train_base(base, chain.base, data, device)
    result: dict[str, Any] = {"base": evaluate_accuracy(base, data.test, device), "points": {}, "data": data}
    lr = chain.base.lr
    for method, grid in request.grids.items():
        if method == "E":
            log(f"seed {seed}: E at thresholds {', '.join(map(str, grid))}")
            with_exits = add_exits(copy.deepcopy(base), chain.exits, data, device, lr)
            rows = exit_report(with_exits, data.test, grid, device)
            result["points"]["E"] = [(row["accuracy"], row["rates"]) for row in rows]
            result["exits"] = [k for k in rows[0]["rates"] if k != "final"]
            continue
        points = []
        for value in grid:
            log(f"seed {seed}: {method} = {value}")
            config = _stage_config(chain, method, value)
            apply = {"D": distill, "P": prune, "Q": quantize}[method]
            model = apply(copy.deepcopy(base), config, data, device, lr)
            points.append((evaluate_accuracy(model, data.test, device), None))
        result["points"][method] = points
    return result


def run_profile(request: ProfileRequest, out: Path, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Measure every method of ``request`` on its own, average over the seeds, write ``out``."""
    started = time.perf_counter()
    runs = [_measure_seed(request, seed, log) for seed in request.seeds]
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
                       "versions": environment(resolve_device(chain.device), request.seeds[0]),
                       "wall_s": round(time.perf_counter() - started, 1)},
        "setup": {"teacher": chain.teacher,
                  "student": request.grids["D"][0] if "D" in request.grids else chain.distill.student,
                  "dataset": data.name,
                  "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                  "base_training": {"epochs": chain.base.epochs, "lr": chain.base.lr}},
        "base": {"model": chain.teacher, "accuracy": statistics.fmean(base_accs), "accuracy_std": _std(base_accs)},
        "methods": methods,
        "interactions": [],
    }
    write_profile(profile, out)
    return profile


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None

