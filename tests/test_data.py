"""Datasets and transforms (docs/recipes.md); no network access, no dataset needed."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from hpff_bench.data import (
    MEAN_STD,
    DataUnavailable,
    availability,
    build_transform,
    folder_classes,
    load_splits,
)


def _steps(t):
    return {type(s).__name__: s for s in t.transforms}


def test_augmentation_per_dataset():
    cifar = _steps(build_transform("cifar10", 32, train=True))
    assert cifar["RandomCrop"].size == (32, 32) and cifar["RandomCrop"].padding == 4
    assert cifar["RandomCrop"].padding_mode == "reflect" and "RandomHorizontalFlip" in cifar
    svhn = _steps(build_transform("svhn", 32, train=True))
    assert svhn["RandomCrop"].padding == 2 and "RandomHorizontalFlip" not in svhn
    stl = _steps(build_transform("stl10", 96, train=True))
    assert stl["RandomCrop"].size == (96, 96) and stl["RandomCrop"].padding == 4 and "RandomHorizontalFlip" in stl
    test = _steps(build_transform("cifar10", 32, train=False))
    assert set(test) == {"ToTensor", "Normalize"}


def test_normalisation_values():
    n = _steps(build_transform("cifar10", 32, train=False))["Normalize"]
    assert n.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert n.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))
    for ds in ("svhn", "stl10"):
        n = _steps(build_transform(ds, 32, train=False))["Normalize"]
        assert n.mean == (0.5, 0.5, 0.5) and n.std == (0.5, 0.5, 0.5)
    assert MEAN_STD["folder"] == MEAN_STD["cifar10"]


def test_fake_data_sizes_subsets_and_normalised_tensors():
    s = load_splits("fake", "unused", 16, num_classes=7, train_subset=20, test_subset=10)
    assert (len(s.train), len(s.test), s.num_classes) == (20, 10, 7)
    x, y = s.train[3]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= y < 7
    assert x.min() < 0  # normalised, not in [0, 1]


def _write_folder(root, classes=("cat", "dog", "frog"), per_class=10, size=12):
    for i, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (size, size), (20 * i, 10 * j, 100)).save(root / c / f"{j}.png")


def test_folder_with_train_and_test(tmp_path):
    _write_folder(tmp_path / "train")
    _write_folder(tmp_path / "test", per_class=4)
    s = load_splits("folder", tmp_path, 32, train_subset=12)
    assert s.num_classes == 3 and s.classes == ["cat", "dog", "frog"]
    assert len(s.train) == 12 and len(s.test) == 12
    assert s.train[0][0].shape == (3, 32, 32)  # resized to the configured size
    assert folder_classes(tmp_path) == ["cat", "dog", "frog"]
    # the fixed subset is the same every time (same seed) and differs with another seed
    again = load_splits("folder", tmp_path, 32, train_subset=12)
    other = load_splits("folder", tmp_path, 32, train_subset=12, seed=5)
    assert s.train.indices == again.train.indices != other.train.indices


def test_folder_without_test_dir_holds_out_every_tenth_image(tmp_path):
    _write_folder(tmp_path)
    s = load_splits("folder", tmp_path, 16)
    assert len(s.train) + len(s.test) == 30 and len(s.test) == 3


def test_cifar_from_an_image_folder_copy(tmp_path):
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    _write_folder(tmp_path / "train", classes, per_class=2, size=32)
    _write_folder(tmp_path / "test", classes, per_class=1, size=32)
    s = load_splits("cifar10", tmp_path, 32, download=False)
    assert s.source.startswith("ImageFolder") and s.num_classes == 10 and len(s.test) == 10
    n = _steps(s.train.transform)
    assert n["RandomCrop"].padding_mode == "reflect"  # CIFAR's augmentation, not a generic one


def test_missing_dataset_explains_how_to_point_data_root(tmp_path):
    with pytest.raises(DataUnavailable) as e:
        load_splits("cifar10", tmp_path / "none", 32, download=False)
    msg = str(e.value)
    assert "CIFAR-10 is not available" in msg and "--data-root" in msg and "cifar-10-batches-py" in msg
    assert "downloads are off" in msg
    assert availability("cifar10", tmp_path / "none", download=False) == msg
    assert availability("fake", tmp_path / "none") is None
    with pytest.raises(DataUnavailable, match="ImageFolder"):
        load_splits("folder", tmp_path, 32)


def test_to_tensor_pipeline_is_torchvision():
    t = build_transform("cifar10", 32, train=True)
    assert isinstance(t, T.Compose)
    img = Image.new("RGB", (32, 32), (255, 0, 0))
    assert t(img).shape == (3, 32, 32)
