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
(backward), as ATen, and per-channel vectors of at most fold·C elements.
Patch-grouped norms (PFF's batched execution) keep their NCHW path in aux.pff: reducing a
channels-last map per patch has no contiguous inner dimension to run over and was slower.
"""

from __future__ import annotations

import math

import torch
from torch._subclasses.fake_tensor import is_fake

_FOLD = 32  # pixels per row: fold·C = 384 floats at C = 12, where the reductions measured fastest


def _rows(t: torch.Tensor, fold: int) -> torch.Tensor:
    """(B, C, H, W) channels-last -> a (B, H·W / fold, fold·C) view of the same memory."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).view(n, h * w // fold, fold * c)


def _channel_sums(rows: torch.Tensor, channels: int) -> torch.Tensor:
    return rows.sum((0, 1)).view(-1, channels).sum(0)


def _spread(v: torch.Tensor, fold: int) -> torch.Tensor:
    """(C,) -> (fold·C,), broadcastable over a rows view."""
    return v.repeat(fold)


class _ChannelsLastBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        c = x.shape[1]
        fold = math.gcd(x.shape[2] * x.shape[3], _FOLD)
        xr = _rows(x, fold)
        count = x.numel() // c
        mean = _channel_sums(xr, c).div_(count)
        out = torch.empty_like(x)
        outr = _rows(out, fold)
        torch.sub(xr, _spread(mean, fold), out=outr)  # the output holds the squared deviations first
        var = _channel_sums(outr.square_(), c).div_(count)
        invstd = (var + eps).rsqrt_()
        scale = invstd * weight
        torch.addcmul(_spread(bias - mean * scale, fold), xr, _spread(scale, fold), out=outr)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.fold, ctx.count = fold, count
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, _mean, _var):
        x, weight, mean, invstd = ctx.saved_tensors
        fold, count, c = ctx.fold, ctx.count, x.shape[1]
        dy = dy.contiguous(memory_format=torch.channels_last)
        xr, dyr = _rows(x, fold), _rows(dy, fold)
        sum_dy = _channel_sums(dyr, c)
        dx = torch.empty_like(x)
        dxr = _rows(dx, fold)
        torch.sub(xr, _spread(mean, fold), out=dxr)  # dx holds (x - mean) * dy first
        dot = _channel_sums(dxr.mul_(dyr), c)
        # ATen: dx = (dy - sum_dy / n - (x - mean) * k) * invstd * w, with k = dot * invstd² / n
        a = invstd * weight
        k = dot * invstd * invstd / count
        torch.addcmul(_spread((mean * k - sum_dy / count) * a, fold), dyr, _spread(a, fold), out=dxr)
        dxr.addcmul_(xr, _spread(-k * a, fold))
        return dx, dot * invstd, sum_dy, None


def applies(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """Real float CPU maps in channels-last only: CUDA (cuDNN) and the CUDA memory prediction,
    which traces fake CPU tensors, keep torch's own kernel and its exact allocations."""
    return (
        x.dim() == 4 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        and weight is not None and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.is_autocast_enabled("cpu") and not is_fake(x)
    )


def channels_last_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode BN of a channels-last `x` (B, C, H, W): (output, mean, biased variance),
    the statistics for the caller's running-stat update."""
    if x.numel() // x.shape[1] < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    return _ChannelsLastBatchNorm.apply(x, weight, bias, eps)
