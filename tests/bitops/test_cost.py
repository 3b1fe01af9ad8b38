"""The cost model against routes that do not go through its own formulas.

* a hand-built toy chain whose counts are written out here from the layer shapes (closed form);
* a Monte-Carlo run of samples leaving at exits, against the expected cost;
* torch-pruning itself (the pruner the trainer uses) and fvcore on the physically pruned model;
* properties (hypothesis): monotone in bits and kept channels, never negative, batch == reference;
* the boundary checks (one ``pytest.raises`` per rule) and the JSON format of LayerTable.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitops import (
    BitsRule,
    Config,
    InputError,
    LayerTable,
    Policy,
    bits_from_rules,
    evaluate,
    evaluate_batch,
    kept_channels,
    kept_from_mapping,
    kept_from_ratio,
    load_table,
    reference_totals,
    save_table,
    uniform_config,
)
from tests.bitops.tables import configs, random_configs, random_table, tables

# ---- the toy chain -----------------------------------------------------------------------------
# input 3x8x8 -> stem conv3x3 (4) -> [exit0: conv3x3 4->10 at 2x2] -> block1 conv3x3 (6) at 4x4
# -> [exit1: conv1x1 6->10 at 4x4] -> block2 conv3x3 (8) at 2x2 -> flatten 8*2*2 -> fc 10.
# Channel groups: g0 = stem output (4), g1 = block1 output (6), g2 = block2 output (8).
GROUP_CHANNELS = (4, 6, 8)
# name: (kind, in_ch, out_ch, kernel, out_hw, in_group, out_group, exit_index, has_bias)
TOY_ROWS = {
    "stem": ("conv", 3, 4, 3, 8, -1, 0, -1, False),
    "exit0.conv": ("conv", 4, 10, 3, 2, 0, -1, 0, True),
    "block1": ("conv", 4, 6, 3, 4, 0, 1, -1, False),
    "exit1.conv": ("conv", 6, 10, 1, 4, 1, -1, 1, True),
    "block2": ("conv", 6, 8, 3, 2, 1, 2, -1, False),
    "fc": ("linear", 32, 10, 1, 1, 2, -1, -1, True),
}
TOY_SEGMENT = {"stem": 0, "exit0.conv": 0, "block1": 1, "exit1.conv": 1, "block2": 2, "fc": 2}
# BN after each backbone conv: (channels, elements, group, segment); 2 parameters per channel.
TOY_BN = {"stem.bn": (4, 4 * 64, 0, 0), "block1.bn": (6, 6 * 16, 1, 1), "block2.bn": (8, 8 * 4, 2, 2)}


def toy_table() -> LayerTable:
    names = list(TOY_ROWS)
    rows = [TOY_ROWS[n] for n in names]
    layers = {
        "name": names, "kind": [r[0] for r in rows], "in_ch": [r[1] for r in rows], "out_ch": [r[2] for r in rows],
        "groups": [1] * 6, "taps": [r[3] ** 2 for r in rows], "kernel_h": [r[3] for r in rows],
        "kernel_w": [r[3] for r in rows], "out_h": [r[4] for r in rows], "out_w": [r[4] for r in rows],
        "macs_unit": [r[3] ** 2 * r[4] ** 2 for r in rows], "in_group": [r[5] for r in rows],
        "out_group": [r[6] for r in rows], "segment": [TOY_SEGMENT[n] for n in names],
        "exit_index": [r[7] for r in rows], "has_weight": [True] * 6, "has_bias": [r[8] for r in rows],
        "depthwise": [False] * 6,
    }
    bn = list(TOY_BN.items())
    ops = {
        "name": [n for n, _ in bn], "kind": ["batch_norm"] * 3, "category": ["bn"] * 3,
        "elements": [v[1] for _, v in bn], "channels": [v[0] for _, v in bn], "group": [v[2] for _, v in bn],
        "params": [2 * v[0] for _, v in bn], "segment": [v[3] for _, v in bn], "exit_index": [-1] * 3,
    }
    return LayerTable.from_columns(model="toy", input_shape=(3, 8, 8), layers=layers, ops=ops,
                                   group_channels=GROUP_CHANNELS, group_labels=["g0", "g1", "g2"],
                                   exit_names=["exit0", "exit1"])


def toy_closed_form(kept: tuple[int, int, int]) -> dict[str, dict[str, int]]:
    """Per layer: MACs, fan-in and weights from the shapes, written out (not through macs_unit)."""
    width = {-1: None, 0: kept[0], 1: kept[1], 2: kept[2]}
    out: dict[str, dict[str, int]] = {}
    for name, (kind, in_ch, out_ch, k, hw, g_in, g_out, _, bias) in TOY_ROWS.items():
        cin = in_ch if g_in < 0 else width[g_in] * (in_ch // GROUP_CHANNELS[g_in])
        cout = out_ch if g_out < 0 else width[g_out]
        if kind == "conv":  # every output pixel of every output channel: cin*k*k multiply-adds
            macs, fan_in = cout * hw * hw * cin * k * k, cin * k * k
        else:  # linear: one multiply-add per (output, input feature)
            macs, fan_in = cout * cin, cin
        out[name] = {"macs": macs, "fan_in": fan_in, "weights": cout * fan_in, "bias": cout if bias else 0}
    return out


def test_toy_full_width_counts_match_the_shapes() -> None:
    layers = toy_closed_form(GROUP_CHANNELS)
    # The numbers themselves, so a slip in the closed form cannot hide: 4*3*9*64 for the stem...
    assert [layers[n]["macs"] for n in TOY_ROWS] == [6912, 1440, 3456, 960, 1728, 320]
    report = evaluate(toy_table(), uniform_config(toy_table()))
    assert report.layer_macs == [float(layers[n]["macs"]) for n in TOY_ROWS]
    assert report.totals.macs == 6912 + 1440 + 3456 + 960 + 1728 + 320
    assert report.totals.bitops == 1024 * report.totals.macs
    weights = sum(v["weights"] for v in layers.values())
    aux = sum(v["bias"] for v in layers.values()) + 2 * (4 + 6 + 8)
    assert report.totals.params == weights + aux
    assert report.totals.storage_bits == 32 * (weights + aux)


@pytest.mark.parametrize("kept", [(4, 6, 8), (3, 5, 6), (1, 1, 1), (2, 6, 3)])
@pytest.mark.parametrize("w_bits, a_bits", [(32, 32), (1, 8), (4, 2)])
def test_toy_pruned_quantized_counts_are_the_closed_form(kept: tuple[int, int, int], w_bits: int,
                                                         a_bits: int) -> None:
    table = toy_table()
    layers = toy_closed_form(kept)
    config = Config(w_bits=np.full(6, w_bits), a_bits=np.full(6, a_bits), kept=np.array(kept), exit_probs=np.zeros(2))
    for policy in (Policy(), Policy(ops="flops"), Policy(aux_bits=0), Policy(bn="counted", nonmac_bits=8)):
        totals = evaluate(table, config, policy).totals
        per_mac = 2 if policy.ops == "flops" else 1
        macs = per_mac * sum(v["macs"] for v in layers.values())
        bn_elements = sum(kept[g] * elements // channels for channels, elements, g, _ in TOY_BN.values())
        bn_bitops = per_mac * bn_elements * 8 * 8 if policy.bn == "counted" else 0
        weights = sum(v["weights"] for v in layers.values())
        aux = sum(v["bias"] for v in layers.values()) + 2 * sum(kept)
        assert totals.macs == macs
        assert totals.bitops == macs * w_bits * a_bits + bn_bitops
        assert totals.params == weights + aux
        assert totals.storage_bits == weights * w_bits + aux * policy.aux_bits


def test_toy_accumulator_formula_is_baskin_et_al() -> None:
    table, kept = toy_table(), (3, 5, 6)
    layers = toy_closed_form(kept)
    config = Config(w_bits=np.full(6, 2), a_bits=np.full(6, 4), kept=np.array(kept), exit_probs=np.zeros(2))
    got = evaluate(table, config, Policy(bitops_formula="accumulator")).totals.bitops
    want = sum(v["macs"] * (2 * 4 + 2 + 4 + math.log2(v["fan_in"])) for v in layers.values())
    assert got == pytest.approx(want, rel=1e-14)


def test_toy_first_last_and_input_bits_pin_the_stem_and_the_classifier() -> None:
    table, layers = toy_table(), toy_closed_form(GROUP_CHANNELS)
    config = uniform_config(table, w_bits=2, a_bits=2)
    macs = {n: v["macs"] for n, v in layers.items()}
    middle = sum(m for n, m in macs.items() if n not in ("stem", "fc"))
    pinned = evaluate(table, config, Policy(first_last_bits=8)).totals.bitops
    assert pinned == middle * 4 + (macs["stem"] + macs["fc"]) * 8 * 8
    eight_bit_input = evaluate(table, config, Policy(input_bits=8)).totals.bitops
    assert eight_bit_input == (middle + macs["fc"]) * 4 + macs["stem"] * 2 * 8
    # Exit heads are neither the first nor the last layer of the backbone.
    both = evaluate(table, config, Policy(first_last_bits=32, input_bits=8)).totals.bitops
    assert both == middle * 4 + macs["stem"] * 32 * 8 + macs["fc"] * 32 * 32


@pytest.mark.parametrize("exit_probs", [(0.0, 0.0), (0.4, 0.0), (0.25, 0.5), (0.3, 0.7), (1.0, 0.0), (0.1, 0.35)])
def test_toy_expected_bitops_with_exits(exit_probs: tuple[float, float]) -> None:
    q0, q1 = exit_probs
    table, layers = toy_table(), toy_closed_form(GROUP_CHANNELS)
    config = uniform_config(table, w_bits=4, a_bits=8, exit_probs=exit_probs)
    cost = {n: v["macs"] * 4 * 8 for n, v in layers.items()}
    # Sum over layers of cost x P(reach): segment 0 always, segment 1 unless left at exit0, ...
    by_reach = (cost["stem"] + cost["exit0.conv"] + (1 - q0) * (cost["block1"] + cost["exit1.conv"])
                + (1 - q0 - q1) * (cost["block2"] + cost["fc"]))
    # ...which is the average over where a sample leaves of what it ran up to there.
    leave0 = cost["stem"] + cost["exit0.conv"]
    leave1 = leave0 + cost["block1"] + cost["exit1.conv"]
    runs_all = sum(cost.values())
    by_exit = q0 * leave0 + q1 * leave1 + (1 - q0 - q1) * runs_all
    got = evaluate(table, config).totals.bitops
    assert got == pytest.approx(by_reach, rel=1e-13)
    assert got == pytest.approx(by_exit, rel=1e-13)
    # Storage and parameters do not depend on who leaves where.
    nobody_leaves = evaluate(table, uniform_config(table, w_bits=4, a_bits=8)).totals
    assert evaluate(table, config).totals.params == nobody_leaves.params


# ---- Monte Carlo -------------------------------------------------------------------------------

def _static_row_costs(table: LayerTable, config: Config, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """BitOps of every MAC row and op row when it runs (nobody leaves early, so reach is 1)."""
    still = Config(w_bits=config.w_bits, a_bits=config.a_bits, kept=config.kept, exit_probs=np.zeros(table.num_exits))
    report = evaluate(table, still, policy)
    return np.array(report.layer_bitops), np.array(report.op_bitops)


def _runs(segment: np.ndarray, exit_index: np.ndarray, leaves_at: int) -> np.ndarray:
    """Rows a sample runs when it leaves at exit ``leaves_at`` (K: it reaches the classifier).

    It runs the backbone up to that exit (segments 0..leaves_at) and every head it passed,
    including the one it left by (heads 0..leaves_at).
    """
    backbone = (exit_index < 0) & (segment <= leaves_at)
    heads = (exit_index >= 0) & (exit_index <= leaves_at)
    return backbone | heads


@pytest.mark.parametrize("seed", range(6))
def test_expected_bitops_equal_a_monte_carlo_run(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = random_table(rng, n_layers=20, n_ops=10, n_groups=4, n_exits=1 + seed % 3)
    w_bits, a_bits, kept, _ = random_configs(rng, table, 1)
    exit_probs = rng.dirichlet(np.ones(table.num_exits + 1))[:-1] * rng.uniform(0.5, 1.0)
    config = Config(w_bits=w_bits[0], a_bits=a_bits[0], kept=kept[0], exit_probs=exit_probs)
    policy = Policy(elementwise="counted", bitops_formula="accumulator" if seed % 2 else "product")
    layer_cost, op_cost = _static_row_costs(table, config, policy)
    k = table.num_exits
    cost_if_leaving_at = np.array([
        layer_cost[_runs(table.layers["segment"], table.layers["exit_index"], e)].sum()
        + op_cost[_runs(table.ops["segment"], table.ops["exit_index"], e)].sum()
        for e in range(k + 1)])
    n = 200_000
    leaves_at = rng.choice(k + 1, size=n, p=np.append(exit_probs, 1 - exit_probs.sum()))
    samples = cost_if_leaving_at[leaves_at]
    tolerance = 5 * samples.std() / math.sqrt(n)
    expected = evaluate(table, config, policy).totals.bitops
    assert abs(samples.mean() - expected) <= tolerance
    assert tolerance < 0.05 * expected  # the check has teeth: 5 sigma is a small band


# ---- mixed precision ---------------------------------------------------------------------------

def test_bits_from_rules_name_and_glob_give_the_hand_sum() -> None:
    table = toy_table()
    rules = [BitsRule("block1", w_bits=2), BitsRule("exit*", a_bits=8), BitsRule("fc", w_bits=8, a_bits=8),
             BitsRule("exit1.*", w_bits=3)]
    w, a = bits_from_rules(table, rules, w_bits=4, a_bits=6)
    # Written out by hand, in table order: stem, exit0.conv, block1, exit1.conv, block2, fc.
    assert w.tolist() == [4, 4, 2, 3, 4, 8]
    assert a.tolist() == [6, 8, 6, 8, 6, 8]
    macs = {n: v["macs"] for n, v in toy_closed_form(GROUP_CHANNELS).items()}
    hand = (macs["stem"] * 4 * 6 + macs["exit0.conv"] * 4 * 8 + macs["block1"] * 2 * 6 + macs["exit1.conv"] * 3 * 8
            + macs["block2"] * 4 * 6 + macs["fc"] * 8 * 8)
    config = Config(w_bits=w, a_bits=a, kept=np.array(GROUP_CHANNELS), exit_probs=np.zeros(2))
    assert evaluate(table, config).totals.bitops == hand


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("w_bits, a_bits", [(1, 1), (1, 8), (2, 2), (4, 8), (8, 8), (3, 5), (32, 32), (16, 1)])
def test_uniform_bits_give_bitops_cr_of_1024_over_bw_ba(seed: int, w_bits: int, a_bits: int) -> None:
    rng = np.random.default_rng(seed)
    table = random_table(rng, n_layers=15, n_ops=8, n_groups=3, n_exits=0)
    for policy in (Policy(matmul_bits="weight"), Policy(ops="flops", matmul_bits="weight")):
        reference = reference_totals(table, policy)
        compressed = evaluate(table, uniform_config(table, w_bits=w_bits, a_bits=a_bits), policy).totals
        assert reference.bitops / compressed.bitops == 1024 / (w_bits * a_bits)


@pytest.mark.parametrize("seed", range(4))
def test_activation_products_cost_a_bits_on_both_sides(seed: int) -> None:
    """By default a matmul row (two activations, no weights) costs MACs x a x a; a layer MACs x w x a."""
    rng = np.random.default_rng(seed)
    table = random_table(rng, n_layers=15, n_ops=8, n_groups=3, n_exits=0)
    matmul = np.array([kind == "matmul" for kind in table.layers["kind"]])
    assert matmul.any() and not matmul.all()
    w, a = rng.integers(1, 9, table.num_layers), rng.integers(1, 9, table.num_layers)
    config = Config(w_bits=w, a_bits=a, kept=table.group_channels.copy(), exit_probs=np.zeros(0))
    macs = np.array(evaluate(table, config).layer_macs)
    hand = int((macs * np.where(matmul, a, w) * a).sum())
    assert evaluate(table, config).totals.bitops == hand
    assert evaluate(table, config, Policy(matmul_bits="weight")).totals.bitops == int((macs * w * a).sum())
    for engine in ("numpy", "numba"):
        assert int(evaluate_batch(table, w, a, config.kept, engine=engine).bitops[0]) == hand


# ---- pruning: kept_channels against torch-pruning itself ---------------------------------------

def _tiny_net(c1: int, c2: int) -> Any:
    """stem conv (c1) -> residual block on c1 -> stride-2 conv (c2) -> pool 2x2 -> flatten -> fc."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, c1, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(c1)
            self.conv = nn.Conv2d(c1, c1, 3, padding=1, bias=False)
            self.conv_bn = nn.BatchNorm2d(c1)
            self.down = nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False)
            self.down_bn = nn.BatchNorm2d(c2)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(c2 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem_bn(self.stem(x)))
            x = torch.relu(self.conv_bn(self.conv(x)) + x)  # couples stem's and conv's outputs
            x = torch.relu(self.down_bn(self.down(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(c1 * 1000 + c2)
    return Tiny().eval()


def _tiny_table(c1: int, c2: int) -> LayerTable:
    """The same net written as a LayerTable by hand: g0 = the residual-coupled c1, g1 = c2."""
    layers = {
        "name": ["stem", "conv", "down", "fc"], "kind": ["conv", "conv", "conv", "linear"],
        "in_ch": [3, c1, c1, 4 * c2], "out_ch": [c1, c1, c2, 10], "groups": [1] * 4, "taps": [9, 9, 9, 1],
        "kernel_h": [3, 3, 3, 1], "kernel_w": [3, 3, 3, 1], "out_h": [8, 8, 4, 1], "out_w": [8, 8, 4, 1],
        "macs_unit": [64 * 9, 64 * 9, 16 * 9, 1], "in_group": [-1, 0, 0, 1], "out_group": [0, 0, 1, -1],
        "segment": [0] * 4, "exit_index": [-1] * 4, "has_weight": [True] * 4,
        "has_bias": [False, False, False, True], "depthwise": [False] * 4,
    }
    ops = {"name": ["stem_bn", "conv_bn", "down_bn"], "kind": ["batch_norm"] * 3, "category": ["bn"] * 3,
           "elements": [64 * c1, 64 * c1, 16 * c2], "channels": [c1, c1, c2], "group": [0, 0, 1],
           "params": [2 * c1, 2 * c1, 2 * c2], "segment": [0] * 3, "exit_index": [-1] * 3}
    return LayerTable.from_columns(model="tiny", input_shape=(3, 8, 8), layers=layers, ops=ops,
                                   group_channels=[c1, c2], group_labels=["g0", "g1"])


KEEP_RATIOS = (0.1, 0.25, 0.3, 0.5, 0.7, 0.9)
CHANNEL_PAIRS = ((7, 10), (13, 100), (10, 7), (100, 13))


@pytest.mark.parametrize("c1, c2", CHANNEL_PAIRS)
def test_kept_channels_and_pruned_counts_match_torch_pruning(c1: int, c2: int) -> None:
    torch = pytest.importorskip("torch")
    tp = pytest.importorskip("torch_pruning")
    flop_count = pytest.importorskip("fvcore.nn").FlopCountAnalysis
    table = _tiny_table(c1, c2)
    example = torch.randn(1, 3, 8, 8)
    checked = 0
    for keep_ratio in KEEP_RATIOS:
        want = (kept_channels(c1, keep_ratio), kept_channels(c2, keep_ratio))
        if min(want) < 1:  # torch-pruning would remove the whole group; the model must refuse
            with pytest.raises(InputError, match="keeps 0"):
                kept_from_ratio(table, keep_ratio)
            continue
        model = _tiny_net(c1, c2)
        # The trainer's call (DESIGN.md: L1 magnitude, dependency-aware, classifier outputs kept).
        pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=1 - keep_ratio, ignored_layers=[model.fc])
        pruner.step()
        assert (model.stem.out_channels, model.down.out_channels) == want, f"keep_ratio {keep_ratio}"
        assert model.conv.out_channels == model.conv.in_channels == want[0]
        assert model.fc.in_features == 4 * want[1]
        # The analytic count of the pruned configuration equals the physically pruned model's.
        config = Config(w_bits=np.full(4, 32), a_bits=np.full(4, 32), kept=kept_from_ratio(table, keep_ratio),
                        exit_probs=np.zeros(0))
        assert config.kept.tolist() == list(want)
        totals = evaluate(table, config).totals
        assert totals.params == sum(p.numel() for p in model.parameters())
        counts = flop_count(model, example).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = counts.by_operator()
        assert totals.macs == by_op["conv"] + by_op["linear"]
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("channels", [1, 2, 3, 7, 10, 13, 64, 100, 128, 512])
def test_kept_channels_is_int_of_channels_times_one_minus_pruning_ratio(channels: int) -> None:
    # The float expression torch-pruning evaluates (BasePruner: int(C * (1 - pruning_ratio))),
    # not the "obvious" round(C * keep) or int(C * keep): 1 - (1 - 0.1) is 0.09999999999999998.
    assert kept_channels(100, 0.1) == 9 and kept_channels(10, 0.1) == 0 and kept_channels(7, 0.5) == 3
    for keep_ratio in (0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0):
        pruning_ratio = 1 - keep_ratio
        assert kept_channels(channels, keep_ratio) == int(channels * (1 - pruning_ratio))
    assert kept_channels(channels, 1.0) == channels


# ---- reference and exits -----------------------------------------------------------------------

REFERENCE_POLICIES = [
    Policy(ops=ops, bitops_formula=formula, bn=bn, elementwise=ew, nonmac_bits=nonmac, aux_bits=aux)
    for ops, formula, bn, ew, nonmac, aux in itertools.product(
        ("macs", "flops"), ("product", "accumulator"), ("folded", "counted"), ("free", "counted"), (32, 8), (32, 0))
]


@pytest.mark.parametrize("policy", REFERENCE_POLICIES, ids=lambda p: (
    f"{p.ops}-{p.bitops_formula}-{p.bn}-{p.elementwise}-nonmac_{p.nonmac_bits}-aux_{p.aux_bits}"))
def test_uncompressed_original_has_cr_and_bitops_cr_of_one(policy: Policy) -> None:
    rng = np.random.default_rng(11)
    for n_exits in (0, 2):
        table = random_table(rng, n_layers=18, n_ops=10, n_groups=4, n_exits=n_exits)
        original = table.with_exits([])
        reference = reference_totals(table, policy)
        totals = evaluate(original, uniform_config(original), policy).totals
        assert reference.bitops / totals.bitops == 1.0
        assert reference.storage_bits / totals.storage_bits == 1.0
        assert (reference.macs, reference.params) == (totals.macs, totals.params)


def test_aux_bits_zero_leaves_biases_and_bn_out_of_both_sides_of_the_cr() -> None:
    table = toy_table()
    layers = toy_closed_form(GROUP_CHANNELS)
    backbone = [n for n in TOY_ROWS if not n.startswith("exit")]  # the reference has no exit heads
    weights = sum(layers[n]["weights"] for n in backbone)
    aux = sum(layers[n]["bias"] for n in backbone) + 2 * sum(GROUP_CHANNELS)
    assert reference_totals(table, Policy(aux_bits=0)).storage_bits == 32 * weights
    assert reference_totals(table, Policy()).storage_bits == 32 * (weights + aux)
    original = table.with_exits([])
    assert evaluate(original, uniform_config(original), Policy(aux_bits=0)).totals.storage_bits == 32 * weights


def test_reference_ignores_bit_overrides_and_exit_heads() -> None:
    table = random_table(np.random.default_rng(5), n_layers=14, n_ops=6, n_groups=3, n_exits=2)
    plain = reference_totals(table)
    assert reference_totals(table, Policy(first_last_bits=8, input_bits=8)) == plain
    backbone = np.flatnonzero(np.array(table.layers["exit_index"]) < 0)
    macs = sum(evaluate(table, uniform_config(table)).layer_macs[i] for i in backbone)
    assert plain.macs == macs


def test_with_no_exits_drops_every_head_row() -> None:
    table = random_table(np.random.default_rng(8), n_layers=20, n_ops=15, n_groups=3, n_exits=3)
    bare = table.with_exits([])
    for part, before, after in (("layers", table.layers, bare.layers), ("ops", table.ops, bare.ops)):
        rows = [i for i, ex in enumerate(before["exit_index"]) if ex < 0]
        assert list(after["name"]) == [before["name"][i] for i in rows], part
        assert np.all(after["exit_index"] == -1) and np.all(after["segment"] == 0), part
    assert bare.exit_names == () and table.with_exits(None) is table
    with pytest.raises(InputError, match=r"--exits: unknown exit 'nope'"):
        table.with_exits(["nope"])


@pytest.mark.parametrize("seed", range(4))
def test_dropping_an_exit_merges_its_segments(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    table = random_table(rng, n_layers=24, n_ops=14, n_groups=4, n_exits=3)
    w_bits, a_bits, kept, _ = random_configs(rng, table, 1)
    q0, q2 = rng.uniform(0, 0.5, size=2)
    policy = Policy(elementwise="counted", bn="counted")
    reduced = table.with_exits(["exit2", "exit0"])  # order of the names does not matter
    assert reduced.exit_names == ("exit0", "exit2")
    surviving = table.layers["exit_index"] != 1
    got = evaluate(reduced, Config(w_bits=w_bits[0][surviving], a_bits=a_bits[0][surviving], kept=kept[0],
                                   exit_probs=np.array([q0, q2])), policy).totals
    # Independent route: every row of the full table that survives, at its static cost, times the
    # probability of reaching it when only exits 0 and 2 exist. A backbone row after exit k is
    # reached by those who did not leave at a kept exit before it; a head by those reaching its exit.
    full_config = Config(w_bits=w_bits[0], a_bits=a_bits[0], kept=kept[0], exit_probs=np.zeros(3))
    layer_cost, op_cost = _static_row_costs(table, full_config, policy)
    leave = {0: q0, 1: 0.0, 2: q2}

    def reach(segment: int, exit_index: int) -> float:
        if exit_index == 1:
            return 0.0  # the head of the dropped exit is gone
        before = exit_index if exit_index >= 0 else segment
        return 1.0 - sum(leave[k] for k in range(before))

    want = sum(c * reach(s, e) for c, s, e in zip(layer_cost, table.layers["segment"], table.layers["exit_index"]))
    want += sum(c * reach(s, e) for c, s, e in zip(op_cost, table.ops["segment"], table.ops["exit_index"]))
    assert got.bitops == pytest.approx(want, rel=1e-12)
    # The same as the full table with q1 = 0, minus what exit 1's head costs (reached w.p. 1 - q0).
    with_q1_zero = evaluate(table, Config(w_bits=w_bits[0], a_bits=a_bits[0], kept=kept[0],
                                          exit_probs=np.array([q0, 0.0, q2])), policy).totals
    head1_static = layer_cost[table.layers["exit_index"] == 1].sum() + op_cost[table.ops["exit_index"] == 1].sum()
    head1 = head1_static * (1 - q0)
    assert got.bitops == pytest.approx(with_q1_zero.bitops - head1, rel=1e-12)
    full = evaluate(table, full_config, policy)
    head1_params = sum(p for p, e in zip(full.layer_params, table.layers["exit_index"]) if e == 1)
    head1_params += sum(p for p, e in zip(full.op_params, table.ops["exit_index"]) if e == 1)
    assert got.params == with_q1_zero.params - head1_params


# ---- properties --------------------------------------------------------------------------------

PROPERTY_POLICIES = st.sampled_from([
    Policy(), Policy(ops="flops", bitops_formula="accumulator"), Policy(bn="counted", elementwise="counted"),
    Policy(first_last_bits=8, input_bits=8, aux_bits=0), Policy(first_last_bits=32, bitops_formula="accumulator"),
])
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(data=st.data(), table=tables(), policy=PROPERTY_POLICIES)
def test_bitops_never_increase_when_bits_or_kept_channels_decrease(data: st.DataObject, table: LayerTable,
                                                                     policy: Policy) -> None:
    config = data.draw(configs(table))
    before = evaluate(table, config, policy).totals
    row = data.draw(st.integers(0, table.num_layers - 1))
    w_bits, a_bits, kept = config.w_bits.copy(), config.a_bits.copy(), config.kept.copy()
    w_bits[row] = data.draw(st.integers(1, int(w_bits[row])))
    a_bits[row] = data.draw(st.integers(1, int(a_bits[row])))
    if table.num_groups:
        g = data.draw(st.integers(0, table.num_groups - 1))
        kept[g] = data.draw(st.integers(1, int(kept[g])))
    smaller = Config(w_bits=w_bits, a_bits=a_bits, kept=kept, exit_probs=config.exit_probs)
    after = evaluate(table, smaller, policy).totals
    assert after.bitops <= before.bitops
    assert after.macs <= before.macs
    assert after.storage_bits <= before.storage_bits
    assert after.params <= before.params


@PROPERTY_SETTINGS
@given(data=st.data(), table=tables(), policy=PROPERTY_POLICIES)
def test_batch_kernel_equals_reference(data: st.DataObject, table: LayerTable, policy: Policy) -> None:
    config = data.draw(configs(table))
    totals = evaluate(table, config, policy).totals
    for parallel in (False, True):
        batch = evaluate_batch(table, config.w_bits, config.a_bits, config.kept, config.exit_probs, policy, parallel)
        assert (batch.bitops[0], batch.macs[0], batch.params[0], batch.storage_bits[0]) == (
            totals.bitops, totals.macs, totals.params, totals.storage_bits)


@PROPERTY_SETTINGS
@given(data=st.data(), table=tables(), policy=PROPERTY_POLICIES)
def test_no_row_ever_costs_negative_bitops(data: st.DataObject, table: LayerTable, policy: Policy) -> None:
    report = evaluate(table, data.draw(configs(table)), policy)
    assert min(report.layer_bitops) >= 0 and min(report.layer_macs) >= 0
    assert all(b >= 0 for b in report.op_bitops)
    assert min(report.layer_storage_bits) >= 0


def test_exit_probs_summing_to_one_in_decimal_never_give_negative_costs() -> None:
    # 0.3 + 0.3 + 0.4 == 1.0 in binary, but 1 - 0.3 - 0.3 - 0.4 is -5.55e-17: reach must clamp at 0.
    table = random_table(np.random.default_rng(2), n_layers=10, n_ops=4, n_groups=2, n_exits=3)
    config = uniform_config(table, exit_probs=[0.3, 0.3, 0.4])
    report = evaluate(table, config, Policy(elementwise="counted"))
    assert min(report.layer_bitops) >= 0 and min(report.op_bitops) >= 0 and min(report.reach) == 0.0
    batch = evaluate_batch(table, config.w_bits, config.a_bits, config.kept, config.exit_probs,
                           Policy(elementwise="counted"))
    assert batch.bitops[0] == report.totals.bitops


@PROPERTY_SETTINGS
@given(table=tables(max_exits=4), data=st.data())
def test_float_exit_probs_never_give_negative_costs(table: LayerTable, data: st.DataObject) -> None:
    raw = data.draw(st.lists(st.floats(0.0, 1.0), min_size=table.num_exits, max_size=table.num_exits))
    total = sum(raw)
    exit_probs = np.array([q / total for q in raw] if total > 1 else raw, dtype=np.float64)
    config = Config(w_bits=np.full(table.num_layers, 4), a_bits=np.full(table.num_layers, 4),
                    kept=table.group_channels.copy(), exit_probs=exit_probs)
    report = evaluate(table, config, Policy(bn="counted", elementwise="counted"))
    assert min(report.reach) >= 0
    assert min(report.layer_bitops) >= 0 and all(b >= 0 for b in report.op_bitops)


# ---- input errors: one test per rule -----------------------------------------------------------

def _toy_config(**change: Any) -> Config:
    values = {"w_bits": np.full(6, 8), "a_bits": np.full(6, 8), "kept": np.array(GROUP_CHANNELS),
              "exit_probs": np.array([0.2, 0.3])}
    values.update(change)
    return Config(**values)


@pytest.mark.parametrize("change, message", [
    ({"w_bits": np.full(5, 8)}, r"w_bits must have 6 entries"),
    ({"a_bits": np.full((1, 6), 8)}, r"a_bits must have 6 entries"),
    ({"kept": np.array([1, 2])}, r"kept must have 3 entries"),
    ({"exit_probs": np.array([0.1])}, r"exit_probs must have 2 entries"),
    ({"w_bits": np.array([8, 8, 0, 8, 8, 8])}, r"^w_bits must be an integer in 1\.\.32, got 0 for layer block1$"),
    ({"a_bits": np.array([8, 8, 8, 8, 8, 33])}, r"^a_bits must be an integer in 1\.\.32, got 33 for layer fc$"),
    ({"kept": np.array([4, 0, 8])}, r"kept channels of group g1 must be in 1\.\.6, got 0"),
    ({"kept": np.array([5, 6, 8])}, r"kept channels of group g0 must be in 1\.\.4, got 5"),
    ({"exit_probs": np.array([0.2, -0.1])}, r"^exit_probs must be finite and >= 0"),
    ({"exit_probs": np.array([np.inf, 0.0])}, r"^exit_probs must be finite and >= 0"),
    ({"exit_probs": np.array([0.6, 0.5])}, r"^exit_probs must sum to at most 1 .* got 1\.1 for exits exit0, exit1$"),
], ids=["w_bits-shape", "a_bits-shape", "kept-shape", "exit_probs-shape", "w_bits-zero", "a_bits-33", "kept-zero",
        "kept-too-many", "exit_probs-negative", "exit_probs-infinite", "exit_probs-sum"])
def test_config_check_rejects(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _toy_config(**change).check(toy_table())


@pytest.mark.parametrize("keep_ratio", [0.0, -0.5, 1.5, float("nan"), True, "0.5", None])
def test_kept_from_ratio_rejects_ratios_outside_zero_one(keep_ratio: Any) -> None:
    with pytest.raises(InputError, match=r"^keep_ratio must be in \(0, 1\], got"):
        kept_from_ratio(toy_table(), keep_ratio)


def test_kept_from_ratio_rejects_a_ratio_that_empties_a_group() -> None:
    with pytest.raises(InputError, match=r"^keep_ratio 0\.2 keeps 0 of the 4 channels of group g0"):
        kept_from_ratio(toy_table(), 0.2)


def test_kept_from_mapping_applies_globs_and_names() -> None:
    kept = kept_from_mapping(toy_table(), {"g[12]": 0.5, "g0": 0.75})
    assert kept.tolist() == [kept_channels(4, 0.75), kept_channels(6, 0.5), kept_channels(8, 0.5)] == [3, 3, 4]


def test_kept_from_mapping_rejects_an_unknown_group() -> None:
    with pytest.raises(InputError, match=r"group 'block\*' matches no channel group of toy"):
        kept_from_mapping(toy_table(), {"block*": 0.5})


def test_kept_from_mapping_rejects_a_bad_ratio() -> None:
    with pytest.raises(InputError, match=r"^ratios\['g1'\] must be in \(0, 1\], got 1\.2"):
        kept_from_mapping(toy_table(), {"g1": 1.2})


def test_kept_from_mapping_rejects_a_ratio_that_empties_a_group() -> None:
    with pytest.raises(InputError, match=r"^ratios\['g\*'\] 0\.1 keeps 0 channels of group g0"):
        kept_from_mapping(toy_table(), {"g*": 0.1})


def test_kept_from_mapping_rejects_a_bad_default() -> None:
    with pytest.raises(InputError, match=r"^default must be in \(0, 1\]"):
        kept_from_mapping(toy_table(), {}, default=0.0)


def test_bits_from_rules_rejects_a_pattern_matching_no_layer() -> None:
    with pytest.raises(InputError, match=r"layer 'layer4\.\*' matches no layer of toy"):
        bits_from_rules(toy_table(), [BitsRule("stem", w_bits=8), BitsRule("layer4.*", w_bits=2)], 4, 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"ops": "gmacs"}, r"ops must be one of macs, flops, got 'gmacs'"),
    ({"bitops_formula": "baskin"}, r"bitops_formula must be one of product, accumulator, got 'baskin'"),
    ({"bn": "fused"}, r"bn must be one of folded, counted, got 'fused'"),
    ({"elementwise": "yes"}, r"elementwise must be one of free, counted, got 'yes'"),
    ({"first_last_bits": 0}, r"first_last_bits must be an integer in 1\.\.32, got 0"),
    ({"first_last_bits": 8.0}, r"first_last_bits must be an integer in 1\.\.32, got 8\.0"),
    ({"input_bits": 64}, r"input_bits must be an integer in 1\.\.32, got 64"),
    ({"input_bits": True}, r"input_bits must be an integer in 1\.\.32, got True"),
    ({"nonmac_bits": 0}, r"nonmac_bits must be an integer in 1\.\.32, got 0"),
    ({"aux_bits": -1}, r"aux_bits must be an integer in 0\.\.32, got -1"),
    ({"aux_bits": 33}, r"aux_bits must be an integer in 0\.\.32, got 33"),
], ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_policy_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Policy(**kwargs)


# ---- LayerTable JSON ---------------------------------------------------------------------------

def _assert_tables_equal(a: LayerTable, b: LayerTable) -> None:
    for part in ("layers", "ops"):
        cols_a, cols_b = getattr(a, part), getattr(b, part)
        assert set(cols_a) == set(cols_b), part
        for col in cols_a:
            if isinstance(cols_a[col], tuple):
                assert cols_a[col] == cols_b[col], f"{part}.{col}"
            else:
                assert cols_a[col].dtype == cols_b[col].dtype, f"{part}.{col}"
                np.testing.assert_array_equal(cols_a[col], cols_b[col], err_msg=f"{part}.{col}")
    np.testing.assert_array_equal(a.group_channels, b.group_channels)
    for attr in ("model", "input_shape", "group_labels", "exit_names", "extra_params", "unsupported_ops", "notes",
                 "provenance"):
        assert getattr(a, attr) == getattr(b, attr), attr


@pytest.mark.parametrize("seed", range(5))
def test_table_json_round_trip(tmp_path: Path, seed: int) -> None:
    base = random_table(np.random.default_rng(seed), n_layers=5 + 6 * seed, n_ops=3 * seed, n_groups=seed,
                        n_exits=seed % 4)
    table = LayerTable.from_columns(**{**_from_columns_args(base), "notes": ["traced by hand", "ünïcode"],
                                       "unsupported_ops": {"aten::upsample": 2}, "provenance": {"seed": seed}})
    path = tmp_path / "table.json"
    save_table(table, path)
    loaded = load_table(path)
    _assert_tables_equal(table, loaded)
    arrays = random_configs(np.random.default_rng(seed), table, 8)
    np.testing.assert_array_equal(evaluate_batch(table, *arrays).bitops, evaluate_batch(loaded, *arrays).bitops)


def _from_columns_args(table: LayerTable) -> dict[str, Any]:
    data = table.to_json_dict()
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


@pytest.fixture
def table_json() -> dict[str, Any]:
    return random_table(np.random.default_rng(3), n_layers=8, n_ops=5, n_groups=3, n_exits=1).to_json_dict()


def test_load_rejects_a_wrong_type(tmp_path: Path, table_json: dict[str, Any]) -> None:
    with pytest.raises(InputError, match=r"_type must be 'chaincomp\.LayerTable', got 'chaincomp\.RunRecord'"):
        load_table(_write(tmp_path, {**table_json, "_type": "chaincomp.RunRecord"}))


def test_load_rejects_a_wrong_version(tmp_path: Path, table_json: dict[str, Any]) -> None:
    with pytest.raises(InputError, match=r"_version must be 1 .*got 2"):
        load_table(_write(tmp_path, {**table_json, "_version": 2}))


def test_load_rejects_truncated_json(tmp_path: Path, table_json: dict[str, Any]) -> None:
    text = json.dumps(table_json)
    with pytest.raises(InputError, match=r"table file .*: not valid JSON"):
        load_table(_write(tmp_path, text[: len(text) // 2]))


def test_load_rejects_a_file_that_is_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must hold a JSON object, got list"):
        load_table(_write(tmp_path, [1, 2]))


def test_load_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read"):
        load_table(tmp_path / "absent.json")


def test_load_rejects_a_missing_field(tmp_path: Path, table_json: dict[str, Any]) -> None:
    del table_json["group_channels"]
    with pytest.raises(InputError, match=r"missing field 'group_channels'"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_a_missing_column(tmp_path: Path, table_json: dict[str, Any]) -> None:
    del table_json["layers"]["taps"]
    with pytest.raises(InputError, match=r"layers\.taps is missing"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_a_missing_op_column(tmp_path: Path, table_json: dict[str, Any]) -> None:
    del table_json["ops"]["category"]
    with pytest.raises(InputError, match=r"ops\.category is missing"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_mismatched_column_lengths(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["layers"]["kernel_w"].append(3)
    n = len(table_json["layers"]["name"])
    with pytest.raises(InputError, match=rf"layers\.kernel_w must have {n} entries, got {n + 1}"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_mismatched_op_column_lengths(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["ops"]["params"].pop()
    with pytest.raises(InputError, match=r"ops\.params must have \d+ entries"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_an_out_of_range_layer_group(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["layers"]["out_group"][0] = len(table_json["group_channels"])
    with pytest.raises(InputError, match=r"layers\.out_group must be -1 or a group index < 3"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_a_negative_layer_group(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["layers"]["in_group"][0] = -2
    with pytest.raises(InputError, match=r"layers\.in_group must be -1 or a group index"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_an_out_of_range_op_group(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["ops"]["group"][0] = 7
    with pytest.raises(InputError, match=r"ops\.group must be -1 or a group index < 3"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_non_numbers_in_an_int_column(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["layers"]["in_ch"][0] = "wide"
    with pytest.raises(InputError, match=r"layers\.in_ch must hold integers"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_a_fractional_count(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["layers"]["in_ch"][0] = 4.9  # would silently become 4
    with pytest.raises(InputError, match=r"layers\.in_ch must hold integers, got float64"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_a_string_flag(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["layers"]["has_weight"][0] = "false"  # would silently become True
    with pytest.raises(InputError, match=r"layers\.has_weight must be a flat list of true/false values"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_a_nested_column(tmp_path: Path, table_json: dict[str, Any]) -> None:
    n = len(table_json["layers"]["kernel_h"])
    table_json["layers"]["kernel_h"] = [[3] * n, [1] * n]
    with pytest.raises(InputError, match=r"layers\.kernel_h must be a flat list of integers"):
        load_table(_write(tmp_path, table_json))


def test_load_rejects_a_boolean_version(tmp_path: Path, table_json: dict[str, Any]) -> None:
    table_json["_version"] = True  # True == 1 in Python
    with pytest.raises(InputError, match=r"_version must be 1"):
        load_table(_write(tmp_path, table_json))
