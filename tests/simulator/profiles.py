"""The hand-made stage profile the simulator tests (and benches) share."""

from __future__ import annotations

from functools import cache
from typing import Any

from bitops.models import ModelSpec, load_model_table
from bitops.table import LayerTable
from simulator.model import Grid

TEACHER, STUDENT = "resnet20", "resnet8"  # hand_profile's setup

BASE_ACCURACY = 90.0


def hand_profile() -> dict[str, Any]:
    """A stage profile written by hand: ResNet20 teacher, ResNet8 student, digits at 3x16x16.

    Numbers are chosen so sums and interpolations are easy to do in one's head (deltas in quarter
    points, exit rates that are exact binary fractions at the measured thresholds). P's points are
    listed out of order on purpose: the parser sorts them.
    """
    return {
        "_type": "chaincomp.StageProfile",
        "_version": 1,
        "provenance": {"source": "hand", "citation": "tests/simulator/profiles.py"},
        "setup": {"teacher": "resnet20", "student": "resnet8", "dataset": "digits",
                  "input_shape": [3, 16, 16], "num_classes": 10},
        "base": {"model": "resnet20", "accuracy": BASE_ACCURACY, "accuracy_std": 0.3},
        "methods": {
            "D": {"parameter": "student", "points": [
                {"value": "resnet8", "accuracy": 88.0, "accuracy_std": 0.4, "delta": -2.0}]},
            "P": {"parameter": "prune_ratio", "points": [
                {"value": 0.5, "accuracy": 88.5, "delta": -1.5},
                {"value": 0.25, "accuracy": 89.5, "delta": -0.5},
                {"value": 0.75, "accuracy": 86.0, "delta": -4.0}]},
            "Q": {"parameter": "w_bits", "a_bits": 8, "points": [
                {"value": 1, "accuracy": 84.0, "delta": -6.0},
                {"value": 2, "accuracy": 87.0, "delta": -3.0},
                {"value": 4, "accuracy": 89.0, "delta": -1.0},
                {"value": 8, "accuracy": 89.75, "delta": -0.25}]},
            "E": {"parameter": "threshold", "exits": ["layer1", "layer2"], "points": [
                {"value": 0.5, "accuracy": 87.0, "delta": -3.0,
                 "exit_rates": {"layer1": 0.5, "layer2": 0.25, "final": 0.25}},
                {"value": 0.8, "accuracy": 89.0, "delta": -1.0,
                 "exit_rates": {"layer1": 0.25, "layer2": 0.25, "final": 0.5}},
                {"value": 0.95, "accuracy": 89.75, "delta": -0.25,
                 "exit_rates": {"layer1": 0.125, "layer2": 0.125, "final": 0.75}}]},
        },
        "interactions": [],
    }


@cache
def load(name: str) -> LayerTable:
    """A zoo table at hand_profile's input shape and classes (shipped: no torch)."""
    return load_model_table(ModelSpec(name, input_shape=(3, 16, 16), num_classes=10))


def one_point_grid(**values: tuple) -> Grid:
    """One value per method (at measured points of hand_profile), ``values`` replacing some."""
    grid = {"D": (STUDENT,), "P": (0.5,), "Q": (2,), "E": (0.8,)}
    grid.update(values)
    return Grid(grid)
