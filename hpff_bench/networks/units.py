"""A network as units: stem, blocks (grouped in stages), head. Splits cut between units."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class NetworkSpec:
    """What a split needs to know about a network without building it."""

    name: str
    stage_blocks: tuple[int, ...]  # blocks per stage (stage 1 .. S); stage 0 is the stem
    build: Callable[[int], UnitNetwork]
    # "cifar" (He et al.'s CIFAR ResNets), "imagenet" (torchvision's ResNets) or "any" (a network
    # cut by structure: InfoPro's aux-net design then follows the image size, docs/methods.md)
    family: str = "cifar"
    source: str = "hpff_bench.networks"  # where it was registered (module, entry point, import spec)

    @property
    def num_blocks(self) -> int:
        return sum(self.stage_blocks)

    def unit_index(self, stage: int, block: int) -> int:
        """Unit index of `[stage, block]` (stage 0 = stem = unit 0; blocks from unit 1)."""
        if stage == 0:
            if block != 0:
                raise ValueError(f"stage 0 (the stem) has only block 0, got [{stage}, {block}]")
            return 0
        if not 1 <= stage <= len(self.stage_blocks) or not 0 <= block < self.stage_blocks[stage - 1]:
            raise ValueError(f"{self.name} has no block [{stage}, {block}]")
        return 1 + sum(self.stage_blocks[: stage - 1]) + block

    def unit_name(self, unit: int) -> str:
        if unit == 0:
            return "stem"
        if unit == self.num_blocks + 1:
            return "head"
        u = unit - 1
        for s, n in enumerate(self.stage_blocks, start=1):
            if u < n:
                return f"[{s},{u}]"
            u -= n
        raise IndexError(unit)


class Head(nn.Module):
    """Global average pool + linear classifier."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


class UnitNetwork(nn.Module):
    """units[0] = stem, units[1..N] = blocks, units[N+1] = head.

    `stage_blocks` (blocks per stage) and `names` (one per unit) are set for networks cut by
    structure (networks/cutting.py); the built-in ones have them in their NetworkSpec."""

    def __init__(self, units: list[nn.Module], spec_name: str, stage_blocks: tuple[int, ...] | None = None,
                 names: tuple[str, ...] | None = None):
        super().__init__()
        self.units = nn.ModuleList(units)
        self.spec_name = spec_name
        self.stage_blocks = stage_blocks
        self.names = names
        self.head_from: int | None = None  # set by networks/cutting.py for a traced network

    def forward(self, x):
        for unit in self.units:
            x = unit(x)
        return x
