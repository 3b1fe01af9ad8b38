"""DoReFa-style fixed-point uniform QAT (Zhou et al. 2016), the quantizer the paper uses (Sec. 2).

Fake quantization: weights and layer inputs are rounded to k-bit fixed-point grids in the forward
pass and stay float tensors, so the quantized model trains, prunes (torch-pruning) and traces
(fvcore) like the float one. Every rounding passes gradients straight through (STE).

* Weights, 2 <= k < 32 (DoReFa Eq. 9): ``w_q = 2 q_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1`` with
  ``q_k(x) = round((2^k - 1) x) / (2^k - 1)``; k = 1 (DoReFa Eq. 7, XNOR-Net scale):
  ``w_q = sign(w) * mean|w|`` with sign(0) = +1.
* Inputs after a ReLU (DoReFa Sec. 2.4): clip to [0, 1], then ``q_k``.
* Signed inputs (the first conv reads the normalised image; MobileNetV2's linear bottlenecks):
  scaled by ``s = max|x|`` (detached) to [-1, 1], then the weights' grid ``2 q_k((x/s + 1)/2) - 1``
  (2^k values, 2^k - 1 steps, every k-bit code used; zero lies between two levels), scaled back.
* k = 32: the tensor is left unchanged: 32 bits is the cost model's full precision.

The bits a model ends with are what :mod:`bitops` counts (``bitops.cost.resolved_bits``): the first
and last backbone layers take ``first_last_bits``, the first layer's input ``input_bits``.
Biases stay float: the cost model stores them at ``Policy.aux_bits``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from bitops.errors import InputError
from bitops.policy import FULL_PRECISION_BITS
from bitops.rules import check_bits
from bitops.trace import EXITS_ATTRIBUTE

__all__ = [
    "QConv2d",
    "QLinear",
    "float_view",
    "layer_bits",
    "quantize_activation",
    "quantize_like",
    "quantize_model",
    "quantize_weight",
    "weight_levels",
]

# A layer's bits: (weight bits, input-activation bits, whether its input can be negative).
_LayerBits = tuple[int, int, bool]


# ---- quantizers (pure functions of a tensor) -------------------------------------------------------
def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def _q_unit(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's q_k on [0, 1]: round((2^k - 1) x) / (2^k - 1), with STE."""
    steps = 2**bits - 1
    return _round_ste(x * steps) / steps


def quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa weight quantization at ``bits`` (see the module docstring); at most 2^k values."""
    if bits >= FULL_PRECISION_BITS:
        return weight
    if bits == 1:
        scale = weight.detach().abs().mean()
        binary = torch.where(weight >= 0, scale, -scale)
        return weight + (binary - weight).detach()
    t = torch.tanh(weight)
    unit = t / (2 * t.abs().max().clamp_min(torch.finfo(t.dtype).tiny)) + 0.5
    return 2 * _q_unit(unit, bits) - 1


def quantize_activation(x: torch.Tensor, bits: int, signed: bool = False) -> torch.Tensor:
    """A layer input at ``bits``: clipped to [0, 1] (after a ReLU) or max-scaled to [-1, 1] (signed)."""
    if bits >= FULL_PRECISION_BITS:
        return x
    if not signed:
        return _q_unit(x.clamp(0, 1), bits)
    scale = x.detach().abs().max().clamp_min(torch.finfo(x.dtype).tiny)
    return scale * (2 * _q_unit((x / scale + 1) / 2, bits) - 1)


# ---- layers -----------------------------------------------------------------------------------------
class _FakeQuant:
    """What QConv2d and QLinear share: their bits, the on/off switch and the quantized operands."""

    weight: torch.Tensor
    w_bits: int
    a_bits: int
    signed_input: bool
    fake_quant: bool  # False inside float_view: the layer computes exactly as its float base class

    def _set_bits(self, w_bits: int, a_bits: int, signed_input: bool) -> None:
        check_bits("w_bits", w_bits)
        check_bits("a_bits", a_bits)
        self.w_bits, self.a_bits, self.signed_input = w_bits, a_bits, bool(signed_input)
        self.fake_quant = True

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses (of the current, possibly pruned, shape)."""
        return quantize_weight(self.weight, self.w_bits) if self.fake_quant else self.weight

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_activation(x, self.a_bits, self.signed_input) if self.fake_quant else x

    def _bits_repr(self) -> str:
        return f"w_bits={self.w_bits}, a_bits={self.a_bits}, signed_input={self.signed_input}"


class QConv2d(_FakeQuant, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weights and input; still a Conv2d for torch-pruning and fvcore."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: str | int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, w_bits: int = FULL_PRECISION_BITS,
                 a_bits: int = FULL_PRECISION_BITS, signed_input: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._set_bits(w_bits, a_bits, signed_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._bits_repr()}"


class QLinear(_FakeQuant, nn.Linear):
    """``nn.Linear`` with fake-quantized weights and input."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 w_bits: int = FULL_PRECISION_BITS, a_bits: int = FULL_PRECISION_BITS,
                 signed_input: bool = False) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._set_bits(w_bits, a_bits, signed_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._bits_repr()}"


def _quantized(layer: nn.Module, bits: _LayerBits) -> nn.Module:
    """``layer`` at ``bits``: a Q layer is updated in place, a float one copied into a new Q layer."""
    w_bits, a_bits, signed = bits
    if isinstance(layer, _FakeQuant):
        layer._set_bits(w_bits, a_bits, signed)
        return layer
    weight = layer.weight
    factory = dict(device=weight.device, dtype=weight.dtype, w_bits=w_bits, a_bits=a_bits, signed_input=signed)
    new: nn.Conv2d | nn.Linear
    if isinstance(layer, nn.Conv2d):
        new = QConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                      layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode, **factory)
    else:
        new = QLinear(layer.in_features, layer.out_features, layer.bias is not None, **factory)
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    # A frozen layer stays frozen (E trains heads on a frozen backbone), in its train/eval mode.
    new.weight.requires_grad_(weight.requires_grad)
    if layer.bias is not None:
        new.bias.requires_grad_(layer.bias.requires_grad)
    return new.train(layer.training)


def _is_layer(module: nn.Module) -> bool:
    """Exactly nn.Conv2d / nn.Linear (or ours): subclasses such as MultiheadAttention's out_proj,
    whose weight is used functionally, would not run our forward and are left float."""
    return type(module) in (nn.Conv2d, nn.Linear) or isinstance(module, _FakeQuant)


def _replace_layers(root: nn.Module, bits_of: Callable[[str], _LayerBits]) -> nn.Module:
    """Quantize every layer under ``root`` at ``bits_of(its name)``, in place; returns ``root``
    (or its replacement, when ``root`` is itself a layer). A layer shared under several names is
    replaced once, everywhere, at the bits of its first name."""
    replacements: dict[int, nn.Module] = {}
    for name, module in root.named_modules():
        if _is_layer(module):
            replacements[id(module)] = _quantized(module, bits_of(name))
    if id(root) in replacements:
        return replacements[id(root)]
    for parent in list(root.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in replacements and replacements[id(child)] is not child:
                setattr(parent, child_name, replacements[id(child)])
    return root


def _observe(model: nn.Module, example_input: torch.Tensor) -> tuple[list[str], set[str]]:
    """Layer names in order of first call on ``example_input``, and those that saw a negative input.

    Runs in eval mode under no_grad (BN running statistics untouched) and restores every
    module's mode.
    """
    order: list[str] = []
    signed: set[str] = set()

    def hook(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if name not in order:
                order.append(name)
            if inputs and isinstance(inputs[0], torch.Tensor) and bool((inputs[0] < 0).any()):
                signed.add(name)

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules() if _is_layer(m)]
    modes = {m: m.training for m in model.modules()}
    parameter = next(model.parameters(), None)
    example = example_input if parameter is None else example_input.to(parameter.device)
    try:
        model.eval()
        with torch.no_grad(), float_view(model):
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return order, signed


def _in_exit_head(name: str, model: nn.Module) -> bool:
    return isinstance(getattr(model, EXITS_ATTRIBUTE, None), nn.ModuleDict) and name.split(".")[0] == EXITS_ATTRIBUTE


# ---- public API -------------------------------------------------------------------------------------
def quantize_model(model: nn.Module, *, w_bits: int, a_bits: int, first_last_bits: int | None = None,
                   input_bits: int | None = None, example_input: torch.Tensor) -> nn.Module:
    """Replace every nn.Conv2d / nn.Linear of ``model`` (exit heads included) by QConv2d / QLinear.

    Bits mirror ``bitops.cost.resolved_bits`` row for row: every layer gets ``w_bits``/``a_bits``;
    the first layer run on ``example_input`` and the last backbone layer run (outside
    ``model.exits``: the classifier) get ``first_last_bits`` for both when it is given; then the
    first layer's input gets ``input_bits`` when given. The first layer, and every layer whose
    input had a negative value on ``example_input``, quantizes its input as signed; so pass a real
    batch (or ``torch.randn``): a zero image hides which features can be negative.

    Layers already quantized are re-set to the new bits (Q applied again). Returns ``model``.
    Raises InputError for bits outside 1..32 or a model that runs no Conv2d/Linear.
    """
    check_bits("w_bits", w_bits)
    check_bits("a_bits", a_bits)
    check_bits("first_last_bits", first_last_bits, optional=True)
    check_bits("input_bits", input_bits, optional=True)
    order, signed = _observe(model, example_input)
    backbone = [name for name in order if not _in_exit_head(name, model)]
    if not backbone:
        raise InputError(f"model: {type(model).__name__} runs no Conv2d/Linear outside its exit heads "
                         f"on example_input; nothing to quantize")
    first, last = backbone[0], backbone[-1]

    def bits_of(name: str) -> _LayerBits:
        w, a = w_bits, a_bits
        if first_last_bits is not None and name in (first, last):
            w = a = first_last_bits
        if input_bits is not None and name == first:
            a = input_bits
        return w, a, name == first or name in signed

    return _replace_layers(model, bits_of)


def quantize_like(head: nn.Module, w_bits: int, a_bits: int, *,
                  example_input: torch.Tensor | None = None) -> nn.Module:
    """Quantize a freshly created exit head at the backbone's bits, in place (QE: the head then
    trains with QAT from scratch). No first/last overrides: those are the backbone's ends.

    ``example_input`` (a feature map the head reads) marks the layers that see negative inputs as
    signed; without it every input is taken to follow a ReLU, as in the zoo's heads.
    """
    check_bits("w_bits", w_bits)
    check_bits("a_bits", a_bits)
    signed = set() if example_input is None else _observe(head, example_input)[1]
    return _replace_layers(head, lambda name: (w_bits, a_bits, name in signed))


def layer_bits(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(w_bits, a_bits) of every Conv2d/Linear by module name; float layers are (32, 32)."""
    full = (FULL_PRECISION_BITS, FULL_PRECISION_BITS)
    return {name: (m.w_bits, m.a_bits) if isinstance(m, _FakeQuant) else full
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@contextmanager
def float_view(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: every Q layer computes as its float base class (for tracing and counting).

    The previous switches are restored on exit, even after an exception.
    """
    layers = [m for m in model.modules() if isinstance(m, _FakeQuant)]
    saved = [m.fake_quant for m in layers]
    for m in layers:
        m.fake_quant = False
    try:
        yield model
    finally:
        for m, on in zip(layers, saved):
            m.fake_quant = on


def weight_levels(module: nn.Module) -> int:
    """Number of distinct weight values the module's forward uses (float layers: distinct floats)."""
    with torch.no_grad():
        weight = module.quantized_weight() if isinstance(module, _FakeQuant) else module.weight
        return int(torch.unique(weight).numel())
