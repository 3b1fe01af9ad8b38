"""`chaincomp count` end to end: through `chaincomp.cli.main` (capsys) and as a subprocess.

Expected numbers come from routes independent of bitops: closed-form MAC/parameter counts of the
basic-block ResNets (He et al. 2016), torch itself (parameter counts of `bitops.zoo` models, a
model physically pruned with torch-pruning, forward-hook MAC counts), and hand computations over
layer names. Bad input is checked one rule per case: exit code 2, one line on stderr naming the
argument, rule and value, no traceback, no output file left behind.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bitops.models import zoo_names
from chaincomp.cli import main

REPORT_KEYS = ("macs", "params", "bitops", "reference_bitops", "bitops_cr", "storage_bits",
               "reference_storage_bits", "cr", "conventions", "layers")
FULL_BITOPS_PER_MAC = 32 * 32  # DESIGN.md, "Conventions": full precision is 32 x 32

# Basic-block ResNets (He et al. 2016): blocks per stage and stage widths. The CIFAR 6n+2 family
# (Sec. 4.2), and ResNet-18/34 with a 3x3 stride-1 stem and no max-pool (the paper's CIFAR form).
# A 1x1 projection shortcut (option B) wherever a block changes width or stride.
RESNETS = {
    "resnet8": ((1, 1, 1), (16, 32, 64)),
    "resnet20": ((3, 3, 3), (16, 32, 64)),
    "resnet18_cifar": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet34_cifar": ((3, 4, 6, 3), (64, 128, 256, 512)),
}


# ---- independent references ------------------------------------------------------------------

def _conv(side: int, kernel: int, c_in: int, c_out: int) -> tuple[int, int, int]:
    """(MACs, weights, BN params) of a bias-free conv followed by BN, on a side x side output."""
    return side * side * kernel * kernel * c_in * c_out, kernel * kernel * c_in * c_out, 2 * c_out


def resnet_rows(name: str, *, side: int = 32, num_classes: int = 10, residual: tuple[int, ...] | None = None,
                inner: tuple[int, ...] | None = None) -> dict[str, tuple[int, int, int]]:
    """{layer name: (MACs, weights, other params)} of a basic-block ResNet, in closed form.

    ``residual[s]``/``inner[s]``: channels of stage s's residual stream and of its blocks' inner
    (conv1 -> conv2) maps, for pruned widths; default the unpruned stage widths.
    """
    blocks, widths = RESNETS[name]
    residual = residual or widths
    inner = inner or widths
    rows = {"stem.conv": _conv(side, 3, 3, residual[0])}
    in_width, in_kept = widths[0], residual[0]
    for s, (n, width) in enumerate(zip(blocks, widths)):
        stride = 1 if s == 0 else 2
        side = -(-side // stride)  # 3x3, padding 1: ceil(side / stride)
        for b in range(n):
            c_in = in_kept if b == 0 else residual[s]
            rows[f"layer{s + 1}.{b}.conv1"] = _conv(side, 3, c_in, inner[s])
            rows[f"layer{s + 1}.{b}.conv2"] = _conv(side, 3, inner[s], residual[s])
            if b == 0 and (stride != 1 or in_width != width):
                rows[f"layer{s + 1}.{b}.shortcut.conv"] = _conv(side, 1, c_in, residual[s])
        in_width, in_kept = width, residual[s]
    rows["fc"] = (in_kept * num_classes, in_kept * num_classes, num_classes)  # weights + bias
    return rows


def resnet_macs(name: str, **kwargs) -> int:
    return sum(macs for macs, _, _ in resnet_rows(name, **kwargs).values())


def resnet_params(name: str, **kwargs) -> int:
    return sum(w + other for _, w, other in resnet_rows(name, **kwargs).values())


def torch_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny_net(num_classes: int = 10):
    """conv -> BN -> ReLU -> learnable per-channel scale -> pool -> linear.

    The scale is a parameter no MAC row or BN owns, so its table has ``extra_params`` > 0.
    Reached as MODEL ``tests.cli.test_count:tiny_net``.
    """
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn(self.conv(x))) * self.scale
            return self.fc(x.mean(dim=(2, 3)))

    return TinyNet()


def stage_of(row_name: str) -> float:
    """Depth position of a zoo layer by its name: stem 0, stage k (or exit head after stage k) k, classifier last."""
    parts = row_name.split(".")
    if parts[0] == "exits":
        parts = parts[1:]
    head = parts[0]
    if head == "stem":
        return 0
    for prefix in ("layer", "stage"):
        if head.startswith(prefix) and head[len(prefix):].isdigit():
            return int(head[len(prefix):])
    assert head in ("fc", "classifier"), row_name
    return math.inf


def reach_by_name(row_name: str, exits: dict[str, float]) -> float:
    """P(a sample runs this row): 1 minus the probabilities of the exits that tap before it.

    An exit at stage k taps after stage k: its head runs for the samples that reach stage k's end,
    and the backbone after stage k runs for those that did not leave there.
    """
    depth = stage_of(row_name)
    return 1.0 - sum(q for name, q in exits.items() if stage_of(name) < depth)


# ---- running the command ---------------------------------------------------------------------

def run_count(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``chaincomp count ARGV`` run in this process."""
    try:
        code = main(["count", *argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def count_json(capsys, *argv: str) -> dict:
    code, out, err = run_count(capsys, *argv, "--json")
    assert code == 0, err
    assert err == ""
    return json.loads(out)


def run_module(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chaincomp", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def assert_close(actual: float, expected: float) -> None:
    assert actual == pytest.approx(expected, rel=1e-12, abs=0)


# ---- the report adds up ------------------------------------------------------------------------

SUM_CASES = {
    "resnet20-defaults": ["resnet20"],
    "mobilenetv2-everything": ["mobilenetv2_cifar", "--exits", "stage1,stage2,stage3", "--exit-probs", "0.1,0.2,0.3",
                               "--w-bits", "3", "--a-bits", "5", "--keep-ratio", "0.6", "--bn", "counted",
                               "--elementwise", "counted", "--bitops-formula", "accumulator", "--flops",
                               "--first-last-bits", "8", "--aux-bits", "16"],
    "vgg19-exit-no-aux": ["vgg19_cifar", "--exits", "stage2", "--exit-probs", "0.4", "--elementwise", "counted",
                          "--nonmac-bits", "8", "--aux-bits", "0", "--w-bits", "2"],
    "traced-extra-params": ["tests.cli.test_count:tiny_net", "--input", "3,32,32", "--bn", "counted", "--w-bits", "4",
                            "--aux-bits", "8"],
}


@pytest.mark.parametrize("argv", list(SUM_CASES.values()), ids=list(SUM_CASES))
def test_rows_add_up_to_the_totals(capsys, argv):
    data = count_json(capsys, *argv)
    assert set(REPORT_KEYS) <= set(data)
    layers, ops, extra = data["layers"], data["ops"], data["extra_params"]
    aux_bits = data["conventions"]["aux_bits"]
    params = sum(r["params"] for r in layers) + sum(o["params"] for o in ops) + extra
    storage = sum(r["storage_bits"] for r in layers) + sum(o["storage_bits"] for o in ops) + extra * aux_bits
    assert params == data["params"]
    assert storage == data["storage_bits"]
    macs = [r["macs"] for r in layers]
    bitops = [r["bitops"] for r in layers] + [o["bitops"] for o in ops]
    if all(isinstance(v, int) for v in macs + bitops):
        assert sum(macs) == data["macs"]
        assert sum(bitops) == data["bitops"]
    else:
        assert_close(math.fsum(macs), data["macs"])
        assert_close(math.fsum(bitops), data["bitops"])
    assert data["bitops_cr"] == data["reference_bitops"] / data["bitops"]
    assert data["cr"] == data["reference_storage_bits"] / data["storage_bits"]


def test_rows_add_up_checks_something(capsys):
    """The sum cases above are not vacuous: ops cost BitOps, a model has extra params, exits weight rows."""
    mobile = count_json(capsys, *SUM_CASES["mobilenetv2-everything"])
    assert any(o["bitops"] > 0 for o in mobile["ops"]) and not isinstance(mobile["bitops"], int)
    tiny = count_json(capsys, *SUM_CASES["traced-extra-params"])
    assert tiny["extra_params"] == 8  # the per-channel scale of tiny_net


def test_text_report_names_layers_and_totals(capsys):
    data = count_json(capsys, "resnet20", "--w-bits", "4", "--a-bits", "4")
    code, out, err = run_count(capsys, "resnet20", "--w-bits", "4", "--a-bits", "4", "--per-layer")
    assert code == 0 and err == ""
    for row in data["layers"]:
        assert row["name"] in out
    assert f"BitOpsCR {data['bitops_cr']:.2f}x" in out
    assert f"{data['params']:,}" in out


# ---- parameters against torch --------------------------------------------------------------------

@pytest.mark.parametrize("name", zoo_names())
def test_params_equal_torch(capsys, name):
    from bitops import zoo

    assert count_json(capsys, name)["params"] == torch_params(zoo.build(name))
    assert count_json(capsys, name, "--num-classes", "100")["params"] == torch_params(zoo.build(name, num_classes=100))


@pytest.mark.parametrize(("name", "exits"), [
    ("resnet20", "layer1,layer2"),
    ("resnet18_cifar", "layer1,layer3"),
    ("mobilenetv2_cifar", "stage1,stage2,stage3"),
    ("vgg19_cifar", "stage2,stage4"),
])
def test_params_with_exits_equal_torch(capsys, name, exits):
    from bitops import zoo

    model = zoo.build(name, exits=exits.split(","))
    assert count_json(capsys, name, "--exits", exits)["params"] == torch_params(model)


@pytest.mark.parametrize(("name", "width_mult"), [("mobilenetv2_cifar", 0.5), ("mobilenetv2_cifar", 0.75),
                                                 ("resnet8", 0.5)])
def test_params_with_width_mult_equal_torch(capsys, name, width_mult):
    from bitops import zoo

    data = count_json(capsys, name, "--width-mult", str(width_mult))
    assert data["params"] == torch_params(zoo.build(name, width_mult=width_mult))
    assert data["reference_params"] == data["params"]  # the reference is MODEL itself


def test_narrow_student_of_its_own_architecture(capsys):
    """The paper's MobileNetV2 student (section 7): the same net at half width, against the full-width teacher."""
    from bitops import zoo

    data = count_json(capsys, "mobilenetv2_cifar", "--student", "mobilenetv2_cifar", "--width-mult", "0.5")
    assert data["params"] == torch_params(zoo.build("mobilenetv2_cifar", width_mult=0.5))
    assert data["reference_params"] == torch_params(zoo.build("mobilenetv2_cifar"))
    assert data["reference_storage_bits"] == 32 * data["reference_params"]


@pytest.mark.parametrize(("name", "keep_ratio", "exits"), [
    ("resnet8", 0.5, None),
    ("resnet20", 0.5, None),
    ("resnet20", 0.7, None),
    ("resnet18_cifar", 0.5, None),
    ("resnet20", 0.5, "layer1,layer2"),
])
def test_keep_ratio_equals_a_physically_pruned_model(capsys, name, keep_ratio, exits):
    """DESIGN.md: the analytic count of a pruned configuration equals the physically pruned model's."""
    import torch
    import torch_pruning as tp

    from bitops import trace, zoo
    from tests.bitops.hook_counter import count_macs_params

    model = zoo.build(name, exits=exits.split(",") if exits else False)
    pruner = tp.pruner.MagnitudePruner(model, torch.zeros(1, 3, 32, 32),
                                       importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=1 - keep_ratio, ignored_layers=trace.output_layers(model))
    pruner.step()
    argv = [name, "--keep-ratio", str(keep_ratio)] + (["--exits", exits] if exits else [])
    data = count_json(capsys, *argv)
    assert data["params"] == torch_params(model)
    # No exit probabilities: every head runs, as in a plain forward pass.
    assert data["macs"] == sum(m for m, _ in count_macs_params(model, (3, 32, 32)).values())
    assert data["reference_params"] == torch_params(zoo.build(name))


# ---- MACs and BitOps -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet8", "resnet20"])
def test_macs_equal_the_closed_form(capsys, name):
    data = count_json(capsys, name)
    rows = resnet_rows(name)
    assert {r["name"]: r["macs"] for r in data["layers"]} == {n: m for n, (m, _, _) in rows.items()}
    assert data["macs"] == resnet_macs(name) == data["reference_macs"]
    assert data["bitops"] == resnet_macs(name) * FULL_BITOPS_PER_MAC == data["reference_bitops"]
    assert data["params"] == resnet_params(name)


def test_resnet20_macs_by_hand():
    """The closed form itself, summed by hand: stem, 3 stages of 3 blocks, two projections, fc."""
    stem = 32 * 32 * 9 * 3 * 16
    stage1 = 6 * 32 * 32 * 9 * 16 * 16
    stage2 = 16 * 16 * (9 * 16 * 32 + 5 * 9 * 32 * 32 + 16 * 32)
    stage3 = 8 * 8 * (9 * 32 * 64 + 5 * 9 * 64 * 64 + 32 * 64)
    assert resnet_macs("resnet20") == stem + stage1 + stage2 + stage3 + 64 * 10 == 40_813_184


def test_flops_doubles_macs_and_bitops_not_the_ratio(capsys):
    for extra in ([], ["--exits", "layer1,layer2", "--exit-probs", "0.25,0.5"]):
        macs = count_json(capsys, "resnet20", "--w-bits", "4", "--a-bits", "8", *extra)
        flops = count_json(capsys, "resnet20", "--w-bits", "4", "--a-bits", "8", "--flops", *extra)
        for key in ("macs", "bitops", "reference_macs", "reference_bitops"):
            assert flops[key] == 2 * macs[key], key
        assert_close(flops["bitops_cr"], macs["bitops_cr"])
        for key in ("params", "storage_bits", "cr"):
            assert flops[key] == macs[key], key
        assert flops["conventions"]["ops"] == "flops"


@pytest.mark.parametrize(("name", "bits"), [("resnet20", b) for b in (1, 2, 3, 4, 8, 32)]
                         + [("mobilenetv2_cifar", 5), ("vgg19_cifar", 7), ("resnet34_cifar", 1)])
def test_uniform_bits_give_bitops_cr_1024_over_b_squared(capsys, name, bits):
    data = count_json(capsys, name, "--w-bits", str(bits), "--a-bits", str(bits))
    assert data["bitops_cr"] == FULL_BITOPS_PER_MAC / bits**2
    assert data["bitops"] == data["macs"] * bits * bits


def test_mixed_bits_multiply(capsys):
    data = count_json(capsys, "resnet20", "--w-bits", "2", "--a-bits", "8")
    assert data["bitops"] == resnet_macs("resnet20") * 2 * 8


@pytest.mark.parametrize(("pinned", "w_bits", "a_bits"), [(32, 1, 1), (8, 1, 1), (8, 4, 4)])
def test_first_last_bits(capsys, pinned, w_bits, a_bits):
    """First conv and last linear at ``pinned`` bits, every other layer at w x a (DESIGN.md, Conventions)."""
    rows = resnet_rows("resnet20")
    first, last = rows["stem.conv"][0], rows["fc"][0]
    total = resnet_macs("resnet20")
    expected_bitops = (total - first - last) * w_bits * a_bits + (first + last) * pinned * pinned
    data = count_json(capsys, "resnet20", "--w-bits", str(w_bits), "--a-bits", str(a_bits),
                      "--first-last-bits", str(pinned))
    assert data["bitops"] == expected_bitops
    assert data["bitops_cr"] == total * FULL_BITOPS_PER_MAC / expected_bitops
    assert data["conventions"]["first_last_bits"] == pinned


def test_first_last_layer_macs_agree_with_torch_hooks():
    """The first/last MACs used above, cross-checked against forward hooks on the torch model."""
    from bitops import zoo
    from tests.bitops.hook_counter import count_macs_params

    hooks = count_macs_params(zoo.build("resnet20"), (3, 32, 32))
    rows = resnet_rows("resnet20")
    assert hooks["stem.conv"][0] == rows["stem.conv"][0]
    assert hooks["fc"][0] == rows["fc"][0]
    assert sum(m for m, _ in hooks.values()) == resnet_macs("resnet20")


@pytest.mark.parametrize(("name", "first"), [("resnet20", "stem.conv"), ("vgg19_cifar", "stage1.0.conv")])
def test_input_bits_change_only_the_first_conv_activations(capsys, name, first):
    base = count_json(capsys, name, "--w-bits", "4", "--a-bits", "4")
    pinned = count_json(capsys, name, "--w-bits", "4", "--a-bits", "4", "--input-bits", "8")
    assert pinned["layers"][0]["name"] == first
    row = pinned["layers"][0]
    assert (row["w_bits"], row["a_bits"]) == (4, 8)
    assert row["bitops"] == row["macs"] * 4 * 8
    assert pinned["layers"][1:] == base["layers"][1:]
    assert pinned["bitops"] == base["bitops"] + row["macs"] * 4 * (8 - 4)
    assert pinned["storage_bits"] == base["storage_bits"]


# ---- distillation: student against teacher ---------------------------------------------------------

def test_student_is_counted_against_the_teacher(capsys):
    m34, m18 = resnet_macs("resnet34_cifar"), resnet_macs("resnet18_cifar")
    data = count_json(capsys, "resnet34_cifar", "--student", "resnet18_cifar")
    assert (data["model"], data["reference_model"]) == ("resnet18_cifar", "resnet34_cifar")
    assert data["reference_bitops"] == m34 * FULL_BITOPS_PER_MAC
    assert data["bitops"] == m18 * FULL_BITOPS_PER_MAC
    assert data["bitops_cr"] == m34 / m18
    assert data["reference_storage_bits"] == 32 * resnet_params("resnet34_cifar")
    assert data["storage_bits"] == 32 * resnet_params("resnet18_cifar")

    quantized = count_json(capsys, "resnet34_cifar", "--student", "resnet18_cifar", "--w-bits", "1", "--a-bits", "8")
    assert quantized["bitops"] == m18 * 1 * 8
    assert quantized["bitops_cr"] == m34 * FULL_BITOPS_PER_MAC / (m18 * 8)


def test_reference_is_the_student_option_the_other_way_round(capsys):
    student = count_json(capsys, "resnet34_cifar", "--student", "resnet18_cifar", "--w-bits", "2")
    reference = count_json(capsys, "resnet18_cifar", "--reference", "resnet34_cifar", "--w-bits", "2")
    assert reference == student


def test_student_and_reference_together_is_a_usage_error(capsys):
    code, out, err = run_count(capsys, "resnet34_cifar", "--student", "resnet18_cifar", "--reference", "resnet20")
    assert code == 2
    assert out == ""
    assert "--reference" in err and "--student" in err and "not allowed" in err
    assert "Traceback" not in err


# ---- early exit ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "exits"), [
    ("resnet20", {"layer1": 0.3, "layer2": 0.2}),
    ("mobilenetv2_cifar", {"stage1": 0.25, "stage3": 0.5}),
])
def test_exit_probabilities_weight_segments_by_reach(capsys, name, exits):
    names, probs = ",".join(exits), ",".join(str(q) for q in exits.values())
    flat = count_json(capsys, name, "--exits", names, "--w-bits", "4", "--a-bits", "4")
    weighted = count_json(capsys, name, "--exits", names, "--exit-probs", probs, "--w-bits", "4", "--a-bits", "4")
    assert {r["name"] for r in flat["layers"] if r["name"].startswith("exits.")} == \
        {f"exits.{e}.{part}" for e in exits for part in ("conv", "fc")}
    reach = {r["name"]: reach_by_name(r["name"], exits) for r in flat["layers"]}
    if name == "resnet20":  # the brief's reading of it: reach 1, 0.7, 0.5 by segment
        assert {reach["layer1.0.conv1"], reach["exits.layer1.fc"], reach["layer2.0.conv1"],
                reach["exits.layer2.conv"], reach["layer3.2.conv2"], reach["fc"]} == {1.0, 0.7, 0.5}
    assert_close(weighted["bitops"], math.fsum(r["bitops"] * reach[r["name"]] for r in flat["layers"]))
    assert_close(weighted["macs"], math.fsum(r["macs"] * reach[r["name"]] for r in flat["layers"]))
    # Parameters and storage are what is deployed, never probability-weighted.
    assert (weighted["params"], weighted["storage_bits"]) == (flat["params"], flat["storage_bits"])
    assert weighted["reference_bitops"] == flat["reference_bitops"]


def test_exits_named_in_another_order_give_the_same_result(capsys):
    in_order = count_json(capsys, "resnet20", "--exits", "layer1,layer2", "--exit-probs", "0.3,0.2")
    reversed_ = count_json(capsys, "resnet20", "--exits", "layer2,layer1", "--exit-probs", "0.2,0.3")
    assert reversed_ == in_order
    assert (in_order["exits"], in_order["exit_probs"]) == (["layer1", "layer2"], [0.3, 0.2])


def test_exits_without_probabilities_run_every_head(capsys):
    """No --exit-probs: nobody leaves, so the heads only add cost to the plain model."""
    rows = resnet_rows("resnet20")
    plain = count_json(capsys, "resnet20")
    data = count_json(capsys, "resnet20", "--exits", "layer1")
    head = 32 * 32 * 9 * 16 * 16 + 16 * 10  # conv3x3 16->16 at 32x32, then fc 16->10
    assert data["macs"] == sum(m for m, _, _ in rows.values()) + head == plain["macs"] + head
    assert data["reference_macs"] == plain["macs"]


# ---- bits and keep files ---------------------------------------------------------------------------

BITS_TOML = """\
[default]
w_bits = 4
a_bits = 4

[[layer]]
name = "layer1.*"
w_bits = 2

[[layer]]
name = "layer1.0.conv1"   # a later rule wins over the glob
w_bits = 3
a_bits = 6

[[layer]]
name = "fc"
a_bits = 8
"""


def _bits_by_hand(layer: str) -> tuple[int, int]:
    if layer == "layer1.0.conv1":
        return 3, 6
    if layer.startswith("layer1."):
        return 2, 4
    if layer == "fc":
        return 4, 8
    return 4, 4


def test_bits_file_rules(capsys, tmp_path):
    path = tmp_path / "bits.toml"
    path.write_text(BITS_TOML)
    data = count_json(capsys, "resnet20", "--bits-file", str(path))
    rows = resnet_rows("resnet20")
    bits = {name: _bits_by_hand(name) for name in rows}
    assert {r["name"]: (r["w_bits"], r["a_bits"]) for r in data["layers"]} == bits
    assert data["bitops"] == sum(m * bits[n][0] * bits[n][1] for n, (m, _, _) in rows.items())
    # Weights at their bits; BN parameters and the classifier's bias at 32 (--aux-bits default).
    assert data["storage_bits"] == sum(w * bits[n][0] + 32 * other for n, (_, w, other) in rows.items())
    assert data["cr"] == 32 * resnet_params("resnet20") / data["storage_bits"]


KEEP_TOML = """\
default = 0.75
[groups]
"stem.conv" = 0.5
"layer3.*" = 0.25
"""


def test_keep_file_ratios(capsys, tmp_path):
    labels = {g["label"]: g["channels"] for g in count_json(capsys, "resnet20")["groups"]}
    # Stage 1's residual stream is labelled by the stem conv; stage 3's groups all start with layer3.
    assert labels["stem.conv"] == 16
    assert {k: v for k, v in labels.items() if k.startswith("layer3.")} == \
        {"layer3.0.shortcut.conv": 64, "layer3.0.conv1": 64, "layer3.1.conv1": 64, "layer3.2.conv1": 64}
    path = tmp_path / "keep.toml"
    path.write_text(KEEP_TOML)
    data = count_json(capsys, "resnet20", "--keep-file", str(path))
    # Kept channels by torch-pruning's rounding int(C * keep): 16 -> 8 (stem.conv), 64 -> 16 (layer3.*),
    # and the default 0.75 elsewhere: 16 -> 12, 32 -> 24.
    kept = {g["label"]: g["kept"] for g in data["groups"]}
    assert kept["stem.conv"] == 8 and kept["layer2.0.shortcut.conv"] == 24 and kept["layer1.0.conv1"] == 12
    assert all(kept[label] == 16 for label in labels if label.startswith("layer3."))
    pruned = dict(residual=(8, 24, 16), inner=(12, 24, 16))
    assert {r["name"]: r["macs"] for r in data["layers"]} == \
        {n: m for n, (m, _, _) in resnet_rows("resnet20", **pruned).items()}
    assert data["macs"] == resnet_macs("resnet20", **pruned)
    assert data["params"] == resnet_params("resnet20", **pruned)
    assert data["reference_params"] == resnet_params("resnet20")


# ---- saved tables ----------------------------------------------------------------------------------

def test_save_table_of_a_traced_model_reads_back(capsys, tmp_path):
    """A traced (not shipped) model: 64x64 input, 7 classes; checked against the closed form and torch."""
    from bitops import zoo

    out = tmp_path / "resnet8.json"
    traced = count_json(capsys, "resnet8", "--input", "3,64,64", "--num-classes", "7", "--save-table", str(out))
    assert traced["macs"] == resnet_macs("resnet8", side=64, num_classes=7)
    assert traced["params"] == torch_params(zoo.build("resnet8", num_classes=7))
    assert traced["params"] == resnet_params("resnet8", num_classes=7)
    saved = json.loads(out.read_text())
    assert saved["_type"] == "chaincomp.LayerTable" and saved["input_shape"] == [3, 64, 64]
    assert count_json(capsys, str(out)) == traced
    assert [p.name for p in tmp_path.iterdir()] == ["resnet8.json"]  # no temporary file left


def test_save_table_keeps_every_exit_head(capsys, tmp_path):
    out = tmp_path / "resnet20.json"
    argv = ["--exits", "layer2,layer1", "--exit-probs", "0.1,0.3", "--keep-ratio", "0.5", "--w-bits", "2"]
    shipped = count_json(capsys, "resnet20", *argv, "--save-table", str(out))
    assert count_json(capsys, str(out), *argv) == shipped
    assert count_json(capsys, str(out)) == count_json(capsys, "resnet20")


@pytest.mark.parametrize("counted_first", [True, False])
def test_saved_table_as_reference(capsys, tmp_path, counted_first):
    out = tmp_path / "resnet56.json"
    count_json(capsys, "resnet56", "--save-table", str(out))
    if counted_first:
        data = count_json(capsys, "resnet20", "--reference", str(out))
    else:
        data = count_json(capsys, str(out), "--student", "resnet20")
    assert data["reference_macs"] == count_json(capsys, "resnet56")["macs"]
    assert data["macs"] == resnet_macs("resnet20")


# ---- no torch for shipped tables, and the module entry point ----------------------------------------

@pytest.mark.parametrize("argv", [
    ["resnet34_cifar"],
    ["resnet34_cifar", "--exits", "layer1,layer2", "--exit-probs", "0.4,0.1"],
    ["resnet34_cifar", "--keep-ratio", "0.7", "--w-bits", "1", "--a-bits", "8"],
    ["resnet34_cifar", "--student", "resnet18_cifar", "--first-last-bits", "32"],
    ["mobilenetv2_cifar", "--student", "mobilenetv2_cifar", "--width-mult", "0.5"],
], ids=["plain", "exits", "keep-ratio", "student", "narrow-student"])
def test_shipped_tables_do_not_import_torch(tmp_path, argv):
    code = ("import sys, contextlib, io\n"
            "from chaincomp.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main({['count', *argv, '--json']!r}) == 0\n"
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_module_entry_point_prints_json(tmp_path):
    proc = run_module("count", "resnet20", "--w-bits", "1", "--a-bits", "1", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["macs"] == resnet_macs("resnet20")
    assert data["bitops_cr"] == 1024.0


def test_module_entry_point_bad_input(tmp_path):
    out = tmp_path / "table.json"
    proc = run_module("count", "resnet20", "--w-bits", "0", "--save-table", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["chaincomp count: error: --w-bits must be an integer in 1..32, got 0"]
    assert not out.exists()


# ---- bad input: one case per rule ------------------------------------------------------------------

def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _table_json(tmp_path: Path, name: str, edit) -> str:
    """A resnet8 table as `--save-table` writes it (from the shipped copy), changed by ``edit``."""
    from bitops.models import shipped_table

    data = shipped_table("resnet8").to_json_dict()
    edit(data)
    return _write(tmp_path, name, json.dumps(data))


def _set(key, value):
    return lambda data: data.__setitem__(key, value)


# id -> (argv builder over the input folder, substrings the one error line must contain)
BAD_INPUT = {
    "w-bits-0": (lambda d: ["resnet20", "--w-bits", "0"], ["--w-bits", "1..32", "got 0"]),
    "a-bits-33": (lambda d: ["resnet20", "--a-bits", "33"], ["--a-bits", "1..32", "got 33"]),
    "keep-ratio-0": (lambda d: ["resnet20", "--keep-ratio", "0"], ["--keep-ratio", "(0, 1]", "got 0"]),
    "keep-ratio-1.5": (lambda d: ["resnet20", "--keep-ratio", "1.5"], ["--keep-ratio", "(0, 1]", "1.5"]),
    "keep-ratio-keeps-0": (lambda d: ["resnet20", "--keep-ratio", "0.05"],
                           ["--keep-ratio", "0.05", "keeps 0", "at least 1"]),
    "exit-probs-negative": (lambda d: ["resnet20", "--exits", "layer1", "--exit-probs", "-0.1"],
                            ["--exit-probs", ">= 0", "-0.1"]),
    "exit-probs-sum-above-1": (lambda d: ["resnet20", "--exits", "layer1,layer2", "--exit-probs", "0.6,0.5"],
                               ["--exit-probs", "sum to at most 1", "1.1"]),
    "exit-probs-wrong-count": (lambda d: ["resnet20", "--exits", "layer1,layer2", "--exit-probs", "0.1"],
                               ["--exit-probs", "one probability per exit", "got 1"]),
    "exit-probs-without-exits": (lambda d: ["resnet20", "--exit-probs", "0.1"], ["--exit-probs", "needs --exits"]),
    "exit-probs-not-numbers": (lambda d: ["resnet20", "--exits", "layer1", "--exit-probs", "0.5,x"],
                               ["--exit-probs", "numbers", "'0.5,x'"]),
    "unknown-exit": (lambda d: ["resnet20", "--exits", "layer9"], ["--exits", "'layer9'", "layer1, layer2"]),
    "last-stage-is-no-exit": (lambda d: ["resnet20", "--exits", "layer3"], ["--exits", "'layer3'"]),
    "unknown-model": (lambda d: ["nope"], ["MODEL", "'nope'", "resnet20"]),
    "unknown-torchvision-model": (lambda d: ["torchvision:nope"], ["MODEL", "torchvision", "'nope'"]),
    "unimportable-module": (lambda d: ["bad.module:thing"], ["MODEL", "'bad.module'"]),
    "input-the-model-cannot-take": (lambda d: ["resnet8", "--input", "1,32,32"],
                                    ["MODEL", "resnet8", "tracing at input 1,32,32 failed", "3 channels"]),
    "input-malformed": (lambda d: ["resnet20", "--input", "3,32"], ["--input", "C,H,W", "got (3, 32)"]),
    "input-not-integers": (lambda d: ["resnet20", "--input", "3,a,32"], ["--input", "integers", "'3,a,32'"]),
    "num-classes-0": (lambda d: ["resnet20", "--num-classes", "0"], ["--num-classes", ">= 1", "got 0"]),
    "width-mult-0": (lambda d: ["resnet20", "--width-mult", "0"], ["--width-mult", "> 0", "0"]),
    "bits-file-malformed": (lambda d: ["resnet20", "--bits-file", _write(d, "b.toml", "[default\nw_bits = 4\n")],
                            ["--bits-file", "b.toml", "not valid TOML"]),
    "bits-file-unknown-key": (lambda d: ["resnet20", "--bits-file", _write(d, "b.toml", "[default]\nw_bitz = 4\n")],
                              ["--bits-file", "unknown key", "'w_bitz'"]),
    "bits-file-glob-matches-nothing": (
        lambda d: ["resnet20", "--bits-file", _write(d, "b.toml", '[[layer]]\nname = "layer9.*"\nw_bits = 2\n')],
        ["'layer9.*'", "matches no layer"]),
    "bits-file-bits-out-of-range": (
        lambda d: ["resnet20", "--bits-file", _write(d, "b.toml", '[[layer]]\nname = "fc"\nw_bits = 33\n')],
        ["--bits-file", "w_bits", "1..32", "33"]),
    "bits-file-missing": (lambda d: ["resnet20", "--bits-file", str(d / "absent.toml")],
                          ["--bits-file", "absent.toml", "cannot read"]),
    "keep-file-malformed": (lambda d: ["resnet20", "--keep-file", _write(d, "k.toml", "default = \n")],
                            ["--keep-file", "k.toml", "not valid TOML"]),
    "keep-file-label-matches-nothing": (
        lambda d: ["resnet20", "--keep-file", _write(d, "k.toml", '[groups]\n"layer9.*" = 0.5\n')],
        ["'layer9.*'", "matches no channel group"]),
    "keep-file-ratio-out-of-range": (
        lambda d: ["resnet20", "--keep-file", _write(d, "k.toml", '[groups]\n"stem.conv" = 1.5\n')],
        ["'stem.conv'", "(0, 1]", "1.5"]),
    "keep-file-default-out-of-range": (lambda d: ["resnet20", "--keep-file", _write(d, "k.toml", "default = 0\n")],
                                       ["--keep-file", "default", "(0, 1]", "got 0"]),
    "table-not-json": (lambda d: [_write(d, "t.json", "{not json")], ["t.json", "not valid JSON"]),
    "table-wrong-type": (lambda d: [_table_json(d, "t.json", _set("_type", "chaincomp.CountReport"))],
                         ["t.json", "_type", "'chaincomp.LayerTable'", "'chaincomp.CountReport'"]),
    "table-wrong-version": (lambda d: [_table_json(d, "t.json", _set("_version", 99))], ["t.json", "_version", "99"]),
    "table-missing-column": (lambda d: [_table_json(d, "t.json", lambda t: t["layers"].pop("macs_unit"))],
                             ["t.json", "layers.macs_unit", "missing"]),
    "first-last-bits-40": (lambda d: ["resnet20", "--first-last-bits", "40"], ["--first-last-bits", "1..32", "40"]),
    "input-bits-0": (lambda d: ["resnet20", "--input-bits", "0"], ["--input-bits", "1..32", "got 0"]),
    "aux-bits-40": (lambda d: ["resnet20", "--aux-bits", "40"], ["--aux-bits", "0..32", "40"]),
    "nonmac-bits-0": (lambda d: ["resnet20", "--nonmac-bits", "0"], ["--nonmac-bits", "1..32", "got 0"]),
}
# Cases whose message must also name the option as typed (once reported, now fixed).
OPTION_NOT_NAMED = {
    "bits-file-glob-matches-nothing": "--bits-file",
    "keep-file-label-matches-nothing": "--keep-file",
    "keep-file-ratio-out-of-range": "--keep-file",
    "aux-bits-40": "--aux-bits",
    "nonmac-bits-0": "--nonmac-bits",
}


def assert_one_error_line(code: int, out: str, err: str, needles: list[str]) -> str:
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("chaincomp count: error: ")
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_clear_line(capsys, tmp_path, case):
    build_argv, needles = BAD_INPUT[case]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    code, out, err = run_count(capsys, *build_argv(inputs), "--save-table", str(outputs / "table.json"))
    assert_one_error_line(code, out, err, needles)
    assert list(outputs.iterdir()) == []


@pytest.mark.parametrize("case", list(OPTION_NOT_NAMED))
def test_bad_input_names_the_option(capsys, tmp_path, case):
    build_argv, _ = BAD_INPUT[case]
    code, out, err = run_count(capsys, *build_argv(tmp_path))
    assert OPTION_NOT_NAMED[case] in err


def test_save_table_into_a_missing_directory(capsys, tmp_path):
    target = tmp_path / "missing" / "table.json"
    code, out, err = run_count(capsys, "resnet20", "--save-table", str(target))
    assert_one_error_line(code, out, err, [str(target), "does not exist"])
    assert not target.parent.exists()


def test_width_mult_must_be_finite(capsys, tmp_path):
    code, out, err = run_count(capsys, "resnet8", "--width-mult", "inf")
    assert_one_error_line(code, out, err, ["--width-mult", "inf"])


def test_repeated_exit_name_is_an_error(capsys):
    code, out, err = run_count(capsys, "resnet20", "--exits", "layer1,layer1", "--exit-probs", "0.2,0.3")
    assert_one_error_line(code, out, err, ["--exits", "'layer1'"])


# ---- limits up front (issue 11) -----------------------------------------------------------------

def test_meta_estimate_equals_the_real_model():
    """The estimate (built and run on torch's meta device) against the same model built for real:
    its tensors' bytes, and every leaf module's output bytes caught by hooks on a real forward."""
    import torch
    from torch import nn

    from bitops import zoo
    from bitops.trace import estimate_bytes

    def build():
        return zoo.build("resnet8", num_classes=10, width_mult=0.5, exits=True)

    real = build().eval()
    weights = sum(t.numel() * t.element_size() for t in (*real.parameters(), *real.buffers()))
    outputs = []
    for module in real.modules():
        if not list(module.children()):
            module.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel() * out.element_size()))
    with torch.no_grad():
        real(torch.zeros(1, 3, 24, 24))
    assert estimate_bytes(build, (3, 24, 24)) == (weights, sum(outputs))
    assert isinstance(real, nn.Module) and weights > 0 and sum(outputs) > 0


@pytest.mark.parametrize("argv, words", [
    (["resnet8", "--width-mult", "2485"], ["GiB of weights", "--width-mult"]),
    (["resnet8", "--input", "3,100000,100000"], ["GiB of activations", "--input"]),
    (["torchvision:resnet18", "--input", "3,60000,60000"], ["GiB of activations", "--input"]),
])
def test_a_model_too_large_for_memory_is_refused_in_one_line(argv, words):
    # A subprocess whose address space is capped at 4 GiB: its first allocation past the count's own
    # cap (half the free memory, and never above the process's limit) fails, and is worded with the
    # model's size estimated on meta tensors, never a traceback or a MemoryError.
    cap = "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
    done = subprocess.run([sys.executable, "-c", cap + "from chaincomp.cli import main; sys.exit(main(sys.argv[1:]))",
                           "count", *argv], capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(word in lines[0] for word in words), lines[0]


def test_a_count_runs_no_estimate_pass_and_restores_the_address_space_limit(capsys, monkeypatch):
    """The trace runs under a cap on the address space, so the meta-device estimate (a third forward
    pass) runs only to word a refusal: a count that fits never calls it, and the limit is back after."""
    import gc
    import resource

    from bitops import trace

    before = resource.getrlimit(resource.RLIMIT_AS)
    calls = []
    real_estimate = trace.estimate_bytes
    monkeypatch.setattr(trace, "estimate_bytes", lambda *a: calls.append(a) or real_estimate(*a))
    assert main(["count", "torchvision:resnet18", "--input", "3,32,32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 11_689_512 and calls == []
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    # 64 MiB of room: ViT-H/14's 2.5 GB of weights meet the cap while it is built (more than the
    # garbage of earlier tests that a collection during the build could hand back).
    gc.collect()
    monkeypatch.setattr(trace, "MEMORY_FRACTION", 2**26 / trace._available_bytes())
    assert main(["count", "torchvision:vit_h_14"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2.4 GiB of weights" in err and err.endswith("; lower --input"), err
    assert len(calls) == 1 and resource.getrlimit(resource.RLIMIT_AS) == before


def test_a_failing_user_callable_is_one_line(capsys):
    code = main(["count", "os.path:join", "--input", "3,8,8"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "os.path:join: building failed (TypeError" in err


def test_csv_holds_the_per_layer_table(capsys, tmp_path):
    import csv

    out = tmp_path / "layers.csv"
    argv = ["count", "resnet8", "--w-bits", "4", "--a-bits", "4", "--exits", "layer1", "--exit-probs", "0.3"]
    assert main([*argv, "--json", "--csv", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    with open(out, encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [r["name"] for r in rows] == [r["name"] for r in data["layers"]]
    for row, layer in zip(rows, data["layers"]):
        assert row == {k: "" if v is None else str(v) for k, v in layer.items()}
    # The layer rows carry the MACs (BN and other ops have params and BitOps rows of their own).
    assert math.fsum(float(r["macs"]) for r in rows) == pytest.approx(data["macs"], rel=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.csv"]


def test_csv_into_a_missing_folder_is_refused_before_counting(capsys, tmp_path):
    code = main(["count", "resnet8", "--csv", str(tmp_path / "missing" / "layers.csv")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--csv" in err and "does not exist" in err


# ---- your own model (issue 10, item 5) ------------------------------------------------------------

USER_MODEL = """
from torch import nn

def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, num_classes))
"""
# conv 6x3x3x3 at 8x8 output, then linear 6 -> 10: by hand
USER_MACS = 6 * 3 * 9 * 64 + 6 * 10


def _user_model(tmp_path, monkeypatch, module: str, extra: str = "") -> None:
    (tmp_path / f"{module}.py").write_text(USER_MODEL + extra, encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # resolved from the current folder, no PYTHONPATH


@pytest.mark.parametrize("spelling", ["{m}:build", "./{m}.py:build", "{tmp}/{m}.py:build"])
def test_a_user_model_from_the_current_folder_or_a_file(capsys, tmp_path, monkeypatch, spelling):
    module = f"usernet_{abs(hash(spelling)) % 10**6}"
    _user_model(tmp_path, monkeypatch, module)
    data = count_json(capsys, spelling.format(m=module, tmp=tmp_path), "--input", "3,8,8")
    assert data["macs"] == USER_MACS and data["input_shape"] == [3, 8, 8]


def test_a_user_model_needs_its_input(capsys, tmp_path, monkeypatch):
    _user_model(tmp_path, monkeypatch, "usernet_noinput")
    code = main(["count", "usernet_noinput:build"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.count("--input") == 1, err


def test_a_user_model_may_document_its_input(capsys, tmp_path, monkeypatch):
    _user_model(tmp_path, monkeypatch, "usernet_documented", "\nbuild.input_shape = (3, 8, 8)\n")
    assert count_json(capsys, "usernet_documented:build")["macs"] == USER_MACS


@pytest.mark.parametrize("spelling, extra, words", [
    ("./usernet_raises.py:build", "\nraise RuntimeError('no GPU here')\n", ["importing ./usernet_raises.py failed",
                                                                          "RuntimeError: no GPU here"]),
    ("./missing.py:build", "", ["no file './missing.py'"]),
    ("./usernet_attr.py:nothing", "", ["has no callable 'nothing'"]),
])
def test_a_user_file_that_fails_is_one_line(capsys, tmp_path, monkeypatch, spelling, extra, words):
    if "missing" in spelling:
        monkeypatch.chdir(tmp_path)
    else:
        _user_model(tmp_path, monkeypatch, spelling[2:].split(".py")[0], extra)
    code = main(["count", spelling, "--input", "3,8,8"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(word in err for word in words), err


# ---- exits on any model --------------------------------------------------------------------------------
def _hook_macs(model: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
    """{Conv2d/Linear module: MACs} from forward hooks, for the closed forms below."""
    import torch
    from torch import nn

    macs: dict[str, int] = {}

    def hook(name):
        def record(module, inputs, output):
            if isinstance(module, nn.Conv2d):
                unit = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                macs[name] = output.numel() * unit
            else:
                macs[name] = inputs[0].numel() * module.out_features
        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(hook(name))
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    return macs


def test_exits_attach_to_any_model_with_either_head_design(capsys):
    """torchvision ResNet-18 at 64x64: conv heads after layer1 (64 channels at 16x16) and
    after layer3 (256 channels at 4x4), or pool heads at both: expected MACs = each segment's MACs x
    the share of images reaching it."""
    import torchvision

    macs = _hook_macs(torchvision.models.resnet18(), (3, 64, 64))
    segment = [sum(v for k, v in macs.items() if k.startswith(prefixes))
               for prefixes in (("conv1", "layer1"), ("layer2", "layer3"), ("layer4", "fc"))]
    # (head after layer1, head after layer3): layer3's map is 256 channels at 4x4
    heads = {"conv": (16 * 16 * 9 * 64 * 64 + 64 * 1000, 4 * 4 * 9 * 256 * 256 + 256 * 1000),
             "pool": (64 * 1000, 256 * 1000)}
    for kind in ("conv", "pool"):
        code = main(["count", "torchvision:resnet18", "--input", "3,64,64", "--exits", "layer3,layer1",
                     "--exit-probs", "0.5,0.25", "--exit-head", kind, "--json"])
        data = json.loads(capsys.readouterr().out)
        assert code == 0 and data["exits"] == ["layer1", "layer3"] and data["exit_probs"] == [0.25, 0.5]
        expected = segment[0] + heads[kind][0] + 0.75 * (segment[1] + heads[kind][1]) + 0.25 * segment[2]
        assert data["macs"] == expected
        head_params = {"conv": 9 * 64 * 64 + 2 * 64 + 9 * 256 * 256 + 2 * 256, "pool": 0}[kind] + 65000 + 257000
        assert data["params"] == 11_689_512 + head_params  # torchvision's ResNet-18 has 11,689,512


def test_exit_heads_on_token_outputs_pool_over_tokens(capsys):
    """A ViT-B/16 on 32x32 images (4 patches + the class token): a pool head after encoder layer 5
    is the mean over the 5 tokens and a 768 -> 1000 linear."""
    base = ["count", "torchvision:vit_b_16", "--kwargs", "image_size=32", "--input", "3,32,32", "--json"]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*base, "--exits", "encoder.layers.encoder_layer_5", "--exit-probs", "0", "--exit-head", "pool"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == plain["macs"] + 768 * 1000 and data["params"] == plain["params"] + 768 * 1000 + 1000
    code = main([*base, "--exits", "encoder.layers.encoder_layer_5"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--exit-head 'conv' needs an N x C x H x W" in err


@pytest.mark.parametrize(("argv", "words"), [
    (["torchvision:resnet18", "--exits", "layer9"], ["exits", "no module 'layer9'", "layer1"]),
    (["torchvision:googlenet", "--exits", "aux1"], ["exits", "'aux1'", "never runs"]),
])
def test_bad_exits_on_any_model_are_one_line(capsys, argv, words):
    code = main(["count", *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(word in err for word in words), err


def test_zoo_exit_heads_of_another_design_are_traced(capsys):
    """resnet20's layer1 map has 16 channels: a pool head is one 16 -> 10 linear (160 MACs, 170 params)."""
    assert main(["count", "resnet20", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["count", "resnet20", "--exits", "layer1", "--exit-head", "pool", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] == plain["macs"] + 160 and data["params"] == plain["params"] + 170


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_channel_group_analysis_that_stalls_is_stopped_before_its_time_bound(capsys, monkeypatch):
    """torch-pruning made to stop after its first group (as it does on Swin, MaxViT and ReXNet): the
    analysis is given up a sixth of --group-timeout after the last group came, not at the bound."""
    import time as time_module

    from bitops import trace

    analyse = trace._dependency_members

    def first_then_stuck(*args):
        items = analyse(*args)
        yield next(items)
        time_module.sleep(60)
        yield from items

    monkeypatch.setattr(trace, "_dependency_members", first_then_stuck)
    assert main(["count", "torchvision:resnet18", "--input", "3,32,32", "--group-timeout", "30", "--groups",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["ungrouped"].values()) == {"torch-pruning's analysis stalled after 1 channel group (none more in "
                                               "5 s; window attention and similar graphs make it grow without end)"}


def test_a_long_trace_shows_what_it_does_on_a_terminal_and_clears_the_line():
    from bitops import trace
    from chaincomp.cli.options import step_line

    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        with step_line("chaincomp count", stream, delay=0.05, every=0.05):
            trace._step("torchvision:swin_t: channel groups (torch-pruning)")
            time.sleep(0.4)
            trace._step("")
    shown = terminal.getvalue()
    assert "chaincomp count: torchvision:swin_t: channel groups (torch-pruning) (0 s)" in shown
    assert shown.endswith("\r\x1b[K") and pipe.getvalue() == ""


def test_channel_group_analysis_past_its_bound_counts_unpruned_and_refuses_pruning(capsys, monkeypatch):
    """An analysis that would take a minute (torch-pruning made to sleep in the forked child) is
    stopped at --group-timeout: every conv and linear of ResNet-18 is listed as having no groups,
    the count goes on with the same MACs and params, and pruning is refused in one line."""
    import time as time_module

    from bitops import trace

    base = ["count", "torchvision:resnet18", "--input", "3,32,32", "--groups"]
    assert main([*base, "--json"]) == 0
    grouped = json.loads(capsys.readouterr().out)
    analyse = trace._dependency_members
    monkeypatch.setattr(trace, "_dependency_members", lambda *a: (time_module.sleep(60), analyse(*a))[1])
    assert main([*base, "--group-timeout", "0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"] == [] and len(data["ungrouped"]) == 21  # 20 convs and the classifier
    assert set(data["ungrouped"].values()) == {"torch-pruning's analysis took longer than 0.5 s"}
    assert len(grouped["groups"]) > 0 and (data["macs"], data["params"]) == (grouped["macs"], grouped["params"])
    code = main([*base, "--group-timeout", "0.5", "--keep-ratio", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "--keep-ratio: torchvision:resnet18 can be counted unpruned only: 21 layers" in err
    code = main(["count", "torchvision:resnet18", "--group-timeout", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--group-timeout must be a finite number of seconds > 0, got 0.0" in err


def test_a_count_that_prunes_nothing_leaves_the_channel_group_analysis_out(capsys, monkeypatch):
    """A traced model counted without pruning never starts torch-pruning (made to fail here if it
    did) and gives the MACs and params of the count that analyses its groups; the report says the
    groups were not analysed, and --groups lists in text the groups --json holds."""
    from bitops import trace

    base = ["count", "torchvision:resnet18", "--input", "3,32,32"]
    assert main([*base, "--groups", "--json"]) == 0
    grouped = json.loads(capsys.readouterr().out)
    assert main([*base, "--groups"]) == 0
    text = capsys.readouterr().out
    assert f"channel groups: {len(grouped['groups'])} (0 concatenations" in text
    assert all(f"  {g['label']}: {g['kept']} / {g['channels']}\n" in text + "\n" for g in grouped["groups"])

    def refused(*_args, **_kwargs):
        raise AssertionError("the channel-group analysis was started")

    monkeypatch.setattr(trace, "start_channel_groups", refused)
    assert main([*base, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["groups"] is None and plain["ungrouped"] == {} and len(grouped["groups"]) > 0
    assert (plain["macs"], plain["params"], plain["bitops"]) == (grouped["macs"], grouped["params"], grouped["bitops"])
    assert [r["macs"] for r in plain["layers"]] == [r["macs"] for r in grouped["layers"]]
    assert main(base) == 0
    assert "channel groups: not analysed, as nothing is pruned (--groups lists them" in capsys.readouterr().out


def test_a_table_traced_without_channel_groups_is_never_pruned_silently():
    """The Python API can trace without groups; pruning that table is refused in one line naming
    the cause, not counted unpruned without a word."""
    from bitops import InputError
    from bitops.config import kept_from_ratio
    from bitops.models import ModelSpec, load_model_table

    table = load_model_table(ModelSpec("torchvision:resnet18", input_shape=(3, 32, 32), groups=False))
    assert not table.groups_analysed and table.num_groups == 0
    with pytest.raises(InputError, match=r"^keep_ratio: torchvision:resnet18 was traced without its channel groups"):
        kept_from_ratio(table, 0.5)
    assert kept_from_ratio(table, 1.0).size == 0


def test_save_table_analyses_the_channel_groups_so_the_saved_table_can_be_pruned(capsys, tmp_path):
    path = tmp_path / "r18.json"
    assert main(["count", "torchvision:resnet18", "--input", "3,32,32", "--save-table", str(path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["groups"]) > 0
    assert main(["count", str(path), "--keep-ratio", "0.5", "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert main(["count", "torchvision:resnet18", "--input", "3,32,32", "--keep-ratio", "0.5", "--json"]) == 0
    traced = json.loads(capsys.readouterr().out)
    assert (saved["macs"], saved["params"]) == (traced["macs"], traced["params"]) and saved["macs"] < 37_000_000
