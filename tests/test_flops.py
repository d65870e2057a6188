"""FLOPs per step by scope: torch's counts, and the counter changes nothing it watches."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hpff_bench.config import RunConfig
from hpff_bench.flops import ScopedFlopCounter
from hpff_bench.memory.tracker import LiveTensorTracker
from hpff_bench.methods import build_method, synthetic_batch
from hpff_bench.scope import scope

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


def test_a_backward_outside_any_scope_is_split_by_the_forward_that_made_its_nodes():
    # torch counts 2·m·n·k per matmul: backbone forward + weight gradient (its input needs no
    # gradient), aux forward + input gradient + weight gradient
    backbone, aux = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)
    x = torch.randn(5, 8)
    with ScopedFlopCounter() as counter:
        with scope("backbone", 0, "module0"):
            h = backbone(x)
        with scope("aux", None, "aux/0"):
            loss = aux(h).sum()
        loss.backward()
    assert dict(counter.by_kind) == {"backbone": 2 * 2 * 5 * 8 * 16, "aux": 3 * 2 * 5 * 16 * 4}
    assert counter.by_node == 2 * 5 * 8 * 16 + 2 * 2 * 5 * 16 * 4  # the backward's FLOPs
    # a backward inside a scope stays there: the methods' own labels are not second-guessed
    with ScopedFlopCounter() as counter:
        with scope("backbone", 0, "module0"):
            h = backbone(x)
        with scope("aux", None, "aux/0"):
            aux(h).sum().backward()
    assert dict(counter.by_kind) == {"backbone": 2 * 5 * 8 * 16, "aux": 3 * 2 * 5 * 16 * 4 + 2 * 5 * 8 * 16}
    assert counter.by_node == 0


def test_official_variant_aux_flops_are_its_aux_nets_forward_and_backward():
    # --variant official runs one backward per position over aux nets and backbone together;
    # its aux FLOPs must be what the aux nets cost run alone on inputs of the same shapes
    cfg = RunConfig(network="resnet32", method="infopro", k=4, hilo=True, pff_grid=2, aux="2c2f",
                    variant="official", hilo_exec="official", batch_size=4, split="hpff").validate()
    m = build_method(cfg)
    x, y = synthetic_batch(cfg)
    calls, hooks = [], []
    for net in m.modules():
        if type(net).__name__ in ("OfficialClassifier", "QuadrantDecoder"):
            hooks.append(net.register_forward_hook(lambda net, args, out: calls.append((net, [a.shape for a in args]))))
    with ScopedFlopCounter() as counter:
        m.train_step(x, y)
    for hook in hooks:
        hook.remove()
    split = counter.split()
    assert split["other"] == 0 < split["aux"] < split["backbone"]
    alone = FlopCounterMode(display=False)
    with alone:
        for net, (feature_shape, second_shape) in calls:
            features = torch.randn(feature_shape, requires_grad=True)
            second = y if len(second_shape) == 1 else torch.rand(second_shape)
            net(features, second).backward()
    assert len(calls) == 3 * (len(m.modules_) - 2)  # classifier, decoder, classifier per position
    assert split["aux"] == alone.get_total_flops()


def test_ops_on_another_thread_go_to_the_callers_scope():
    # a CUDA backward runs on autograd's device thread, which does not see the caller's
    # ContextVar; the caller waits in its backward call, inside the scope that called it
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    with ScopedFlopCounter() as counter, scope("aux", None, "aux/0"):
        torch.mm(a, b)  # the caller's last op: where it is
        worker = threading.Thread(target=counter.__torch_dispatch__, args=(torch.ops.aten.mm.default, (), (a, b)))
        worker.start()
        worker.join()
    assert dict(counter.by_kind) == {"aux": 2 * 2 * 3 * 4 * 5}


def test_code_without_scopes_places_nothing_by_node():
    # the official code's own steps have no scopes: its backward stays where its forward was
    lin = torch.nn.Linear(8, 4)
    with ScopedFlopCounter() as counter:
        lin(torch.randn(5, 8)).sum().backward()
    assert dict(counter.by_kind) == {"step": 2 * (2 * 5 * 8 * 4)} and counter.by_node == 0  # forward, weight grad
