"""FLOPs of a training step, split by the project's scopes (backbone, aux, the rest).

Counted by torch's own `FlopCounterMode` (its per-op formulas: convolutions and their
backward, matmuls, attention; element-wise ops, BatchNorm, pooling and upsampling count 0),
on whatever step runs inside it, real or fake tensors alike. torch attributes FLOPs to
nn.Modules through global module hooks; we attribute them to `memory.scope.current()`
instead, which is what the methods label (a module's forward *and* the backward passes run
for it), so the module hooks are left out: no per-module Python work, and nothing is
attached to the traced tensors.
"""

from __future__ import annotations

from collections import Counter

from torch.utils.flop_counter import FlopCounterMode

from hpff_bench.memory.scope import current

# scope kinds -> the record's split; "loss", "optimizer", "step" go to "other"
SPLIT = ("backbone", "aux")


class _NoModuleTracking:
    """Stands in for torch's ModuleTracker: one parent, no hooks."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


class ScopedFlopCounter(FlopCounterMode):
    """FlopCounterMode whose counts are also kept per scope kind (`by_kind`)."""

    def __init__(self):
        super().__init__(display=False)
        self.mod_tracker = _NoModuleTracking()
        self.by_kind: Counter[str] = Counter()

    def __enter__(self):
        self.by_kind.clear()
        return super().__enter__()

    def _count_flops(self, func_packet, out, args, kwargs):
        count = self.flop_registry.get(func_packet)
        if count is not None:
            flops = count(*args, **kwargs, out_val=out)
            self.flop_counts["Global"][func_packet] += flops
            self.by_kind[current().kind] += flops
        return out

    def split(self, steps: int = 1) -> dict:
        """FLOPs per step: {"total", "backbone", "aux", "other"} (ints)."""
        steps = max(steps, 1)
        total = sum(self.by_kind.values())
        out = {"total": total // steps}
        for kind in SPLIT:
            out[kind] = self.by_kind[kind] // steps
        out["other"] = (total - sum(self.by_kind[k] for k in SPLIT)) // steps
        return out
