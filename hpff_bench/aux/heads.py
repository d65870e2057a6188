"""Auxiliary nets of the local methods (docs/methods.md), for any channel count and spatial size.

Every BatchNorm here is a PatchBatchNorm, so PFF's batched execution keeps per-patch
statistics. Heads are built for the spatial size they will see (the patch size under PFF).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from hpff_bench.aux.pff import PatchBatchNorm1d, PatchBatchNorm2d


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        PatchBatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class AvgPoolTo(nn.Module):
    """`nn.AdaptiveAvgPool2d(size)`, through `avg_pool2d` with kernel = stride = input / size where
    the size divides the input: the same windows and values (both divide each window's sum by its
    count), both save the input for backward, and on the CPU the plain pool runs ~35 % faster."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % self.size or w % self.size:
            return F.adaptive_avg_pool2d(x, self.size)
        return F.avg_pool2d(x, (h // self.size, w // self.size))


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
        layers: list[nn.Module] = [AvgPoolTo(math.ceil(spatial / 4))]
        for _ in range(3):
            layers += _conv_bn_relu(c, c, 1)
        layers += [AvgPoolTo(2), nn.Flatten()]
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
            # channels-last before the upsample: the small input is copied (and freed at once, as the
            # upsample saves nothing), and the upsampled map and both convs run in NHWC, which on the
            # CPU halves this net's time for the patch-sized inputs of PFF (C = 32, 64); the values
            # are the same arithmetic. Without an upsample the copy would be saved by the conv: kept NCHW.
            x = F.interpolate(x.contiguous(memory_format=torch.channels_last),
                              size=(self.out_size, self.out_size), mode="bilinear", align_corners=True)
        return self.net(x)


class AvgPoolAsConv(nn.Module):
    """`nn.AvgPool2d(kernel_size, padding=padding)` (count_include_pad, as local-loss's), computed
    as a depthwise convolution with weights 1/(kh·kw): the same windows and divisor and equal
    values (tests/test_aux.py). Why: torch's CPU avg-pool kernels take 2-3x longer forward +
    backward for PredSim's 2x2 and 2x1 pools (e.g. 7.8 against 3.3 ms at 128x16x32x32). Saves its
    input, as the pool does, and holds its weight as a buffer (C·kh·kw floats, not in checkpoints).
    Runs with autocast off, in the input's dtype, as the pool does. torch's FLOP counter counts
    its multiply-adds, where it counts a pool as 0."""

    def __init__(self, channels: int, kernel_size: tuple[int, int], padding: tuple[int, int]):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        weight = torch.full((channels, 1, *kernel_size), 1.0 / (kernel_size[0] * kernel_size[1]))
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x, self.weight.to(x.dtype), None, self.kernel_size, self.padding, 1, x.shape[1])


class PredSimPrediction(nn.Module):
    """PredSim's prediction head (anokland/local-loss train.py, LocalLossBlockConv): average-pool
    with kernels doubled in height, then width, until C·h·w <= 4096 (`--dim-in-decoder`), then a
    linear layer -> classes whose weights start at zero."""

    def __init__(self, channels: int, spatial: int, out_dim: int, max_features: int = 4096):
        super().__init__()
        kh = kw = 1
        h = w = spatial
        while channels * h * w > max_features and kh < spatial:
            kh *= 2
            h = math.ceil(spatial / kh)
            if channels * h * w > max_features:
                kw *= 2
                w = math.ceil(spatial / kw)
        # the original pads so that the pooled map is ceil(spatial / kernel) wide
        pad = ((kh * (h - spatial // kh)) // 2, (kw * (w - spatial // kw)) // 2)
        self.pool = AvgPoolAsConv(channels, (kh, kw), pad) if kh > 1 or kw > 1 else nn.Identity()
        self.fc = nn.Linear(channels * h * w, out_dim)
        nn.init.zeros_(self.fc.weight)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


class PredSimSimilarity(nn.Module):
    """PredSim's similarity head: a 3x3 convolution C->C (no bias), then each channel's spatial
    standard deviation (when C > 3 and the map is larger than 1 pixel), as the original's
    similarity_matrix does before its centred cosine (aux.losses.similarity_matching)."""

    def __init__(self, channels: int, spatial: int, out_dim: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)

    def forward(self, x):
        h = self.conv(x)
        if h.shape[1] > 3 and h.shape[2] > 1:
            if h.is_contiguous():
                return _SpatialStd.apply(h)[0]
            return h.flatten(2).std(dim=2)
        return h.flatten(1)


class _SpatialStd(torch.autograd.Function):
    """`h.flatten(2).std(dim=2)` (Bessel-corrected) for a contiguous map that nothing else reads.

    Why: torch's std is a scalar Welford loop per row on the CPU, ~6 ms forward at 128x16x32x32;
    two passes (subtract the mean in place, then a 2-norm) take ~0.7 ms. The map then holds the
    deviations, which is what the gradient needs: torch's std keeps the map for its backward and
    recomputes them there, so the same bytes stay alive. The backward is torch's formula,
    grad · (h - mean) / ((n - 1) · std), written straight into the input gradient (torch's
    composite makes the deviations anew, then the product: one map more at that moment).
    Returns (std, h); h is changed in place and must not be used by the caller."""

    @staticmethod
    def forward(ctx, h):
        z = h.view(h.shape[0], h.shape[1], -1)
        # in h's dtype, as torch's std: CUDA autocast would run the norm in float32
        with torch.autocast(h.device.type, enabled=False):
            z.sub_(z.mean(dim=2, keepdim=True))
            std = torch.linalg.vector_norm(z, dim=2).div_(math.sqrt(z.shape[2] - 1))
        ctx.mark_dirty(h)
        ctx.save_for_backward(h, std)
        ctx.set_materialize_grads(False)  # no zero-filled map for the deviations' unused gradient
        return std, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_std, grad_dev):
        dev, std = ctx.saved_tensors
        grad = None
        if grad_std is not None:
            grad = dev * (grad_std / (std * (dev[0, 0].numel() - 1)))[:, :, None, None]
        if grad_dev is not None:  # through the returned deviations h - mean(h)
            through = grad_dev - grad_dev.mean(dim=(2, 3), keepdim=True)
            grad = through if grad is None else grad.add_(through)
        return grad


# InfoPro's CIFAR-SVHN-STL10 code trains images up to STL-10's 96²; its ImageNet code 224²
CIFAR_DESIGN_MAX_IMAGE = 96


def design_family(family: str, image_size: int) -> str:
    """Which of InfoPro's aux-net designs a network gets: its own family's, and for a network cut by
    structure (family "any") the one InfoPro used at that image size (CIFAR nets up to 96², else
    the ImageNet nets)."""
    if family != "any":
        return family
    return "cifar" if image_size <= CIFAR_DESIGN_MAX_IMAGE else "imagenet"


def infopro_aux_nets(family: str, design: str, channels: int, spatial: int, ratio: int, out_size: int,
                     out_dim: int, kind: str = "1c2f") -> tuple[nn.Module, nn.Module]:
    """InfoPro's (decoder, classifier) for a network `family`: CIFAR ResNets get the CIFAR nets
    (`kind` = 1c2f / 2c2f), torchvision ResNets the ImageNet nets of `design` "infopro" or "hpff"
    (docs/methods.md). `spatial` is the classifier's input size (the patch size under PFF), `ratio`
    the image size over the whole feature map's, `out_size` the decoder's output size."""
    from hpff_bench.aux import imagenet

    if family == "cifar":
        return Decoder(channels, out_size), InfoProClassifier(channels, spatial, out_dim, kind)
    if design == "hpff":
        return imagenet.HPFFImageNetDecoder(channels, ratio, out_size), imagenet.HPFFImageNetHead(channels, out_dim)
    return imagenet.InfoProImageNetDecoder(channels, out_size), imagenet.InfoProImageNetHead(channels, out_dim)
