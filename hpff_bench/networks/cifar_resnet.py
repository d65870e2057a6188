"""CIFAR ResNets of He et al. (2016): 6n+2 layers, widths 16-32-64.

Shortcuts that change shape use a 1x1 convolution + BN (option B), as the InfoPro and HPFF
code bases do.
"""

from __future__ import annotations

from torch import nn

from hpff_bench.networks.units import Head, UnitNetwork

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)
WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # in place, as the official InfoPro and HPFF blocks and torchvision's do: BN's backward
        # needs its input, not its output, so the sum can take the output's memory
        out += x if self.shortcut is None else self.shortcut(x)
        return self.relu(out)


def cifar_resnet(depth: int, num_classes: int) -> UnitNetwork:
    if depth not in CIFAR_RESNET_DEPTHS:
        raise ValueError(f"CIFAR ResNet depth must be one of {CIFAR_RESNET_DEPTHS}, got {depth}")
    n = (depth - 2) // 6
    stem = nn.Sequential(
        nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU(inplace=True)
    )
    units: list[nn.Module] = [stem]
    in_planes = WIDTHS[0]
    for stage, planes in enumerate(WIDTHS):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            units.append(BasicBlock(in_planes, planes, stride))
            in_planes = planes
    units.append(Head(in_planes, num_classes))
    net = UnitNetwork(units, f"resnet{depth}")
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net
