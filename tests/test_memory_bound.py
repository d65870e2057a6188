"""The lower bound: persistent state + the largest single-module working set, never above the peak."""

from __future__ import annotations

import torch

from hpff_bench.config import RunConfig
from hpff_bench.memory.bound import lower_bound, method_groups
from hpff_bench.memory.tracker import LiveTensorTracker
from hpff_bench.scope import Scope, scope


def test_groups_follow_modules_and_their_aux_nets():
    local = method_groups(RunConfig(method="dgl", k=4, hilo=True, cascade_span=2), 4)
    assert local(Scope("backbone", 2, "module2")) == 2
    assert local(Scope("aux", None, "aux/independent/1")) == 1
    assert local(Scope("aux", None, "aux/cascade/1")) == 2  # on the output of module 1 + span - 1
    assert local(Scope("optimizer")) is None and local(Scope("loss")) is None
    bp = method_groups(RunConfig(), 1)
    assert bp(Scope("backbone", None, "backward")) == 0 and bp(Scope("loss")) == 0


def test_bound_on_a_hand_made_step():
    """Module 0 leaves 4 KiB alive into module 1 (a leak): the peak has it, the bound does not."""
    params = [torch.nn.Parameter(torch.empty(256))]  # 1 KiB
    t = LiveTensorTracker(group_of=method_groups(RunConfig(method="dgl", k=2), 2))
    t.register(params, "parameters")
    t.reset_peak()
    with t:
        with scope("backbone", 0, "module0"):
            a = torch.empty(1024)  # 4 KiB, kept too long
            b = torch.empty(2048)  # 8 KiB
        del b
        with scope("backbone", 1, "module1"):
            c = torch.empty(4096)  # 16 KiB while `a` is still alive
        del c
    bound = lower_bound(t)
    assert t.peak == 1024 + 4096 + 16384  # in module 1, with module 0's leftover
    assert bound["lower_bound_bytes"] == 1024 + 16384  # module 1 needs its own 16 KiB
    assert bound["terms"]["working_set"] == 16384 and bound["binding_module"] == "module1"
    assert bound["terms"]["parameters"] == 1024
    assert bound["efficiency"] == (1024 + 16384) / t.peak < 1
    del a
