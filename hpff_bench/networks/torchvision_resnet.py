"""torchvision's ImageNet ResNets / ResNeXts, unchanged, regrouped as units.

Units: stem (conv1, bn1, relu, maxpool), every Bottleneck/BasicBlock of layer1..layer4, head
(avgpool, flatten, fc). The blocks are torchvision's own module objects, so the network is
exactly torchvision's.
"""

from __future__ import annotations

import torchvision
from torch import nn

from hpff_bench.networks.units import UnitNetwork

# name -> blocks per stage (layer1..layer4)
TORCHVISION_RESNETS: dict[str, tuple[int, int, int, int]] = {
    "resnet34": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnext101_32x8d": (3, 4, 23, 3),
}


def torchvision_resnet(name: str, num_classes: int) -> UnitNetwork:
    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    head = nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)
    return UnitNetwork([stem, *blocks, head], name)
