"""Fixtures of the benches: a ResNet34 (CIFAR form) LayerTable written out by hand.

Stand-in until the shipped, traced ``resnet34_cifar`` table exists; keep the fixture name
(``resnet34_table``) when swapping it for ``bitops.zoo``'s table.

Shape (He et al. 2016 basic blocks, CIFAR stem): 3x3 stem 3->64 at 32x32, stages of [3, 4, 6, 3]
blocks at widths 64/128/256/512 and 32/16/8/4 pixels, a 1x1 stride-2 projection shortcut at the
entry of stages 2-4, global average pool, fc 512->10: 1 + 2*16 + 3 + 1 = 37 MAC rows. Channel
groups: one per stage for the residual-coupled channels (stem output, every block's second conv
and the shortcuts meet at the adds), one per block for its inner channels (conv1 out = conv2 in).
"""

from __future__ import annotations

from typing import Any

import pytest

from bitops import LayerTable

BLOCKS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
SIZES = (32, 16, 8, 4)
NUM_CLASSES = 10


def _resnet34_columns() -> tuple[dict[str, list[Any]], dict[str, list[Any]], list[int], list[str]]:
    layers: dict[str, list[Any]] = {c: [] for c in (
        "name", "kind", "macs_unit", "in_ch", "out_ch", "groups", "taps", "kernel_h", "kernel_w", "out_h", "out_w",
        "in_group", "out_group", "segment", "exit_index", "has_weight", "has_bias", "depthwise")}
    ops: dict[str, list[Any]] = {c: [] for c in (
        "name", "kind", "category", "elements", "channels", "group", "params", "segment", "exit_index")}
    group_channels: list[int] = []
    group_labels: list[str] = []

    def group(label: str, channels: int) -> int:
        group_labels.append(label)
        group_channels.append(channels)
        return len(group_channels) - 1

    def op(name: str, kind: str, category: str, channels: int, size: int, grp: int,
           params_per_channel: int = 0) -> None:
        for col, value in (("name", name), ("kind", kind), ("category", category),
                           ("elements", channels * size * size), ("channels", channels), ("group", grp),
                           ("params", channels * params_per_channel), ("segment", 0), ("exit_index", -1)):
            ops[col].append(value)

    def mac(name: str, kind: str, in_ch: int, out_ch: int, kernel: int, size: int, in_group: int, out_group: int,
            bias: bool = False) -> None:
        for col, value in (("name", name), ("kind", kind), ("macs_unit", kernel * kernel * size * size),
                           ("in_ch", in_ch), ("out_ch", out_ch), ("groups", 1), ("taps", kernel * kernel),
                           ("kernel_h", kernel), ("kernel_w", kernel), ("out_h", size), ("out_w", size),
                           ("in_group", in_group), ("out_group", out_group), ("segment", 0), ("exit_index", -1),
                           ("has_weight", True), ("has_bias", bias), ("depthwise", False)):
            layers[col].append(value)
        if kind == "conv":
            op(f"{name}.bn", "batch_norm", "bn", out_ch, size, out_group, params_per_channel=2)

    stage_groups = [group(f"layer{s + 1}", w) for s, w in enumerate(WIDTHS)]
    mac("conv1", "conv", 3, WIDTHS[0], 3, SIZES[0], -1, stage_groups[0])
    op("relu", "relu", "act", WIDTHS[0], SIZES[0], stage_groups[0])
    in_ch = WIDTHS[0]
    for s, (n_blocks, width, size) in enumerate(zip(BLOCKS, WIDTHS, SIZES)):
        for b in range(n_blocks):
            prefix = f"layer{s + 1}.{b}"
            inner = group(f"{prefix}.inner", width)
            in_group = stage_groups[s - 1] if b == 0 and s > 0 else stage_groups[s]
            mac(f"{prefix}.conv1", "conv", in_ch, width, 3, size, in_group, inner)
            op(f"{prefix}.relu1", "relu", "act", width, size, inner)
            mac(f"{prefix}.conv2", "conv", width, width, 3, size, inner, stage_groups[s])
            if b == 0 and s > 0:
                mac(f"{prefix}.shortcut", "conv", in_ch, width, 1, size, in_group, stage_groups[s])
            op(f"{prefix}.add", "add", "add", width, size, stage_groups[s])
            op(f"{prefix}.relu2", "relu", "act", width, size, stage_groups[s])
            in_ch = width
    op("avgpool", "adaptive_avg_pool2d", "pool", WIDTHS[-1], 1, stage_groups[-1])
    mac("fc", "linear", WIDTHS[-1], NUM_CLASSES, 1, 1, stage_groups[-1], -1, bias=True)
    return layers, ops, group_channels, group_labels


@pytest.fixture(scope="session")
def resnet34_table() -> LayerTable:
    layers, ops, group_channels, group_labels = _resnet34_columns()
    table = LayerTable.from_columns(model="resnet34_cifar (hand-built)", input_shape=(3, 32, 32), layers=layers,
                                    ops=ops, group_channels=group_channels, group_labels=group_labels)
    assert table.num_layers == 37
    return table
