"""`fixedrand`: every module trained by a fixed random classifier (Mostafa, Ramesh and
Cauwenberghs, "Deep supervised learning using local errors", Frontiers in Neuroscience 2018).

The aux net at each cut is a global average pool and a linear map drawn at random (torch's
default init, from the seeded generator) and never trained: the module must learn features that
this fixed readout separates, and the aux net adds no trained parameters, gradients or optimizer
state. The last module is trained by the network's own classifier, as for every local method.

This file is the whole method: its aux nets in hpff_bench.aux.builders.AUX_NETS, its name, label
and colour in hpff_bench.method_registry; LocalLearning trains it, so HiLo, PFF and any network
layout work as for DGL. Found through the `hpff_bench.methods` entry point in pyproject.toml.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from hpff_bench.aux.builders import AUX_NETS, AuxSite
from hpff_bench.aux.losses import cross_entropy
from hpff_bench.aux.objective import Term
from hpff_bench.method_registry import LOCAL_LEARNING, add_method


class FixedRandomClassifier(nn.Module):
    """Global average pool, then a linear map drawn at random and never trained."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, classes, bias=False)
        self.fc.weight.requires_grad_(False)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@AUX_NETS.register("fixedrand")
def fixed_random(site: AuxSite) -> list[Term]:
    return [Term(FixedRandomClassifier(site.channels, site.classes), 1.0, "averaged", cross_entropy)]


add_method("fixedrand", label="FixedRand", local=True, hilo=True, cls=LOCAL_LEARNING,
           colormap="Greys", doc="a fixed random classifier per module")
