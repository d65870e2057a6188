"""Training-mode batch norm of channels-last maps on the CPU, by torch's formulas in vectorised ops.

Why: torch's CPU kernel for channels-last input loops over the channels innermost; with the
12 channels of InfoPro's decoder (128x12x32x32) its forward + backward takes ~9 ms where the same
map in NCHW takes ~3 ms, ~13 % of an InfoPro step. Converting the map to NCHW around the norm
would keep a second copy of it alive. Here the map is viewed, for free, as (batch, rows,
fold·C) with `fold` pixels per row, so that every reduction and every per-channel scale runs
over a contiguous inner dimension of fold·C elements: ~2.8 ms both ways.

Same statistics as ATen's batch_norm_cpu (two passes: the mean, then the mean of squared
deviations; the biased variance normalises, the unbiased one goes into the running variance),
the same saved tensors (input, weight, mean, 1/std), the same outputs and gradients up to float
rounding (tests/test_aux.py). Allocations: the output (forward) and the input gradient
(backward), as ATen, and per-channel vectors of at most g·fold·C elements (with g patches, also
a (batch, g, fold·C) partial sum).
Patch-grouped norms (PFF's batched execution: B·g samples, patch-minor, statistics per patch
and channel) use the same view split by patch, (batch, g, rows, fold·C), and reduce over rows
first: there it replaces aux.pff's NCHW path, a copy of the map and torch's kernel (~5.8 ms at
512x12x16x16 in 2x2 patches, ~3.6 ms here).
"""

from __future__ import annotations

import math

import torch
from torch._subclasses.fake_tensor import is_fake

_FOLD = 32  # pixels per row: fold·C = 384 floats at C = 12, where the reductions measured fastest


def _rows(t: torch.Tensor, groups: int, fold: int) -> torch.Tensor:
    """(B·g, C, H, W) channels-last -> a (B, g, H·W / fold, fold·C) view of the same memory."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).view(n // groups, groups, h * w // fold, fold * c)


def _channel_sums(rows: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, g, R, fold·C) -> (g, C): per patch and channel, the sum over batch and pixels."""
    g = rows.shape[1]
    # one patch: batch and rows coalesce into one dimension; several: rows first (a (B, g, fold·C)
    # partial sum), as reducing both at once across patches ran ~10x slower
    sums = rows.sum((0, 2)) if g == 1 else rows.sum(2).sum(0)
    return sums.view(g, -1, channels).sum(1)


def _spread(v: torch.Tensor, fold: int) -> torch.Tensor:
    """(g, C) -> (g, 1, fold·C), broadcastable over a rows view."""
    return v.repeat(1, fold).unsqueeze(1)


class _ChannelsLastBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        c = x.shape[1]
        fold = math.gcd(x.shape[2] * x.shape[3], _FOLD)
        xr = _rows(x, groups, fold)
        count = x.numel() // (groups * c)
        mean = _channel_sums(xr, c).div_(count)
        out = torch.empty_like(x)
        outr = _rows(out, groups, fold)
        torch.sub(xr, _spread(mean, fold), out=outr)  # the output holds the squared deviations first
        var = _channel_sums(outr.square_(), c).div_(count)
        invstd = (var + eps).rsqrt_()
        scale = invstd * weight
        torch.addcmul(_spread(bias - mean * scale, fold), xr, _spread(scale, fold), out=outr)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.groups, ctx.fold, ctx.count = groups, fold, count
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, _mean, _var):
        x, weight, mean, invstd = ctx.saved_tensors
        g, fold, count, c = ctx.groups, ctx.fold, ctx.count, x.shape[1]
        dy = dy.contiguous(memory_format=torch.channels_last)
        xr, dyr = _rows(x, g, fold), _rows(dy, g, fold)
        sum_dy = _channel_sums(dyr, c)
        dx = torch.empty_like(x)
        dxr = _rows(dx, g, fold)
        torch.sub(xr, _spread(mean, fold), out=dxr)  # dx holds (x - mean) * dy first
        dot = _channel_sums(dxr.mul_(dyr), c)
        # ATen: dx = (dy - sum_dy / n - (x - mean) * k) * invstd * w, with k = dot * invstd² / n
        a = invstd * weight
        k = dot * invstd * invstd / count
        torch.addcmul(_spread((mean * k - sum_dy / count) * a, fold), dyr, _spread(a, fold), out=dxr)
        dxr.addcmul_(xr, _spread(-k * a, fold))
        # the patches share the weight: their gradients add up
        return dx, (dot * invstd).sum(0), sum_dy.sum(0), None, None


def applies(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """Real float CPU maps in channels-last only: CUDA (cuDNN) and the CUDA memory prediction,
    which traces fake CPU tensors, keep torch's own kernel and its exact allocations."""
    return (
        x.dim() == 4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        and weight is not None and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.is_autocast_enabled("cpu") and not is_fake(x)
    )


def channels_last_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode BN of a channels-last `x` (B·g, C, H, W) with statistics per patch and
    channel for g patches folded patch-minor: (output, mean, biased variance), the statistics
    (g, C) for the caller's running-stat update."""
    if x.shape[0] % groups or x.numel() // (groups * x.shape[1]) < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}"
                         f" in {groups} patch group(s)")
    return _ChannelsLastBatchNorm.apply(x, weight, bias, groups, eps)
