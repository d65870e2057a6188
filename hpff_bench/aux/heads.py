"""Auxiliary nets of the local methods (docs/methods.md), for any channel count and spatial size.

Every BatchNorm here is a PatchBatchNorm, so PFF's batched execution keeps per-patch
statistics. Heads are built for the spatial size they will see (the patch size under PFF).
"""

from __future__ import annotations

import math

from torch import nn
from torch.nn import functional as F

from hpff_bench.aux.pff import PatchBatchNorm1d, PatchBatchNorm2d


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        PatchBatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class GreedyHead(nn.Module):
    """Greedy SL's `0c1f`: global average pool, linear."""

    def __init__(self, channels: int, spatial: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(channels, out_dim)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class DGLHead(nn.Module):
    """DGL's `mlp-sr`: pool to ceil(s/4)², 3 × 1x1 conv, pool 2x2, 3 × linear, linear."""

    def __init__(self, channels: int, spatial: int, out_dim: int):
        super().__init__()
        c = channels
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(math.ceil(spatial / 4))]
        for _ in range(3):
            layers += _conv_bn_relu(c, c, 1)
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
        for _ in range(3):
            layers += [nn.Linear(4 * c, 4 * c, bias=False), PatchBatchNorm1d(4 * c), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(4 * c, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class InfoProClassifier(nn.Module):
    """InfoPro's `1c2f` / `2c2f`: 3x3 conv (stride 2 and doubled width below 64 channels),
    [a second 3x3 conv for 2c2f], GAP, Linear -> 128·w, ReLU, Linear -> out."""

    def __init__(self, channels: int, spatial: int, out_dim: int, kind: str = "1c2f", widen: int = 1):
        super().__init__()
        cout, stride = (channels * 2, 2) if channels < 64 else (channels, 1)
        layers = _conv_bn_relu(channels, cout, 3, stride)
        if kind == "2c2f":
            layers += _conv_bn_relu(cout, cout, 3)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(cout, 128 * widen), nn.ReLU(inplace=True), nn.Linear(128 * widen, out_dim)
        )

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Decoder(nn.Module):
    """InfoPro's decoder: bilinear upsample to the target size, 3x3 conv C -> 12·w, BN, ReLU,
    3x3 conv -> 3, sigmoid."""

    def __init__(self, channels: int, out_size: int, widen: int = 1):
        super().__init__()
        self.out_size = out_size
        self.net = nn.Sequential(
            *_conv_bn_relu(channels, 12 * widen, 3),
            nn.Conv2d(12 * widen, 3, 3, 1, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        if x.shape[-2:] != (self.out_size, self.out_size):  # same size: align_corners=True is the identity
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=True)
        return self.net(x)


HEADS = {"greedy": GreedyHead, "dgl": DGLHead}


class PredSimPrediction(nn.Module):
    """PredSim's prediction head: average-pool so that C·p² <= 2048, linear."""

    def __init__(self, channels: int, spatial: int, out_dim: int):
        super().__init__()
        p = max(1, min(spatial, math.isqrt(2048 // channels) if channels <= 2048 else 1))
        self.pool = nn.AdaptiveAvgPool2d(p)
        self.fc = nn.Linear(channels * p * p, out_dim)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


class PredSimSimilarity(nn.Module):
    """PredSim's similarity head: a 3x3 convolution whose flattened output is compared
    sample-to-sample (cosine similarity) against the labels' similarity."""

    def __init__(self, channels: int, spatial: int, out_dim: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)

    def forward(self, x):
        return self.conv(x).flatten(1)
