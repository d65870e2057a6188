"""Datasets, transforms and synthetic batches.

Importing this package is cheap: torchvision is imported only when data is actually loaded.
"""

from hpff_bench.data.datasets import (
    DEFAULT_DATA_ROOT,
    TRAIN_DATASETS,
    DataSplits,
    DataUnavailable,
    availability,
    folder_classes,
    folder_layout,
    hint,
    load_splits,
)
from hpff_bench.data.normalization import MEAN_STD
from hpff_bench.data.transforms import build_transform

__all__ = [
    "DEFAULT_DATA_ROOT",
    "MEAN_STD",
    "TRAIN_DATASETS",
    "DataSplits",
    "DataUnavailable",
    "availability",
    "build_transform",
    "folder_classes",
    "folder_layout",
    "hint",
    "load_splits",
]
