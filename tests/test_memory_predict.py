"""The fake-tensor prediction equals a real CPU run's live-tensor peak, for every method."""

from __future__ import annotations

import pytest

from hpff_bench.config import RunConfig
from hpff_bench.memory.bound import lower_bound
from hpff_bench.memory.predict import predict
from hpff_bench.memory.trace import trace_training
from hpff_bench.memory.tracker import PERSISTENT, cuda_block_size

CASES = {  # every method, and HiLo / PFF / HPFF once (K small: the op count sets the time)
    "bp": dict(method="bp"),
    "gc": dict(method="gc", k=3),
    "greedy": dict(method="greedy", k=2),
    "dgl": dict(method="dgl", k=2),
    "infopro": dict(method="infopro", k=2),
    "dgl-hilo": dict(method="dgl", k=3, hilo=True),
    "greedy-pff2": dict(method="greedy", k=2, pff_grid=2),
    "infopro-hpff": dict(method="infopro", k=3, hilo=True, pff_grid=2, aux="2c2f"),
}


def cfg(**kw) -> RunConfig:
    return RunConfig(network="resnet32", batch_size=4, warmup=1, steps=1, **kw)


@pytest.fixture(scope="module")
def real_traces():
    """Real CPU runs (SGD foreach, as the prediction), each storage rounded as on CUDA."""
    return {
        name: trace_training(cfg(**kw), fake=False, rounding=cuda_block_size, foreach=True)
        for name, kw in CASES.items()
    }


@pytest.mark.parametrize("name", list(CASES))
def test_prediction_matches_real_cpu_peak(name, real_traces):
    real = real_traces[name].tracker
    p = predict(cfg(**CASES[name]))["predicted"]
    assert abs(p["live_peak_bytes"] - real.peak) <= 0.01 * real.peak, (p["live_peak_bytes"], real.peak)
    assert p["breakdown_bytes"] == real.peak_breakdown  # in fact exact, category by category


@pytest.mark.parametrize("name", list(CASES))
def test_breakdown_sums_and_bound_never_exceeds_peak(name, real_traces):
    tr = real_traces[name].tracker
    assert sum(tr.peak_breakdown.values()) == tr.peak
    b = lower_bound(tr)
    assert 0 < b["lower_bound_bytes"] <= tr.peak
    assert sum(b["terms"][c] for c in PERSISTENT) + b["terms"]["working_set"] == b["lower_bound_bytes"]
    assert 0 < b["efficiency"] <= 1


def test_terms_add_up_and_are_labelled():
    small = RunConfig(network="resnet20", method="dgl", k=2, batch_size=4)
    out = predict(small, cuda_arch="ampere", cuda_context_bytes=300 << 20)
    p, t = out["predicted"], out["predicted"]["terms"]
    assert p["peak_allocated_bytes"] == sum(t[k]["bytes"] for k in ("live_tensors", "allocator_blocks", "cublas_workspace"))
    assert p["peak_reserved_bytes"] == p["peak_allocated_bytes"] + t["allocator_cache"]["bytes"]
    assert p["device_used_bytes"] == p["peak_reserved_bytes"] + t["cuda_context"]["bytes"]
    assert t["cublas_workspace"]["bytes"] == 2 * (4 << 20) and t["cuda_context"]["source"] == "given"
    assert all(v["bytes"] >= 0 and v["source"] in ("traced", "modelled", "assumed", "given") for v in t.values())
    assert out["modules"] == 2 and out["forward_calls"] == 2
    default = predict(small)["predicted"]["terms"]
    assert default["cuda_context"]["source"] == "assumed"  # never presented as measured
    assert default["cublas_workspace"]["bytes"] == 2 * (32 << 20)  # hopper by default


def test_prediction_scales_with_batch():
    small = RunConfig(network="resnet20", batch_size=8)
    a = predict(small)["predicted"]["breakdown_bytes"]
    b = predict(small.replace(batch_size=16))["predicted"]["breakdown_bytes"]
    assert abs(b["inputs"] - 2 * a["inputs"]) <= 512  # images double; the labels stay one 512-B block
    # activations about double (per-channel tensors and the moment of the peak do not scale)
    assert 1.9 < b["backbone_activations"] / a["backbone_activations"] < 2.1
    assert (b["parameters"], b["optimizer"]) == (a["parameters"], a["optimizer"])
