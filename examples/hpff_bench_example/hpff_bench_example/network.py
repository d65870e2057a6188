"""`tinynet`: a small VGG-style CNN, returned as an nn.Sequential of blocks.

hpff-bench calls it with `num_classes=` and cuts it into units by structure (the first block is
the stem, each following block a unit, the pooled classifier the head), so nothing here knows
about hpff-bench. Registered through the `hpff_bench.networks` entry point in pyproject.toml;
without installing, the same builder is `--network hpff_bench_example.network:tinynet`.
"""

from __future__ import annotations

from torch import nn


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def tinynet(num_classes: int = 10, width: int = 16) -> nn.Sequential:
    return nn.Sequential(
        _block(3, width, 1),
        _block(width, width, 1),
        _block(width, 2 * width, 2),
        _block(2 * width, 2 * width, 1),
        _block(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )
