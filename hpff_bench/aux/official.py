"""The auxiliary nets of the official HPFF CIFAR code (Zeudfish/HPFF, `Exp on CIFAR_SVHN_STL/
network/auxiliary_net.py`), rebuilt from its description so `--variant official` has the same
layers, parameter counts and losses.

They differ from ours (aux/heads.py) in ways that change parameters, gradients and memory:
- QuadrantDecoder: PFF on the decoder only, one decoder per quadrant with its own weights;
  each quadrant of the feature map is upsampled to half the image and decoded against the
  matching quadrant of the image; the four BCE losses are summed (not averaged). Both convs
  have a bias, the ReLU is not in-place.
- WholeDecoder: InfoPro's own whole-map decoder, for the HiLo-only path the official code lacks.
- OfficialClassifier: InfoPro's `AuxClassifier`; the convs' width follows the input (16 -> 32,
  32 -> 64, 64 -> 64), the conv ReLUs are not in-place, the loss is computed inside.
Every net returns its loss, as the official ones do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hpff_bench.aux.losses import cross_entropy, supcon

OFFICIAL_CLASSIFIERS = ("1c2f", "2c2f")
FEATURE_DIM = 128  # the official commands' --aux_net_feature_dim


class QuadrantDecoder(nn.Module):
    """Four decoders, one per quadrant: upsample (bilinear, corners aligned) to image/2, 3x3 conv
    C -> 12, BN, ReLU, 3x3 conv 12 -> 3, sigmoid; loss = sum of the four BCEs."""

    def __init__(self, channels: int, image_size: int, widen: int = 1):
        super().__init__()
        self.out_size = image_size // 2
        hidden = 12 * widen
        self.decoders = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, hidden, 3, 1, 1),
                nn.BatchNorm2d(hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, 3, 3, 1, 1),
                nn.Sigmoid(),
            )
            for _ in range(4)
        )

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h, w = features.shape[2] // 2, features.shape[3] // 2
        hi, wi = image.shape[2] // 2, image.shape[3] // 2
        quadrants = [(slice(None, h), slice(None, w)), (slice(None, h), slice(w, None)),
                     (slice(h, None), slice(None, w)), (slice(h, None), slice(w, None))]
        image_quadrants = [(slice(None, hi), slice(None, wi)), (slice(None, hi), slice(wi, None)),
                           (slice(hi, None), slice(None, wi)), (slice(hi, None), slice(wi, None))]
        loss = 0
        for dec, (a, b), (ai, bi) in zip(self.decoders, quadrants, image_quadrants):
            patch = F.interpolate(features[:, :, a, b], size=[self.out_size] * 2, mode="bilinear", align_corners=True)
            loss = loss + F.binary_cross_entropy(dec(patch), image[:, :, ai, bi])
        return loss


class OfficialDecoder(nn.Module):
    """InfoPro's CIFAR `Decoder` (also MAN's): always a bilinear upsample (corners aligned) to the
    image size, even from the image size (a copy), 3x3 conv C -> 12·w with bias, BN, ReLU (not in
    place), 3x3 conv 12·w -> 3 with bias, sigmoid. Returns the reconstruction; its loss is torch's
    BCE against the de-normalised image, computed by the caller in float32."""

    def __init__(self, channels: int, image_size: int, widen: int = 1):
        super().__init__()
        self.out_size = image_size
        hidden = 12 * widen
        self.decoder = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, 1, 1), nn.BatchNorm2d(hidden), nn.ReLU(), nn.Conv2d(hidden, 3, 3, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(features, size=[self.out_size] * 2, mode="bilinear", align_corners=True)
        return self.decoder(up)


class WholeDecoder(OfficialDecoder):
    """InfoPro's own decoder with QuadrantDecoder's interface, (features, image) -> one BCE. The
    official HPFF code has no HiLo-without-PFF path; `--variant official --hilo` for InfoPro swaps
    this in for its QuadrantDecoder (the only change), so the paper's IL+CL row runs on the
    official execution."""

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.binary_cross_entropy(super().forward(features), image)


def official_init(module: nn.Module) -> None:
    """The official CIFAR models' init (InfoPro, HPFF, MAN, AugLocal), applied to every conv the
    module owns: N(0, sqrt(2 / (k·k·C_out))), BatchNorm2d weight 1, bias 0 (linear layers, conv
    biases and BatchNorm1d keep torch's default)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class OfficialClassifier(nn.Module):
    """InfoPro's `1c2f` / `2c2f` AuxClassifier with its loss: cross-entropy on class logits, or
    SupCon (temperature 0.07) on L2-normalised 128-d features."""

    def __init__(self, channels: int, kind: str, loss: str, num_classes: int, widen: int = 1):
        super().__init__()
        if channels not in (16, 32, 64):
            raise ValueError(f"the official aux classifier takes 16, 32 or 64 channels, got {channels}")
        cout, stride = (2 * channels, 2) if channels < 64 else (64, 1)
        cout *= widen
        layers: list[nn.Module] = [nn.Conv2d(channels, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if kind == "2c2f":
            layers += [nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        out_dim = FEATURE_DIM if loss == "supcon" else num_classes
        self.loss = loss
        self.head = nn.Sequential(
            *layers,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(cout, FEATURE_DIM * widen),
            nn.ReLU(inplace=True),
            nn.Linear(FEATURE_DIM * widen, out_dim),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        return supcon(out, y) if self.loss == "supcon" else cross_entropy(out, y)
