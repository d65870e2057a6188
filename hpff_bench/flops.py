"""FLOPs of a training step, split by the project's scopes (backbone, aux, the rest).

The count per op is torch's own (`torch.utils.flop_counter`'s registry, what FlopCounterMode
uses: convolutions and their backward, matmuls, attention; element-wise ops, BatchNorm,
pooling and upsampling count 0), taken on whatever step runs inside, real or fake tensors.

Why not FlopCounterMode itself: it decomposes every op its registry lacks (running the
decomposition's pieces instead), which changes the tensors a step allocates and frees, and
the FLOPs are counted on the same step the memory tracker traces. This mode only looks:
each op runs as it would without it. tests/test_flops.py checks that the totals equal
FlopCounterMode's. FLOPs go to `scope.current()` (what the methods label: a module's
forward and the backward passes run for it), not to nn.Modules through global hooks. A backward
op run outside any scope (the official code's one backward over aux net and backbone) goes to
the scope whose forward made the autograd node running it (`scope.NodeScopes`); so does one on
autograd's device thread (a CUDA backward), which does not see the caller's ContextVar, when the
caller's backward call itself is outside any scope.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from hpff_bench.scope import CallerScope, NodeScopes, by_split

# private torch API (2.14 has it): the autograd node running now, in a backward
_current_autograd_node = getattr(torch._C, "_current_autograd_node", lambda: None)


class ScopedFlopCounter(TorchDispatchMode):
    """Counts FLOPs per scope kind (`by_kind`) and the aten ops dispatched (`ops`) of everything
    run inside it."""

    def __init__(self):
        super().__init__()
        self.by_kind: Counter[str] = Counter()
        self.by_node = 0  # of them, FLOPs placed by the node that ran them (see the module doc)
        self.ops = 0
        self._nodes = NodeScopes()
        self._caller = CallerScope()

    def __enter__(self):
        self._nodes.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._nodes.__exit__(*exc)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # as the memory tracker's: torch wraps every mode's __torch_dispatch__ in a dynamo-disable
        # frame by default; nothing is compiled inside a counted step, and the frame made a
        # resnet110 fake-tensor prediction ~0.6 s (a quarter) slower
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        s = self._caller.get()  # seen on every op: a backward's first op has no FLOPs
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            flops = count(*args, **kwargs, out_val=out)
            if s.kind == "step" and (node := _current_autograd_node()) is not None:
                made_in = self._nodes.of(node)
                if made_in is not None and made_in.kind != s.kind:  # (code with no scopes: stays)
                    s = made_in
                    self.by_node += flops
            self.by_kind[s.kind] += flops
        return out

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def split(self, steps: int = 1) -> dict:
        """FLOPs per step: {"total", "backbone", "aux", "other"} (ints)."""
        steps = max(steps, 1)
        return {"total": self.total // steps, **{k: v // steps for k, v in by_split(self.by_kind).items()}}
