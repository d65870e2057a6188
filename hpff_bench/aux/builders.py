"""Which aux nets (and losses) each local method puts at a cut: one registry, one entry per method.

`@AUX_NETS.register("mymethod")` on a function `(AuxSite) -> list[Term]` is all a new local
method needs for its aux nets (docs/extending.md); LocalLearning builds them at every cut, in
both HiLo levels, with PFF and any layout (aux/layout.py) handled around them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hpff_bench.aux.heads import (
    DGLHead,
    GreedyHead,
    PredSimPrediction,
    PredSimSimilarity,
    design_family,
    infopro_aux_nets,
)
from hpff_bench.aux.losses import LOCAL_LOSSES, cross_entropy, similarity_matching
from hpff_bench.aux.objective import Term
from hpff_bench.registry import Registry

AUX_NETS = Registry("aux net")


@dataclass(frozen=True)
class AuxSite:
    """One cut, as its aux nets see it."""

    config: object  # the RunConfig
    channels: int  # C of the map the nets read
    spatial: int  # its side, per patch under PFF
    height: int  # the whole map's side
    position: int  # the module whose output it is (0-based)
    modules: int  # K
    grid: int  # PFF grid n (1: off)
    family: str  # the network's family ("cifar", "imagenet", "any")

    @property
    def classes(self) -> int:
        return self.config.resolved_num_classes

    @property
    def image_size(self) -> int:
        return self.config.resolved_image_size


@AUX_NETS.register("greedy")
def greedy(s: AuxSite) -> list[Term]:
    return [Term(GreedyHead(s.channels, s.spatial, s.classes), 1.0, "averaged", cross_entropy)]


@AUX_NETS.register("dgl")
def dgl(s: AuxSite) -> list[Term]:
    return [Term(DGLHead(s.channels, s.spatial, s.classes), 1.0, "averaged", cross_entropy)]


@AUX_NETS.register("infopro")
def infopro(s: AuxSite) -> list[Term]:
    c = s.config
    lam1, lam2 = c.lambdas.at(s.position, s.modules - 1)
    out_dim = s.classes if c.local_loss == "ce" else 128
    decoder, classifier = infopro_aux_nets(
        design_family(s.family, s.image_size), "hpff" if c.hilo else "infopro", s.channels, s.spatial,
        s.image_size // s.height, s.image_size // s.grid, out_dim, c.aux,
    )
    return [Term(decoder, lam1, "per-patch"), Term(classifier, lam2, "averaged", LOCAL_LOSSES[c.local_loss])]


@AUX_NETS.register("predsim")
def predsim(s: AuxSite) -> list[Term]:
    beta = s.config.predsim_beta
    return [
        Term(PredSimPrediction(s.channels, s.spatial, s.classes), 1 - beta, "averaged", cross_entropy),
        Term(PredSimSimilarity(s.channels, s.spatial), beta, "averaged",
             functools.partial(similarity_matching, num_classes=s.classes)),
    ]
