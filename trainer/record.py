"""The run record: the one owner of its format (type, version, reader with validation, writer). No torch.

A run record is the JSON file ``trainer.chain.run_chain`` writes after every stage, and what
``chaincomp fit`` and ``chaincomp confirm`` read back::

    _type, _version   "chaincomp.RunRecord", 1
    status            "running", "interrupted", "failed" (with "error") or "complete"
    environment       versions, device, seed, platform
    config            ChainConfig.to_json(): the order and every hyperparameter
    data              {"name", "sizes", "input_shape", "num_classes"}
    reference         the original teacher at full precision: {"model", "precision", "bitops", "storage_bits"}
    stages            [base, stage 1, ...]: per stage {"stage" ("base" or its letter), "index", "config"
                      (the stage config as a dict), "accuracy" (top-1 % on the test split),
                      "val_accuracy", "cost" (bitops, bitops_cr, cr, ...), "wall_s", and once exit
                      heads exist "exit" {"threshold", "rates", "thresholds": [...], "samples" (per test
                      sample each head's confidence and which heads are right), "path_bitops" (BitOps of a
                      sample leaving at each exit / the final classifier), "reference_bitops"}: any
                      threshold's sweep follows (``trainer.exit_sweep``, ``chaincomp sweep``)}

:func:`check_record` checks the envelope and the fields every reader relies on (the order, the
status, a base entry first, each stage's letter and accuracy); readers check what else they use.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bitops.errors import InputError
from bitops.jsonio import read_json, write_json_atomic

__all__ = ["RECORD_STATUSES", "RECORD_TYPE", "RECORD_VERSION", "check_record", "config_differences", "new_record",
           "read_record", "write_record"]

RECORD_TYPE = "chaincomp.RunRecord"
RECORD_VERSION = 1
RECORD_STATUSES = ("running", "interrupted", "failed", "complete")


def new_record(**fields: Any) -> dict[str, Any]:
    """A record with this format's ``_type`` and ``_version`` and the given fields."""
    return {"_type": RECORD_TYPE, "_version": RECORD_VERSION, **fields}


def check_record(record: Any, where: str = "run record") -> dict[str, Any]:
    """``record`` when it is a run record of this version with the fields readers rely on; else an
    InputError that starts with ``where`` (the file) and names the field."""
    if not isinstance(record, dict) or record.get("_type") != RECORD_TYPE:
        got = record.get("_type") if isinstance(record, dict) else type(record).__name__
        raise InputError(f"{where}: not a chaincomp run record (_type must be {RECORD_TYPE!r}, got {got!r})")
    if isinstance(record.get("_version"), bool) or record.get("_version") != RECORD_VERSION:
        raise InputError(f"{where}: _version must be {RECORD_VERSION}, got {record.get('_version')!r}")
    if record.get("status") not in RECORD_STATUSES:
        raise InputError(f"{where}: status must be one of {', '.join(RECORD_STATUSES)}, got {record.get('status')!r}")
    config, stages = record.get("config"), record.get("stages")
    if not isinstance(config, dict) or not isinstance(config.get("order"), str):
        raise InputError(f"{where}: 'config' must be an object with the run's 'order'")
    if not isinstance(stages, list) or not stages or not isinstance(stages[0], dict) or stages[0].get("stage") != "base":
        raise InputError(f"{where}: 'stages' must be a list starting with the base model's entry")
    for k, entry in enumerate(stages):
        if not isinstance(entry, dict) or not isinstance(entry.get("stage"), str):
            raise InputError(f"{where}: stages[{k}] must be an object with its 'stage'")
        accuracy = entry.get("accuracy")
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
            raise InputError(f"{where}: stages[{k}].accuracy must be a finite number, got {accuracy!r}")
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    """Read and check the run record at ``path``; every problem is an InputError naming the file."""
    where = f"run record {str(path)!r}"
    return check_record(read_json(path, where), where)


def write_record(record: dict[str, Any], path: str | Path) -> None:
    """Check ``record`` (what we write must read back), then write it atomically."""
    check_record(record, f"run record {str(path)!r}")
    write_json_atomic(record, path)


def config_differences(recorded: Any, given: Any, path: str = "") -> list[str]:
    """``field: recorded -> given`` for every leaf of two config dicts that differs."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        return [d for key in sorted(set(recorded) | set(given))
                for d in config_differences(recorded.get(key), given.get(key), f"{path}.{key}" if path else key)]
    return [] if recorded == given else [f"{path}: {recorded!r} -> {given!r}"]
