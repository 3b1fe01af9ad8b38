"""The four compressions of "Chain of Compression" as functions ``model -> model``.

* **D** :func:`distill` -- Hinton KD of a teacher into a fresh zoo student (Tian et al. 2020's
  ``DistillKL``, the paper's section 2).
* **P** :func:`prune` -- structured L1-magnitude channel pruning through torch-pruning (Fang et
  al. 2023), dependency-aware, the classifiers' outputs kept.
* **Q** :func:`quantize` -- DoReFa fixed-point QAT (Zhou et al. 2016) through ``trainer.quant``.
* **E** :func:`add_exits` -- early-exit heads trained on the frozen backbone; :func:`exit_report`
  measures max-softmax exits (Passalis et al. 2020; Li et al. 2023).

Each stage's hyperparameters are a frozen config of :mod:`trainer.config` (checked there, torch-free).
Each stage takes the base model's learning rate ``base_lr``: D and the base model train at it,
P and Q fine-tune at ``base_lr / 10`` (the paper, section 3.1: "fine-tuning will have 1/10 of the
initial learning rate"), E trains its new heads at it (section 3.1 counts the exit layers with the
trained parts, not the fine-tuned ones). Every stage works on a copy: its input model is left as
it was, so rival orders can start from one trained base model.

Order semantics (DESIGN.md, from the paper's Figures 6-11): D builds an unpruned, full-precision
student whatever was done to the teacher (PD, QD), but the teacher's exit heads become distillation
targets of the student's (ED). P and Q prune / quantize exit heads that already exist and fine-tune
them with the backbone (EP, EQ); P on a quantized model keeps its bits, so its fine-tuning is QAT
(QP); E after P sizes its heads to the pruned widths (PE) and E after Q quantizes its new heads from
the start (QE).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader

from bitops import zoo
from bitops.architectures import exit_points
from bitops.config import kept_channels
from bitops.errors import InputError
from bitops.rules import check_bits, check_positive, check_threshold
from bitops.trace import channel_groups, output_layers
from bitops.zoo import exit_head  # the zoo's own head, so traced heads match built ones
from trainer.config import DistillConfig, ExitConfig, PruneConfig, QuantConfig, TrainConfig
from trainer.exit_sweep import sweep
from trainer.loop import train_epochs
from trainer.quant import quantize_like, quantize_model

__all__ = [
    "FINETUNE_LR_FACTOR",
    "add_exits",
    "distill",
    "exit_measurements",
    "exit_report",
    "head_kind",
    "kd_loss",
    "prune",
    "quantize",
    "train_base",
]

# Paper, section 3.1: "fine-tuning will have 1/10 of the initial learning rate".
FINETUNE_LR_FACTOR = 0.1


class Splits(Protocol):
    """What a stage reads from ``trainer.data.DataSplits``."""

    train: DataLoader
    val: DataLoader
    num_classes: int
    input_shape: tuple[int, ...]


# ---- shared pieces -------------------------------------------------------------------------------

def _outputs(output: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return list(output) if isinstance(output, (list, tuple)) else [output]


def _every_output_ce(output: torch.Tensor | list[torch.Tensor], _x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over the final logits and every exit's (equal weights, as BranchyNet).

    Without exits this is plain cross-entropy; with exits it fine-tunes "whole networks including
    exit layers" (the paper's EP and EQ, Figures 10 and 11).
    """
    return sum(F.cross_entropy(logits, y) for logits in _outputs(output))


def _finetune(model: nn.Module, data: Splits, device: torch.device, base_lr: float, epochs: int, desc: str,
              progress: bool) -> None:
    train_epochs(model, data.train, epochs=epochs, lr=base_lr * FINETUNE_LR_FACTOR, device=device,
                 loss_fn=_every_output_ce, desc=desc, progress=progress)


def _example(data: Splits, device: torch.device) -> torch.Tensor:
    """One zero image: enough where only shapes matter (tracing for the pruner)."""
    return torch.zeros(1, *data.input_shape, device=device)


def _real_batch(data: Splits, device: torch.device) -> torch.Tensor:
    """The first validation batch (unshuffled, unaugmented): where the values matter, e.g. which
    layers see negative inputs and so quantize them as signed (``trainer.quant``)."""
    for x, _ in data.val:
        return x.to(device)
    raise InputError("the validation loader yields no samples")


def _exit_names(model: nn.Module) -> tuple[str, ...]:
    exits = getattr(model, "exits", None)
    return tuple(exits.keys()) if isinstance(exits, nn.ModuleDict) else ()


def head_kind(model: nn.Module) -> str:
    """The design of ``model``'s exit heads (``conv`` when it has none): ``pool`` heads hold no
    convolution (QConv2d is one), ``conv`` heads do."""
    exits = getattr(model, "exits", None)
    heads = list(exits.values()) if isinstance(exits, nn.ModuleDict) else []
    convs = any(isinstance(m, nn.Conv2d) for h in heads for m in h.modules())
    return "conv" if convs or not heads else "pool"


def train_base(model: nn.Module, config: TrainConfig, data: Splits, device: torch.device, *,
               progress: bool = True) -> nn.Module:
    """The original model, trained in place at the full learning rate ``config.lr``."""
    train_epochs(model, data.train, epochs=config.epochs, lr=config.lr, device=device, desc="base",
                 progress=progress)
    return model


# ---- D -------------------------------------------------------------------------------------------

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton KD: ``alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(student, targets)``.

    ``p = softmax(logits / T)``; the KL is averaged over the batch. ``T^2`` keeps the soft term's
    gradients at the hard term's scale as T changes (Hinton et al. 2015, section 2). This is
    Tian et al.'s ``DistillKL`` (``kl_div(log p_s, p_t)``), the distillation the paper follows.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, targets)


def distill(teacher: nn.Module, config: DistillConfig, data: Splits, device: torch.device, base_lr: float, *,
            progress: bool = True) -> zoo.StagedNet:
    """A fresh ``config.student`` trained from ``teacher`` by KD at ``base_lr``; the teacher is untouched.

    The student is unpruned and full precision whatever was done to the teacher (PD, QD). When the
    teacher has exit heads (ED) the student gets heads at the same exit points and each is distilled
    from the teacher's head there, the final classifier from the teacher's final one.
    """
    check_positive("base_lr", base_lr)
    teacher_exits = _exit_names(teacher)
    student_points = exit_points(config.student)
    missing = [p for p in teacher_exits if p not in student_points]
    if missing:
        raise InputError(f"student: {config.student} has no exit point {missing[0]!r} for the teacher's exit head there "
                         f"(ED); its exit points are {', '.join(student_points)}")
    student = zoo.build(config.student, num_classes=data.num_classes, width_mult=config.width_mult,
                        exits=teacher_exits, exit_head_kind=head_kind(teacher))
    was_training = teacher.training
    teacher.to(device).eval()

    def loss_fn(output: torch.Tensor | list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = _outputs(teacher(x))
        return sum(kd_loss(s, t, y, temperature=config.temperature, alpha=config.alpha)
                   for s, t in zip(_outputs(output), targets, strict=True))

    train_epochs(student, data.train, epochs=config.epochs, lr=base_lr, device=device, loss_fn=loss_fn,
                 desc=f"D {config.student}", progress=progress)
    teacher.train(was_training)
    return student


# ---- P -------------------------------------------------------------------------------------------

def prune(model: nn.Module, config: PruneConfig, data: Splits, device: torch.device, base_lr: float, *,
          progress: bool = True) -> nn.Module:
    """A copy of ``model`` with ``config.ratio`` of every channel group removed, fine-tuned at base_lr / 10.

    L1 magnitude importance, local (per group) ranking, the classifier's and exit heads' outputs
    kept. Existing exit heads are pruned with the backbone and fine-tuned with it (EP). A quantized
    model stays quantized, so its fine-tuning is QAT (QP).
    """
    check_positive("base_lr", base_lr)
    pruned = copy.deepcopy(model).to(device).eval()  # eval: BN on a batch of one 1x1 map would fail
    example = _example(data, device)
    # torch-pruning keeps int(C * (1 - pruning_ratio)) channels of a group of C; bitops'
    # kept_channels(C, keep_ratio) evaluates pruning_ratio = 1 - keep_ratio. Passing the same
    # float expression makes the two agree to the channel for every ratio.
    keep_ratio = 1.0 - config.ratio
    groups = channel_groups(pruned, example)
    if groups.failure:
        raise InputError(f"ratio: the model has no channel groups to prune ({groups.failure})")
    for width, parts, label in zip(groups.channels, groups.divisions, groups.labels, strict=True):
        if kept_channels(width, keep_ratio, parts) < 1:
            raise InputError(f"ratio {config.ratio} keeps 0 of the {width} channels of group {label}; "
                             "it must keep at least 1")
    pruner = tp.pruner.MagnitudePruner(
        pruned,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=1.0 - keep_ratio,
        ignored_layers=output_layers(pruned, example),
    )
    pruner.step()
    _finetune(pruned, data, device, base_lr, config.finetune_epochs, "P fine-tune", progress)
    return pruned


# ---- Q -------------------------------------------------------------------------------------------

def quantize(model: nn.Module, config: QuantConfig, data: Splits, device: torch.device, base_lr: float, *,
             progress: bool = True) -> nn.Module:
    """A quantized copy of ``model`` (exit heads included: EQ), QAT fine-tuned at base_lr / 10."""
    check_positive("base_lr", base_lr)
    quantized = quantize_model(copy.deepcopy(model).to(device), w_bits=config.w_bits, a_bits=config.a_bits,
                               first_last_bits=config.first_last_bits, input_bits=config.input_bits,
                               example_input=_real_batch(data, device)).to(device)
    _finetune(quantized, data, device, base_lr, config.finetune_epochs, "Q fine-tune", progress)
    return quantized


# ---- E -------------------------------------------------------------------------------------------

class _HeadsOnFrozenBackbone(nn.Module):
    """Exit logits of ``model``'s heads over its backbone, run in eval mode without gradients.

    Only the heads train: the backbone's weights and BN statistics stay as the stages before E left
    them (the paper's E "trains exit layers" on a finished network, Figures 8-11, and section 3.1.6
    finds fine-tuning through exit layers less effective than on the network). Stages past the
    last head are not run.
    """

    def __init__(self, model: zoo.StagedNet) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _HeadsOnFrozenBackbone:
        self.training = mode
        self.model.eval()
        self.model.exits.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        with torch.no_grad():
            x = self.model.stem(x)
            for name, stage in self.model.named_stages():
                x = stage(x)
                if name in self.model.exits:
                    features.append((name, x))
                    if len(features) == len(self.model.exits):
                        break
        return [self.model.exits[name](f) for name, f in features]


def _stage_features(model: zoo.StagedNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every stage's feature map for ``x`` in eval mode: the channels a head must take now (the
    backbone may be pruned) and the values a quantized head will read."""
    was_training = model.training
    model.eval()
    features = {}
    with torch.no_grad():
        x = model.stem(x)
        for name, stage in model.named_stages():
            x = features[name] = stage(x)
    model.train(was_training)
    return features


def _chosen_exits(model: nn.Module, exits: tuple[str, ...] | None) -> tuple[str, ...]:
    points = tuple(getattr(model, "exit_points", ()))
    if not points or not isinstance(getattr(model, "exits", None), nn.ModuleDict):
        raise InputError(f"E needs a staged zoo model with exit points, got {type(model).__name__}")
    if exits is None:
        return points
    unknown = [p for p in exits if p not in points]
    if unknown:
        raise InputError(f"exits must be exit points of the model ({', '.join(points)}), got unknown {unknown[0]!r}")
    return tuple(p for p in points if p in exits)


def add_exits(model: nn.Module, config: ExitConfig, data: Splits, device: torch.device, base_lr: float,
              head_bits: tuple[int, int] | None = None, *, progress: bool = True) -> zoo.StagedNet:
    """A copy of ``model`` with new exit heads at ``config.exits``, trained on the frozen backbone.

    Each head is the zoo's, sized to the channels its stage has now: after P they are the pruned
    widths and the head itself is unpruned (PE). ``head_bits = (w_bits, a_bits)`` quantizes the
    new heads from the start, for a backbone that Q has quantized (QE). Only the heads train, at
    ``base_lr``, with cross-entropy summed over the exits. E applies once: a model that already has
    heads is refused.
    """
    check_positive("base_lr", base_lr)
    points = _chosen_exits(model, config.exits)
    existing = _exit_names(model)
    if existing:
        raise InputError(f"E is applied at most once (a run-time policy, paper section 6); the model already has exit "
                         f"heads at {', '.join(existing)}")
    if head_bits is not None:
        for bits in head_bits:
            check_bits("head_bits", bits)
    result = copy.deepcopy(model).to(device)
    features = _stage_features(result, _real_batch(data, device))
    heads = {p: exit_head(features[p].shape[1], data.num_classes, config.head).to(device) for p in points}
    if head_bits is not None:
        heads = {p: quantize_like(head, *head_bits, example_input=features[p]) for p, head in heads.items()}
    result.exits = nn.ModuleDict(heads)
    train_epochs(_HeadsOnFrozenBackbone(result), data.train, epochs=config.epochs, lr=base_lr, device=device,
                 loss_fn=_every_output_ce, parameters=result.exits.parameters(), desc="E heads", progress=progress)
    return result


def exit_measurements(model: nn.Module, loader: DataLoader, device: torch.device
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One pass over ``loader``: per sample, each exit head's largest softmax probability (N x K,
    float32 as computed) and whether each head and the final classifier is right (N x (K + 1));
    and the exit names in depth order. Every threshold's exit rates and accuracy follow from them
    (:func:`trainer.exit_sweep.sweep`)."""
    names = list(_exit_names(model))
    was_training = model.training
    model.to(device).eval()
    confidence, correct = [], []
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            probs = torch.stack([F.softmax(out.float(), dim=1) for out in _outputs(model(x))], dim=1)  # N, K+1, C
            top, predicted = probs.max(dim=2)
            confidence.append(top[:, :len(names)].cpu())
            correct.append((predicted == y[:, None]).cpu())
    model.train(was_training)
    if not confidence:
        raise InputError("exit_report: the loader yields no samples")
    return torch.cat(confidence).numpy(), torch.cat(correct).numpy(), names


def exit_report(model: nn.Module, loader: DataLoader, thresholds: Sequence[float],
                device: torch.device) -> list[dict[str, Any]]:
    """Accuracy and exit rates of max-softmax early exit, one row per threshold.

    A sample leaves at the first head (in depth order) whose largest softmax probability is at
    least the threshold, otherwise at the final classifier. Row: ``threshold``, ``accuracy`` (top-1
    %, each sample judged where it left) and ``rates`` (fraction leaving at each exit point and at
    ``"final"``; they sum to 1). One pass over ``loader`` serves every threshold.
    """
    for value in thresholds:
        check_threshold("thresholds", value)
    return sweep(*exit_measurements(model, loader, device)[:2], _exit_names(model), thresholds)

