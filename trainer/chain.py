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

import platform
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


def _checkpoint_path(out: Path) -> Path:
    return out.with_suffix(".pt")


def _save(record: dict[str, Any], state: _State, out: Path) -> None:
    """Checkpoint first, record second: a record never points at a checkpoint that is not there."""
    payload = {"model": state.model, "quant_bits": state.quant_bits, "stages_done": len(record["stages"])}
    write_atomic(_checkpoint_path(out), lambda tmp: torch.save(payload, tmp))
    write_record(record, out)


def run_chain(config: ChainConfig, out: Path, *, resume: bool = False,
              log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Train the base model, apply ``config.order`` stage by stage, and write the record to ``out``."""
    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = load_data(config.data)
    config.check_before_training(data.num_classes)
    teacher_table = trace_model(zoo.build(config.teacher, num_classes=data.num_classes), data.input_shape,
                                name=config.teacher)
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
        _save(record, state, out)
    try:
        for index in range(len(record["stages"]), len(config.order) + 1):
            letter = config.order[index - 1]
            log(f"stage {index}/{len(config.order)}: {letter}")
            started = time.perf_counter()
            stage_config = _apply(letter, state, config, data, device)
            record["stages"].append(_stage_entry(letter, index, stage_config, state, data, device, teacher_table,
                                                 config.exits, started))
            _save(record, state, out)
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        write_record(record, out)
        raise
    except InputError as err:
        record["status"] = "failed"
        record["error"] = str(err)
        write_record(record, out)
        raise
    record["status"] = "complete"
    write_record(record, out)
    return record


def _resume(config: ChainConfig, out: Path) -> tuple[dict[str, Any], _State]:
    try:
        record = read_record(out)
    except InputError as err:
        raise InputError(f"resume: {err}") from None
    if record["config"] != config.to_json():
        raise InputError(f"resume: {str(out)!r} was run with other settings (order {record['config']['order']!r}); "
                         "resume with the same config, or write a new out")
    checkpoint = _checkpoint_path(out)
    if not checkpoint.exists():
        raise InputError(f"resume: the checkpoint {str(checkpoint)!r} beside the record is missing")
    payload = torch.load(checkpoint, weights_only=False, map_location="cpu")  # our own file
    if payload["stages_done"] != len(record["stages"]):
        raise InputError(f"resume: checkpoint holds {payload['stages_done']} stages, the record "
                         f"{len(record['stages'])}; they were not written together")
    return record, _State(model=payload["model"], quant_bits=tuple(payload["quant_bits"]) if payload["quant_bits"] else None)
