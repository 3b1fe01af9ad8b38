"""trainer.data: the offline digits set, torchvision sets from fake local folders, and every error.

Expected values come from outside the loader: scikit-learn's raw digit rows (every sample used
exactly once, stratification within one sample per class), statistics recomputed from the loaded
tensors, and fake CIFAR/SVHN/CINIC-10 folders written here in the on-disk formats, whose images
carry their own id (a constant channel) and orientation (a horizontal ramp) through augmentation.

torchvision checks the md5 of every CIFAR/SVHN file (``check_integrity`` in ``cifar.py``, used by
both ``CIFAR10._check_integrity`` and ``CIFAR10._load_meta``, and in ``svhn.py``), which a fake
file cannot pass. The fake-folder tests monkeypatch that module-level ``check_integrity`` to a
plain "file exists" check, so a missing file is still reported as missing.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bitops.errors import InputError
from trainer.config import DATASETS, DataConfig
from trainer.data import DataSplits, load_data

DIGITS_TOTAL = 1797
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
TORCHVISION_SETS = ("cifar10", "cifar100", "svhn", "cinic10")
DOWNLOADABLE = ("cifar10", "cifar100", "svhn")
SIZE = 32
# Fake train files hold 40 images (ids 0..39), the test file 10 (ids 40..49); 10 % of 40 held out.
N_TRAIN, N_TEST, N_HOLDOUT = 40, 10, 4


def _tensors(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of ``loader``'s dataset, in dataset order (one pass, no shuffling)."""
    images, labels = zip(*(loader.dataset[i] for i in range(len(loader.dataset))), strict=True)
    return torch.stack(images), torch.as_tensor(labels)


# --- digits -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data(DataConfig(image_size=8, seed=0))


def test_digits_sizes_add_up_and_follow_60_20_20(digits: DataSplits) -> None:
    assert sum(digits.sizes.values()) == DIGITS_TOTAL
    for split, fraction in SPLIT_FRACTIONS.items():  # two successive splits, each rounding by < 1
        assert abs(digits.sizes[split] - fraction * DIGITS_TOTAL) < 2
        assert len(getattr(digits, split).dataset) == digits.sizes[split]
    assert digits.name == "digits" and digits.num_classes == 10


@pytest.mark.parametrize("size", [8, 16, 24])
def test_digits_shapes(size: int) -> None:
    splits = load_data(DataConfig(image_size=size, batch_size=32))
    assert splits.input_shape == (3, size, size)
    images, labels = next(iter(splits.train))
    assert images.shape == (32, 3, size, size) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.int64


def test_digits_labels_stratified(digits: DataSplits) -> None:
    overall = np.bincount(load_digits().target, minlength=10)
    for split, fraction in SPLIT_FRACTIONS.items():
        labels = _tensors(getattr(digits, split))[1].numpy()
        assert labels.min() >= 0 and labels.max() <= 9
        counts = np.bincount(labels, minlength=10)
        assert np.all(counts > 0), f"{split} lacks a class: {counts}"
        assert np.all(np.abs(counts - fraction * overall) <= 1.5), f"{split} not stratified: {counts}"


def test_digits_train_normalised_per_channel(digits: DataSplits) -> None:
    images = _tensors(digits.train)[0]
    assert torch.allclose(images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(images.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-5)
    val = _tensors(digits.val)[0]
    assert abs(float(val.mean())) < 0.2, "val must use the train statistics, so it is only near 0"


def test_digits_every_sample_in_exactly_one_split(digits: DataSplits) -> None:
    # At 8x8 the bilinear resize is the identity, so each normalised channel is an increasing affine
    # map of the raw 0..16 counts; the train set holds both extremes, which fixes the map.
    channels = {split: _tensors(getattr(digits, split))[0][:, 0].flatten(1) for split in SPLIT_FRACTIONS}
    low, high = float(channels["train"].min()), float(channels["train"].max())
    raw_rows: Counter[bytes] = Counter()
    for rows in channels.values():
        raw = torch.round(16 * (rows - low) / (high - low)).to(torch.int64).numpy()
        raw_rows.update(row.tobytes() for row in raw)
    expected = Counter(row.tobytes() for row in load_digits().data.astype(np.int64))
    assert len(expected) == DIGITS_TOTAL, "sklearn's digits have no duplicate images"
    assert raw_rows == expected


def test_digits_same_seed_same_split_other_seed_other_split(digits: DataSplits) -> None:
    again = load_data(DataConfig(image_size=8, seed=0))
    other = load_data(DataConfig(image_size=8, seed=1))
    for split in SPLIT_FRACTIONS:
        first, second = getattr(digits, split).dataset.tensors, getattr(again, split).dataset.tensors
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(digits.test.dataset.tensors[1], other.test.dataset.tensors[1])


def test_train_loader_shuffles_with_the_seed(digits: DataSplits) -> None:
    def first_epoch(splits: DataSplits, loader: str) -> torch.Tensor:
        return torch.cat([labels for _, labels in getattr(splits, loader)])

    again = load_data(DataConfig(image_size=8, seed=0))
    assert torch.equal(first_epoch(digits, "train"), first_epoch(again, "train"))
    assert not torch.equal(first_epoch(digits, "train"), digits.train.dataset.tensors[1])
    assert torch.equal(first_epoch(digits, "val"), digits.val.dataset.tensors[1])
    assert torch.equal(first_epoch(digits, "test"), digits.test.dataset.tensors[1])


def test_digits_need_no_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # any `import torchvision` now fails
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401
    assert load_data(DataConfig()).sizes["test"] > 0


# --- fake torchvision folders ------------------------------------------------------------------


def _fake_images(ids: range) -> np.ndarray:
    """(N, 32, 32, 3) uint8: red = the image's id everywhere, green = a left-to-right ramp."""
    images = np.full((len(ids), SIZE, SIZE, 3), 128, dtype=np.uint8)
    images[..., 0] = np.asarray(ids, dtype=np.uint8)[:, None, None]
    images[..., 1] = (np.arange(SIZE) * 8)[None, None, :]
    return images


def _pickle(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _write_cifar(root: Path, dataset: str) -> None:
    """The on-disk layout of cifar-10-batches-py / cifar-100-python, at toy size.

    The real files are Python 2 pickles whose str keys torchvision reads with encoding="latin1"
    as str ("data", "labels"); b"data" is how they read with encoding="bytes". A Python 3 pickle
    with str keys therefore reads like the real thing.
    """
    def batch(ids: range, label_key: str) -> dict[str, Any]:
        # CIFAR rows are channel-major: 1024 red, 1024 green, 1024 blue.
        return {"data": _fake_images(ids).transpose(0, 3, 1, 2).reshape(len(ids), -1),
                label_key: [i % 10 for i in ids]}

    test_ids = range(N_TRAIN, N_TRAIN + N_TEST)
    if dataset == "cifar10":
        folder = root / "cifar-10-batches-py"
        per_file = N_TRAIN // 5
        for k in range(5):
            _pickle(folder / f"data_batch_{k + 1}", batch(range(k * per_file, (k + 1) * per_file), "labels"))
        _pickle(folder / "test_batch", batch(test_ids, "labels"))
        _pickle(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)]})
    else:
        folder = root / "cifar-100-python"
        _pickle(folder / "train", batch(range(N_TRAIN), "fine_labels"))
        _pickle(folder / "test", batch(test_ids, "fine_labels"))
        _pickle(folder / "meta", {"fine_label_names": [f"class{c}" for c in range(100)]})


def _write_svhn(root: Path) -> None:
    """train_32x32.mat / test_32x32.mat: X is (H, W, C, N) uint8, y is (N, 1) with the digit 0 as 10."""
    from scipy.io import savemat

    for name, ids in (("train", range(N_TRAIN)), ("test", range(N_TRAIN, N_TRAIN + N_TEST))):
        labels = np.array([[i % 10 or 10] for i in ids], dtype=np.uint8)
        savemat(root / f"{name}_32x32.mat", {"X": _fake_images(ids).transpose(1, 2, 3, 0), "y": labels})


def _write_cinic(root: Path, ids_per_part: dict[str, range]) -> None:
    """ImageFolder layout: root/{train,valid,test}/<class>/<file>.png, ten classes."""
    from PIL import Image

    for part, ids in ids_per_part.items():
        for i, image in zip(ids, _fake_images(ids), strict=True):
            folder = root / part / f"class{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")


@pytest.fixture
def md5_free(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn

    def exists(fpath: Any, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", exists)


def _ids(images: torch.Tensor, all_red: torch.Tensor) -> list[int]:
    """Image ids from the normalised red value at the centre, which no crop of <= 4 px moves off the image."""
    order = torch.sort(all_red).values
    return [int(torch.searchsorted(order, red)) for red in images[:, 0, SIZE // 2, SIZE // 2]]


def _flipped(images: torch.Tensor) -> torch.Tensor:
    """Whether each image's green ramp falls from left to right (a horizontal flip)."""
    row = images[:, 1, SIZE // 2]
    return row[:, SIZE // 2 - 3] > row[:, SIZE // 2 + 3]


def _check_torchvision_splits(splits: DataSplits, train_ids: range, val_ids: range | None, test_ids: range,
                              flips: bool) -> None:
    """Shapes, augmentation on train only, and which fake image landed in which split.

    ``val_ids`` None: validation must be a seeded 10 % held out of ``train_ids``.
    """
    torch.manual_seed(0)
    assert splits.input_shape == (3, SIZE, SIZE)
    passes = [_tensors(splits.train) for _ in range(3)]
    val, test = _tensors(splits.val), _tensors(splits.test)
    assert all(images.shape[1:] == (3, SIZE, SIZE) for images, _ in [*passes, val, test])
    assert not torch.equal(passes[0][0], passes[1][0]), "train samples must be augmented"
    assert torch.equal(val[0], _tensors(splits.val)[0]) and torch.equal(test[0], _tensors(splits.test)[0])

    # Every id appears somewhere, so an image's rank among the distinct red values is its id.
    red = torch.cat([images for images, _ in [*passes, val, test]])[:, 0, SIZE // 2, SIZE // 2].unique()
    assert len(red) == len(train_ids) + len(val_ids or ()) + len(test_ids)
    got = {split: _ids(images, red) for split, images in (("train", passes[0][0]), ("val", val[0]), ("test", test[0]))}
    assert sorted(got["test"]) == list(test_ids)
    if val_ids is None:
        assert len(got["val"]) == N_HOLDOUT and set(got["train"]).isdisjoint(got["val"])
        assert sorted(got["train"] + got["val"]) == list(train_ids)
    else:
        assert sorted(got["train"]) == list(train_ids) and sorted(got["val"]) == list(val_ids)
    assert splits.sizes == {split: len(ids) for split, ids in got.items()}
    for split, (_, labels) in (("train", passes[0]), ("val", val), ("test", test)):
        assert labels.tolist() == [i % 10 for i in got[split]]

    assert not _flipped(val[0]).any() and not _flipped(test[0]).any()
    assert bool(torch.cat([_flipped(images) for images, _ in passes]).any()) == flips


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_from_local_folder(tmp_path: Path, md5_free: None, dataset: str) -> None:
    _write_cifar(tmp_path, dataset)
    splits = load_data(DataConfig(dataset=dataset, data_dir=str(tmp_path), batch_size=8))
    assert splits.name == dataset and splits.num_classes == (10 if dataset == "cifar10" else 100)
    _check_torchvision_splits(splits, range(N_TRAIN), None, range(N_TRAIN, N_TRAIN + N_TEST), flips=True)
    images, labels = next(iter(splits.train))
    assert images.shape == (8, 3, SIZE, SIZE) and labels.dtype == torch.int64


def test_holdout_follows_the_seed(tmp_path: Path, md5_free: None) -> None:
    _write_cifar(tmp_path, "cifar10")
    def val_labels(seed: int) -> list[int]:
        return _tensors(load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path), seed=seed)).val)[1].tolist()

    assert val_labels(0) == val_labels(0)
    assert any(val_labels(0) != val_labels(seed) for seed in (1, 2, 3))


def test_svhn_from_local_folder_is_not_flipped(tmp_path: Path, md5_free: None) -> None:
    _write_svhn(tmp_path)
    splits = load_data(DataConfig(dataset="svhn", data_dir=str(tmp_path)))
    assert splits.num_classes == 10
    _check_torchvision_splits(splits, range(N_TRAIN), None, range(N_TRAIN, N_TRAIN + N_TEST), flips=False)


CINIC_IDS = {"train": range(0, 20), "valid": range(20, 30), "test": range(30, 40)}


def test_cinic10_from_image_folders(tmp_path: Path) -> None:
    _write_cinic(tmp_path, CINIC_IDS)
    splits = load_data(DataConfig(dataset="cinic10", data_dir=str(tmp_path)))
    assert splits.num_classes == 10
    _check_torchvision_splits(splits, CINIC_IDS["train"], CINIC_IDS["valid"], CINIC_IDS["test"], flips=True)


def test_cinic10_with_different_classes_per_split(tmp_path: Path) -> None:
    _write_cinic(tmp_path, CINIC_IDS)
    for png in (tmp_path / "test" / "class9").iterdir():
        png.unlink()
    (tmp_path / "test" / "class9").rmdir()
    with pytest.raises(InputError, match=r"cinic10 .*same 10 class folders"):
        load_data(DataConfig(dataset="cinic10", data_dir=str(tmp_path)))


# --- missing data and bad config --------------------------------------------------------------


def _assert_one_line_naming(error: pytest.ExceptionInfo[InputError], dataset: str) -> None:
    message = str(error.value)
    assert "\n" not in message and dataset in message and "`data_dir`" in message
    assert ("`download`" in message) == (dataset in DOWNLOADABLE)


@pytest.mark.parametrize("dataset", TORCHVISION_SETS)
def test_missing_data_dir(dataset: str) -> None:
    with pytest.raises(InputError) as error:
        load_data(DataConfig(dataset=dataset))
    _assert_one_line_naming(error, dataset)


@pytest.mark.parametrize("dataset", TORCHVISION_SETS)
def test_empty_data_dir(tmp_path: Path, dataset: str) -> None:
    with pytest.raises(InputError) as error:
        load_data(DataConfig(dataset=dataset, data_dir=str(tmp_path)))
    _assert_one_line_naming(error, dataset)
    assert str(tmp_path) in str(error.value)


def test_partial_cifar_folder_is_missing_not_a_traceback(tmp_path: Path, md5_free: None) -> None:
    _write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(InputError, match=r"cifar10 not found in .*`data_dir` .*`download`"):
        load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_datasets_constant() -> None:
    assert DATASETS[0] == "digits" and set(DATASETS) == {"digits", *TORCHVISION_SETS}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dataset": "mnist"}, r"dataset must be one of digits, cifar10, .*got 'mnist'"),
    ({"image_size": 0}, r"image_size must be an integer in 8\.\.128, got 0"),
    ({"image_size": 1000}, r"image_size must be an integer in 8\.\.128, got 1000"),
    ({"image_size": 16.0}, r"image_size must be an integer .*got 16\.0"),
    ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
    ({"seed": -1}, r"seed must be an integer in 0\.\.4294967295, got -1"),
    ({"dataset": "cinic10", "download": True}, r"download is not available for cinic10 .*got download=True"),
], ids=["dataset", "image_size-0", "image_size-1000", "image_size-float", "batch_size", "seed", "download-cinic10"])
def test_bad_config(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        DataConfig(**kwargs)
