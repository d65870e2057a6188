"""FLOPs per step by scope: torch's counts, and the counter changes nothing it watches."""

from __future__ import annotations

import contextlib

import pytest
from torch.utils.flop_counter import FlopCounterMode

from hpff_bench.config import RunConfig
from hpff_bench.flops import ScopedFlopCounter
from hpff_bench.memory.tracker import LiveTensorTracker
from hpff_bench.methods import build_method, synthetic_batch

TINY = dict(network="resnet20", k=2, batch_size=4, split="uniform")


@pytest.mark.parametrize("changes", [{"method": "bp"}, {"method": "dgl"},
                                     {"method": "infopro", "hilo": True, "pff_grid": 2, "k": 3}])
def test_counts_equal_torch_flop_counter_and_split_by_scope(changes):
    cfg = RunConfig(**{**TINY, **changes}).validate()
    m = build_method(cfg)
    x, y = synthetic_batch(cfg)
    with ScopedFlopCounter() as ours:
        m.compute_gradients(x, y)
    with FlopCounterMode(display=False) as theirs:
        m.compute_gradients(x, y)
    split = ours.split()
    assert split["total"] == theirs.get_total_flops() > 0
    assert split["total"] == split["backbone"] + split["aux"] + split["other"]
    assert (split["aux"] > 0) == (cfg.method != "bp")


def test_counter_leaves_the_traced_memory_alone():
    # FlopCounterMode itself decomposes ops it has no formula for, which changes the peak
    cfg = RunConfig(**{**TINY, "method": "dgl"}).validate()
    peaks = []
    for counter in (None, ScopedFlopCounter()):
        m = build_method(cfg)
        x, y = synthetic_batch(cfg)
        m.train_step(x, y)
        tracker = LiveTensorTracker(record_events=False)
        with tracker:
            tracker.register_method_state(m.parameters(), m.buffers(), m.optimizer, (x, y))
            tracker.reset_peak()
            with counter if counter is not None else contextlib.nullcontext():
                m.train_step(x, y)
        peaks.append(tracker.peak)
    assert peaks[0] == peaks[1]


def test_split_divides_by_steps():
    c = ScopedFlopCounter()
    c.by_kind.update({"backbone": 10, "aux": 4, "loss": 2})
    assert c.split(2) == {"total": 8, "backbone": 5, "aux": 2, "other": 1}
