"""HiLo's fused execution does fewer module forwards than the reference and never peaks higher."""

import pytest

from hpff_bench.config import RunConfig
from hpff_bench.memory.trace import trace_training


@pytest.mark.parametrize(
    "method,extra",
    [("dgl", {}), ("dgl", {"independent": False}), ("infopro", {"pff_grid": 2})],
)
def test_fused_peaks_no_higher_than_reference(method, extra):
    # a module per block, as the paper splits; with 2-block modules (resnet20 K=6, CL only) the
    # fused peak was measured 0.35 % above the reference: the carried input gradient is held
    # while the next module's retained graph is still alive (see the closing notes)
    base = RunConfig(network="resnet20", method=method, k=10, batch_size=8, hilo=True, **extra)
    fused = trace_training(base, fake=True, warmup=1, steps=1)
    ref = trace_training(base.replace(hilo_exec="reference"), fake=True, warmup=1, steps=1)
    assert fused.forward_calls == 10 and ref.forward_calls == 10 + 2 * 9
    assert fused.tracker.peak <= ref.tracker.peak, (fused.tracker.peak, ref.tracker.peak)


def test_streamed_pff_keeps_fewer_aux_activations_than_batched():
    base = RunConfig(network="resnet20", method="infopro", k=4, split="uniform", batch_size=16,
                     hilo=True, pff_grid=2)
    batched = trace_training(base, fake=True, warmup=1, steps=1).tracker
    streamed = trace_training(base.replace(pff_exec="streamed"), fake=True, warmup=1, steps=1).tracker
    aux = lambda t: max(v for k, v in t.per_scope_peak.items() if k.startswith("aux/"))  # noqa: E731
    assert aux(streamed) < aux(batched)
