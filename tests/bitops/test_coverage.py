"""Every torchvision classifier, and common timm CNNs, counted exactly at their native input.

References that do not go through the tracer, on the same architecture built separately (on
torch's ``meta`` device where it builds there: shapes only, no arithmetic):

* torch's own ``FlopCounterMode`` for the total: every conv, linear, matmul and attention product
  at the dispatcher (FLOPs / 2 = MACs). Gradients stay enabled, so nn.MultiheadAttention runs its
  unfused path, which FlopCounterMode sees (under no_grad its fused CPU kernel is invisible to it);
* forward hooks for each Conv/Linear module's MACs (``tests.bitops.hook_counter``'s formulas);
* torch's parameter count, less the modules the table lists as never run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bitops import evaluate, trace, uniform_config
from bitops.models import ModelSpec, load_model_table

TORCHVISION = torchvision.models.list_models(module=torchvision.models)
# torch-pruning's analysis of window attention outgrows any bound (it is stopped), and it raises on
# ShuffleNet's channel shuffle: these are counted without channel groups, and only these.
UNGROUPED = ("maxvit_t", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
             "swin_b", "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t")
# Concatenations (Inception, DenseNet, GoogLeNet, SqueezeNet's fire modules): rows reading them follow a
# concatenation group, pruned through its parts, so these are prunable too.
CONCATENATING = ("densenet121", "densenet161", "densenet169", "densenet201", "googlenet", "inception_v3",
                 "squeezenet1_0", "squeezenet1_1")


def _reference(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> tuple[int, dict[str, int], int]:
    """(total MACs by FlopCounterMode, {Conv/Linear module: MACs} by hooks, parameters)."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, device = build(), "meta"
    except Exception:  # a builder that computes with tensors (RegNet's widths): build it for real
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, device = build(), "cpu"
    model.eval()
    macs: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                count = output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            else:
                count = inputs[0].numel() * module.out_features
            macs[name] = macs.get(name, 0) + count
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *input_shape, device=device))
    for handle in handles:
        handle.remove()
    return counter.get_total_flops() // 2, macs, sum(p.numel() for p in model.parameters())


def _check(table, reference) -> None:
    total, hooks, params = reference
    report = evaluate(table, uniform_config(table))
    assert dict(table.unsupported_ops) == {}
    assert report.totals.macs == total
    rows = {}
    for name, kind, macs in zip(table.layers["name"], table.layers["kind"], report.layer_macs):
        if kind in ("conv", "linear") and name in hooks:
            rows[name] = rows.get(name, 0) + int(macs)
    assert rows == hooks
    assert report.totals.params == params - sum(table.unused.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION)
def test_every_torchvision_classifier_counts_exactly(name, monkeypatch):
    # The ones whose analysis never ends give up sooner; DenseNet-201's takes ~20 s on 2 cores.
    monkeypatch.setattr(trace, "GROUP_SECONDS", 5.0 if name in UNGROUPED else 120.0)
    table = load_model_table(ModelSpec(f"torchvision:{name}"))
    assert table.input_shape == trace.torchvision_input_shape(name)
    _check(table, _reference(lambda: torchvision.models.get_model(name, weights=None), table.input_shape))
    if name in UNGROUPED:
        assert table.num_groups == 0 and table.ungrouped
    else:
        assert table.num_groups > 0 and not table.ungrouped, list(table.ungrouped.items())[:3]
        assert table.concatenations.any() == (name in CONCATENATING)


# Common timm CNNs (timm is a test dependency): split convs (MixNet), ghost modules' concatenations,
# deep aggregation, cross-stage partial blocks, squeeze-excite, channels-last ConvNeXt.
TIMM = ("resnet50", "efficientnet_b0", "mixnet_s", "mobilenetv3_large_100", "regnety_016", "dla34",
        "ghostnet_100", "convnext_nano", "cspresnet50", "rexnet_100")


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM)
def test_common_timm_cnns_count_exactly(name):
    import timm

    table = load_model_table(ModelSpec(f"timm:{name}"))
    assert table.input_shape == tuple(timm.models.get_pretrained_cfg(name).input_size)
    _check(table, _reference(lambda: timm.create_model(name, pretrained=False), table.input_shape))
