"""An auxiliary objective: the aux net(s) at one point of the network and their loss.

`run()` does the forward *and* backward of the aux nets on a detached copy of a feature map
and returns the gradient for that feature map, so the aux graph is gone before the backbone
is backpropagated, and the caller decides where that gradient goes (one module, or a whole
HiLo window).

PFF (grid n > 1): output-averaged terms (classifiers) average g(patch) over the patches
before the loss; per-patch terms (the decoder) reconstruct each patch's own image region and
average the per-patch losses. `batched` runs all patches at once, folded into the batch;
`streamed` keeps one patch's aux activations alive at a time. For an output-averaged term
streaming costs an extra forward per patch: a no-grad pass gives the averaged output and its
loss gradient, then each patch is recomputed with grad and backpropagated with its share
(1/n² of that gradient).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hpff_bench.aux.losses import reconstruction
from hpff_bench.aux.pff import fold_patches, patch_groups, patch_slices
from hpff_bench.scope import scope


@dataclass
class Term:
    net: nn.Module
    coef: float
    # averaged: loss(mean over patches of net(patch), y); per-patch: mean of loss(net(patch), region)
    kind: str  # "averaged" | "per-patch"
    loss: Callable | None = None


class AuxObjective(nn.Module):
    """`adapter` (aux/layout.py) turns the unit's output into the NCHW map the nets read (a view:
    channels-last maps, tokens); the gradient goes back through it to the output's own layout."""

    def __init__(self, terms: list[Term], grid: int, exec_mode: str, name: str, autocast=contextlib.nullcontext,
                 adapter: nn.Module | None = None):
        super().__init__()
        self.adapter = adapter
        self.autocast = autocast  # the method's mixed-precision context; losses stay in fp32
        self.nets = nn.ModuleList(t.net for t in terms)
        self.terms = terms
        self.grid = grid
        self.exec_mode = exec_mode
        self.name = name
        self.forward_calls = 0  # aux-net calls (a patch counts once)

    @property
    def target_grid(self) -> int:
        """The grid its reconstruction target must come folded in (1: the image as it is)."""
        return self.grid if self.exec_mode == "batched" else 1

    def run(self, feature: torch.Tensor, y: torch.Tensor, targets: dict | None, weight: float):
        """Forward + backward of `weight * loss`; returns (loss detached, d(weight*loss)/d feature).

        targets: {grid: reconstruction target folded by that grid (fold_patches)}, made once per
        step by the caller (None without a reconstruction term)."""
        target = targets[self.target_grid] if targets is not None else None
        with scope("aux", None, self.name):
            if self.adapter is None:
                return self._run(feature, y, target, weight)
            a = feature.detach().requires_grad_()
            fmap = self.adapter(a)
            total, grad = self._run(fmap, y, target, weight)
            fmap.backward(grad)
            return total, a.grad

    def _run(self, feature, y, target, weight):
        if self.grid == 1 or self.exec_mode == "batched":
            return self._run_batched(feature, y, target, weight)
        return self._run_streamed(feature, y, target, weight)

    def _run_batched(self, feature, y, target, weight):
        n = self.grid
        a = feature.detach().requires_grad_()
        inp = a if n == 1 else fold_patches(a, n)
        total = 0.0
        with patch_groups(n * n):
            for term in self.terms:
                with self.autocast():
                    out = term.net(inp).float()
                self.forward_calls += n * n
                if term.kind == "averaged":
                    if n > 1:
                        out = out.view(a.shape[0], n * n, *out.shape[1:]).mean(1)
                    loss = term.loss(out, y)
                else:
                    loss = reconstruction(out, target)  # already folded by the caller
                total = total + term.coef * loss
        (weight * total).backward()
        return total.detach(), a.grad

    def _run_streamed(self, feature, y, target, weight):
        n = self.grid
        slices = patch_slices(*feature.shape[2:], n)
        tslices = patch_slices(*target.shape[2:], n) if target is not None else slices
        grad = torch.zeros_like(feature)
        total = torch.zeros((), device=feature.device)
        for term in self.terms:
            if term.kind == "per-patch":
                # the patch's own loss, averaged over patches: backpropagate it at once
                for sl, tsl in zip(slices, tslices):
                    out, a = self._patch_forward(term.net, feature, sl)
                    loss = term.coef * reconstruction(out, target[:, :, tsl[0], tsl[1]]) / (n * n)
                    (weight * loss).backward()
                    grad[:, :, sl[0], sl[1]] += a.grad
                    total = total + loss.detach()
                continue
            # output-averaged: the averaged output's loss gradient first (no graph kept) ...
            with torch.no_grad(), self.autocast():
                outs = [term.net(feature[:, :, sl[0], sl[1]]).float() for sl in slices]
            self.forward_calls += len(slices)
            mean = torch.stack(outs).mean(0).requires_grad_()
            del outs
            loss = term.coef * term.loss(mean, y)
            (weight * loss).backward()
            total = total + loss.detach()
            share = mean.grad / (n * n)
            # ... then each patch recomputed and backpropagated with its share
            for sl in slices:
                out, a = self._patch_forward(term.net, feature, sl)
                out.backward(share)
                grad[:, :, sl[0], sl[1]] += a.grad
        return total, grad

    def _patch_forward(self, net, feature, sl):
        a = feature[:, :, sl[0], sl[1]].detach().requires_grad_()
        with self.autocast():
            out = net(a).float()
        self.forward_calls += 1
        return out, a
