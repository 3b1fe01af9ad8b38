"""The zoo's architectures as plain data: names, stages, widths and exit points. No torch.

:mod:`bitops.zoo` builds the torch modules from these tables; configs, the CLI and the simulator
check model names and exit points here without importing torch.
"""

from __future__ import annotations

from bitops.errors import InputError

__all__ = ["EXIT_HEADS", "MOBILENETV2S", "RESNETS", "VGGS", "ZOO_NAMES", "check_exit_head", "exit_points", "stage_names"]

# name -> (blocks per stage, stage widths). 6n+2 depth for the CIFAR family (He et al. 2016,
# Sec. 4.2); the *_cifar ones are the ImageNet ResNet-18/34 with a CIFAR stem.
RESNETS = {
    "resnet8": ((1, 1, 1), (16, 32, 64)),
    "resnet18_cifar": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet20": ((3, 3, 3), (16, 32, 64)),
    "resnet32": ((5, 5, 5), (16, 32, 64)),
    "resnet34_cifar": ((3, 4, 6, 3), (64, 128, 256, 512)),
    "resnet56": ((9, 9, 9), (16, 32, 64)),
}
# VGG configs A/B/D/E (Simonyan & Zisserman 2015, Table 1), one tuple of conv widths per stage;
# every stage ends in a 2x2 max-pool, so after the fifth the map is 1x1. VGG11/13/16 are the
# shallower students the paper's section 7 distils VGG19 into.
VGGS = {
    "vgg11_cifar": ((64,), (128,), (256,) * 2, (512,) * 2, (512,) * 2),
    "vgg13_cifar": ((64, 64), (128, 128), (256,) * 2, (512,) * 2, (512,) * 2),
    "vgg16_cifar": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19_cifar": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
# MobileNetV2 (Sandler et al. 2018, Table 2) as (expansion, out channels, blocks, first stride)
# groups, grouped into stages by output resolution. The 24-channel group keeps stride 1 (and the
# stem is stride 1) so CIFAR's 32x32 input ends at 4x4 rather than 1x1.
MOBILENETV2S = {
    "mobilenetv2_cifar": (
        ((1, 16, 1, 1), (6, 24, 2, 1)),
        ((6, 32, 3, 2),),
        ((6, 64, 4, 2), (6, 96, 3, 1)),
        ((6, 160, 3, 2), (6, 320, 1, 1)),
    ),
}
ZOO_NAMES: tuple[str, ...] = tuple(sorted([*RESNETS, *VGGS, *MOBILENETV2S]))
# Early-exit head designs (``bitops.zoo.exit_head``), by the name options take.
EXIT_HEADS = {
    "conv": "conv3x3 -> BN -> ReLU -> global average pool -> linear (the paper's; a feature map only)",
    "pool": "global average pool (the mean over tokens for an N x L x C output) -> linear",
    "pool4": "average pool to a 4 x 4 grid -> linear (16 C x classes MACs; a feature map only)",
}


def check_exit_head(field: str, kind: object) -> str:
    """``kind`` if it names an exit head design, else an InputError naming ``field``."""
    if kind not in EXIT_HEADS:
        raise InputError(f"{field} must be one of {', '.join(EXIT_HEADS)}, got {kind!r}")
    return str(kind)


def stage_names(name: str) -> tuple[str, ...]:
    """Stage names of zoo model ``name`` in depth order: ``layerN`` for ResNets, ``stageN`` otherwise."""
    if name not in ZOO_NAMES:
        raise InputError(f"name must be one of {', '.join(ZOO_NAMES)}, got {name!r}")
    if name in RESNETS:
        return tuple(f"layer{i}" for i in range(1, len(RESNETS[name][0]) + 1))
    n_stages = len(VGGS[name] if name in VGGS else MOBILENETV2S[name])
    return tuple(f"stage{i}" for i in range(1, n_stages + 1))


def exit_points(name: str) -> tuple[str, ...]:
    """Exit point names of zoo model ``name`` in depth order: every stage but the last."""
    return stage_names(name)[:-1]
