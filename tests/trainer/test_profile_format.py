"""trainer.profile_format: the stage profile's one owner. A profile written reads back equal (every
kind of interaction term included), a bad one is neither written nor read, and the shipped default
profile passes the checks. The rule-by-rule cases are in tests/simulator/test_profile_format.py,
which reads profiles through the same checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bitops.errors import InputError
from trainer.profile_format import PROFILE_TYPE, PROFILE_VERSION, check_profile, read_profile, write_profile

SHIPPED = Path(__file__).resolve().parents[2] / "simulator" / "data" / "default_profile.json"


def a_profile() -> dict[str, Any]:
    rates = {"layer1": 0.5, "layer2": 0.25, "final": 0.25}
    return {
        "_type": "chaincomp.StageProfile", "_version": 1,
        "provenance": {"source": "hand", "citation": "tests/trainer/test_profile_format.py"},
        "setup": {"teacher": "resnet20", "student": "resnet8", "dataset": "digits", "input_shape": [3, 16, 16],
                  "num_classes": 10},
        "base": {"model": "resnet20", "accuracy": 90.0, "accuracy_std": None},
        "methods": {
            "D": {"parameter": "student", "points": [{"value": "resnet8", "accuracy": 88.0, "delta": -2.0}]},
            "P": {"parameter": "prune_ratio", "points": [{"value": 0.5, "accuracy": 88.5, "delta": -1.5,
                                                         "accuracy_std": 0.25}]},
            "Q": {"parameter": "w_bits", "a_bits": 8, "first_last_bits": None,
                  "points": [{"value": 1, "accuracy": 84.0, "delta": -6.0}, {"value": 4, "accuracy": 89.0, "delta": -1.0}]},
            "E": {"parameter": "threshold", "exits": ["layer1", "layer2"],
                  "points": [{"value": 0.9, "accuracy": 89.0, "delta": -1.0, "exit_rates": rates}]},
        },
        "interactions": [
            {"before": "P", "after": "Q", "accuracy": -1.5, "source": "hand"},
            {"before": "Q", "after": "P", "parameter": "prune_ratio", "source": "fit",
             "points": [{"value": 0.25, "accuracy": -1.0, "std_error": 0.5}, {"value": 0.75, "accuracy": -9.0}]},
            {"before": "Q", "after": "E", "exit_scale": 0.5, "source": "fit"},
            {"first": "D", "before": "P", "after": "Q", "source": "fit",
             "points": [{"before_value": b, "value": q, "accuracy": -b * q, "std_error": 0.1}
                        for b in (0.25, 0.5) for q in (1, 2)]},
        ],
    }


def test_write_then_read_is_equal(tmp_path: Path):
    path = tmp_path / "profile.json"
    write_profile(a_profile(), path)
    assert read_profile(path) == a_profile()
    assert json.loads(path.read_text(encoding="utf-8")) == a_profile()
    assert (PROFILE_TYPE, PROFILE_VERSION) == ("chaincomp.StageProfile", 1)


def test_a_bad_profile_is_not_written(tmp_path: Path):
    data = a_profile()
    data["methods"]["P"]["points"][0]["value"] = 1.0
    path = tmp_path / "profile.json"
    with pytest.raises(InputError) as err:
        write_profile(data, path)
    assert str(err.value) == (f"stage profile {str(path)!r}: methods.P.points[0].value must be in [0, 1), got 1.0")
    assert not path.exists()


def test_read_names_the_file_or_the_caller(tmp_path: Path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({**a_profile(), "_version": 2}), encoding="utf-8")
    with pytest.raises(InputError, match=r"^stage profile '.*v2\.json': _version must be 1, got 2$"):
        read_profile(path)
    with pytest.raises(InputError, match=r"^profile: _version must be 1, got 2$"):
        read_profile(path, "profile")


def test_the_shipped_default_profile_passes():
    assert check_profile(json.loads(SHIPPED.read_text(encoding="utf-8")))["_type"] == PROFILE_TYPE
