"""The training loop every stage shares: device choice, SGD epochs, top-1 accuracy.

One optimizer recipe for every stage, so stages differ only in what they train, on which loss and
at which learning rate (the paper, section 3.1: the same training recipe for every pipeline).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from bitops.errors import InputError

__all__ = ["LossFn", "evaluate_accuracy", "final_logits", "resolve_device", "train_epochs"]

# SGD with momentum and weight decay: the usual CIFAR ResNet recipe (He et al. 2016, Sec. 4.2),
# which Tian et al.'s distillation code, the paper's D, also uses.
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4

# loss_fn(model output, inputs, targets) -> scalar loss; the output is a tensor or a list of them.
LossFn = Callable[[torch.Tensor | list[torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    head, _, index = name.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise InputError(f"device {name}: no CUDA device is available (torch {torch.__version__}); "
                         "use `device` cpu or auto")
    if index and int(index) >= torch.cuda.device_count():
        raise InputError(f"device {name}: only {torch.cuda.device_count()} CUDA device(s) are available")
    return torch.device(name)


def final_logits(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """The final classifier's logits: the output itself, or the last of [exit logits..., final]."""
    return output[-1] if isinstance(output, (list, tuple)) else output


def _final_cross_entropy(output: torch.Tensor | list[torch.Tensor], _x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(final_logits(output), y)


def _show_progress(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def train_epochs(
    model: nn.Module,
    loader: DataLoader,
    *,
    epochs: int,
    lr: float,
    device: torch.device,
    loss_fn: LossFn | None = None,
    parameters: Iterable[nn.Parameter] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place for ``epochs`` epochs; return each epoch's mean loss per sample.

    SGD (momentum 0.9, weight decay 5e-4) over ``parameters`` (default: all of the model's) with
    a cosine learning-rate schedule from ``lr`` over the epochs, stepped once per epoch.
    ``loss_fn`` defaults to cross-entropy on the final logits. The model is left in train mode.
    """
    if epochs == 0:
        return []
    model.to(device)
    params = list(model.parameters() if parameters is None else parameters)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = loss_fn or _final_cross_entropy
    losses = []
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"{desc} {epoch + 1}/{epochs}", leave=False, disable=not _show_progress(progress))
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.4f}")
        if count == 0:
            raise InputError(f"{desc}: the training loader yields no samples")
        schedule.step()
        losses.append(total / count)
        if not math.isfinite(losses[-1]):
            raise InputError(f"{desc}: the loss diverged to {losses[-1]} in epoch {epoch + 1}; use a smaller learning rate "
                             f"than {lr}")
    return losses


def evaluate_accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Top-1 accuracy (%) of the final logits over ``loader``, in eval mode; the mode is restored."""
    was_training = model.training
    model.to(device).eval()
    correct, count = 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            correct += (final_logits(model(x)).argmax(dim=1) == y).sum().item()
            count += len(y)
    model.train(was_training)
    if count == 0:
        raise InputError("the evaluation loader yields no samples")
    return 100.0 * correct / count
