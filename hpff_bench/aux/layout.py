"""What an auxiliary net sees of a unit's output: always a [B, C, H, W] feature map.

The papers' aux nets are convolutional and read NCHW maps. A network cut by structure may hand
over something else (docs/methods.md, "Any network"):
- a channels-last map [B, H, W, C] (torchvision's Swin): permuted to NCHW (a view);
- tokens [B, N, D] (ViT): the last g² tokens (g = floor(sqrt(N))) are the patch grid, the
  N - g² before them class/register tokens, left out; the grid is viewed as [B, D, g, g], since
  a patch embedding is a convolution of stride p and its tokens are that convolution's map;
- anything else (a flat [B, D] vector, 5-D maps) has no aux net: ConfigError.
The layout is read from the shape (the image is square): a 4-D output with equal last two sizes
is NCHW, else with equal middle two NHWC.
"""

from __future__ import annotations

import math

from torch import nn

from hpff_bench.errors import ConfigError


class ChannelsLastToMap(nn.Module):
    """[B, H, W, C] -> [B, C, H, W] (a view)."""

    def forward(self, x):
        return x.permute(0, 3, 1, 2)


class TokensToMap(nn.Module):
    """[B, N, D] -> [B, D, g, g] from the last g² tokens (a view)."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x):
        g = self.grid
        return x[:, x.shape[1] - g * g:, :].transpose(1, 2).unflatten(2, (g, g))


def map_adapter(shape: tuple[int, ...], where: str) -> tuple[nn.Module | None, tuple[int, int, int]]:
    """(adapter or None, (C, H, W) of the map the aux nets see) for a unit output of `shape`
    (without the batch); ConfigError naming `where` when no map can be read from it."""
    if len(shape) == 3:
        c, h, w = shape
        if h == w:
            return None, (c, h, w)
        if c == h:
            return ChannelsLastToMap(), (w, c, h)
    if len(shape) == 2:
        n, d = shape
        g = math.isqrt(n)
        if g >= 1 and n - g * g <= g:
            return TokensToMap(g), (d, g, g)
        raise ConfigError(f"{where} is {n} tokens of {d}, which are no square patch grid after a few leading "
                          f"tokens ({g}x{g} = {g * g} leaves {n - g * g}); the aux nets need a map: cut elsewhere")
    dims = "x".join(map(str, shape))
    raise ConfigError(f"{where} is a {len(shape) + 1}-D tensor [B, {dims}]; local aux nets take a map "
                      "[B, C, H, W] (or [B, H, W, C]) or tokens [B, N, D]: cut elsewhere")
