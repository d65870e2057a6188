"""Training data: torchvision datasets, ImageFolder copies and FakeData.

`load_splits(dataset, root, image_size)` returns the train and test sets with the transforms of
docs/recipes.md. Where the data is looked for, in order:

1. the torchvision layout under `root` (e.g. `root/cifar-10-batches-py`);
2. an ImageFolder layout under `root`: `root/train/<class>/*` and `root/test/<class>/*` (or
   `root/val/<class>/*`), which lets a JPEG/PNG copy stand in for the binary release;
3. a torchvision download into `root` (when `download` is true).

When all three fail, `DataUnavailable` says what was looked for and how to point `--data-root`
at a copy. `fake` (torchvision FakeData, random images and labels) needs no files; `folder`
is any ImageFolder directory (with train/ and test/ or val/ subdirectories, or class
directories directly, in which case every 10th image is held out for testing).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hpff_bench.data.transforms import build_transform

DEFAULT_DATA_ROOT = "data"
TRAIN_DATASETS = ("cifar10", "cifar100", "svhn", "stl10", "folder", "fake", "imagenet")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# dataset -> (torchvision class, what lies under root once downloaded, display name)
TORCHVISION: dict[str, tuple[str, str, str]] = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "CIFAR-10"),
    "cifar100": ("CIFAR100", "cifar-100-python", "CIFAR-100"),
    "svhn": ("SVHN", "train_32x32.mat", "SVHN"),
    "stl10": ("STL10", "stl10_binary", "STL-10"),
}
FAKE_SIZES = (1024, 256)  # FakeData train / test images unless subsets say otherwise


class DataUnavailable(RuntimeError):
    """The dataset is not under the data root and could not be downloaded; `reason` says why."""

    def __init__(self, dataset: str, root: str | os.PathLike, reason: str):
        self.dataset = dataset
        self.root = str(root)
        self.reason = reason
        super().__init__(f"{display_name(dataset)} is not available under {self.root!r}: {reason}. {hint(dataset)}")


def display_name(dataset: str) -> str:
    return TORCHVISION[dataset][2] if dataset in TORCHVISION else dataset


def hint(dataset: str) -> str:
    """How to make `dataset` available: one sentence for error messages and sweep summaries."""
    if dataset in TORCHVISION:
        cls, marker, name = TORCHVISION[dataset]
        return (
            f"Point --data-root at a directory holding a copy of {name}: the torchvision layout "
            f"(DIR/{marker}, what torchvision.datasets.{cls}(DIR, download=True) writes) or an "
            "ImageFolder layout (DIR/train/<class>/*.png and DIR/test/<class>/*.png)"
        )
    if dataset == "imagenet":
        return "Point --data-root at an ImageNet copy in ImageFolder layout (DIR/train/<class>/*, DIR/val/<class>/*)"
    if dataset == "folder":
        return "Point --data-root at an ImageFolder directory (DIR/train/<class>/* and DIR/test/<class>/*)"
    return ""


@dataclass
class DataSplits:
    train: object  # torch Dataset
    test: object
    num_classes: int
    source: str  # where the data came from, for logs and records
    classes: list[str] | None = field(default=None)


# ----- ImageFolder layouts ------------------------------------------------------------------
def _has_class_dirs(d: Path) -> bool:
    """True if `d` holds at least one sub-directory with an image file in it."""
    try:
        for sub in d.iterdir():
            if sub.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in sub.iterdir()):
                return True
    except OSError:
        return False
    return False


def folder_layout(root: str | os.PathLike) -> tuple[Path, Path | None] | None:
    """(train_dir, test_dir) of an ImageFolder copy at `root`; test_dir None = hold out from train.

    None when `root` is not an ImageFolder layout at all."""
    root = Path(root)
    if not root.is_dir():
        return None
    train = root / "train"
    if train.is_dir() and _has_class_dirs(train):
        for name in ("test", "val"):
            if (root / name).is_dir() and _has_class_dirs(root / name):
                return train, root / name
        return train, None
    if _has_class_dirs(root):
        return root, None
    return None


def folder_classes(root: str | os.PathLike) -> list[str]:
    """Class names (sorted sub-directories) of the ImageFolder copy at `root`; [] if none."""
    layout = folder_layout(root)
    if layout is None:
        return []
    return sorted(d.name for d in layout[0].iterdir() if d.is_dir())


def _image_folder(dataset: str, root: Path, image_size: int, augment: bool) -> DataSplits:
    from torchvision.datasets import ImageFolder

    layout = folder_layout(root)
    assert layout is not None
    train_dir, test_dir = layout
    resize = dataset != "imagenet"
    t_train = build_transform(dataset, image_size, train=True, augment=augment, resize=resize)
    t_test = build_transform(dataset, image_size, train=False, resize=resize)
    train = ImageFolder(str(train_dir), transform=t_train)
    if test_dir is not None:
        test = ImageFolder(str(test_dir), transform=t_test)
        if test.classes != train.classes:
            raise DataUnavailable(
                dataset, root, f"{test_dir} has classes {test.classes[:5]}... but {train_dir} has {train.classes[:5]}..."
            )
        source = f"ImageFolder {train_dir} / {test_dir}"
    else:
        from torch.utils.data import Subset

        held = ImageFolder(str(train_dir), transform=t_test)
        n = len(train)
        train = Subset(train, [i for i in range(n) if i % 10 != 0])
        test = Subset(held, [i for i in range(n) if i % 10 == 0])
        source = f"ImageFolder {train_dir} (every 10th image held out for testing)"
    classes = list(getattr(train, "classes", None) or train.dataset.classes)
    return DataSplits(train, test, len(classes), source, classes)


# ----- torchvision datasets ------------------------------------------------------------------
def _torchvision(dataset: str, root: Path, train: bool, transform, download: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION[dataset][0])
    if dataset in ("svhn", "stl10"):
        return cls(str(root), split="train" if train else "test", transform=transform, download=download)
    return cls(str(root), train=train, transform=transform, download=download)


def _torchvision_splits(dataset: str, root: Path, image_size: int, augment: bool, download: bool) -> DataSplits:
    t_train = build_transform(dataset, image_size, train=True, augment=augment)
    t_test = build_transform(dataset, image_size, train=False)
    train = _torchvision(dataset, root, True, t_train, download)
    test = _torchvision(dataset, root, False, t_test, download)
    classes = list(getattr(train, "classes", None) or [str(i) for i in range(10)])
    what = "downloaded into" if download else "at"
    return DataSplits(train, test, len(classes), f"torchvision {TORCHVISION[dataset][0]} {what} {root}", classes)


def _load(dataset: str, root: Path, image_size: int, num_classes: int, augment: bool, download: bool,
          fake_sizes: tuple[int, int]) -> DataSplits:
    if dataset == "fake":
        from torchvision.datasets import FakeData

        shape = (3, image_size, image_size)
        t_train = build_transform("fake", image_size, train=True, augment=augment)
        t_test = build_transform("fake", image_size, train=False)
        train = FakeData(fake_sizes[0], shape, num_classes, transform=t_train, random_offset=0)
        test = FakeData(fake_sizes[1], shape, num_classes, transform=t_test, random_offset=10_000_019)
        return DataSplits(train, test, num_classes, "torchvision FakeData (random images and labels)")
    if dataset in ("folder", "imagenet"):
        if folder_layout(root) is None:
            raise DataUnavailable(dataset, root, "no ImageFolder layout (class sub-directories with images) there")
        return _image_folder(dataset, root, image_size, augment)
    if dataset not in TORCHVISION:
        raise DataUnavailable(dataset, root, f"training data for {dataset!r} is not supported; one of {', '.join(TRAIN_DATASETS)}")
    errors = []
    try:  # 1. torchvision layout already there
        return _torchvision_splits(dataset, root, image_size, augment, download=False)
    except (RuntimeError, OSError) as e:
        errors.append(f"no torchvision copy ({_one_line(e)})")
    except ImportError as e:  # SVHN needs scipy
        raise DataUnavailable(dataset, root, f"reading it needs a package that is missing: {e}") from e
    if folder_layout(root) is not None:  # 2. an ImageFolder copy
        return _image_folder(dataset, root, image_size, augment)
    errors.append("no ImageFolder copy (train/<class>/ and test/<class>/)")
    if download:  # 3. download
        created = _first_missing(root)
        try:
            return _torchvision_splits(dataset, root, image_size, augment, download=True)
        except Exception as e:  # URLError, HTTPError, socket errors, bad checksums, ...
            errors.append(f"download failed ({type(e).__name__}: {_one_line(e)})")
            if created is not None:  # a failed download leaves no directories (or partial files) behind
                shutil.rmtree(created, ignore_errors=True)
    else:
        errors.append("downloads are off (--no-download)")
    raise DataUnavailable(dataset, root, "; ".join(errors))


def _first_missing(root: Path) -> Path | None:
    """The outermost directory of `root`'s chain that does not exist yet (None: root exists)."""
    first = None
    p = root.absolute()
    while not p.exists() and p != p.parent:
        first, p = p, p.parent
    return first


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def _subset(ds, n: int | None, seed: int):
    if n is None or n >= len(ds):
        return ds
    import torch
    from torch.utils.data import Subset

    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values.tolist()
    return Subset(ds, idx)


def load_splits(
    dataset: str,
    root: str | os.PathLike = DEFAULT_DATA_ROOT,
    image_size: int = 32,
    *,
    num_classes: int = 10,
    download: bool = True,
    augment: bool = True,
    seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> DataSplits:
    """Train/test datasets for `dataset` (raises DataUnavailable, see the module docstring).

    `train_subset` / `test_subset` keep a fixed random subset (seeded by `seed`) of that many
    images; for `fake` they set the FakeData sizes."""
    root = Path(root).expanduser()
    fake_sizes = (train_subset or FAKE_SIZES[0], test_subset or FAKE_SIZES[1])
    splits = _load(dataset, root, image_size, num_classes, augment, download, fake_sizes)
    splits.train = _subset(splits.train, train_subset, seed)
    splits.test = _subset(splits.test, test_subset, seed + 1)
    return splits


def availability(dataset: str, root: str | os.PathLike = DEFAULT_DATA_ROOT, download: bool = True) -> str | None:
    """None if `dataset` can be loaded from `root` (downloading it if allowed), else the reason.

    Cheap enough to call once per sweep before starting training runs."""
    try:
        load_splits(dataset, root, download=download, augment=False)
    except DataUnavailable as e:
        return str(e)
    return None
