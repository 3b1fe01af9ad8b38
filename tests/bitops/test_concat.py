"""Concatenation groups: ``torch.cat`` of channel groups, pruned through its parts as torch-pruning prunes it.

Expected values come from routes that do not go through the table: the model torch-pruning really
prunes (forward hooks on it, torch's own parameter count, the shapes its tensors have), and the
kept widths written out by hand with torch-pruning's rounding.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from bitops import Config, InputError, LayerTable, evaluate, kept_from_mapping, kept_from_ratio
from bitops.batch import evaluate_batch
from bitops.table import load_table, save_table
from bitops.trace import trace_model
from tests.bitops.hook_counter import count_macs_params
from tests.bitops.test_trace import _pruned_physically as _pruned

SHAPE = (3, 16, 16)


class ConcatNet(nn.Module):
    """Groups ``a`` (8 channels) and ``b`` (6) joined by ``torch.cat``: ``c`` reads the join through a
    BatchNorm and a ReLU, a functional max pool reads it directly, and ``d`` reads the pool's output
    joined with ``a`` once more (a nested concatenation that holds ``a`` twice); ``c`` and ``d`` add."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.norm = nn.BatchNorm2d(14)
        self.c = nn.Conv2d(14, 5, 3, padding=1)
        self.d = nn.Conv2d(22, 5, 1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        joined = torch.cat([a, self.b(x)], dim=1)
        pooled = nn.functional.max_pool2d(joined, 3, 1, 1)
        again = torch.cat([pooled, a], dim=1)
        return self.fc((self.c(torch.relu(self.norm(joined))) + self.d(again)).mean((2, 3)))


def _full_bits(table: LayerTable, kept: np.ndarray) -> Config:
    return Config(w_bits=np.full(table.num_layers, 32), a_bits=np.full(table.num_layers, 32), kept=kept,
                  exit_probs=np.zeros(table.num_exits))


def _kept(channels: int, keep_ratio: float) -> int:
    """torch-pruning's rounding, written out: it prunes C - int(C x (1 - ratio)) of C channels."""
    return int(channels * (1 - (1 - keep_ratio)))


@functools.cache
def _concat_net() -> tuple[nn.Module, LayerTable]:
    torch.manual_seed(0)
    model = ConcatNet().eval()
    return model, trace_model(model, SHAPE)


def test_rows_reading_a_concatenation_follow_its_parts():
    _, table = _concat_net()
    assert not table.ungrouped
    layer = {name: i for i, name in enumerate(table.layers["name"])}
    op = {name: j for j, name in enumerate(table.ops["name"])}

    def parts(group: int) -> dict[str, int]:
        return {table.group_labels[p]: copies for p, copies in table.group_parts[group]}

    joined, again = table.layers["in_group"][layer["c"]], table.layers["in_group"][layer["d"]]
    assert parts(joined) == {"a": 1, "b": 1} and table.group_labels[joined] == "cat(a, b)"
    assert parts(again) == {"a": 2, "b": 1} and table.group_labels[again] == "cat(a x2, b)"
    assert table.group_channels[joined] == 14 and table.group_channels[again] == 22
    for name in ("max_pool2d", "norm.batch_norm", "relu"):  # the pool reads the torch.cat output itself
        assert table.ops["group"][op[name]] == joined
    assert table.concatenations.tolist() == [bool(p) for p in table.group_parts] and table.concatenations.sum() == 2


@pytest.mark.parametrize("keep_ratio", [0.9, 0.7, 0.5, 0.3])
def test_a_pruned_concatenation_counts_as_the_physically_pruned_model(keep_ratio):
    model, table = _concat_net()
    pruned = _pruned(model, keep_ratio, SHAPE)
    report = evaluate(table, _full_bits(table, kept_from_ratio(table, keep_ratio)))
    hooks = count_macs_params(pruned, SHAPE)
    assert report.totals.macs == sum(macs for macs, _ in hooks.values())
    assert report.totals.params == sum(p.numel() for p in pruned.parameters())
    assert {n: int(m) for n, m in zip(table.layers["name"], report.layer_macs)} == {n: m for n, (m, _) in hooks.items()}
    # Each part keeps its own rounding: int(8 k) + int(6 k), not int(14 k).
    a, b = _kept(8, keep_ratio), _kept(6, keep_ratio)
    assert pruned.norm.num_features == a + b and pruned.d.in_channels == 2 * a + b
    op = {name: j for j, name in enumerate(table.ops["name"])}
    for name in ("max_pool2d", "norm.batch_norm", "relu"):
        assert report.op_elements[op[name]] == (a + b) * SHAPE[1] * SHAPE[2]
    assert report.op_params[op["norm.batch_norm"]] == 2 * (a + b)


def _hand_table() -> LayerTable:
    """Groups 0 (8 channels) and 1 (6), and group 2 = their concatenation, read by one 1x1 conv of 2
    outputs on a 4 x 4 map (plus a BN over the join)."""
    layers = dict(name=["a", "b", "c"], kind=["conv"] * 3, macs_unit=[16] * 3, in_ch=[3, 3, 14], out_ch=[8, 6, 2],
                  groups=[1] * 3, taps=[1] * 3, kernel_h=[1] * 3, kernel_w=[1] * 3, out_h=[4] * 3, out_w=[4] * 3,
                  in_group=[-1, -1, 2], out_group=[0, 1, -1], segment=[0] * 3, exit_index=[-1] * 3,
                  has_weight=[True] * 3, has_bias=[False] * 3, depthwise=[False] * 3)
    ops = dict(name=["bn"], kind=["batch_norm"], category=["bn"], elements=[14 * 16], channels=[14], group=[2],
               params=[28], segment=[0], exit_index=[-1])
    return LayerTable.from_columns(model="hand", input_shape=(3, 4, 4), layers=layers, ops=ops,
                                   group_channels=[8, 6, 14], group_labels=["a", "b", "cat(a, b)"],
                                   group_parts=[[], [], [[0, 1], [1, 1]]])


def test_kept_channels_of_a_concatenation_are_always_its_parts_sum():
    table = _hand_table()
    assert kept_from_ratio(table, 0.5).tolist() == [4, 3, 7]
    assert table.complete_kept(np.array([[4, 3, 1], [8, 1, 1]])).tolist() == [[4, 3, 7], [8, 1, 9]]
    # A glob never selects the concatenation: it follows its parts.
    assert kept_from_mapping(table, {"*": 0.5}).tolist() == [4, 3, 7]
    assert kept_from_mapping(table, {"a": 0.25}).tolist() == [2, 6, 8]
    with pytest.raises(InputError, match=r"^group 'cat\*' matches no channel group of hand; groups are named a, b$"):
        kept_from_mapping(table, {"cat*": 0.5})
    # By hand: conv c reads 4 + 3 channels: 16 x 2 x 7 MACs; the BN keeps 7 channels.
    report = evaluate(table, _full_bits(table, np.array([4, 3, 7])))
    assert report.layer_macs[2] == 16 * 2 * 7 and report.op_elements == [7 * 16] and report.op_params == [14]
    # The batch route derives the concatenation's entry whatever it is given.
    batch = evaluate_batch(table, np.full(3, 32), np.full(3, 32), np.array([[4, 3, 1], [4, 3, 14]]))
    assert batch.macs.tolist() == [report.totals.macs] * 2 and batch.params.tolist() == [report.totals.params] * 2
    with pytest.raises(InputError, match=r"^kept channels of group cat\(a, b\) \(a concatenation\) must be the sum of "
                                         r"its parts' kept channels, 7, got 1$"):
        evaluate(table, _full_bits(table, np.array([4, 3, 1])))


def test_a_table_keeps_its_concatenations_through_json_and_dropped_exits(tmp_path: Path):
    table = _hand_table()
    save_table(table, tmp_path / "t.json")
    loaded = load_table(tmp_path / "t.json")
    assert loaded.group_parts == ((), (), ((0, 1), (1, 1)))
    assert loaded.with_exits([]).group_parts == table.group_parts


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(group_parts=[[], [], [[2, 1]]]), r"concatenation cat\(a, b\) must list other, non-concatenation groups"),
    (lambda d: d.update(group_parts=[[[2, 1]], [], [[0, 1], [1, 1]]]), r"concatenation a must list other"),
    (lambda d: d.update(group_parts=[[], [], [[0, 1], [1, 0]]]), r"with copies >= 1"),
    (lambda d: d.update(group_parts=[[], [], [[0, 1], [1, 2]]]), r"cat\(a, b\) has 14 channels, not the sum of its parts'"),
    (lambda d: d.update(group_divisions=[1, 1, 2]), r"group_divisions: concatenation cat\(a, b\) must have 1"),
    (lambda d: d.update(group_parts=[[], []]), r"group_parts must have 3 entries, got 2"),
    (lambda d: d.update(group_parts=[[], [], [[0]]]), r"group_parts must hold lists of \[group, copies\] integer pairs"),
    (lambda d: d.update(group_parts=[[], [], [[0, True], [1, 1]]]), r"integer pairs, got \[0, True\]"),
    (lambda d: d.update(group_parts="cat"), r"group_parts must be a list with one list"),
], ids=["itself", "nested", "no-copies", "wrong-width", "divisions", "length", "short-pair", "bool", "not-a-list"])
def test_bad_concatenations_are_refused_naming_the_rule(tmp_path: Path, change: Callable[[dict], None], message: str):
    data = _hand_table().to_json_dict()
    change(data)
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=message):
        load_table(tmp_path / "t.json")


def test_count_prunes_a_torchvision_concatenating_model_as_torch_pruning_does(capsys):
    from chaincomp.cli import main

    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1(num_classes=10).eval()
    pruned = _pruned(model, 0.5, (3, 64, 64))
    code = main(["count", "torchvision:squeezenet1_1", "--num-classes", "10", "--input", "3,64,64",
                 "--keep-ratio", "0.5", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["ungrouped"] == {} and any(g["label"].startswith("cat(") for g in data["groups"])
    assert data["macs"] == sum(macs for macs, _ in count_macs_params(pruned, (3, 64, 64)).values())
    assert data["params"] == sum(p.numel() for p in pruned.parameters())


@pytest.mark.slow
@pytest.mark.parametrize(("build", "shape"), [
    pytest.param(lambda: torchvision.models.densenet121(num_classes=10), (3, 32, 32), id="densenet121"),
    pytest.param(lambda: torchvision.models.googlenet(num_classes=10, aux_logits=False, init_weights=False),
                 (3, 64, 64), id="googlenet"),
    pytest.param(lambda: torchvision.models.inception_v3(num_classes=10, aux_logits=False, init_weights=False),
                 (3, 75, 75), id="inception_v3"),
])
def test_torchvision_concatenating_models_count_as_physically_pruned(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    table = trace_model(model, shape)
    assert not table.ungrouped and table.concatenations.any()
    for keep_ratio in (0.5, 0.3):
        pruned = _pruned(model, keep_ratio, shape)
        report = evaluate(table, _full_bits(table, kept_from_ratio(table, keep_ratio)))
        hooks = count_macs_params(pruned, shape)
        assert report.totals.macs == sum(macs for macs, _ in hooks.values())
        assert report.totals.params == sum(p.numel() for p in pruned.parameters())
        assert {name: int(macs) for name, macs in zip(table.layers["name"], report.layer_macs)} == \
            {name: macs for name, (macs, _) in hooks.items()}


def test_an_exit_head_on_a_concatenation_is_pruned_through_its_parts_and_can_be_dropped():
    """A conv exit head after ``norm`` (which normalises the concatenation): its own channels follow
    its own group, its input the concatenation. Dropping it (``with_exits([])``) must leave the
    table of the model traced without it, groups renumbered, at every keep ratio."""
    from bitops.trace import attach_exits

    torch.manual_seed(0)
    plain = ConcatNet().eval()
    with_head = copy.deepcopy(plain)
    attach_exits(with_head, ["norm"], "conv", SHAPE)
    table = trace_model(with_head, SHAPE)
    assert table.exit_names == ("norm",) and not table.ungrouped
    head_rows = np.flatnonzero(table.layers["exit_index"] == 0)
    assert table.concatenations[table.layers["in_group"][head_rows[0]]]
    dropped, bare = table.with_exits([]), trace_model(plain, SHAPE)

    def named(t: LayerTable) -> dict[str, list[tuple[str, int]]]:  # group order is torch-pruning's: compare by label
        return {label: sorted((t.group_labels[p], c) for p, c in parts) for label, parts in zip(t.group_labels, t.group_parts)}

    assert named(dropped) == named(bare)
    for keep_ratio in (0.7, 0.4):
        ours = evaluate(dropped, _full_bits(dropped, kept_from_ratio(dropped, keep_ratio)))
        theirs = evaluate(bare, _full_bits(bare, kept_from_ratio(bare, keep_ratio)))
        assert (ours.totals.macs, ours.totals.params) == (theirs.totals.macs, theirs.totals.params)
    # With the head: its MACs at keep 0.5 by hand, a 3x3 conv from the kept 4 + 3 channels to its own kept ones.
    report = evaluate(table, _full_bits(table, kept_from_ratio(table, 0.5)))
    conv = head_rows[0]
    own = kept_from_ratio(table, 0.5)[table.layers["out_group"][conv]]
    assert report.layer_macs[conv] == SHAPE[1] * SHAPE[2] * 9 * own * 7
