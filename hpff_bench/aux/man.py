"""MAN's auxiliary net (JunhaoSu0/MAN, `Exp on CIFAR-SVHN-STL/networks/resnetInfoPro_MAN.py`):
the block that follows a module, twice (its moving average, without gradient, and a learnable
copy, the "learnable bias"), summed, then InfoPro's decoder and classifier (methods/man.py)."""

from __future__ import annotations

import torch
from torch import nn

from hpff_bench.aux.official import OfficialClassifier, OfficialDecoder, official_init
from hpff_bench.networks.cifar_resnet import BasicBlock


def _like(block: BasicBlock) -> BasicBlock:
    """A new block of `block`'s shape (its own weights)."""
    conv = block.conv1
    return BasicBlock(conv.in_channels, conv.out_channels, conv.stride[0])


class MomentumAux(nn.Module):
    """Module j's aux net: EMA block + learnable block, then InfoPro's decoder and classifier."""

    def __init__(self, block: BasicBlock, image_size: int, kind: str, loss: str, num_classes: int):
        super().__init__()
        channels = block.conv1.out_channels
        self.ema = _like(block)
        self.bias = _like(block)  # the learnable bias ("LB" in the official code)
        self.decoder = OfficialDecoder(channels, image_size)
        self.classifier = OfficialClassifier(channels, kind, loss, num_classes)
        official_init(self)
        self.ema.requires_grad_(False)
        self.forward_calls = 0

    def forward(self, x):
        """The summed blocks, the input of the decoder and the classifier (the caller runs those
        and their losses in the official order: see methods/man.py)."""
        self.forward_calls += 1
        return self.bias(x) + self.ema(x)

    @torch.no_grad()
    def update_ema(self, block: nn.Module, momentum: float) -> None:
        """EMA <- EMA·m + block·(1-m), parameters only (the EMA's BatchNorm statistics are its
        own running ones), in the official expression's order of operations."""
        for ema, p in zip(self.ema.parameters(), block.parameters(), strict=True):
            ema.mul_(momentum).add_(p * (1 - momentum))
