"""The simulator's entry points: ``simulate`` (every order over a grid) and ``analyse_orders``
(pairwise precedence), what ``chaincomp simulate`` / ``chaincomp orders`` and the Python API call.

Both read a stage profile (default: the shipped one), build the grid around its measured values
and predict each order once (:class:`Simulation` caches the tables and predictions, so the pairwise
analysis and confirm reuse them). Results carry ``to_dict()`` (the command's ``--json``) and
``format()`` (its text).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitops.errors import InputError
from bitops.rules import check_confidence
from bitops.result import Result
from bitops.jsonio import check_plot, write_checked
from bitops.models import ModelSpec, load_model_table
from bitops.orders import METHODS
from bitops.table import LayerTable
from simulator.grid import DEFAULT_BUDGETS, DEFAULT_CONFIDENCE, grid_for, parse_budgets, parse_orders
from simulator.model import Grid, Prediction, predict
from simulator.profile import Profile, load_profile
from simulator.report import format_orders, format_simulation, orders_json, plot_fronts, simulation_json
from simulator.search import insertion_check, precedence, topological_orders

__all__ = ["DEFAULT_CONFIDENCE", "OrdersResult", "Simulation", "SimulationResult", "analyse_orders", "simulate"]

GridSpec = str | Mapping[str, Sequence[Any]] | None
# Predicting one combination holds ~310 bytes (settings, accuracy, cost arrays; measured); the limit
# keeps one order under ~1.5 GiB on a 24 GB machine shared with other work.
BYTES_PER_COMBINATION = 310
MAX_COMBINATIONS = 5_000_000


@dataclass
class Simulation:
    """A profile, its grid and budgets, and a cache of predictions by order."""

    profile: Profile
    profile_path: str | None
    grid: Grid
    budgets: list[float]
    _tables: dict[str, LayerTable] = field(default_factory=dict, repr=False)
    _predictions: dict[str, Prediction] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, profile: str | Path | None = None, grid: GridSpec = None,
             budgets: str | float | Sequence[float] = DEFAULT_BUDGETS) -> Simulation:
        loaded = load_profile(profile)
        if not isinstance(loaded.setup.get("teacher"), str):
            raise InputError("profile: its setup must name its teacher (base) model")
        return cls(loaded, None if profile is None else str(profile), grid_for(loaded, grid), parse_budgets(budgets))

    @property
    def methods(self) -> str:
        """The methods the profile measured, in the order D, P, Q, E."""
        return "".join(m for m in METHODS if m in self.profile.curves)

    def table(self, name: str) -> LayerTable:
        if name not in self._tables:
            setup = self.profile.setup
            shape = tuple(setup.get("input_shape", (3, 32, 32)))
            self._tables[name] = load_model_table(ModelSpec(name, input_shape=shape,
                                                            num_classes=int(setup.get("num_classes", 10)),
                                                            exit_head=setup.get("exit_head", "conv")))
        return self._tables[name]

    def predict(self, order: str) -> Prediction:
        if order not in self._predictions:
            combinations = math.prod(len(self.grid.axis(m)) for m in order)
            if combinations > MAX_COMBINATIONS:
                raise InputError(f"grid: order {order} has {combinations:,} combinations of its values (about "
                                 f"{combinations * BYTES_PER_COMBINATION / 2**30:.1f} GiB to predict); at most "
                                 f"{MAX_COMBINATIONS:,}: give fewer values per method")
            self._predictions[order] = predict(self.profile, order, self.grid, self.table, self.profile.setup["teacher"])
        return self._predictions[order]


@dataclass(frozen=True)
class SimulationResult(Result):
    """Every order's predictions; ``to_dict()`` is ``simulate --json``."""

    predictions: list[Prediction]
    base_accuracy: float
    budgets: tuple[float, ...] = ()
    confidence: float = DEFAULT_CONFIDENCE

    def format(self) -> str:
        return format_simulation(self.data)

    def plot(self, path: str | Path) -> None:
        """Draw every order's Pareto front (atomic PNG)."""
        check_plot("plot", path)
        write_checked("plot", path, lambda tmp: plot_fronts(self.predictions, self.base_accuracy, tmp,
                                                                         self.budgets, self.confidence))


def simulate(profile: str | Path | None = None, grid: GridSpec = None,
             budgets: str | float | Sequence[float] = DEFAULT_BUDGETS, orders: str | Sequence[str] = "all",
             allow_repeat: bool = False, confidence: float = DEFAULT_CONFIDENCE) -> SimulationResult:
    """Predict ``orders`` ('all': every order of the methods the profile measured) over ``grid``
    (default: the profile's measured values, P densified), and rank them by max BitOpsCR within
    each accuracy-loss budget in ``budgets`` (points) at ``confidence``: a combination counts as
    within a budget when its predicted accuracy less ``z`` spreads is (``z`` the normal quantile
    of ``confidence``; 0.5, the default, takes the mean prediction)."""
    check_confidence("confidence", confidence)
    sim = Simulation.open(profile, grid, budgets)
    predictions = [sim.predict(o) for o in parse_orders(orders, allow_repeat, sim.methods)]
    data = simulation_json(sim.profile, sim.profile_path, sim.grid, sim.budgets, predictions, confidence)
    return SimulationResult(data, predictions, sim.profile.base_accuracy, tuple(sim.budgets), confidence)


@dataclass(frozen=True)
class OrdersResult(Result):
    """The pairwise order analysis; ``to_dict()`` is ``orders --json``."""

    def format(self) -> str:
        return format_orders(self.data)


def analyse_orders(profile: str | Path | None = None, grid: GridSpec = None,
                   budgets: str | float | Sequence[float] = DEFAULT_BUDGETS) -> OrdersResult:
    """Which order of each pair of methods wins, the precedence graph, its topological sort and
    cycles, and the insertion check (paper section 4)."""
    sim = Simulation.open(profile, grid, budgets)
    methods = sim.methods
    if len(methods) < 2:
        raise InputError(f"profile: it measures {methods or 'no method'}; pairwise orders need at least two methods")
    base = sim.profile.base_accuracy
    pairs = precedence(sim.predict, base, sim.budgets, methods)
    order, cycles, unique = topological_orders(pairs, methods)
    insertion = insertion_check(sim.predict, pairs, base, sim.budgets, methods)
    return OrdersResult(orders_json(pairs, order, cycles, unique, insertion, sim.budgets))
