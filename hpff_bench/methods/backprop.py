"""End-to-end backprop, and backprop with gradient checkpointing at the split's cut points."""

from __future__ import annotations

import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hpff_bench.methods.base import Method, StepOutput
from hpff_bench.scope import scope


class Backprop(Method):
    """`bp`: one graph over the whole network. The split only names modules for attribution."""

    name = "bp"

    def __init__(self, config, device="cpu", foreach=None):
        super().__init__(config, device, foreach)
        self._build_optimizer()

    def _forward(self, k, h):
        return self.run_module(k, h)

    def _forward_backward(self, x, y):
        h = x
        for k in range(len(self.modules_)):
            h = self._forward(k, h)
        with scope("loss"):
            loss = F.cross_entropy(h.float(), y)
        with scope("backbone", None, "backward"):
            (loss * self._scale).backward()
        return StepOutput(loss.detach(), h.detach())


class Checkpointed(Backprop):
    """`gc`: every module but the last runs under torch.utils.checkpoint (non-reentrant), so only
    module inputs are saved and each module's forward runs again during backward. Gradients
    equal bp's; BatchNorm running statistics are updated twice per step (a known effect of
    recomputation), which does not change gradients."""

    name = "gc"

    def _forward(self, k, h):
        if k == len(self.modules_) - 1:
            return self.run_module(k, h)
        return checkpoint(self.run_module, k, h, use_reentrant=False)
