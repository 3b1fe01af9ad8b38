"""The chain runner: apply an order of D, P, Q, E to a trained base model and record every stage.

Order semantics are DESIGN.md's ("Order semantics"), shared with the simulator:

* a stage before D compresses the teacher; D then distils it into a fresh zoo student, so pruning
  and bits applied before D do not reach the final model (PD, QD); exit heads do carry over (ED);
* E before P/Q: the heads are pruned/quantized and fine-tuned with the backbone (EP, EQ);
  P before E: heads are added to the pruned backbone, unpruned (PE); Q before E: new heads are
  quantized at the backbone's bits and trained with QAT from scratch (QE);
* Q before P: pruning a quantized model keeps QAT on while fine-tuning (QP);
* every stage fine-tunes at 1/10 of the base learning rate; E at most once; D, P, Q repeat only
  with ``allow_repeat`` (paper section 6).

After every stage the run record (:mod:`trainer.record`'s format) and a checkpoint of the model are
written atomically, so an interrupted run leaves a consistent record of the finished stages and
``resume`` continues from it.
The BitOps / BitOpsCR / CR of each stage are computed by bitops from the real model's layers, bits
and measured exit rates; the reference is always the original teacher at full precision.
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitops import zoo
from bitops.errors import InputError
from bitops.jsonio import write_atomic
from bitops.table import LayerTable
from bitops.trace import trace_model
from trainer.config import ChainConfig, ExitConfig
from trainer.data import DataSplits, load_data
from trainer.loop import evaluate_accuracy, resolve_device
from trainer.measure import measure_cost, measure_costs
from trainer.record import new_record, read_record, write_record
from trainer.stages import add_exits, distill, exit_report, prune, quantize, train_base

__all__ = ["environment", "run_chain", "seed_everything"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment(device: torch.device, seed: int) -> dict[str, Any]:
    import torchvision

    from importlib.metadata import version

    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "chaincomp": version("chaincomp"), "device": str(device), "seed": seed, "platform": platform.platform()}
    if device.type == "cuda":
        env["cuda_device"] = torch.cuda.get_device_name(device)
    return env


@dataclass
class _State:
    """What flows from stage to stage."""

    model: nn.Module
    quant_bits: tuple[int, int] | None = None  # (w, a) of the backbone once Q has run


def _stage_entry(letter: str, index: int, config: Any, state: _State, data: DataSplits, device: torch.device,
                 reference: LayerTable, exits: ExitConfig, started: float) -> dict[str, Any]:
    """Accuracy, exit rates and cost of the model after a stage."""
    model = state.model
    entry: dict[str, Any] = {"stage": letter, "index": index, "config": None if config is None else asdict(config)}
    if len(getattr(model, "exits", ())) > 0:
        # Accuracy and BitOps at each threshold, from exit rates measured on the test split.
        thresholds = sorted({*exits.thresholds, exits.threshold})  # the operating point is always measured
        rows = exit_report(model, data.test, thresholds, device)
        chosen = next(r for r in rows if r["threshold"] == exits.threshold)
        probs = [{k: v for k, v in row["rates"].items() if k != "final"} for row in [chosen, *rows]]
        costs = measure_costs(model, data.input_shape, reference, probs)
        for row, cost in zip(rows, costs[1:]):
            row["cost"] = {k: cost[k] for k in ("bitops", "bitops_cr", "cr", "macs", "params")}
        entry["exit"] = {"threshold": chosen["threshold"], "rates": chosen["rates"], "thresholds": rows}
        entry["accuracy"] = chosen["accuracy"]
        entry["cost"] = costs[0]
    else:
        entry["accuracy"] = evaluate_accuracy(model, data.test, device)
        entry["cost"] = measure_cost(model, data.input_shape, reference)
    entry["val_accuracy"] = evaluate_accuracy(model, data.val, device)
    entry["wall_s"] = round(time.perf_counter() - started, 3)
    return entry


def _apply(letter: str, state: _State, config: ChainConfig, data: DataSplits, device: torch.device) -> Any:
    """Run one stage on ``state`` in place; return the stage's hyperparameters for the record."""
    lr = config.base.lr
    if letter == "D":
        # Whatever P/Q did to the teacher stays with the teacher: the student is fresh (PD, QD).
        state.model = distill(state.model, config.distill, data, device, lr)
        state.quant_bits = None
        return config.distill
    if letter == "P":
        state.model = prune(state.model, config.prune, data, device, lr)
        return config.prune
    if letter == "Q":
        state.model = quantize(state.model, config.quant, data, device, lr)
        state.quant_bits = (config.quant.w_bits, config.quant.a_bits)
        return config.quant
    # QE: heads made after Q are quantized at the backbone's bits; EQ: Q quantizes existing heads.
    state.model = add_exits(state.model, config.exits, data, device, lr, head_bits=state.quant_bits)
    return config.exits


def _next_checkpoint_path(out: Path) -> Path:
    """Where a new checkpoint is written before the record that commits it."""
    return out.with_suffix(".next.pt")


def _checkpoint_path(out: Path) -> Path:
    return out.with_suffix(".pt")


def _save(record: dict[str, Any], state: _State, out: Path) -> None:
    """One commit point: the new checkpoint is written beside the committed one (RUN.next.pt), then
    the record (atomically: the commit), then the new checkpoint takes the committed name (RUN.pt).

    Whatever interrupts this, the record on disk and one of the two checkpoints hold the same stages
    (:func:`_committed_checkpoint` finds it), so ``resume`` always continues.
    """
    payload = {"model": state.model, "quant_bits": state.quant_bits, "stages_done": len(record["stages"])}
    write_atomic(_next_checkpoint_path(out), lambda tmp: _torch_save(payload, tmp))
    write_record(record, out)
    os.replace(_next_checkpoint_path(out), _checkpoint_path(out))


def _torch_save(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a Python file, so a failed write is the OSError it is (given a path,
    torch reports a full disk as ``RuntimeError: unexpected pos``)."""
    with open(path, "wb") as file:
        torch.save(payload, file)


def _write_failure(err: OSError) -> str:
    """What went wrong in a write, in a user's words."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full ({err.strerror})"
    return err.strerror or str(err)


def _check_free_space(model: nn.Module, out: Path) -> None:
    """Refuse before training when the disk cannot hold the run's checkpoints: during a save the
    committed and the new one sit side by side, and later stages may add exit heads, so twice the
    teacher's tensors twice over, plus a MiB for the records."""
    tensor_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    needed = 4 * tensor_bytes + 2**20
    free = shutil.disk_usage(out.parent).free
    if free < needed:
        raise InputError(f"out: {free / 2**20:.1f} MiB free where {str(out)!r} goes, but the run's checkpoints "
                         f"need about {needed / 2**20:.1f} MiB; free some space or write elsewhere")


def _commit(record: dict[str, Any], state: _State, out: Path) -> None:
    """:func:`_save`, a failed write an InputError that says what failed (a full disk by name)."""
    try:
        _save(record, state, out)
    except OSError as err:
        raise InputError(f"out: saving stage {len(record['stages']) - 1} to {str(out)!r} failed: "
                         f"{_write_failure(err)}") from None


def run_chain(config: ChainConfig, out: Path, *, resume: bool = False,
              log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Train the base model, apply ``config.order`` stage by stage, and write the record to ``out``."""
    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = load_data(config.data)
    config.check_before_training(data.num_classes)
    teacher = zoo.build(config.teacher, num_classes=data.num_classes)
    _check_free_space(teacher, out)
    teacher_table = trace_model(teacher, data.input_shape, name=config.teacher)
    if resume:
        record, state = _resume(config, out)
        log(f"resuming {out} after {len(record['stages']) - 1} of {len(config.order)} stages")
    else:
        record = new_record(status="running", environment=environment(device, config.seed), config=config.to_json(),
                            data={"name": data.name, "sizes": data.sizes, "input_shape": list(data.input_shape),
                                  "num_classes": data.num_classes},
                            reference={"model": config.teacher, "precision": "32x32", "exits": None}, stages=[])
        started = time.perf_counter()
        model = zoo.build(config.teacher, num_classes=data.num_classes)
        log(f"base: training {config.teacher} for {config.base.epochs} epochs on {data.name}")
        train_base(model, config.base, data, device)
        state = _State(model=model)
        base = _stage_entry("base", 0, config.base, state, data, device, teacher_table, config.exits, started)
        record["reference"].update(bitops=base["cost"]["reference_bitops"],
                                   storage_bits=base["cost"]["reference_storage_bits"])
        record["stages"].append(base)
        try:
            _commit(record, state, out)
        except InputError as err:
            _next_checkpoint_path(out).unlink(missing_ok=True)
            raise InputError(f"{err}; nothing was kept (run again once it is fixed)") from None
    try:
        for index in range(len(record["stages"]), len(config.order) + 1):
            letter = config.order[index - 1]
            log(f"stage {index}/{len(config.order)}: {letter}")
            started = time.perf_counter()
            stage_config = _apply(letter, state, config, data, device)
            entry = _stage_entry(letter, index, stage_config, state, data, device, teacher_table, config.exits,
                                 started)
            # ``record`` stays what is committed until the save returns: an interruption inside it
            # marks the committed stages, never a stage whose checkpoint may not be there.
            _commit({**record, "stages": [*record["stages"], entry]}, state, out)
            record["stages"].append(entry)
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        write_record(record, out)
        raise
    except InputError as err:
        record["status"] = "failed"
        record["error"] = str(err)
        try:
            write_record(record, out)
        except OSError:  # the disk that failed the save may fail this too: the committed record stands
            pass
        kept = ", ".join(entry["stage"] for entry in record["stages"])
        raise InputError(f"{err}; the record keeps what finished ({kept}): continue with --resume once it is "
                         "fixed") from None
    record["status"] = "complete"
    write_record(record, out)
    return record


def _resume(config: ChainConfig, out: Path) -> tuple[dict[str, Any], _State]:
    try:
        record = read_record(out)
    except InputError as err:
        raise InputError(f"resume: {err}") from None
    if record["config"] != config.to_json():
        differ = _differences(record["config"], config.to_json())
        raise InputError(f"resume: {str(out)!r} was run with other settings ({'; '.join(differ[:3])}); "
                         "resume with the same config, or write a new out")
    payload = _committed_checkpoint(out, len(record["stages"]))
    return record, _State(model=payload["model"], quant_bits=tuple(payload["quant_bits"]) if payload["quant_bits"] else None)


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint's payload; None when it is not there; an InputError when it cannot be read."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=False, map_location="cpu")  # our own file
    except Exception as err:  # torch.load raises whatever its unpickler meets in a damaged file
        raise InputError(f"resume: the checkpoint {str(path)!r} cannot be read ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'damaged file'})") from None
    if not isinstance(payload, dict) or not {"model", "quant_bits", "stages_done"} <= set(payload):
        raise InputError(f"resume: {str(path)!r} is not a chaincomp checkpoint")
    return payload


def _committed_checkpoint(out: Path, stages: int) -> dict[str, Any]:
    """The checkpoint holding the record's ``stages``: the committed one (RUN.pt), or the new one a
    save had written before it was interrupted (RUN.next.pt); after it, only RUN.pt is left."""
    found = []
    for path in (_checkpoint_path(out), _next_checkpoint_path(out)):
        try:
            payload = _load_checkpoint(path)
        except InputError:
            if path == _next_checkpoint_path(out):
                continue  # a save interrupted while it wrote this one: the committed one is next
            raise
        if payload is not None and payload["stages_done"] == stages:
            # Finish what the interrupted save left: the checkpoint the record commits takes the
            # committed name, a newer one the record never committed goes.
            if path == _next_checkpoint_path(out):
                os.replace(path, _checkpoint_path(out))
            else:
                _next_checkpoint_path(out).unlink(missing_ok=True)
            return payload
        if payload is not None:
            found.append(f"{path.name} holds {payload['stages_done']}")
    if not found:
        raise InputError(f"resume: the checkpoint {str(_checkpoint_path(out))!r} beside the record is missing")
    raise InputError(f"resume: the record holds {stages} stages but {', '.join(found)}; they were not written "
                     "together")


def _differences(recorded: Any, given: Any, path: str = "") -> list[str]:
    """``field: recorded -> given`` for every leaf of two config dicts that differs."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        return [d for key in sorted(set(recorded) | set(given))
                for d in _differences(recorded.get(key), given.get(key), f"{path}.{key}" if path else key)]
    return [] if recorded == given else [f"{path}: {recorded!r} -> {given!r}"]
