"""trainer.quant against routes that do not go through it.

* the DoReFa formulas written out again in numpy (float64), compared with what the layers compute
  through torch's own conv/linear;
* torch autograd for the straight-through gradients;
* bitops.cost.resolved_bits on a traced zoo model for the bits every layer ends with;
* torch-pruning, which must prune a quantized model exactly as it prunes the float one.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from bitops import InputError, LayerTable, Policy, zoo
from bitops.cost import resolved_bits
from bitops.trace import output_layers, trace_model
from trainer.quant import QConv2d, QLinear, float_view, layer_bits, quantize_like, quantize_model, weight_levels

INPUT = zoo.DEFAULT_INPUT_SHAPE
BITS = (1, 2, 4, 8)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


@functools.cache
def traced(name: str) -> tuple[nn.Module, LayerTable]:
    """A small zoo model with every exit head, and its table (traced once; tests copy the model)."""
    model = zoo.build(name, exits=True, width_mult=0.25)
    return model, trace_model(copy.deepcopy(model), INPUT, name=name)


# ---- reference formulas (numpy, float64) -----------------------------------------------------------
def q_unit(x: np.ndarray, k: int) -> np.ndarray:
    steps = 2**k - 1
    return np.round(x * steps) / steps


def dorefa_weight(w: np.ndarray, k: int) -> np.ndarray:
    """Zhou et al. 2016, Eq. 9 (k >= 2) and Eq. 7 (k = 1, scaled by E|w|)."""
    if k == 1:
        return np.where(w >= 0, 1.0, -1.0) * np.abs(w).mean()
    t = np.tanh(w)
    return 2 * q_unit(t / (2 * np.abs(t).max()) + 0.5, k) - 1


def dorefa_activation(x: np.ndarray, k: int, signed: bool) -> np.ndarray:
    if not signed:
        return q_unit(np.clip(x, 0, 1), k)
    s = np.abs(x).max()
    return s * (2 * q_unit((x / s + 1) / 2, k) - 1)


def identity_conv(channels: int, **bits: int | bool) -> QConv2d:
    """A 1x1 conv whose float weight is the identity: its output is the quantized input."""
    conv = QConv2d(channels, channels, 1, bias=False, **bits)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
    return conv


def n_distinct(t: torch.Tensor) -> int:
    return int(torch.unique(t.detach()).numel())


# ---- weights -------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", BITS)
def test_conv_forward_uses_dorefa_weights_with_at_most_2_to_k_values(k: int) -> None:
    conv = QConv2d(6, 8, 3, padding=1, bias=True, w_bits=k)  # a_bits=32: the input passes unchanged
    x = torch.randn(2, 6, 9, 9)
    want_w = dorefa_weight(conv.weight.detach().double().numpy(), k)
    want = F.conv2d(x.double(), torch.from_numpy(want_w), conv.bias.detach().double(), padding=1)
    torch.testing.assert_close(conv(x).double(), want, rtol=1e-5, atol=1e-5)
    assert len(np.unique(want_w.astype(np.float32))) <= 2**k
    assert weight_levels(conv) == n_distinct(torch.from_numpy(want_w).float()) <= 2**k


def test_one_bit_weights_are_plus_minus_mean_abs() -> None:
    conv = QConv2d(4, 4, 3, w_bits=1)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 0.0  # sign(0) is +1
    mean_abs = conv.weight.detach().abs().mean()
    wq = conv.quantized_weight().detach()
    assert set(torch.unique(wq).tolist()) <= {mean_abs.item(), -mean_abs.item()}
    torch.testing.assert_close(wq, torch.where(conv.weight >= 0, mean_abs, -mean_abs))
    assert wq[0, 0, 0, 0] == mean_abs


@pytest.mark.parametrize("k", BITS)
def test_linear_forward_uses_dorefa_weights(k: int) -> None:
    linear = QLinear(12, 5, w_bits=k)
    x = torch.randn(3, 12)
    want_w = torch.from_numpy(dorefa_weight(linear.weight.detach().double().numpy(), k))
    torch.testing.assert_close(linear(x).double(), F.linear(x.double(), want_w, linear.bias.detach().double()),
                               rtol=1e-5, atol=1e-5)


# ---- activations ---------------------------------------------------------------------------------
@pytest.mark.parametrize("signed", [False, True], ids=["after-relu", "signed"])
@pytest.mark.parametrize("k", BITS)
def test_conv_input_is_quantized_to_at_most_2_to_k_values(k: int, signed: bool) -> None:
    conv = identity_conv(5, a_bits=k, signed_input=signed)
    x = 2 * torch.randn(2, 5, 7, 7)
    seen = conv(x)
    want = dorefa_activation(x.double().numpy(), k, signed)
    np.testing.assert_allclose(seen.detach().double().numpy(), want, rtol=1e-5, atol=1e-6)
    assert n_distinct(seen) <= 2**k
    if signed:  # the scale is max|x|: both ends of the range are levels
        assert seen.abs().max().item() == pytest.approx(x.abs().max().item(), rel=1e-6)
    else:
        assert 0 <= seen.min().item() and seen.max().item() <= 1


def test_linear_input_is_quantized() -> None:
    linear = QLinear(6, 6, bias=False, a_bits=2)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(6))
    x = torch.rand(4, 6) * 1.5 - 0.2
    np.testing.assert_allclose(linear(x).detach().double().numpy(), dorefa_activation(x.double().numpy(), 2, False),
                               atol=1e-6)


def test_full_precision_layer_is_a_plain_conv() -> None:
    conv = QConv2d(3, 4, 3, stride=2, w_bits=32, a_bits=32, signed_input=True)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, stride=2))


# ---- straight-through gradients ------------------------------------------------------------------
@pytest.mark.parametrize("signed", [False, True], ids=["after-relu", "signed"])
@pytest.mark.parametrize("k", BITS)
def test_gradients_flow_through_the_straight_through_estimator(k: int, signed: bool) -> None:
    conv = QConv2d(4, 6, 3, padding=1, w_bits=k, a_bits=k, signed_input=signed)
    x = torch.rand(2, 4, 6, 6, requires_grad=True)  # in (0, 1): inside the unsigned clip range
    (conv(x) * torch.randn(2, 6, 6, 6)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.isfinite(conv.weight.grad).all() and torch.isfinite(x.grad).all()


def test_unsigned_input_gradient_is_zero_outside_the_clip_range() -> None:
    linear = QLinear(3, 2, a_bits=4)
    x = torch.tensor([[-0.5, 0.5, 1.5]], requires_grad=True)
    linear(x).sum().backward()
    assert x.grad[0, 0] == 0 and x.grad[0, 2] == 0 and x.grad[0, 1] != 0


# ---- float_view ----------------------------------------------------------------------------------
def test_float_view_computes_the_plain_layer_and_restores_quantization() -> None:
    model = nn.Sequential(QConv2d(3, 4, 3, padding=1, w_bits=2, a_bits=2, signed_input=True), nn.ReLU(),
                          nn.Flatten(), QLinear(4 * 25, 3, w_bits=2, a_bits=2))
    x = torch.randn(2, 3, 5, 5)
    quantized = model(x)
    conv, linear = model[0], model[3]
    plain = F.linear(F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)).flatten(1), linear.weight, linear.bias)
    with float_view(model) as view:
        assert view is model
        torch.testing.assert_close(model(x), plain, rtol=0, atol=0)
    assert torch.equal(model(x), quantized)
    assert not torch.allclose(quantized, plain)


def test_float_view_restores_after_an_exception() -> None:
    conv = QConv2d(2, 2, 1, w_bits=2)
    with pytest.raises(RuntimeError), float_view(conv):
        raise RuntimeError("boom")
    assert weight_levels(conv) <= 4


# ---- quantize_model ------------------------------------------------------------------------------
def layers_of(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize("exits", [False, True], ids=["plain", "exits"])
def test_quantize_model_replaces_every_layer_and_keeps_the_function(exits: bool) -> None:
    model = zoo.build("resnet8", exits=exits)
    original = copy.deepcopy(model).eval()
    x = torch.randn(4, *INPUT)
    assert quantize_model(model, w_bits=2, a_bits=4, example_input=x) is model
    before, after = layers_of(original), layers_of(model)
    assert before.keys() == after.keys()
    for name, layer in after.items():
        assert type(layer) is (QConv2d if isinstance(before[name], nn.Conv2d) else QLinear), name
        assert (layer.w_bits, layer.a_bits) == (2, 4), name
        assert layer.signed_input == (name == "stem.conv"), name
        assert torch.equal(layer.weight, before[name].weight), name
    assert model.training  # the probe forward ran in eval mode and put the modes back
    model.eval()
    with torch.no_grad(), float_view(model):  # copied weights + strides/padding: the same network
        got = model(x)
    with torch.no_grad():
        want = original(x)
    for g, w in zip(got if exits else [got], want if exits else [want]):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("first_last_bits, input_bits, stem_bits, fc_bits", [
    (None, None, (2, 4), (2, 4)),
    (8, None, (8, 8), (8, 8)),
    (None, 8, (2, 8), (2, 4)),
    (8, 32, (8, 32), (8, 8)),
    (32, 1, (32, 1), (32, 32)),
])
def test_first_and_last_layer_bits(first_last_bits: int | None, input_bits: int | None,
                                   stem_bits: tuple[int, int], fc_bits: tuple[int, int]) -> None:
    model = zoo.build("resnet8", exits=True)
    quantize_model(model, w_bits=2, a_bits=4, first_last_bits=first_last_bits, input_bits=input_bits,
                   example_input=torch.randn(2, *INPUT))
    bits = layer_bits(model)
    assert bits.pop("stem.conv") == stem_bits
    assert bits.pop(model.classifier_name) == fc_bits
    assert set(bits.values()) == {(2, 4)}  # exit heads included: they are not the backbone's ends


@pytest.mark.parametrize("name", ["resnet8", "vgg11_cifar"])
@pytest.mark.parametrize("first_last_bits, input_bits", [(None, None), (8, None), (None, 8), (8, 4), (32, 8)])
def test_layer_bits_equal_resolved_bits_of_the_traced_table(name: str, first_last_bits: int | None,
                                                           input_bits: int | None) -> None:
    original, table = traced(name)
    model = copy.deepcopy(original)
    quantize_model(model, w_bits=2, a_bits=4, first_last_bits=first_last_bits, input_bits=input_bits,
                   example_input=torch.randn(2, *INPUT))
    ones = np.ones(table.num_layers, dtype=np.int64)
    want_w, want_a = resolved_bits(table, 2 * ones, 4 * ones,
                                   Policy(first_last_bits=first_last_bits, input_bits=input_bits))
    bits = layer_bits(model)
    assert set(table.layers["name"]) == set(bits)
    for i, row in enumerate(table.layers["name"]):
        assert bits[row] == (want_w[i], want_a[i]), row


def test_signed_inputs_are_detected_beyond_the_first_layer() -> None:
    """MobileNetV2's expand convs read the linear bottleneck (no ReLU): clipping at 0 would zero half."""
    model = zoo.build("mobilenetv2_cifar", width_mult=0.5)
    quantize_model(model, w_bits=4, a_bits=4, example_input=torch.randn(2, *INPUT))
    signed = {n for n, m in layers_of(model).items() if m.signed_input}
    assert "stem.conv" in signed
    assert "stage2.0.expand.conv" in signed  # reads stage1's projection
    assert "stage2.0.depthwise.conv" not in signed  # reads ReLU6


def test_quantize_model_twice_resets_the_bits() -> None:
    model = zoo.build("resnet8")
    x = torch.randn(2, *INPUT)
    quantize_model(model, w_bits=2, a_bits=2, example_input=x)
    stem = model.stem.conv
    quantize_model(model, w_bits=4, a_bits=8, first_last_bits=8, example_input=x)
    assert model.stem.conv is stem
    assert layer_bits(model)["layer1.0.conv1"] == (4, 8) and layer_bits(model)["stem.conv"] == (8, 8)


def test_quantize_model_keeps_frozen_parameters_frozen_and_modes() -> None:
    model = zoo.build("resnet8")
    model.stem.conv.weight.requires_grad_(False)
    model.fc.eval()
    quantize_model(model, w_bits=2, a_bits=2, example_input=torch.randn(1, *INPUT))
    assert not model.stem.conv.weight.requires_grad and model.layer1[0].conv1.weight.requires_grad
    assert not model.fc.training and model.stem.conv.training


def test_quantize_model_leaves_bn_statistics_alone() -> None:
    model = zoo.build("resnet8")
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    quantize_model(model, w_bits=2, a_bits=2, example_input=torch.randn(8, *INPUT))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stats.items())


def test_quantize_like_quantizes_a_new_head_at_given_bits() -> None:
    head = zoo.build("resnet8", exits=["layer1"]).exits["layer1"]
    assert quantize_like(head, 2, 4) is head
    assert layer_bits(head) == {"conv": (2, 4), "fc": (2, 4)}
    assert isinstance(head.conv, QConv2d) and isinstance(head.fc, QLinear)
    assert not head.conv.signed_input
    signed_head = quantize_like(copy.deepcopy(head), 2, 4, example_input=torch.randn(1, 16, 8, 8))
    assert signed_head.conv.signed_input and not signed_head.fc.signed_input


# ---- pruning a quantized model (QP) --------------------------------------------------------------
def prune(model: nn.Module, keep_ratio: float) -> nn.Module:
    """The trainer's call: L1 magnitude, dependency-aware, output layers kept."""
    pruner = tp.pruner.MagnitudePruner(model, torch.zeros(1, *INPUT), importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=1 - keep_ratio, ignored_layers=output_layers(model))
    pruner.step()
    return model


def test_torch_pruning_prunes_a_quantized_model_like_the_float_one_and_it_keeps_quantizing() -> None:
    float_model = zoo.build("resnet8", exits=True).eval()
    quantized = quantize_model(copy.deepcopy(float_model), w_bits=2, a_bits=4, example_input=torch.randn(2, *INPUT))
    prune(float_model, 0.5)
    prune(quantized, 0.5)
    float_layers, q_layers = layers_of(float_model), layers_of(quantized)
    assert q_layers["layer1.0.conv1"].out_channels == 8  # pruned: 16 -> 8
    for name, layer in q_layers.items():
        assert isinstance(layer, (QConv2d, QLinear)), name
        assert torch.equal(layer.weight, float_layers[name].weight), name  # the same channels kept
        assert weight_levels(layer) <= 4, name
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        with float_view(quantized):
            for got, want in zip(quantized(x), float_model(x)):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
        # A pruned layer quantizes its current (pruned) weight and input.
        conv = quantized.layer2[0].conv1
        features = torch.rand(2, conv.in_channels, 16, 16) * 1.2
        want_w = torch.from_numpy(dorefa_weight(conv.weight.double().numpy(), 2))
        want_x = torch.from_numpy(dorefa_activation(features.double().numpy(), 4, False))
        torch.testing.assert_close(conv(features).double(), F.conv2d(want_x, want_w, stride=2, padding=1),
                                   rtol=1e-5, atol=1e-5)


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argument, value", [("w_bits", 0), ("a_bits", 33), ("first_last_bits", 0),
                                             ("input_bits", 33), ("w_bits", 2.0), ("a_bits", True)])
def test_quantize_model_rejects_bad_bits(argument: str, value: object) -> None:
    kwargs: dict[str, object] = {"w_bits": 2, "a_bits": 4, argument: value}
    with pytest.raises(InputError, match=rf"^{argument} must be an integer in 1\.\.32, got {value!r}"):
        quantize_model(zoo.build("resnet8"), example_input=torch.zeros(1, *INPUT), **kwargs)


@pytest.mark.parametrize("argument, value", [("w_bits", 0), ("a_bits", 33)])
def test_layers_and_quantize_like_reject_bad_bits(argument: str, value: int) -> None:
    bits = {"w_bits": 2, "a_bits": 2, argument: value}
    with pytest.raises(InputError, match=f"^{argument} must be"):
        QConv2d(2, 2, 1, **bits)
    with pytest.raises(InputError, match=f"^{argument} must be"):
        QLinear(2, 2, **bits)
    with pytest.raises(InputError, match=f"^{argument} must be"):
        quantize_like(nn.Sequential(nn.Linear(2, 2)), bits["w_bits"], bits["a_bits"])


def test_quantize_model_needs_a_layer() -> None:
    with pytest.raises(InputError, match="runs no Conv2d/Linear"):
        quantize_model(nn.Sequential(nn.ReLU()), w_bits=2, a_bits=2, example_input=torch.zeros(1, 3))
