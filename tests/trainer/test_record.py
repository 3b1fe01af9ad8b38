"""trainer.record: the run record's one owner. A record written reads back equal; each field the
readers rely on has one ``pytest.raises`` case, naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bitops.errors import InputError
from trainer.config import ChainConfig
from trainer.record import RECORD_TYPE, RECORD_VERSION, check_record, new_record, read_record, write_record


def a_record() -> dict[str, Any]:
    """A two-stage record shaped as trainer.chain writes one."""
    config = ChainConfig(order="PQ").to_json()
    stages = [{"stage": "base", "index": 0, "config": config["base"], "accuracy": 91.5, "val_accuracy": 90.0,
               "cost": {"bitops": 4.0e9, "bitops_cr": 1.0, "cr": 1.0}, "wall_s": 1.0},
              {"stage": "P", "index": 1, "config": config["prune"], "accuracy": 90.25, "val_accuracy": 89.0,
               "cost": {"bitops": 1.0e9, "bitops_cr": 4.0, "cr": 3.9}, "wall_s": 2.0}]
    return new_record(status="running", environment={"python": "3.11"}, config=config,
                      data={"name": "digits", "sizes": {"train": 1, "val": 1, "test": 1}, "input_shape": [3, 16, 16],
                            "num_classes": 10},
                      reference={"model": "resnet20", "precision": "32x32", "exits": None}, stages=stages)


def test_write_then_read_is_equal(tmp_path: Path):
    record = a_record()
    path = tmp_path / "run.json"
    write_record(record, path)
    assert read_record(path) == record
    assert (record["_type"], record["_version"]) == (RECORD_TYPE, RECORD_VERSION) == ("chaincomp.RunRecord", 1)


def test_a_bad_record_is_not_written(tmp_path: Path):
    record = a_record()
    record["stages"] = []
    path = tmp_path / "run.json"
    with pytest.raises(InputError, match="'stages' must be a list starting with the base model's entry"):
        write_record(record, path)
    assert not path.exists()


def _edit(path: str, value: Any):
    def edit(record: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = record
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return edit


RULES = {
    "type": (_edit("_type", "chaincomp.StageProfile"),
             "not a chaincomp run record (_type must be 'chaincomp.RunRecord', got 'chaincomp.StageProfile')"),
    "version": (_edit("_version", 2), "_version must be 1, got 2"),
    "version-true": (_edit("_version", True), "_version must be 1, got True"),
    "status": (_edit("status", "done"), "status must be one of running, interrupted, failed, complete, got 'done'"),
    "config": (_edit("config", KeyError), "'config' must be an object with the run's 'order'"),
    "order": (_edit("config.order", None), "'config' must be an object with the run's 'order'"),
    "base-first": (_edit("stages.0.stage", "P"), "'stages' must be a list starting with the base model's entry"),
    "stage-letter": (_edit("stages.1.stage", KeyError), "stages[1] must be an object with its 'stage'"),
    "accuracy": (_edit("stages.1.accuracy", "90"), "stages[1].accuracy must be a finite number, got '90'"),
    # json.dumps writes NaN, which is no JSON number: the reader refuses the file before any field.
    "accuracy-nan": (_edit("stages.0.accuracy", float("nan")), "not valid JSON (NaN is not a number JSON allows)"),
}


@pytest.mark.parametrize("case", list(RULES))
def test_each_rule_names_the_file_and_the_field(case: str, tmp_path: Path):
    edit, says = RULES[case]
    record = a_record()
    edit(record)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_record(path)
    assert str(err.value) == f"run record {str(path)!r}: {says}"


def test_not_an_object():
    with pytest.raises(InputError, match=r"^run record: not a chaincomp run record \(_type must be .*, got 'list'\)$"):
        check_record([a_record()])


def test_unreadable_and_not_json(tmp_path: Path):
    missing = tmp_path / "none.json"
    with pytest.raises(InputError, match=r"^run record '.*none\.json': cannot read \(No such file or directory\)$"):
        read_record(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"^run record '.*broken\.json': not valid JSON \("):
        read_record(broken)


def test_a_nan_accuracy_in_memory_names_the_field():
    # A record built in Python (not read from JSON) can hold NaN; check_record names the field.
    record = a_record()
    _edit("stages.0.accuracy", float("nan"))(record)
    with pytest.raises(InputError, match=r"^run record: stages\[0\]\.accuracy must be a finite number, got nan$"):
        check_record(record)
