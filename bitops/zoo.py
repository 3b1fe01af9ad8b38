"""Reference CNNs of "Chain of Compression", in their CIFAR form (32x32 input).

Every model is a `StagedNet`: stem -> named stages -> global pool -> linear classifier. Every
stage but the last is an exit point where an early-exit head may tap the feature map. CIFAR form
means a 3x3 stride-1 stem and no max-pool after it, so the first stage runs at 32x32.

Widths: `width_mult` scales every hidden width (not the 3 input channels, not `num_classes`),
rounded by `_scale_width`: to the nearest multiple of `divisor` (half up), at least `divisor`,
one `divisor` more when rounding lost over 10% (torchvision's `_make_divisible`). ResNets and VGG
use divisor 1, MobileNetV2 uses divisor 8 as in its reference code.

Names, stage widths and exit points are plain data in :mod:`bitops.architectures` (no torch);
this module builds the modules they describe, one builder per family of that table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from bitops.architectures import MOBILENETV2S, RESNETS, VGGS, check_exit_head, exit_points, stage_names
from bitops.errors import InputError
from bitops.rules import check_integer, check_positive

__all__ = ["DEFAULT_INPUT_SHAPE", "StagedNet", "TokenMean", "build", "exit_head"]

DEFAULT_INPUT_SHAPE = (3, 32, 32)
GRID_EXIT = 4  # the side of the grid a pool4 exit head averages its map to

# The 1280-wide last conv scales with width_mult below 1 as well, unlike the paper (Sec. 6.1) and
# torchvision, which keep it at 1280: here width_mult means the same for every model.
_MOBILENETV2_STEM, _MOBILENETV2_LAST = 32, 1280


def _scale_width(channels: int, width_mult: float, divisor: int = 1) -> int:
    """Scaled width by torchvision's `_make_divisible` rule (see the module docstring)."""
    exact = channels * width_mult
    width = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    return width + divisor if width < 0.9 * exact else width


def _conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    activation: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """conv -> BN [-> activation]; the conv has no bias since BN's shift absorbs it."""
    layers = nn.Sequential()
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
    layers.add_module("conv", conv)
    layers.add_module("bn", nn.BatchNorm2d(out_ch))
    if activation is not None:
        layers.add_module("relu", activation())
    return layers


class TokenMean(nn.Module):
    """The mean over tokens of an N x L x C output: a transformer's global average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


def exit_head(channels: int, num_classes: int, kind: str = "conv", tokens: bool = False) -> nn.Sequential:
    """Early-exit head (``bitops.architectures.EXIT_HEADS``): ``conv`` is conv3x3 -> BN -> ReLU ->
    global average pool -> linear, on an N x C x H x W map; ``pool`` is global average pool (over
    the tokens of an N x L x C output when ``tokens``) -> linear; ``pool4`` is an average pool to
    a 4 x 4 grid -> linear, on a map (one smaller than 4 x 4 is spread over the grid, as
    ``AdaptiveAvgPool2d`` does)."""
    check_exit_head("exit_head", kind)
    if kind != "pool" and tokens:
        raise InputError(f"exit_head {kind!r} needs an N x C x H x W feature map; for a token-major N x L x C "
                         "output use exit_head 'pool'")
    head = _conv_bn(channels, channels, 3) if kind == "conv" else nn.Sequential()
    grid = GRID_EXIT if kind == "pool4" else 1
    head.add_module("pool", TokenMean() if tokens else nn.AdaptiveAvgPool2d(grid))
    head.add_module("flatten", nn.Flatten())
    head.add_module("fc", nn.Linear(channels * grid * grid, num_classes))
    return head


def _repeat(
    block: Callable[[int, int, int], nn.Module], in_ch: int, out_ch: int, n: int, stride: int
) -> list[nn.Module]:
    """n blocks; only the first changes width and stride."""
    return [block(in_ch, out_ch, stride)] + [block(out_ch, out_ch, 1) for _ in range(n - 1)]


class BasicBlock(nn.Module):
    """He et al. basic block: two 3x3 convs plus a shortcut.

    Where the shape changes the shortcut is a 1x1 conv + BN projection (option B of He et al.
    2016), not the zero-padded identity (option A) of their CIFAR models: option A has no weights
    to prune, so a structured pruner could not remove channels of the sum in step with the convs.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        projects = stride != 1 or in_ch != out_ch
        self.shortcut = (
            _conv_bn(in_ch, out_ch, 1, stride, activation=None) if projects else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear project.

    As in the paper and torchvision (not kuangliu's CIFAR code): no expand conv when the expansion
    is 1, and a residual only when the shape is unchanged, so block shapes match torchvision's.
    ReLU6 as in the paper: its bounded range suits low-bit activations.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        expands = expansion != 1
        self.expand = _conv_bn(in_ch, hidden, 1, activation=nn.ReLU6) if expands else nn.Identity()
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6)
        self.project = _conv_bn(hidden, out_ch, 1, activation=None)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class StagedNet(nn.Module):
    """stem -> stages -> global average pool -> classifier, with optional early-exit heads.

    Build one with `build`. To run the backbone stage by stage: `stem`, then each module of
    `named_stages()`, then `classify`.

    Attributes:
        stage_names: names of the stage submodules, in depth order.
        exit_points: every stage name but the last: where an exit head may tap.
        exits: enabled heads keyed by exit point, in depth order; empty when none.
        classifier_name: name of the final linear layer (`fc` or `classifier`).
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[tuple[str, nn.Module, int]],
        classifier_name: str,
        classifier: nn.Linear,
        exits: Sequence[str],
    ) -> None:
        """stages: (name, module, output channels) in depth order; exits: exit points to enable."""
        super().__init__()
        self.stem = stem
        for name, stage, _ in stages:
            self.add_module(name, stage)
        self.pool = nn.Sequential()
        self.pool.add_module("avg", nn.AdaptiveAvgPool2d(1))
        self.pool.add_module("flatten", nn.Flatten())
        self.add_module(classifier_name, classifier)
        self.classifier_name = classifier_name
        self.stage_names = tuple(name for name, _, _ in stages)
        self.exit_points = self.stage_names[:-1]
        channels = {name: out_ch for name, _, out_ch in stages}
        num_classes = classifier.out_features
        self.exits = nn.ModuleDict(
            {p: exit_head(channels[p], num_classes) for p in self.exit_points if p in exits}
        )

    def named_stages(self) -> list[tuple[str, nn.Module]]:
        return [(name, getattr(self, name)) for name in self.stage_names]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Final logits from the last stage's feature map."""
        return getattr(self, self.classifier_name)(self.pool(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Final logits, or with exits enabled [exit logits in depth order..., final logits]."""
        exit_logits = []
        x = self.stem(x)
        for name, stage in self.named_stages():
            x = stage(x)
            # Call the head before the next stage runs: tracers assign ops to exit segments in
            # execution order.
            if name in self.exits:
                exit_logits.append(self.exits[name](x))
        logits = self.classify(x)
        return [*exit_logits, logits] if self.exits else logits


def _resnet(name: str, num_classes: int, width_mult: float, exits: Sequence[str]) -> StagedNet:
    blocks, widths = RESNETS[name]
    widths = tuple(_scale_width(c, width_mult) for c in widths)
    stages, in_ch = [], widths[0]
    for i, (stage_name, n, out_ch) in enumerate(zip(stage_names(name), blocks, widths)):
        stage = nn.Sequential(*_repeat(BasicBlock, in_ch, out_ch, n, 1 if i == 0 else 2))
        stages.append((stage_name, stage, out_ch))
        in_ch = out_ch
    return StagedNet(_conv_bn(3, widths[0], 3), stages, "fc", nn.Linear(in_ch, num_classes), exits)


def _vgg(name: str, num_classes: int, width_mult: float, exits: Sequence[str]) -> StagedNet:
    stages, in_ch = [], 3
    for stage_name, widths in zip(stage_names(name), VGGS[name]):
        stage = nn.Sequential()
        for i, width in enumerate(widths):
            out_ch = _scale_width(width, width_mult)
            stage.add_module(str(i), _conv_bn(in_ch, out_ch, 3))
            in_ch = out_ch
        stage.add_module("pool", nn.MaxPool2d(2))
        stages.append((stage_name, stage, in_ch))
    # VGG has no stem: its first conv belongs to stage1. The final global pool is an identity on
    # the 1x1 map (as kuangliu's AvgPool2d(1)) and keeps every model's forward the same.
    return StagedNet(nn.Identity(), stages, "classifier", nn.Linear(in_ch, num_classes), exits)


def _mobilenetv2(name: str, num_classes: int, width_mult: float, exits: Sequence[str]) -> StagedNet:
    scale = partial(_scale_width, width_mult=width_mult, divisor=8)
    in_ch = scale(_MOBILENETV2_STEM)
    stem = _conv_bn(3, in_ch, 3, activation=nn.ReLU6)
    stages, names = [], stage_names(name)
    for stage_name, groups in zip(names, MOBILENETV2S[name]):
        blocks = []
        for expansion, width, n, stride in groups:
            block = partial(InvertedResidual, expansion=expansion)
            blocks += _repeat(block, in_ch, scale(width), n, stride)
            in_ch = scale(width)
        stage = nn.Sequential(*blocks)
        if stage_name == names[-1]:
            last_ch = scale(_MOBILENETV2_LAST)
            stage.add_module("last", _conv_bn(in_ch, last_ch, 1, activation=nn.ReLU6))
            in_ch = last_ch
        stages.append((stage_name, stage, in_ch))
    return StagedNet(stem, stages, "classifier", nn.Linear(in_ch, num_classes), exits)


_BUILDERS: dict[str, Callable[[str, int, float, Sequence[str]], StagedNet]] = {
    **{name: _resnet for name in RESNETS},
    **{name: _mobilenetv2 for name in MOBILENETV2S},
    **{name: _vgg for name in VGGS},
}


def _enabled_exits(name: str, exits: bool | Sequence[str]) -> tuple[str, ...]:
    points = exit_points(name)
    if isinstance(exits, bool):
        return points if exits else ()
    if isinstance(exits, str):
        raise InputError(
            f"exits must be a bool or a sequence of exit point names, got the string {exits!r}"
        )
    unknown = sorted(set(exits) - set(points))
    if unknown:
        raise InputError(
            f"exits must be exit points of {name} ({', '.join(points)}), got unknown {unknown}"
        )
    return tuple(p for p in points if p in exits)


def build(
    name: str,
    *,
    num_classes: int = 10,
    width_mult: float = 1.0,
    exits: bool | Sequence[str] = False,
    exit_head_kind: str = "conv",
) -> StagedNet:
    """Zoo model `name`; `exits`: True for a head at every exit point, or the exit points to use;
    `exit_head_kind`: their design (:func:`exit_head`).

    Raises InputError (a ValueError) for an unknown name or exit point, num_classes < 1 or
    width_mult <= 0.
    """
    enabled = _enabled_exits(name, exits)
    check_integer("num_classes", num_classes, 1)
    check_positive("width_mult", width_mult)
    check_exit_head("exit_head", exit_head_kind)
    model = _BUILDERS[name](name, num_classes, width_mult, enabled)
    if exit_head_kind != "conv":
        for point, head in model.exits.items():
            model.exits[point] = exit_head(head.fc.in_features, num_classes, exit_head_kind)
    return model
