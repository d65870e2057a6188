"""The live-tensor tracker counts exact bytes, once per storage, by category and scope."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from hpff_bench.config import RunConfig
from hpff_bench.memory.tracker import ALLOC, FREE, LiveTensorTracker, cuda_block_size
from hpff_bench.scope import scope


def test_cuda_block_size():
    assert [cuda_block_size(n) for n in (0, 1, 511, 512, 513, 4000)] == [0, 512, 512, 512, 1024, 4096]


def test_exact_bytes_views_counted_once_and_freed_at_death():
    t = LiveTensorTracker()
    with t:
        a = torch.empty(100)  # 400 B
        v, s = a.view(10, 10), a[::2]  # views: same storage
        d = torch.empty(3, dtype=torch.float64)  # 24 B
        z = torch.empty(0)  # 0 B
        assert (t.current, t.live_storages) == (424, 3)
        del a, v
        assert t.current == 424  # `s` still holds the storage
        del s
        assert t.current == 24
        del d, z
        assert t.current == 0
    assert t.peak == 424


def test_rounding_is_per_storage_and_events_keep_raw_bytes():
    t = LiveTensorTracker(rounding=cuda_block_size)
    with t:
        a = torch.empty(100)  # 400 -> 512
        b = torch.empty(1000)  # 4000 -> 4096
        assert t.current == 512 + 4096
        del a
    allocs = [e for e in t.events if e[0] == ALLOC]
    assert [e[2] for e in allocs] == [400, 4000]
    assert [e[0] for e in t.events].count(FREE) == 1
    del b


def test_categories_scopes_and_gradients():
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(8, 16)
    t = LiveTensorTracker()
    t.register_method_state(lin.parameters(), lin.buffers(), None, [x])
    t.watch_gradients(lin.parameters())
    t.reset_peak()
    with t:
        with scope("backbone", 0, "module0"):
            h = lin(x).relu()  # forward in a backbone scope: backbone activations
        with scope("aux", None, "aux/independent/0"):
            a = h * 2  # aux activations
        with scope("loss"):
            loss = a.sum()  # other
        with scope("backbone", 0, "module0"):
            loss.backward()  # born in backward: other; the weight's grad -> gradients
    c = t.by_category
    assert c["parameters"] == (16 * 16 + 16) * 4 and c["inputs"] == 8 * 16 * 4
    assert c["gradients"] == (16 * 16 + 16) * 4
    assert c["backbone_activations"] == 8 * 16 * 4 and c["aux_activations"] == 8 * 16 * 4
    assert sum(t.peak_breakdown.values()) == t.peak  # the breakdown adds up to the peak
    assert set(t.per_scope_peak) == {"module0", "aux/independent/0", "loss"}
    assert t.per_scope_peak["module0"] == t.peak  # backward ran last, in module0's scope
    t.remove_hooks()


def test_tracks_fake_tensors():
    t = LiveTensorTracker(rounding=cuda_block_size)
    with FakeTensorMode(), t:
        a = torch.empty(1024, 1024)  # 4 MiB, never allocated
        b = a.view(-1)
        assert t.current == 4 << 20
        del a, b
        assert t.current == 0
    assert t.peak == 4 << 20


def test_local_learning_step_modules_called_twice_and_backward_inside():
    """HiLo's reference execution runs every module more than once and backward inside the
    step; the tracker follows it, and its numbers add up."""
    from hpff_bench.memory.trace import trace_training

    cfg = RunConfig(network="resnet20", method="dgl", k=3, batch_size=4, hilo=True, hilo_exec="reference")
    tr = trace_training(cfg, fake=True, warmup=1, steps=1).tracker
    assert sum(tr.peak_breakdown.values()) == tr.peak
    assert {"module0", "module1", "module2", "aux/independent/0", "aux/cascade/0"} <= set(tr.per_scope_peak)
    assert max(tr.per_scope_peak.values()) == tr.peak
    assert tr.peak_breakdown["optimizer"] > 0 and tr.peak_breakdown["parameters"] > 0


@pytest.mark.parametrize("bad", ["gradients!", "weights"])
def test_register_rejects_unknown_categories(bad):
    with pytest.raises(ValueError, match="unknown category"):
        LiveTensorTracker().register([torch.empty(1)], bad)


def test_two_outputs_sharing_a_new_storage_count_it_once():
    def two_views_of_one_new_storage():  # no schema: handled as an op that may do anything
        x = torch.empty(100)  # 400 B
        return x, x.view(10, 10)

    t = LiveTensorTracker()
    out = t.__torch_dispatch__(two_views_of_one_new_storage, ())
    assert (t.current, t.live_storages) == (400, 1)
    del out
    assert t.current == 0


def test_op_kinds_from_schemas():
    from hpff_bench.memory.tracker import _OP_KIND, CREATES, MAY_RESIZE, NO_NEW_STORAGE

    aten = torch.ops.aten
    assert _OP_KIND[aten.detach.default] == _OP_KIND[aten.view.default] == NO_NEW_STORAGE
    assert _OP_KIND[aten.add_.Tensor] == _OP_KIND[aten._foreach_add_.List] == NO_NEW_STORAGE
    assert _OP_KIND[aten.add.Tensor] == _OP_KIND[aten.convolution.default] == CREATES
    assert _OP_KIND[aten.lift_fresh.default] == CREATES  # schema says alias; storage is new to us
    assert _OP_KIND[aten.add.out] == _OP_KIND[aten.resize_.default] == MAY_RESIZE
    assert _OP_KIND[aten.set_.source_Storage] == MAY_RESIZE


def test_out_variants_resize_and_constants_are_counted():
    t = LiveTensorTracker()
    with t:
        a, b = torch.ones(100), torch.ones(100)  # 800 B
        c = torch.empty(0)
        torch.add(a, b, out=c)  # out= grows c's storage to 400 B
        assert t.current == 1200
        a.add_(b)  # in place: nothing new
        a.resize_(200)  # grows a's storage to 800 B
        assert t.current == 1600
        k = torch.tensor([1.0, 2.0])  # made outside dispatch, lifted into it: 8 B
        assert t.current == 1608
        del a, b, c, k
        assert t.current == 0
    assert t.peak == 1608


def test_timed_steps_run_untracked_after_the_tracked_ones():
    from hpff_bench.memory.trace import trace_training

    cfg = RunConfig(network="resnet20", batch_size=2)
    plain = trace_training(cfg, fake=False, warmup=1, steps=1)
    timed = trace_training(cfg, fake=False, warmup=1, steps=1, timed_steps=2)
    assert len(timed.step_seconds) == 2 and plain.step_seconds == []  # times: untracked steps only
    assert timed.tracker.peak == plain.tracker.peak  # untracked steps leave the peak alone
    with pytest.raises(ValueError, match="timed_steps needs real tensors"):
        trace_training(cfg, fake=True, timed_steps=1)
