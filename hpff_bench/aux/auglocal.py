"""AugLocal's auxiliary nets (Ma et al., ICLR 2024; ChenxiangMA/AugLocal `networks/
auxiliary_nets.py`, `AuxNetwork` with net_config 'unifSamp', and `networks/resnet.py`).

The aux net of the module that ends at unit l is built from `depth` layers sampled uniformly
from the units after l: new basic blocks (their own weights) with those units' widths, a block
striding by 2 whenever the sampled widths have doubled since the last stride; then global
average pool, [BatchNorm1d when depth <= 1], linear -> classes, trained with cross-entropy.
With the pyramidal schedule the depth falls linearly from `depth` at the first module towards
`1 + (depth - 1)·(1 - coeff)` at the last, rounded (Python's round: halves to even).
"""

from __future__ import annotations

import math

from torch import nn

from hpff_bench.aux.official import official_init
from hpff_bench.networks.cifar_resnet import WIDTHS, BasicBlock


def unit_widths(stage_blocks: tuple[int, ...]) -> list[int]:
    """Output channels of each unit of a CIFAR ResNet but the head (the code's `net_dim`)."""
    return [WIDTHS[0]] + [WIDTHS[s] for s, n in enumerate(stage_blocks) for _ in range(n)]


def sampled_layers(n_layers: int, layer: int, depth: int) -> list[int]:
    """The units the aux net of unit `layer` mirrors: every later unit when `depth` reaches the
    end, else round(layer + (n_layers - layer - 1) / depth · i) for i = 1 … depth."""
    if depth >= n_layers - 1 - layer:
        return list(range(layer + 1, n_layers))
    return [round(layer + (n_layers - layer - 1) / depth * i) for i in range(1, depth + 1)]


def pyramid_depths(depth: int, modules: int, coeff: float) -> list[int]:
    """The pyramidal depth of each of the `modules - 1` aux nets (`modules` = the code's
    local_module_num, K - aux_net_depth): max(1, round(d·(1 - i·c/(m-2)) + i·c/(m-2)))."""
    return [max(1, round(depth * (1 - (i * coeff) / (modules - 2)) + (i * coeff) / (modules - 2)))
            for i in range(modules - 1)]


class AugLocalAuxNet(nn.Module):
    """The aux net of unit `layer` (see the module docstring); returns class logits."""

    def __init__(self, widths: list[int], layer: int, depth: int, num_classes: int):
        super().__init__()
        inplanes = planes = widths[layer]
        blocks: list[nn.Module] = []
        pending = 0  # halvings of the spatial size owed to widenings not yet strided
        for u in sampled_layers(len(widths), layer, depth):
            if widths[u] < inplanes:
                raise ValueError(f"AugLocal samples only wider or equal layers, got {widths[u]} after {inplanes}")
            pending += int(math.log2(widths[u] // inplanes))
            stride = 1
            if pending >= 1:
                stride, pending = 2, pending - 1
            blocks.append(BasicBlock(inplanes, widths[u], stride))
            inplanes = planes = widths[u]
        tail: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if depth <= 1:
            tail.append(nn.BatchNorm1d(planes))
        self.head = nn.Sequential(*blocks, *tail, nn.Linear(planes, num_classes))
        official_init(self)
        self.sampled = len(blocks)

    def forward(self, x):
        return self.head(x)
