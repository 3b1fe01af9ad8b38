"""bitops.zoo: shapes, exit heads and widths, with counts checked against closed forms, published
parameter counts, torchvision's MobileNetV2 and fvcore."""

from __future__ import annotations

import pytest
import torch
import torchvision
from fvcore.nn import FlopCountAnalysis
from torch import nn

from bitops.architectures import ZOO_NAMES, exit_points
from bitops.zoo import DEFAULT_INPUT_SHAPE, build
from tests.bitops.hook_counter import count_macs_params

CIFAR_RESNETS = {"resnet8": 1, "resnet20": 3, "resnet32": 5, "resnet56": 9}  # name -> blocks/stage

# Stage output (channels, resolution) at width 1 on a 32x32 input, from the paper definitions.
STAGE_OUTPUTS = {
    **{name: ((16, 32), (32, 16), (64, 8)) for name in CIFAR_RESNETS},
    "mobilenetv2_cifar": ((24, 32), (32, 16), (96, 8), (1280, 4)),
    "resnet18_cifar": ((64, 32), (128, 16), (256, 8), (512, 4)),
    "resnet34_cifar": ((64, 32), (128, 16), (256, 8), (512, 4)),
    **{f"vgg{depth}_cifar": ((64, 16), (128, 8), (256, 4), (512, 2), (512, 1)) for depth in (11, 13, 16, 19)},
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_bn_params(kernel: int, in_ch: int, out_ch: int) -> int:
    """Bias-free conv plus BN's weight and bias."""
    return kernel * kernel * in_ch * out_ch + 2 * out_ch


def basic_resnet_params(blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int) -> int:
    """3x3 stem, basic blocks with a 1x1 projection where the width changes, linear classifier."""
    total, in_ch = conv_bn_params(3, 3, widths[0]), widths[0]
    for n, width in zip(blocks, widths):
        projection = conv_bn_params(1, in_ch, width) if in_ch != width else 0
        total += conv_bn_params(3, in_ch, width) + projection + conv_bn_params(3, width, width)
        total += (n - 1) * 2 * conv_bn_params(3, width, width)
        in_ch = width
    return total + in_ch * num_classes + num_classes


def stage_outputs(model: nn.Module) -> list[tuple[int, int]]:
    """(channels, resolution) of each stage output for one 32x32 input."""
    shapes = []
    handles = [
        stage.register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape[1:3])))
        for _, stage in model.named_stages()
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *DEFAULT_INPUT_SHAPE))
    for handle in handles:
        handle.remove()
    return shapes


def test_zoo_names_are_sorted_and_complete():
    expected = {"mobilenetv2_cifar", "resnet18_cifar", "resnet34_cifar", "vgg11_cifar", "vgg13_cifar", "vgg16_cifar",
                "vgg19_cifar"}
    assert ZOO_NAMES == tuple(sorted(expected | set(CIFAR_RESNETS)))


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_exit_points_are_all_stages_but_the_last(name):
    model = build(name)
    assert exit_points(name) == model.exit_points == model.stage_names[:-1]
    assert len(model.stage_names) == len(STAGE_OUTPUTS[name])
    assert len(model.exits) == 0


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_stage_outputs_match_the_architecture(name):
    assert stage_outputs(build(name)) == list(STAGE_OUTPUTS[name])


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_forward_without_exits_returns_final_logits(name):
    with torch.no_grad():
        logits = build(name, num_classes=7).eval()(torch.zeros(2, *DEFAULT_INPUT_SHAPE))
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (2, 7)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_forward_with_exits_returns_exit_then_final_logits(name):
    model = build(name, num_classes=7, exits=True).eval()
    with torch.no_grad():
        logits = model(torch.zeros(2, *DEFAULT_INPUT_SHAPE))
    assert isinstance(logits, list)
    assert [t.shape for t in logits] == [(2, 7)] * (len(exit_points(name)) + 1)
    assert tuple(model.exits) == exit_points(name)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_exit_heads_run_right_after_their_stage_on_its_output(name):
    model = build(name, exits=True).eval()
    calls, stage_out, head_in = [], {}, {}

    def after_stage(stage_name):
        def hook(module, inputs, output):
            calls.append(stage_name)
            stage_out[stage_name] = output

        return hook

    def before_head(point):
        def hook(module, inputs):
            calls.append(f"exit:{point}")
            head_in[point] = inputs[0]

        return hook

    for stage_name, stage in model.named_stages():
        stage.register_forward_hook(after_stage(stage_name))
    for point, head in model.exits.items():
        head.register_forward_pre_hook(before_head(point))
    with torch.no_grad():
        model(torch.randn(1, *DEFAULT_INPUT_SHAPE))
    interleaved = [c for p in model.exit_points for c in (p, f"exit:{p}")]
    assert calls == [*interleaved, model.stage_names[-1]]
    assert all(head_in[p] is stage_out[p] for p in model.exit_points)


def test_exit_subset_is_kept_in_depth_order():
    model = build("resnet18_cifar", exits=["layer3", "layer1"]).eval()
    assert tuple(model.exits) == ("layer1", "layer3")
    with torch.no_grad():
        assert len(model(torch.zeros(1, *DEFAULT_INPUT_SHAPE))) == 3


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_exit_heads_are_conv_bn_relu_pool_linear_on_the_tapped_width(name):
    num_classes = 7
    model = build(name, num_classes=num_classes, exits=True)
    widths = dict(zip(model.stage_names, (c for c, _ in STAGE_OUTPUTS[name])))
    for point, head in model.exits.items():
        c = widths[point]
        layers = [n for n, _ in head.named_children()]
        assert layers == ["conv", "bn", "relu", "pool", "flatten", "fc"]
        assert head.conv.weight.shape == (c, c, 3, 3) and head.conv.bias is None
        assert n_params(head) == conv_bn_params(3, c, c) + c * num_classes + num_classes
    assert n_params(model) == n_params(build(name, num_classes=num_classes)) + n_params(model.exits)


def test_exit_heads_and_backbone_all_get_gradients():
    model = build("mobilenetv2_cifar", width_mult=0.25, exits=True).train()
    sum(t.sum() for t in model(torch.randn(2, *DEFAULT_INPUT_SHAPE))).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "blocks", "widths", "published"),
    [
        # Published counts for the kuangliu CIFAR ResNet-18/34 at 10 classes.
        ("resnet18_cifar", (2, 2, 2, 2), (64, 128, 256, 512), 11_173_962),
        ("resnet34_cifar", (3, 4, 6, 3), (64, 128, 256, 512), 21_282_122),
        # He et al.'s option-A ResNet-20 (269,722) plus our two 1x1 projections with BN.
        ("resnet20", (3, 3, 3), (16, 32, 64), 269_722 + (16 * 32 + 64) + (32 * 64 + 128)),
    ],
)
def test_resnet_params_match_closed_form(name, blocks, widths, published):
    assert basic_resnet_params(blocks, widths, 10) == published
    assert n_params(build(name)) == published
    assert n_params(build(name, num_classes=100)) == basic_resnet_params(blocks, widths, 100)


@pytest.mark.parametrize(("name", "n"), CIFAR_RESNETS.items())
def test_cifar_resnet_depth_is_6n_plus_2(name, n):
    weighted = [m for m in build(name).modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    projections = [m for m in weighted if getattr(m, "kernel_size", None) == (1, 1)]
    assert (len(weighted) - len(projections), len(projections)) == (6 * n + 2, 2)


# Conv widths of VGG configs A, B, D, E (Simonyan & Zisserman 2015, Table 1), written out flat.
VGG_CONFIGS = {
    "vgg11_cifar": [64, 128, 256, 256, 512, 512, 512, 512],
    "vgg13_cifar": [64, 64, 128, 128, 256, 256, 512, 512, 512, 512],
    "vgg16_cifar": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
    "vgg19_cifar": [64, 64, 128, 128, 256, 256, 256, 256] + [512] * 8,
}


@pytest.mark.parametrize(("name", "cfg"), VGG_CONFIGS.items())
def test_vgg_params_match_closed_form(name, cfg):
    convs = sum(conv_bn_params(3, c_in, c_out) for c_in, c_out in zip([3, *cfg], cfg))
    assert n_params(build(name)) == convs + 512 * 10 + 10


def test_resnet20_macs_match_closed_form():
    macs = 9 * 3 * 16 * 32 * 32  # stem
    macs += 3 * 2 * 9 * 16 * 16 * 32 * 32  # layer1: 3 blocks x 2 convs
    for c_in, c, hw in ((16, 32, 16), (32, 64, 8)):
        macs += (9 * c_in * c + c_in * c + 9 * c * c) * hw * hw  # strided conv, projection, conv
        macs += 2 * 2 * 9 * c * c * hw * hw  # 2 more blocks x 2 convs
    macs += 64 * 10  # fc
    counts = count_macs_params(build("resnet20"), DEFAULT_INPUT_SHAPE)
    assert sum(m for m, _ in counts.values()) == macs
    # The counter sees no BN: each stage has 6 in its blocks plus the stem's or a projection's.
    bn_params = 2 * 7 * (16 + 32 + 64)
    assert sum(p for _, p in counts.values()) == n_params(build("resnet20")) - bn_params


@pytest.mark.parametrize("name", ["mobilenetv2_cifar", "resnet20", "vgg19_cifar"])
def test_hook_counter_macs_match_fvcore(name):
    model = build(name, exits=True).eval()
    counts = count_macs_params(model, DEFAULT_INPUT_SHAPE)
    flops = FlopCountAnalysis(model, torch.zeros(1, *DEFAULT_INPUT_SHAPE))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = flops.by_operator()  # fvcore counts one multiply-add as one flop
    assert sum(m for m, _ in counts.values()) == by_op["conv"] + by_op["linear"]


def conv_shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("width_mult", [0.5, 1.0, 1.4])
def test_mobilenetv2_layers_match_torchvision(width_mult):
    """Strides differ (CIFAR) but every weight shape is torchvision's, whose last conv keeps 1280
    channels below width 1 where ours scales with the rest."""
    ours = build("mobilenetv2_cifar", width_mult=width_mult)
    reference = torchvision.models.mobilenet_v2(num_classes=10, width_mult=width_mult)
    if width_mult < 1:
        assert conv_shapes(ours)[:-1] == conv_shapes(reference)[:-1]
    else:
        assert conv_shapes(ours) == conv_shapes(reference)
        assert n_params(ours) == n_params(reference)


@pytest.mark.parametrize(
    ("name", "width_mult", "widths"),
    [
        ("resnet20", 0.5, (8, 16, 32)),
        ("resnet20", 0.3, (5, 10, 19)),  # 4.8, 9.6, 19.2 rounded to nearest
        ("resnet18_cifar", 0.5, (32, 64, 128, 256)),
        ("vgg19_cifar", 0.25, (16, 32, 64, 128, 128)),
        ("mobilenetv2_cifar", 0.5, (16, 16, 48, 640)),  # 12 -> 16: nearest multiple of 8
        ("mobilenetv2_cifar", 0.75, (24, 24, 72, 960)),  # 18 -> 16 loses > 10%, so 24
    ],
)
def test_width_mult_scales_hidden_widths(name, width_mult, widths):
    model = build(name, num_classes=7, width_mult=width_mult)
    resolutions = [r for _, r in STAGE_OUTPUTS[name]]
    assert stage_outputs(model) == list(zip(widths, resolutions))
    assert conv_shapes(model)[0][1] == 3
    assert getattr(model, model.classifier_name).out_features == 7


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match=r"name must be one of .*resnet20.*, got 'resnet21'"):
        build("resnet21")
    with pytest.raises(ValueError, match="name must be one of"):
        exit_points("resnet21")


def test_num_classes_below_one_is_rejected():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        build("resnet8", num_classes=0)


@pytest.mark.parametrize("width_mult", [0.0, -0.5, float("nan")])
def test_non_positive_width_mult_is_rejected(width_mult):
    with pytest.raises(ValueError, match="width_mult must be a finite number > 0"):
        build("resnet8", width_mult=width_mult)


def test_unknown_exit_point_is_rejected():
    message = r"exits must be exit points of resnet8 \(layer1, layer2\), got unknown \['layer3'\]"
    with pytest.raises(ValueError, match=message):
        build("resnet8", exits=["layer1", "layer3"])


def test_exit_point_string_is_rejected():
    with pytest.raises(ValueError, match="exits must be a bool or a sequence"):
        build("resnet8", exits="layer1")
