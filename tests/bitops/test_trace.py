"""bitops.trace.trace_model against routes that do not go through the tracer.

* forward hooks (``tests.bitops.hook_counter``), torch's own parameter count, fvcore's stock
  ``FlopCountAnalysis`` and a closed form: MACs and params, per layer and in total;
* torch-pruning, the pruner the trainer uses: the analytic count of a keep ratio on the original
  table equals, to the integer, the trace of the physically pruned model;
* the architecture itself: which convs residual adds and depthwise convs couple, which exit region
  each module runs in, and one non-MAC op row per BN/activation/pool call read off forward hooks;
* models the tracer cannot fully model (an op with no handle, weight sharing, a wrong input
  shape; concatenations are in ``test_concat.py``), and the shipped tables against a fresh trace.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch_pruning as tp
import torchvision
from fvcore.nn import FlopCountAnalysis
from torch import nn

from bitops import (Config, InputError, LayerTable, Policy, architectures, evaluate, kept_from_ratio, models,
                    uniform_config, zoo)
from bitops.trace import output_layers, trace_model
from tests.bitops.hook_counter import count_macs_params

INPUT = zoo.DEFAULT_INPUT_SHAPE
# fvcore's names for the MAC-bearing ops it counts by default (one multiply-add = 1).
FVCORE_MAC_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "einsum")
ZOO_WITH_AND_WITHOUT_EXITS = [pytest.param(name, exits, id=f"{name}-{'exits' if exits else 'plain'}")
                              for name in architectures.ZOO_NAMES for exits in (False, True)]


# ---- helpers -------------------------------------------------------------------------------------


@functools.cache
def zoo_traced(name: str, exits: bool) -> tuple[nn.Module, LayerTable]:
    """A zoo model and its table, built and traced once per session (tests never modify either)."""
    model = zoo.build(name, exits=exits)
    return model, trace_model(model, INPUT, name=name)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def traced_counts(table: LayerTable) -> dict[str, tuple[int, int]]:
    """{row name: (MACs, params)} of the conv/linear rows at full width, through bitops.evaluate."""
    report = evaluate(table, uniform_config(table))
    return {name: (int(macs), params)
            for name, kind, macs, params in zip(table.layers["name"], table.layers["kind"], report.layer_macs,
                                                report.layer_params)
            if kind in ("conv", "linear")}


def fvcore_macs(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, dict[str, int]]:
    """fvcore's stock count: MAC-bearing ops in total, and per module."""
    flops = FlopCountAnalysis(model.eval(), torch.zeros(1, *input_shape))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    by_op = flops.by_operator()
    return sum(by_op.get(op, 0) for op in FVCORE_MAC_OPS), flops.by_module()


def assert_counts_match_independent_routes(model: nn.Module, table: LayerTable, input_shape: Sequence[int]) -> None:
    counts = traced_counts(table)
    assert counts == count_macs_params(model, input_shape)
    assert evaluate(table, uniform_config(table)).totals.params == n_params(model)
    total, by_module = fvcore_macs(model, input_shape)
    assert sum(macs for macs, _ in counts.values()) == total
    assert {name: by_module[name] for name in counts} == {name: macs for name, (macs, _) in counts.items()}


def physically_pruned(model: nn.Module, keep_ratio: float) -> nn.Module:
    """A pruned copy, exactly as the trainer's P stage calls torch-pruning (L1 magnitude, local)."""
    pruned = copy.deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(pruned, torch.zeros(1, *INPUT),
                                       importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=1 - keep_ratio, ignored_layers=output_layers(pruned))
    pruner.step()
    return pruned


def stage_of(name: str, model: zoo.StagedNet) -> int:
    """Depth index of the stage a backbone module belongs to: the stem is 0, pool and classifier last."""
    head = name.split(".")[0]
    if head == "stem":
        return 0
    if head in model.stage_names:
        return model.stage_names.index(head)
    assert head in ("pool", model.classifier_name), name
    return len(model.stage_names) - 1


def scope_and_call(op_name: str) -> tuple[str, int]:
    """("layer1.0.relu", 1) from the op row "layer1.0.relu.relu#2": the module and which of its calls."""
    match = re.fullmatch(r"(.*)\.[a-z_0-9]+(?:#(\d+))?", op_name)
    assert match, op_name
    return match.group(1), int(match.group(2) or 1) - 1


# ---- MACs and params against forward hooks, torch and fvcore --------------------------------------
@pytest.mark.parametrize(("name", "exits"), ZOO_WITH_AND_WITHOUT_EXITS)
def test_zoo_counts_match_hooks_torch_and_fvcore(name, exits):
    model, table = zoo_traced(name, exits)
    assert_counts_match_independent_routes(model, table, INPUT)


@pytest.mark.parametrize(
    ("builder", "input_shape"),
    [
        pytest.param(torchvision.models.resnet18, (3, 32, 32), id="resnet18-32"),
        pytest.param(torchvision.models.resnet18, (3, 64, 64), id="resnet18-64"),
        pytest.param(torchvision.models.mobilenet_v2, (3, 32, 32), id="mobilenet_v2-32"),
        # 129M parameters, 119M of them in the classifier: seconds to build.
        pytest.param(torchvision.models.vgg11_bn, (3, 32, 32), id="vgg11_bn-32", marks=pytest.mark.slow),
    ],
)
def test_torchvision_counts_match_hooks_torch_and_fvcore(builder, input_shape):
    model = builder(num_classes=10)
    table = trace_model(model, input_shape, name=builder.__name__)
    assert_counts_match_independent_routes(model, table, input_shape)
    assert table.unsupported_ops == {} and table.extra_params == 0


def test_resnet20_layers_match_closed_form():
    """He et al.'s CIFAR ResNet-20 with 1x1 projections: every 3x3 conv at its stage's resolution."""
    widths, blocks, num_classes = (16, 32, 64), 3, 10
    expected = {"stem.conv": (32 * 32 * 9 * 3 * 16, 9 * 3 * 16)}
    in_ch = widths[0]
    for s, width in enumerate(widths, start=1):
        hw = 32 >> (s - 1)  # stride 2 at the entry of stages 2 and 3
        for b in range(blocks):
            c_in = in_ch if b == 0 else width
            expected[f"layer{s}.{b}.conv1"] = (hw * hw * 9 * c_in * width, 9 * c_in * width)
            expected[f"layer{s}.{b}.conv2"] = (hw * hw * 9 * width * width, 9 * width * width)
            if b == 0 and c_in != width:
                expected[f"layer{s}.{b}.shortcut.conv"] = (hw * hw * c_in * width, c_in * width)
        in_ch = width
    expected["fc"] = (in_ch * num_classes, in_ch * num_classes + num_classes)
    _, table = zoo_traced("resnet20", False)
    assert traced_counts(table) == expected


# ---- analytic pruning == the physically pruned model ----------------------------------------------
# (w_bits, a_bits, policy): the default count, low bits, pinned first/last layers, and every op
# counted under the accumulator formula in FLOPs.
PRUNING_SETTINGS = (
    (32, 32, Policy()),
    (4, 4, Policy()),
    (1, 8, Policy(first_last_bits=8, input_bits=8)),
    (4, 4, Policy(ops="flops", bitops_formula="accumulator", bn="counted", elementwise="counted", nonmac_bits=8)),
)
PRUNING_CASES = [
    pytest.param(name, exits, keep, id=f"{name}-{'exits' if exits else 'plain'}-keep{keep}",
                 marks=[pytest.mark.slow] if name in ("resnet18_cifar", "vgg19_cifar") else [])
    for name, keeps in (("resnet20", (0.9, 0.7, 0.5, 0.3)), ("mobilenetv2_cifar", (0.9, 0.55, 0.3)),
                        ("resnet18_cifar", (0.7, 0.3)), ("vgg19_cifar", (0.7, 0.3)))
    for exits in (False, True) for keep in keeps
]


@pytest.mark.parametrize(("name", "exits", "keep_ratio"), PRUNING_CASES)
def test_analytic_pruning_equals_physically_pruned_model(name, exits, keep_ratio):
    model, table = zoo_traced(name, exits)
    pruned = physically_pruned(model, keep_ratio)
    pruned_table = trace_model(pruned, INPUT, name=f"{name} pruned")
    kept = kept_from_ratio(table, keep_ratio)
    assert dict(zip(pruned_table.group_labels, pruned_table.group_channels.tolist())) == \
        dict(zip(table.group_labels, kept.tolist()))
    assert pruned_table.layers["name"] == table.layers["name"] and pruned_table.ops["name"] == table.ops["name"]
    exit_probs = np.linspace(0.05, 0.2, table.num_exits)
    for w_bits, a_bits, policy in PRUNING_SETTINGS:
        config = Config(w_bits=np.full(table.num_layers, w_bits), a_bits=np.full(table.num_layers, a_bits), kept=kept,
                        exit_probs=exit_probs)
        analytic = evaluate(table, config, policy)
        physical = evaluate(pruned_table, uniform_config(pruned_table, w_bits=w_bits, a_bits=a_bits,
                                                         exit_probs=exit_probs), policy)
        assert analytic.totals == physical.totals, (w_bits, a_bits, policy)
        for column in ("in_width", "out_width", "layer_macs", "layer_bitops", "layer_params", "layer_storage_bits",
                       "op_elements", "op_bitops", "op_params"):
            assert getattr(analytic, column) == getattr(physical, column), (column, w_bits, a_bits, policy)
    assert physical.in_width == pruned_table.layers["in_ch"].tolist()
    assert physical.out_width == pruned_table.layers["out_ch"].tolist()
    assert physical.totals.params == n_params(pruned)


# ---- channel groups ----------------------------------------------------------------------------------
def test_resnet20_groups_follow_the_residual_adds():
    """Per stage, the stem (stage 1) or the projection shortcut and every block's conv2 meet at the
    adds and share one group; each conv1 output is a group of its own."""
    _, table = zoo_traced("resnet20", True)
    lay = table.layers
    out_group = dict(zip(lay["name"], lay["out_group"].tolist()))
    in_group = dict(zip(lay["name"], lay["in_group"].tolist()))
    stage_group = {s: out_group[f"layer{s}.0.conv2"] for s in (1, 2, 3)}
    coupled = {s: sorted(n for n in lay["name"] if out_group[n] == g) for s, g in stage_group.items()}
    assert coupled == {
        1: ["layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2", "stem.conv"],
        2: ["layer2.0.conv2", "layer2.0.shortcut.conv", "layer2.1.conv2", "layer2.2.conv2"],
        3: ["layer3.0.conv2", "layer3.0.shortcut.conv", "layer3.1.conv2", "layer3.2.conv2"],
    }
    conv1_groups = [out_group[f"layer{s}.{b}.conv1"] for s in (1, 2, 3) for b in range(3)]
    head_groups = [out_group[f"exits.{p}.conv"] for p in table.exit_names]
    all_groups = [*stage_group.values(), *conv1_groups, *head_groups]
    assert sorted(all_groups) == list(range(table.num_groups))  # all distinct, none left over
    for s in (1, 2, 3):
        entry = stage_group[s - 1] if s > 1 else stage_group[1]
        for b in range(3):
            assert in_group[f"layer{s}.{b}.conv1"] == (entry if b == 0 else stage_group[s])
            assert in_group[f"layer{s}.{b}.conv2"] == out_group[f"layer{s}.{b}.conv1"]
        if s > 1:
            assert in_group[f"layer{s}.0.shortcut.conv"] == entry
    for s, point in enumerate(table.exit_names, start=1):
        assert in_group[f"exits.{point}.conv"] == stage_group[s]
        assert in_group[f"exits.{point}.fc"] == out_group[f"exits.{point}.conv"]
    assert in_group["fc"] == stage_group[3]
    assert table.group_channels[stage_group[2]] == 32 and table.group_channels[conv1_groups[-1]] == 64


def test_mobilenetv2_depthwise_convs_share_the_group_of_their_input():
    model, table = zoo_traced("mobilenetv2_cifar", True)
    lay = table.layers
    depthwise_modules = {n for n, m in model.named_modules()
                         if isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels > 1}
    assert {n for n, dw in zip(lay["name"], lay["depthwise"]) if dw} == depthwise_modules
    modules = dict(model.named_modules())
    backbone = [i for i in range(table.num_layers) if lay["exit_index"][i] < 0]
    for before, row in zip(backbone, backbone[1:]):
        if not lay["depthwise"][row]:
            continue
        block = lay["name"][row].removesuffix(".depthwise.conv")
        if isinstance(modules[block].expand, nn.Identity):  # expansion 1: only the first block
            assert (block, lay["name"][before]) == ("stage1.0", "stem.conv")
        else:
            assert lay["name"][before] == f"{block}.expand.conv"
        assert lay["in_group"][row] == lay["out_group"][row] == lay["out_group"][before] >= 0
        assert lay["name"][row + 1] == f"{block}.project.conv"
        assert lay["in_group"][row + 1] == lay["out_group"][row]


@pytest.mark.parametrize("name", architectures.ZOO_NAMES)
def test_image_and_logits_are_never_pruned(name):
    model, table = zoo_traced(name, True)
    lay = table.layers
    heads = {model.classifier_name, *(f"exits.{p}.fc" for p in model.exits)}
    assert {lay["name"][i] for i in range(table.num_layers) if lay["out_group"][i] < 0} == heads
    first = lay["name"][table.first_layer]
    assert first == ("stage1.0.conv" if name.startswith("vgg") else "stem.conv")
    assert {lay["name"][i] for i in range(table.num_layers) if lay["in_group"][i] < 0} == {first}
    modules = dict(model.named_modules())
    assert {id(m) for m in output_layers(model)} == {id(modules[n]) for n in heads}


# ---- exits and segments ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "exits"),
    [*(pytest.param(name, True, id=f"{name}-all") for name in architectures.ZOO_NAMES),
     pytest.param("resnet18_cifar", ("layer2",), id="resnet18_cifar-layer2"),
     pytest.param("mobilenetv2_cifar", ("stage1", "stage3"), id="mobilenetv2_cifar-stage1,3"),
     pytest.param("vgg19_cifar", ("stage2", "stage4"), id="vgg19_cifar-stage2,4")],
)
def test_segments_follow_the_stage_each_module_belongs_to(name, exits):
    """A backbone module in stage i runs after the enabled exits of stages before i; head k is in segment k."""
    if exits is True:
        model, table = zoo_traced(name, True)
    else:
        model = zoo.build(name, exits=exits)
        table = trace_model(model, INPUT, name=name)
    assert table.exit_names == tuple(model.exits)
    exit_stages = [model.stage_names.index(p) for p in table.exit_names]
    for part in (table.layers, table.ops):
        for row_name, segment, exit_index in zip(part["name"], part["segment"], part["exit_index"]):
            if row_name.startswith("exits."):
                k = table.exit_names.index(row_name.split(".")[1])
                assert (segment, exit_index) == (k, k), row_name
            else:
                stage = stage_of(row_name, model)
                assert (segment, exit_index) == (sum(s < stage for s in exit_stages), -1), row_name


# ---- non-MAC ops -------------------------------------------------------------------------------------
def module_calls(model: nn.Module, types: tuple[type[nn.Module], ...]) -> dict[tuple[str, int], int]:
    """{(module name, call index): elements} for every call of a module of ``types``: a pool's input
    elements (it adds every one), any other module's output elements."""
    calls: dict[tuple[str, int], int] = {}
    counter: dict[str, int] = {}

    def hook(name: str):
        def record(module, inputs, output):
            counter[name] = counter.get(name, 0) + 1
            pool = isinstance(module, (nn.AdaptiveAvgPool2d, nn.MaxPool2d))
            calls[(name, counter[name] - 1)] = (inputs[0] if pool else output).numel()

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, types)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *INPUT))
    for handle in handles:
        handle.remove()
    return calls


OP_MODULES = {"bn": (nn.BatchNorm2d,), "act": (nn.ReLU, nn.ReLU6), "pool": (nn.AdaptiveAvgPool2d, nn.MaxPool2d)}


@pytest.mark.parametrize("name", architectures.ZOO_NAMES)
def test_zoo_non_mac_ops_are_one_row_per_module_call(name):
    model, table = zoo_traced(name, True)
    opc = table.ops
    for category, types in OP_MODULES.items():
        rows = {scope_and_call(n): e for n, c, e in zip(opc["name"], opc["category"], opc["elements"].tolist())
                if c == category}
        assert rows == module_calls(model, types), category
    blocks = {n: m for n, m in model.named_modules()
              if isinstance(m, zoo.BasicBlock) or getattr(m, "residual", False)}
    adds = {scope_and_call(n)[0] for n, c in zip(opc["name"], opc["category"]) if c == "add"}
    assert adds == set(blocks)
    assert set(opc["category"]) == {"bn", "act", "pool"} | ({"add"} if blocks else set())
    bn_rows = [i for i, c in enumerate(opc["category"]) if c == "bn"]
    assert all(opc["params"][i] == 2 * opc["channels"][i] for i in bn_rows)
    bn_params = sum(n_params(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert sum(int(opc["params"][i]) for i in bn_rows) == bn_params
    assert table.extra_params == 0 and table.unsupported_ops == {} and table.notes == ()


# ---- models the tracer cannot fully model ------------------------------------------------------------
class CumsumNet(nn.Module):
    """A cumulative sum over channels: an op with no handle in the tracer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cumsum(self.conv(x), dim=1).mean((2, 3)))


class SharedNet(nn.Module):
    """``body`` runs twice on its own output (weight sharing)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(torch.relu(self.body(self.stem(x))))
        return self.fc(x.mean((2, 3)))


SMALL_INPUT = (3, 16, 16)


def test_op_without_handle_is_listed_as_unsupported():
    model = CumsumNet()
    table = trace_model(model, SMALL_INPUT)
    assert table.unsupported_ops == {"aten::cumsum": 1}
    assert traced_counts(table) == count_macs_params(model, SMALL_INPUT)


def test_shared_module_counts_params_once_and_macs_per_call():
    model = SharedNet()
    table = trace_model(model, SMALL_INPUT)
    report = evaluate(table, uniform_config(table))
    rows = {n: (int(m), p) for n, m, p in zip(table.layers["name"], report.layer_macs, report.layer_params)}
    hooks = count_macs_params(model, SMALL_INPUT)  # MACs summed over calls
    body_macs, body_params = hooks["body"]
    assert rows == {"stem": hooks["stem"], "body": (body_macs // 2, body_params), "body#2": (body_macs // 2, 0),
                    "fc": hooks["fc"]}
    assert report.totals.macs == sum(m for m, _ in hooks.values())
    assert report.totals.params == n_params(model)


@pytest.mark.parametrize(("name", "input_shape"), [("resnet20", (1, 32, 32)), ("vgg19_cifar", (3, 16, 16))])
def test_input_shape_the_model_cannot_take_is_an_input_error(name, input_shape):
    shape = ",".join(map(str, input_shape))
    with pytest.raises(InputError, match=rf"^MODEL: {name}: tracing at input {shape} failed \("):
        trace_model(zoo.build(name), input_shape, name=name)


def test_trace_leaves_the_training_mode_as_it_was():
    model = SharedNet().train()
    trace_model(model, SMALL_INPUT)
    assert model.training


# ---- shipped tables ------------------------------------------------------------------------------------
def test_shipped_zoo_names_are_the_zoo():
    assert models.zoo_names() == architectures.ZOO_NAMES


SHIPPED = [pytest.param(*variant, id=models._shipped_path(*variant).name) for variant in models.shipped_variants()]


def test_every_shipped_file_is_a_variant():
    files = {p.name for p in models.SHIPPED_DIR.glob("*.json")}
    assert files == {models._shipped_path(*variant).name for variant in models.shipped_variants()}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "classes", "width_mult", "shape", "head"), SHIPPED)
def test_shipped_table_equals_a_fresh_trace(name, classes, width_mult, shape, head):
    shipped = models.shipped_table(name, classes, width_mult, shape, head)
    assert shipped is not None, f"no shipped table for {name} at width {width_mult}, {classes} classes, {shape}, {head}"
    fresh = models._trace_zoo(models.ModelSpec(name, num_classes=classes, width_mult=width_mult, exit_head=head),
                              shape)
    expected, actual = fresh.to_json_dict(), shipped.to_json_dict()
    assert actual["provenance"]["num_classes"] == classes and actual["provenance"]["width_mult"] == width_mult
    assert actual["provenance"].get("exit_head", "conv") == head
    for key in sorted((set(expected) | set(actual)) - {"provenance", "layers", "ops"}):
        assert actual.get(key) == expected.get(key), key
    for part in ("layers", "ops"):
        assert set(actual[part]) == set(expected[part]), part
        for column in expected[part]:
            assert actual[part][column] == expected[part][column], f"{part}.{column}"


@pytest.mark.parametrize("dropout", [nn.Dropout(0.2), nn.Dropout(0.2, inplace=True), nn.Dropout2d(0.2),
                                     nn.AlphaDropout(0.2)])
def test_dropout_is_free_in_eval(dropout):
    """Dropout is the identity in eval mode: neither a listed op nor one "not counted"."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), dropout, nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    table = trace_model(model, (3, 8, 8))
    assert not any("dropout" in op for op in table.unsupported_ops), table.unsupported_ops
    assert not any("dropout" in str(kind) for kind in table.ops["kind"])
    lay = table.layers
    macs = (lay["macs_unit"] * lay["out_ch"] * lay["in_ch"] // lay["groups"]).sum()
    assert macs == 4 * 3 * 9 * 36 + 4 * 36 * 2  # conv + linear, by hand


# ---- grouped convs: whole channels per conv group, as torch-pruning keeps them -------------------------
class GroupedBlockNet(nn.Module):
    """A ResNeXt-style bottleneck: 1x1 -> grouped 3x3 (4 groups of 6) -> 1x1, plus a GroupNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.grouped = nn.Conv2d(24, 24, 3, padding=1, groups=4)
        self.norm = nn.GroupNorm(4, 24)
        self.out = nn.Conv2d(24, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.grouped(torch.relu(self.stem(x)))))
        return self.fc(self.out(x).mean((2, 3)))


def _pruned_physically(model: nn.Module, keep_ratio: float, input_shape: Sequence[int]) -> nn.Module:
    pruned = copy.deepcopy(model).eval()
    example = torch.zeros(1, *input_shape)
    tp.pruner.MagnitudePruner(pruned, example, importance=tp.importance.MagnitudeImportance(p=1),
                              pruning_ratio=1 - keep_ratio, ignored_layers=output_layers(pruned, example)).step()
    return pruned


@pytest.mark.parametrize("keep_ratio", [0.9, 0.7, 0.5, 0.3])
@pytest.mark.parametrize(("builder", "input_shape"), [
    pytest.param(GroupedBlockNet, SMALL_INPUT, id="grouped-block"),
    pytest.param(functools.partial(torchvision.models.regnet_y_400mf, num_classes=10), (3, 64, 64),
                 id="regnet_y_400mf", marks=pytest.mark.slow),
])
def test_grouped_conv_pruning_keeps_whole_channels_per_group_as_torch_pruning(builder, input_shape, keep_ratio):
    """MACs and params of the analytic count equal forward hooks and torch's own parameter count on
    the model torch-pruning really produces; int(C x keep) alone would be off on every grouped conv."""
    torch.manual_seed(0)
    model = builder().eval()
    table = trace_model(model, input_shape)
    assert np.any(table.group_divisions > 1)
    pruned = _pruned_physically(model, keep_ratio, input_shape)
    report = evaluate(table, Config(w_bits=np.full(table.num_layers, 32), a_bits=np.full(table.num_layers, 32),
                                    kept=kept_from_ratio(table, keep_ratio), exit_probs=np.zeros(0)))
    hooks = count_macs_params(pruned, input_shape)
    assert report.totals.macs == sum(macs for macs, _ in hooks.values())
    assert report.totals.params == n_params(pruned)
    traced = traced_counts(table)  # the row names are the module names
    assert {name: int(m) for name, kind, m in zip(table.layers["name"], table.layers["kind"], report.layer_macs)
            if kind in ("conv", "linear")} == {name: hooks[name][0] for name in traced}


# ---- attention: projections and activation x activation products by formula --------------------------
class AttentionNet(nn.Module):
    """Patch tokens (16 of width 8) through nn.MultiheadAttention, sdpa, einsum and matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # 1 x 16 x 8
        attended, _ = self.mha(tokens, tokens, tokens, need_weights=False)
        q = tokens.view(1, 16, 2, 4).transpose(1, 2)  # 1 x 2 heads x 16 x 4
        sdpa = nn.functional.scaled_dot_product_attention(q, q, q)
        scores = torch.einsum("bhid,bhjd->bhij", q, q)
        mixed = torch.matmul(scores, q)
        merged = attended + (sdpa + mixed).transpose(1, 2).reshape(1, 16, 8)
        return self.fc(merged.mean(1))


# By hand: L = 16 tokens, width E = 8, H = 2 heads of 4.
ATTENTION_LAYER_MACS = 16 * 8 * 3 * 16 + 16 * 8 * 24 + 16 * 8 * 8 + 8 * 3  # patch conv, in/out projections, fc
ATTENTION_PRODUCT_MACS = 2 * (2 * 16 * 16 * 4) + 2 * (2 * 16 * 16 * 4) + 2 * 16 * 16 * 4 + 2 * 16 * 4 * 16  # MHA, sdpa, einsum, matmul


@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_attention_products_are_counted_by_formula_at_activation_bits(frozen):
    """Frozen weights would send nn.MultiheadAttention down its fused kernel, which no MAC op
    shows; the trace keeps it on the unfused path, so the count is the same either way."""
    model = AttentionNet()
    for param in model.parameters():
        param.requires_grad_(not frozen)
    table = trace_model(model, SMALL_INPUT)
    assert all(p.requires_grad == (not frozen) for p in model.parameters())
    assert table.unsupported_ops == {} and table.extra_params == 0 and table.unused == {}
    report = evaluate(table, uniform_config(table))
    assert report.totals.macs == ATTENTION_LAYER_MACS + ATTENTION_PRODUCT_MACS
    assert report.totals.params == n_params(model)
    w4a8 = evaluate(table, uniform_config(table, w_bits=4, a_bits=8))
    assert w4a8.totals.bitops == ATTENTION_LAYER_MACS * 4 * 8 + ATTENTION_PRODUCT_MACS * 8 * 8
    as_layers = evaluate(table, uniform_config(table, w_bits=4, a_bits=8), Policy(matmul_bits="weight"))
    assert as_layers.totals.bitops == (ATTENTION_LAYER_MACS + ATTENTION_PRODUCT_MACS) * 4 * 8


class AuxNet(nn.Module):
    """An auxiliary head that runs only in training, as GoogLeNet's."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.aux = nn.Sequential(nn.Flatten(), nn.Linear(4 * 14 * 14, 7))
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.fc(y.mean((2, 3))) + (self.aux(y).sum() if self.training else 0)


def test_modules_that_never_run_are_listed_and_not_counted():
    model = AuxNet()
    table = trace_model(model, SMALL_INPUT)
    aux = sum(p.numel() for p in model.aux.parameters())
    assert table.unused == {"aux": aux}
    assert evaluate(table, uniform_config(table)).totals.params == n_params(model) - aux
    assert evaluate(table.counting_unused(), uniform_config(table)).totals.params == n_params(model)


def test_channel_groups_do_not_depend_on_the_callers_gradient_mode():
    """torch-pruning's graph is autograd's; the trace runs without gradients where it can, so the
    analysis must switch them on itself (without it ResNet-20 came out with no groups at all)."""
    from bitops.trace import channel_groups

    model = zoo.build("resnet20").eval()
    example = torch.zeros(1, *INPUT)
    plain = channel_groups(model, example)
    with torch.no_grad():
        quiet = channel_groups(model, example)
    assert len(plain.channels) > 0
    assert (quiet.channels, quiet.labels, quiet.in_group, quiet.out_group) == \
        (plain.channels, plain.labels, plain.in_group, plain.out_group)


def test_channel_groups_on_real_tensors_after_the_parent_computed_in_parallel():
    """torch-pruning fails on ShuffleNet's channel shuffle on meta tensors, so its analysis is tried
    again on the real ones in a forked child. That child once hung until the time bound whenever the
    parent had run the model first (the parent's OpenMP workers are not in the child); with one
    thread there it answers with torch-pruning's own error."""
    from bitops.trace import channel_groups

    model, example = torchvision.models.shufflenet_v2_x0_5().eval(), torch.zeros(1, 3, 64, 64)
    torch.set_num_threads(2)  # as outside the tests (conftest sets 1 before each test)
    model(example)  # the parent's intra-op threads have run
    groups = channel_groups(model, example, seconds=15)
    assert groups.failure == "torch-pruning failed (ZeroDivisionError: integer division or modulo by zero)"


@pytest.mark.parametrize("builder", [torchvision.models.resnet18, torchvision.models.mobilenet_v3_small])
def test_channel_groups_on_meta_equal_those_on_real_tensors(builder, monkeypatch):
    """The forked child analyses a meta copy with a shape-only batch-norm kernel (torch's own does
    the arithmetic op by op in Python); the groups must be those torch-pruning finds on the real
    model in this process, with torch's kernels."""
    from bitops import trace

    model, example = builder().eval(), torch.zeros(1, 3, 64, 64)
    forked = trace.channel_groups(model, example)
    monkeypatch.setattr(trace, "_can_fork", lambda *_: False)
    here = trace.channel_groups(model, example)
    assert forked.failure is None and here.failure is None and len(here.channels) > 10
    assert (forked.channels, forked.labels, forked.in_group, forked.out_group, forked.divisions) == \
        (here.channels, here.labels, here.in_group, here.out_group, here.divisions)
    assert all(not isinstance(p, torch.Tensor) or p.device.type == "cpu" for p in model.state_dict().values())


class _ChildFinishingAfter:
    """Stands for the forked analysis: finished once it has been asked ``calls`` times."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def finished(self) -> bool:
        self.calls -= 1
        return self.calls < 0


class _ThreadsSeen(nn.Module):
    def __init__(self, seen: list[int]) -> None:
        super().__init__()
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return x + 1


@pytest.mark.parametrize(("threads", "fails"), [(2, False), (2, True), (4, False)])
def test_trace_computes_on_one_thread_fewer_while_the_child_analyses_then_on_all(threads, fails):
    """torch's workers spin while the forked child holds a core; the trace runs on one thread fewer
    until the child has finished (checked before each module), on all of them after, and leaves
    the thread count as it was, also when the model raises."""
    from bitops import trace

    seen: list[int] = []
    model = nn.Sequential(*(_ThreadsSeen(seen) for _ in range(4)))
    pending = trace._Pending.__new__(trace._Pending)
    pending.child = _ChildFinishingAfter(calls=3)  # once on entry, then before each module
    torch.set_num_threads(threads)
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        with pending.sharing_cores():
            assert torch.get_num_threads() == threads - 1
            model(torch.zeros(1))
            if fails:
                raise RuntimeError("the model's forward failed")
    # asked on entry, before the Sequential and before its first module: not finished; before the second: finished
    assert seen == [threads - 1, threads, threads, threads]
    assert torch.get_num_threads() == threads
    assert not nn.modules.module._global_forward_pre_hooks


def test_trace_leaves_threads_alone_when_the_child_has_finished_or_there_is_none():
    from bitops import trace

    pending = trace._Pending.__new__(trace._Pending)
    torch.set_num_threads(2)
    for child in (None, _ChildFinishingAfter(calls=0)):
        pending.child = child
        with pending.sharing_cores():
            assert torch.get_num_threads() == 2
            assert not nn.modules.module._global_forward_pre_hooks
