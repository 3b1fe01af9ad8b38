"""Datasets for the trainer: train/val/test loaders from one :class:`trainer.config.DataConfig`.

* ``digits`` (the default) needs no network and no files: scikit-learn's bundled handwritten
  digits (1,797 8x8 images, 10 classes), upsampled, replicated to 3 channels, normalised with the
  train split's statistics and split 60/20/20 (stratified, seeded). Held in memory; not augmented,
  because flips and shifts change what a digit is at 8x8.
* ``cifar10``, ``cifar100``, ``svhn`` through torchvision from ``data_dir`` (downloaded there only
  when asked), ``cinic10`` as an ``ImageFolder`` of ``data_dir/{train,valid,test}``. Training data
  gets the standard CIFAR augmentation (random 32x32 crop of the 4-pixel padded image, horizontal
  flip except for SVHN's digits); validation and test data are only normalised. CINIC-10 ships its
  own validation split; the others hold out a seeded 10 % of their train set, unaugmented.

The seed fixes the splits and the order the train loader shuffles in. Random augmentation draws
from torch's global generator, so a runner that calls ``torch.manual_seed`` repeats it too.
Loaders use ``num_workers=0``: the target machines have two cores, and it keeps runs repeatable.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bitops.errors import InputError
from trainer.config import DATASET_CLASSES, NO_DOWNLOAD, DataConfig

__all__ = ["DataSplits", "load_data"]

# Digits pixels are counts of set pixels in 4x4 blocks of a 32x32 bitmap: 0..16 (sklearn docs).
DIGITS_MAX_VALUE = 16.0
DIGITS_CLASSES = DATASET_CLASSES["digits"]
DIGITS_TEST_FRACTION = 0.2
DIGITS_VAL_FRACTION = 0.2
# Share of the train set held out for validation where a dataset has no validation split.
HOLDOUT_FRACTION = 0.1
# CIFAR-style images, and the padding of the standard random-crop augmentation (He et al. 2016, 4.2).
CIFAR_SIZE = 32
CROP_PADDING = 4


@dataclass
class DataSplits:
    """Three loaders over disjoint data, and what a model needs to know about it."""

    name: str
    train: DataLoader  # shuffled (seeded generator), augmented for CIFAR-style data
    val: DataLoader  # not shuffled, not augmented
    test: DataLoader  # not shuffled, not augmented
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    sizes: dict[str, int]  # {"train": n, "val": n, "test": n}


@dataclass(frozen=True)
class _ImageSet:
    """What we know about one dataset: classes, normalisation, augmentation and where it comes from."""

    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool  # horizontal flips keep the label
    expects: str  # what --data-dir must hold, for the error message
    source: str  # how to get it (trainer.config.NO_DOWNLOAD says which torchvision cannot download)


# The datasets torchvision reads. Normalisation constants: per-channel mean and std of the train
# pixels in [0, 1] (digits are normalised with statistics computed at load time instead).
_SETS: dict[str, _ImageSet] = {
    # CIFAR-10 train set: the widely quoted mean, and the pixel std (kuangliu/pytorch-cifar issue
    # #19: the often-copied (0.2023, 0.1994, 0.2010) is a mean of per-image stds instead).
    "cifar10": _ImageSet(
        DATASET_CLASSES["cifar10"], (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), flip=True,
        expects="the extracted cifar-10-batches-py/",
        source="https://www.cs.toronto.edu/~kriz/cifar.html"),
    # CIFAR-100 train set (weiaicunzai/pytorch-cifar100, conf/global_settings.py).
    "cifar100": _ImageSet(
        DATASET_CLASSES["cifar100"], (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), flip=True,
        expects="the extracted cifar-100-python/",
        source="https://www.cs.toronto.edu/~kriz/cifar.html"),
    # SVHN train set (the values commonly used with torchvision's SVHN); no flips: they change digits.
    "svhn": _ImageSet(
        DATASET_CLASSES["svhn"], (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), flip=False,
        expects="train_32x32.mat and test_32x32.mat",
        source="http://ufldl.stanford.edu/housenumbers/"),
    # CINIC-10 train set, from its README (BayesWatch/cinic-10). torchvision has no downloader for it.
    "cinic10": _ImageSet(
        DATASET_CLASSES["cinic10"], (0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835),
        flip=True, expects="train/, valid/ and test/ class folders", source=NO_DOWNLOAD["cinic10"]),
}


def load_data(config: DataConfig) -> DataSplits:
    """Build the train/val/test loaders ``config`` describes; a missing dataset is an :class:`InputError`."""
    if config.dataset == "digits":
        train, val, test = _digits(config.image_size, config.seed)
        num_classes, input_shape = DIGITS_CLASSES, (3, config.image_size, config.image_size)
    else:
        train, val, test = _torchvision_splits(config)
        num_classes, input_shape = _SETS[config.dataset].num_classes, (3, CIFAR_SIZE, CIFAR_SIZE)
    generator = torch.Generator().manual_seed(config.seed)
    return DataSplits(
        name=config.dataset,
        train=DataLoader(train, batch_size=config.batch_size, shuffle=True, generator=generator,
                         num_workers=0, drop_last=False),
        val=DataLoader(val, batch_size=config.batch_size, shuffle=False, num_workers=0, drop_last=False),
        test=DataLoader(test, batch_size=config.batch_size, shuffle=False, num_workers=0, drop_last=False),
        num_classes=num_classes,
        input_shape=input_shape,
        sizes={"train": len(train), "val": len(val), "test": len(test)},
    )


def _digits(image_size: int, seed: int) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """scikit-learn's digits as 3 x S x S tensors, split 60/20/20 (stratified) and normalised on train."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    labels = torch.from_numpy(bunch.target).long()
    rest, test_idx = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION,
                                      stratify=bunch.target, random_state=seed)
    train_idx, val_idx = train_test_split(rest, test_size=DIGITS_VAL_FRACTION / (1 - DIGITS_TEST_FRACTION),
                                          stratify=bunch.target[rest], random_state=seed)
    pixels = torch.from_numpy(bunch.images / DIGITS_MAX_VALUE).float().unsqueeze(1)
    images = F.interpolate(pixels, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.expand(-1, 3, -1, -1)
    train_images = images[torch.from_numpy(train_idx)]
    mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
    std = train_images.std(dim=(0, 2, 3), keepdim=True, correction=0)
    images = (images - mean) / std
    return tuple(TensorDataset(images[torch.from_numpy(idx)], labels[torch.from_numpy(idx)])
                 for idx in (train_idx, val_idx, test_idx))  # type: ignore[return-value]


class _Transformed(Dataset):
    """Samples ``indices`` of ``base`` (PIL image, label), with ``transform`` applied to the image."""

    def __init__(self, base: Dataset, indices: list[int], transform: Any) -> None:
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[self.indices[i]]
        return self.transform(image), label


def _torchvision_splits(config: DataConfig) -> tuple[Dataset, Dataset, Dataset]:
    spec = _SETS[config.dataset]
    if not config.data_dir:
        raise InputError(f"dataset {config.dataset} needs a folder: pass `data_dir` DIR with {spec.expects}"
                         + (", or `data_dir` DIR with `download` to fetch it there" if config.dataset not in NO_DOWNLOAD
                            else f" ({spec.source})"))
    tv = _import_torchvision()
    root = Path(config.data_dir)
    try:
        train, val, test = _open(tv, config.dataset, root, config.download)
    except (RuntimeError, OSError) as exc:
        raise InputError(_not_found(config, root, exc)) from None
    train_tf, eval_tf = _transform(tv, spec, augment=True), _transform(tv, spec, augment=False)
    if val is None:
        train_idx, val_idx = _holdout(len(train), config.seed)
        val = _Transformed(train, val_idx, eval_tf)
    else:
        train_idx, val = list(range(len(train))), _Transformed(val, list(range(len(val))), eval_tf)
    return _Transformed(train, train_idx, train_tf), val, _Transformed(test, list(range(len(test))), eval_tf)


def _import_torchvision() -> ModuleType:
    with warnings.catch_warnings():
        # Some torchvision releases call the deprecated torch.jit.script at import time.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        import torchvision.datasets
        import torchvision.transforms
    return torchvision


def _open(tv: ModuleType, name: str, root: Path, download: bool) -> tuple[Dataset, Dataset | None, Dataset]:
    """The raw (train, val or None, test) datasets, yielding PIL images; torchvision's errors pass through."""
    if name == "cinic10":
        parts = [tv.datasets.ImageFolder(str(root / part)) for part in ("train", "valid", "test")]
        classes = [part.classes for part in parts]
        if classes[1:] != classes[:1] * 2 or len(classes[0]) != _SETS[name].num_classes:
            raise InputError(f"dataset cinic10 in {root} must have the same {_SETS[name].num_classes} class folders "
                             f"in train/, valid/ and test/, got {classes}")
        return parts[0], parts[1], parts[2]
    if name == "svhn":
        return (tv.datasets.SVHN(str(root), split="train", download=download), None,
                tv.datasets.SVHN(str(root), split="test", download=download))
    cls = tv.datasets.CIFAR10 if name == "cifar10" else tv.datasets.CIFAR100
    return cls(str(root), train=True, download=download), None, cls(str(root), train=False, download=download)


def _not_found(config: DataConfig, root: Path, exc: Exception) -> str:
    spec = _SETS[config.dataset]
    # torchvision's own wording ("You can use download=True ...") names its own API, not ours.
    reason = "missing or corrupted" if isinstance(exc, RuntimeError) else (str(exc).splitlines() or [repr(exc)])[0]
    if config.download:
        return (f"dataset {config.dataset} could not be downloaded into {root} ({reason}); "
                f"get it from {spec.source} and pass `data_dir` DIR with {spec.expects}")
    hint = ", or add `download`" if config.dataset not in NO_DOWNLOAD else f" ({spec.source})"
    return f"dataset {config.dataset} not found in {root} ({reason}): pass `data_dir` DIR with {spec.expects}{hint}"


def _transform(tv: ModuleType, spec: _ImageSet, augment: bool) -> Any:
    steps: list[Any] = []
    if augment:
        steps.append(tv.transforms.RandomCrop(CIFAR_SIZE, padding=CROP_PADDING))
        if spec.flip:
            steps.append(tv.transforms.RandomHorizontalFlip())
    steps += [tv.transforms.ToTensor(), tv.transforms.Normalize(spec.mean, spec.std)]
    return tv.transforms.Compose(steps)


def _holdout(n: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``range(n)`` into (kept for training, held out for validation)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = round(n * HOLDOUT_FRACTION)
    return sorted(order[n_val:]), sorted(order[:n_val])
