"""Patch feature fusion: cut an aux net's input into an n x n grid of patches.

Batched execution folds the patches into the batch, patch-minor (index = b * n² + p), so a
BatchNorm can still normalise each patch over the batch alone: (B·n², C, ...) viewed as
(B, n²·C, ...) is free, and per-(patch, channel) statistics are exactly what running each
patch on its own (streamed execution) computes. That is what makes the two executions give
equal gradients.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch import nn

from hpff_bench.aux import batch_norm
from hpff_bench.errors import ConfigError

_groups: contextvars.ContextVar[int] = contextvars.ContextVar("pff_groups", default=1)


@contextlib.contextmanager
def patch_groups(groups: int):
    """Inside, PatchBatchNorm layers treat the batch as `groups` patches folded patch-minor."""
    token = _groups.set(groups)
    try:
        yield
    finally:
        _groups.reset(token)


class _PatchBatchNorm:
    def forward(self, x):
        g = _groups.get()
        if not self.training:
            return super().forward(x)
        if g == 1:
            if batch_norm.applies(x, self.weight):
                return self._channels_last(x)
            return super().forward(x)
        b = x.shape[0] // g
        c = self.num_features
        xg = x.reshape(b, g * c, *x.shape[2:])
        rm = rv = None
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            rm, rv = self.running_mean.repeat(g), self.running_var.repeat(g)
        out = F.batch_norm(
            xg, rm, rv, self.weight.repeat(g), self.bias.repeat(g), True, self._factor(), self.eps
        )
        if rm is not None:
            # one update with the mean of the patches' statistics (streamed does n² updates)
            with torch.no_grad():
                self.running_mean.copy_(rm.view(g, c).mean(0))
                self.running_var.copy_(rv.view(g, c).mean(0))
        # not a view for autograd: the in-place ReLU that follows then works on `out` itself,
        # where on a view autograd would add a CopySlices node (a full copy of the gradient)
        return torch.ops.aten._unsafe_view(out, x.shape)

    def _factor(self) -> float:
        """The running statistics' update weight, as nn.BatchNorm's: momentum, or with momentum
        None the cumulative average's 1 / batches seen."""
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def _channels_last(self, x):
        """aux.batch_norm's kernel (CPU, channels-last), running statistics as nn.BatchNorm's."""
        out, mean, var = batch_norm.channels_last_batch_norm(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            f = self._factor()
            count = x.numel() // x.shape[1]
            with torch.no_grad():
                self.running_mean.mul_(1 - f).add_(mean, alpha=f)
                self.running_var.mul_(1 - f).add_(var * (count / (count - 1)), alpha=f)
        return out


class PatchBatchNorm2d(_PatchBatchNorm, nn.BatchNorm2d):
    pass


class PatchBatchNorm1d(_PatchBatchNorm, nn.BatchNorm1d):
    pass


def check_divisible(height: int, width: int, n: int, where: str) -> None:
    if height % n or width % n:
        raise ConfigError(
            f"--pff-grid {n} cannot split {where} ({height}x{width}) into {n}x{n} equal patches; "
            f"use a grid that divides both sides (allowed: 1, 2, 4) or another --image-size"
        )


def fold_patches(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B·n², C, H/n, W/n), patch-minor, row-major patches."""
    b, c, h, w = x.shape
    return (
        x.reshape(b, c, n, h // n, n, w // n)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(b * n * n, c, h // n, w // n)
    )


def patch_slices(height: int, width: int, n: int) -> list[tuple[slice, slice]]:
    """Row-major (same order as fold_patches) height/width slices of the n x n grid."""
    ph, pw = height // n, width // n
    return [
        (slice(i * ph, (i + 1) * ph), slice(j * pw, (j + 1) * pw)) for i in range(n) for j in range(n)
    ]
