"""MAC and parameter counts per Conv2d/Linear from forward hooks: a reference for trace tests.

Independent of `bitops` tracing: it reads shapes off the modules as torch runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["count_macs_params"]


def _macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """MACs of one call with batch size 1."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return y.numel() * (module.in_channels // module.groups) * kh * kw
    # Linear: one in*out product per input row (every leading dim of a batch-1 input).
    rows = x.numel() // module.in_features
    return rows * module.in_features * module.out_features


def count_macs_params(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, int]]:
    """{module name: (MACs, params)} for every Conv2d and Linear that runs in one forward pass.

    Runs a (1, *input_shape) zero tensor in eval mode under torch.no_grad, then restores the
    model's mode. MACs add up over repeated calls; params are weight plus bias numel. Modules that
    never run are left out, as a trace would leave them out.
    """
    macs: dict[str, int] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def record(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> None:
            macs[name] = macs.get(name, 0) + _macs(module, inputs[0], output)

        return record

    modules = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {n: (m, sum(p.numel() for p in modules[n].parameters())) for n, m in macs.items()}
