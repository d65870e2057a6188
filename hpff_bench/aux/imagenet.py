"""InfoPro's aux nets for ImageNet-sized networks (torchvision ResNets), as the official code
builds them, and HPFF's ImageNet variants (for `--hpff` on those networks).

Why separate from the CIFAR nets: the ImageNet designs first *reduce* the feature map to 128
(or 256/512) channels with a 1x1 conv and upsample in steps through few channels, and the
classifier strides down twice before pooling. Applying the CIFAR design (upsample the raw
C-channel map to the image size, 3x3 conv at stride 1) to a 512-channel 28² map costs more
activation memory than backprop itself.

Sources (read, not copied):
- InfoPro-Pytorch `Experiments on ImageNet/networks/resnet.py`: `Decoder` (1x1 C->128, BN,
  ReLU, up 56², 3x3 ->32, BN, ReLU, up 112², 3x3 ->12, BN, ReLU, up 224², 3x3 ->3, sigmoid;
  convs with bias) and `head` (1x1 512->128, 3x3 s2 ->256, 3x3 s2 ->512, 1x1 ->2048, each + BN
  + ReLU, bias-free; GAP; Linear 2048->1000). The official code uses them only at its K=2 cut
  (layer2, 512 channels, 28²); here the 1x1 reduction takes any C, and the upsampling steps
  are the image size /4, /2, /1 (56, 112, 224 at 224²).
- HPFF `Exp on Imagenet/networks/InfoProAux.py`: `Decoder` picks one of four decoders by the
  input's spatial size (image/4, /8, /16, /32) and `AuxClassifier` one of four heads by the
  channel count (256, 512, 1024, 2048). Only the chosen decoder is built here; the official
  module builds all four per position (unused parameters), and its 7² decoder is unreachable
  (`features.size(4)`), its 2048-channel head has BatchNorm widths that do not match its convs.
  Here the heads follow the official widths, with BN widths equal to the convs'.
"""

from __future__ import annotations

import math

from torch import nn

from hpff_bench.aux.pff import PatchBatchNorm2d


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias), PatchBatchNorm2d(cout), nn.ReLU()]


class _Upsample(nn.Module):
    """Bilinear upsampling (align_corners=True, as the official nn.Upsample) to a fixed size."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x):
        return nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=True)


def _decoder(channels: int, out_size: int, steps: list[tuple[float, int, int]], last_kernel: int = 3) -> nn.Sequential:
    """1x1 conv C->128 (bias), BN, ReLU, then per step (size fraction, width, kernel):
    upsample to fraction·out_size, conv -> width, BN, ReLU; the last step's conv -> 3, sigmoid."""
    layers: list[nn.Module] = _conv(channels, 128, 1, bias=True)
    width = 128
    for i, (fraction, cout, kernel) in enumerate(steps):
        layers.append(_Upsample(max(1, round(out_size * fraction))))
        if i == len(steps) - 1:
            layers += [nn.Conv2d(width, 3, kernel, 1, kernel // 2), nn.Sigmoid()]
        else:
            layers += _conv(width, cout, kernel, bias=True)
            width = cout
    return nn.Sequential(*layers)


class InfoProImageNetDecoder(nn.Module):
    """InfoPro's ImageNet decoder: reduce to 128 channels, upsample in three steps (out/4, out/2,
    out) through 32 and 12 channels, 3x3 conv -> 3, sigmoid."""

    def __init__(self, channels: int, out_size: int):
        super().__init__()
        self.net = _decoder(channels, out_size, [(1 / 4, 32, 3), (1 / 2, 12, 3), (1, 3, 3)])

    def forward(self, x):
        return self.net(x)


# HPFF's four decoders, by image size / feature-map size: (size fraction, width, kernel) steps
HPFF_DECODER_STEPS: dict[int, list[tuple[float, int, int]]] = {
    4: [(1 / 2, 16, 3), (1, 3, 3)],
    8: [(1 / 4, 32, 3), (1 / 2, 16, 3), (1, 3, 3)],
    16: [(1 / 2, 64, 3), (1 / 4, 32, 3), (1 / 2, 16, 3), (1, 3, 3)],  # up to 112², down to 56², up
    32: [(1 / 16, 64, 3), (1 / 8, 32, 1), (1 / 4, 12, 3), (1 / 2, 6, 3), (1, 3, 3)],
}


def nearest_ratio(ratio: int) -> int:
    """HPFF has decoders for maps 4, 8, 16 and 32 times smaller than the image (ResNet stages);
    another network's map gets the nearest of them on a log scale (a 112² map of a 224² image:
    the /4 decoder; its upsampling sizes are the image's, so it still ends at the image size)."""
    return min(HPFF_DECODER_STEPS, key=lambda r: (abs(math.log2(r) - math.log2(max(ratio, 1))), r))


class HPFFImageNetDecoder(nn.Module):
    """HPFF's ImageNet decoder for a feature map `ratio` times smaller than the image (the
    nearest of HPFF's four, see nearest_ratio)."""

    def __init__(self, channels: int, ratio: int, out_size: int):
        super().__init__()
        self.net = _decoder(channels, out_size, HPFF_DECODER_STEPS[nearest_ratio(ratio)])

    def forward(self, x):
        return self.net(x)


def _head(channels: int, widths: tuple[int, int, int], out_dim: int) -> nn.Sequential:
    """1x1 C->w0, 3x3 s2 ->w1, 3x3 s2 ->w2, 1x1 ->2048 (each + BN + ReLU, no bias), GAP, Linear."""
    w0, w1, w2 = widths
    return nn.Sequential(
        *_conv(channels, w0, 1),
        *_conv(w0, w1, 3, 2),
        *_conv(w1, w2, 3, 2),
        *_conv(w2, 2048, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2048, out_dim),
    )


class InfoProImageNetHead(nn.Module):
    """InfoPro's ImageNet classifier: 1x1 C->128, 3x3 s2 ->256, 3x3 s2 ->512, 1x1 ->2048, GAP, linear."""

    def __init__(self, channels: int, out_dim: int):
        super().__init__()
        self.net = _head(channels, (128, 256, 512), out_dim)

    def forward(self, x):
        return self.net(x)


def hpff_head_widths(channels: int) -> tuple[int, int, int]:
    """HPFF's AuxClassifier widths: (128, 256, 512) for 256 and 512 channels, (256, 256, 512)
    for 1024, (512, 512, 1024) for 2048; i.e. w0 = max(128, C/4), w1 = max(256, w0), w2 = 2·w1."""
    w0 = max(128, channels // 4)
    w1 = max(256, w0)
    return w0, w1, 2 * w1


class HPFFImageNetHead(nn.Module):
    """HPFF's ImageNet AuxClassifier for `channels` input channels."""

    def __init__(self, channels: int, out_dim: int):
        super().__init__()
        self.net = _head(channels, hpff_head_widths(channels), out_dim)

    def forward(self, x):
        return self.net(x)
