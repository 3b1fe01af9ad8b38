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
import io
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
from trainer.record import config_differences, new_record, read_record, write_record
from trainer.exit_sweep import encode_samples, sweep
from trainer.stages import add_exits, distill, exit_measurements, prune, quantize, train_base

__all__ = ["environment", "rng_state", "run_chain", "seed_everything", "set_rng_state", "train_prefix"]


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
        confidence, correct, names = exit_measurements(model, data.test, device)
        rows = sweep(confidence, correct, names, thresholds)
        chosen = next(r for r in rows if r["threshold"] == exits.threshold)
        probs = [{k: v for k, v in row["rates"].items() if k != "final"} for row in [chosen, *rows]]
        # and every path alone (all the probability at one exit, or none: the final classifier), for any threshold
        paths = [{e: float(e == at) for e in names} for at in [*names, "final"]]
        costs = measure_costs(model, data.input_shape, reference, probs + paths)
        for row, cost in zip(rows, costs[1:len(probs)]):
            row["cost"] = {k: cost[k] for k in ("bitops", "bitops_cr", "cr", "macs", "params")}
        entry["exit"] = {"threshold": chosen["threshold"], "rates": chosen["rates"], "thresholds": rows,
                         "path_bitops": {at: cost["bitops"] for at, cost in zip([*names, "final"], costs[len(probs):])},
                         "reference_bitops": costs[0]["reference_bitops"],
                         "samples": encode_samples(confidence, correct, names)}
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


def _save(record: dict[str, Any], state: _State, out: Path, data: DataSplits) -> None:
    """One commit point: the new checkpoint is written beside the committed one (RUN.next.pt), then
    the record (atomically: the commit), then the new checkpoint takes the committed name (RUN.pt).

    Whatever interrupts this, the record on disk and one of the two checkpoints hold the same stages
    (:func:`_committed_checkpoint` finds it), so ``resume`` always continues.
    """
    payload = _payload(state, len(record["stages"]), data)
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


def _commit(record: dict[str, Any], state: _State, out: Path, data: DataSplits) -> None:
    """:func:`_save`, a failed write an InputError that says what failed (a full disk by name)."""
    try:
        _save(record, state, out, data)
    except OSError as err:
        raise InputError(f"out: saving stage {len(record['stages']) - 1} to {str(out)!r} failed: "
                         f"{_write_failure(err)}") from None


@dataclass
class _Setup:
    """What every stage of a run needs besides the model: its config, device, data and reference."""

    config: ChainConfig
    device: torch.device
    data: DataSplits
    teacher_table: LayerTable


def _prepare(config: ChainConfig, out: Path | None = None) -> _Setup:
    """Seed, load the data, check the config against the models, trace the reference teacher.

    The global RNG draws here are the same for every run of one config (the teacher's build draws
    its initial weights), so a run's base model is the same whether it trains alone or as the
    shared base of a campaign.
    """
    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = load_data(config.data)
    config.check_before_training(data.num_classes)
    teacher = zoo.build(config.teacher, num_classes=data.num_classes)
    if out is not None:
        _check_free_space(teacher, out)
    return _Setup(config, device, data, trace_model(teacher, data.input_shape, name=config.teacher, groups=False))


def _train_base(setup: _Setup, log: Callable[[str], None]) -> tuple[dict[str, Any], _State]:
    """The record's head (environment, config, data, reference) with the base model's entry, and the
    trained base model."""
    config, data = setup.config, setup.data
    record = new_record(status="running", environment=environment(setup.device, config.seed), config=config.to_json(),
                        data={"name": data.name, "sizes": data.sizes, "input_shape": list(data.input_shape),
                              "num_classes": data.num_classes},
                        reference={"model": config.teacher, "precision": "32x32", "exits": None}, stages=[])
    started = time.perf_counter()
    model = zoo.build(config.teacher, num_classes=data.num_classes)
    log(f"base: training {config.teacher} for {config.base.epochs} epochs on {data.name}")
    train_base(model, config.base, data, setup.device)
    state = _State(model=model)
    base = _stage_entry("base", 0, config.base, state, data, setup.device, setup.teacher_table, config.exits, started)
    record["reference"].update(bitops=base["cost"]["reference_bitops"],
                               storage_bits=base["cost"]["reference_storage_bits"])
    record["stages"].append(base)
    return record, state


def _train_stage(setup: _Setup, state: _State, index: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Apply stage ``index`` (1-based) of the order to ``state`` in place; its record entry."""
    config = setup.config
    letter = config.order[index - 1]
    log(f"stage {index}/{len(config.order)}: {letter}")
    started = time.perf_counter()
    stage_config = _apply(letter, state, config, setup.data, setup.device)
    return _stage_entry(letter, index, stage_config, state, setup.data, setup.device, setup.teacher_table,
                        config.exits, started)


def rng_state(data: DataSplits) -> dict[str, Any]:
    """Every random generator a stage draws from: Python's, numpy's, torch's (CPU and CUDA) and the
    train loader's shuffling. Carried with a checkpoint, a run continued from it draws what the
    uninterrupted run would have drawn."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": data.train.generator.get_state() if data.train.generator is not None else None}


def set_rng_state(rng: dict[str, Any] | None, data: DataSplits) -> None:
    """Restore :func:`rng_state`'s generators (``None``: a checkpoint from before they were kept)."""
    if rng is None:
        return
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if rng["loader"] is not None and data.train.generator is not None:
        data.train.generator.set_state(rng["loader"])


def _payload(state: _State, stages_done: int, data: DataSplits) -> dict[str, Any]:
    return {"model": state.model, "quant_bits": state.quant_bits, "stages_done": stages_done,
            "rng": rng_state(data)}


def run_chain(config: ChainConfig, out: Path, *, resume: bool = False,
              log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Train the base model, apply ``config.order`` stage by stage, and write the record to ``out``."""
    setup = _prepare(config, out)
    if resume:
        record, state = _resume(config, out, setup.data)
        log(f"resuming {out} after {len(record['stages']) - 1} of {len(config.order)} stages")
    else:
        record, state = _train_base(setup, log)
        try:
            _commit(record, state, out, setup.data)
        except InputError as err:
            _next_checkpoint_path(out).unlink(missing_ok=True)
            raise InputError(f"{err}; nothing was kept (run again once it is fixed)") from None
    try:
        for index in range(len(record["stages"]), len(config.order) + 1):
            entry = _train_stage(setup, state, index, log)
            # ``record`` stays what is committed until the save returns: an interruption inside it
            # marks the committed stages, never a stage whose checkpoint may not be there.
            _commit({**record, "stages": [*record["stages"], entry]}, state, out, setup.data)
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


def train_prefix(config: ChainConfig, stages: int, parent: bytes | None = None, *,
                 log: Callable[[str], None] = lambda message: None) -> tuple[dict[str, Any], bytes]:
    """One node of a campaign's prefix tree: the base model (``stages`` 0, no ``parent``) or stage
    ``stages`` of ``config.order`` applied to ``parent``, the checkpoint of the prefix one stage
    shorter. Returns what the record gains (the record's head with the base entry; else the stage's
    entry) and this prefix's checkpoint, RNG state included, as bytes: no file is written, so a
    worker needs no shared filesystem. Chaining these calls draws exactly what :func:`run_chain` does.
    """
    if (stages == 0) != (parent is None):
        raise ValueError("the base (stages 0) starts from nothing; every later stage from its parent's checkpoint")
    setup = _prepare(config)
    if parent is None:
        head, state = _train_base(setup, log)
        gained: dict[str, Any] = head
    else:
        payload = _load_payload(io.BytesIO(parent), "the parent prefix's checkpoint")
        if payload["stages_done"] != stages:
            raise ValueError(f"the parent holds {payload['stages_done'] - 1} stages, not {stages - 1}")
        state = _State(model=payload["model"], quant_bits=_bits(payload))
        set_rng_state(payload.get("rng"), setup.data)
        gained = _train_stage(setup, state, stages, log)
    buffer = io.BytesIO()
    torch.save(_payload(state, stages + 1, setup.data), buffer)
    return gained, buffer.getvalue()


def _resume(config: ChainConfig, out: Path, data: DataSplits) -> tuple[dict[str, Any], _State]:
    try:
        record = read_record(out)
    except InputError as err:
        raise InputError(f"resume: {err}") from None
    if record["config"] != config.to_json():
        differ = config_differences(record["config"], config.to_json())
        raise InputError(f"resume: {str(out)!r} was run with other settings ({'; '.join(differ[:3])}); "
                         "resume with the same config, or write a new out")
    payload = _committed_checkpoint(out, len(record["stages"]))
    set_rng_state(payload.get("rng"), data)  # the run goes on drawing what it would have drawn
    return record, _State(model=payload["model"], quant_bits=_bits(payload))


def _bits(payload: dict[str, Any]) -> tuple[int, int] | None:
    return tuple(payload["quant_bits"]) if payload["quant_bits"] else None


def _load_payload(source: Path | io.BytesIO, what: str) -> dict[str, Any]:
    """A checkpoint's payload; an InputError naming ``what`` when it cannot be read."""
    try:
        payload = torch.load(source, weights_only=False, map_location="cpu")  # our own file
    except Exception as err:  # torch.load raises whatever its unpickler meets in a damaged file
        raise InputError(f"resume: {what} cannot be read ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'damaged file'})") from None
    if not isinstance(payload, dict) or not {"model", "quant_bits", "stages_done"} <= set(payload):
        raise InputError(f"resume: {what} is not a chaincomp checkpoint")
    return payload


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint's payload; None when it is not there; an InputError when it cannot be read."""
    if not path.exists():
        return None
    return _load_payload(path, f"the checkpoint {str(path)!r}")


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
