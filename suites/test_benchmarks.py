"""Step-time and memory benchmarks of every method, in pytest-benchmark.

    pytest suites/ --benchmark-only                          # quick sizes (CPU, minutes)
    pytest suites/ --benchmark-only --hpff-preset paper      # papers' sizes (GPU)
    pytest suites/ --benchmark-only --benchmark-json out.json && hpff-bench report out.json

One benchmark = one full training step (zero_grad, every forward/backward, optimizer.step) of
`method` on `network` cut into K modules. The method, data and optimizer are built in the
pedantic setup, outside the timing; warm-up rounds run first. After timing, one more step is
measured for memory (CUDA allocator peak on a GPU, live-tensor tracker on the CPU) and the
CUDA peak is predicted with fake tensors; both go into `benchmark.extra_info`, with the whole
result record (notes/INTERFACES.md) under "record" so `hpff-bench report` reads it.
"""

from __future__ import annotations

import math

import pytest
import torch

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
from hpff_bench.runner import store
from hpff_bench.runner.env import capture_env


def make_config(network: str, method: str, k: int, preset, device: torch.device) -> RunConfig:
    base, _, variant = method.partition("+")
    cfg = RunConfig(
        network=network, method=base, k=k, dataset=preset.dataset, batch_size=preset.batch_size,
        device=device.type, warmup=preset.warmup_rounds, steps=preset.rounds,
    )
    if variant == "hpff":  # = the CLI's --hpff
        cfg = cfg.replace(hilo=True, pff_grid=2)
        if base == "infopro":
            cfg = cfg.replace(aux="2c2f", lambdas=HPFF_INFOPRO_LAMBDAS)
    return cfg.validate()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_memory(method, x, y, device: torch.device) -> dict:
    """Peak memory of one more training step: the allocator's on CUDA, else the tensor tracker's."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        method.train_step(x, y)
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "source": "cuda-allocator",
            "peak_memory_bytes": peak,
            "peak_allocated_bytes": peak,
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(device),
            "nvml_peak_used_bytes": None, "nvml_process_peak_bytes": None,
            "breakdown_bytes": None, "per_module_peak_bytes": None, "lower_bound_bytes": None,
        }
    from hpff_bench.memory.tracker import LiveTensorTracker

    tracker = LiveTensorTracker(record_events=False)
    with tracker:
        tracker.watch_gradients(method.parameters())
        tracker.register_method_state(method.parameters(), method.buffers(), method.optimizer, (x, y))
        tracker.reset_peak()
        method.train_step(x, y)
    s = tracker.summary()
    return {  # the shape hpff_bench.profiling gives a CPU profile: no allocator numbers
        "source": "tensor-tracker",
        "peak_memory_bytes": s["peak_bytes"], "tracked_peak_bytes": s["peak_bytes"],
        "peak_allocated_bytes": None, "peak_reserved_bytes": None,
        "nvml_peak_used_bytes": None, "nvml_process_peak_bytes": None,
        "breakdown_bytes": s["breakdown_bytes"], "per_module_peak_bytes": s["per_module_peak_bytes"],
        "lower_bound_bytes": None,
    }


def predict_cuda_peak(cfg: RunConfig) -> dict:
    """The fake-tensor prediction of the CUDA run's memory (hpff_bench.profiling.estimate_config)."""
    from hpff_bench.profiling import estimate_config

    return estimate_config(cfg)["predicted"]


@pytest.mark.hpff_cases
def test_train_step(benchmark, network, method, k, hpff_preset, hpff_device, hpff_summary, request):
    from hpff_bench.methods import build_method, synthetic_batch

    cfg = make_config(network, method, k, hpff_preset, hpff_device)
    benchmark.group = f"{network} K={k} batch={cfg.batch_size}"
    state: dict = {}

    def setup():
        if not state:  # built once, outside the timing; every round reuses it
            m = build_method(cfg, device=hpff_device)
            x, y = synthetic_batch(cfg, hpff_device)
            state.update(method=m, x=x, y=y)
        _sync(hpff_device)
        return (state["method"], state["x"], state["y"]), {}

    def step(m, x, y):
        out = m.train_step(x, y)
        _sync(hpff_device)
        return out

    out = benchmark.pedantic(
        step, setup=setup, rounds=hpff_preset.rounds, warmup_rounds=hpff_preset.warmup_rounds, iterations=1
    )
    m, x, y = state["method"], state["x"], state["y"]
    assert math.isfinite(float(out.loss)), f"loss is {float(out.loss)}"
    assert out.logits.shape == (cfg.batch_size, cfg.resolved_num_classes)

    m.reset_counters()
    from hpff_bench.flops import ScopedFlopCounter

    with ScopedFlopCounter() as flop_counter:  # FLOPs of the same step the memory is measured on
        memory = measure_memory(m, x, y, hpff_device)
    forward_calls = m.forward_calls
    modules = m.module_count
    assert modules == (1 if cfg.method in ("bp", "gc") else len(m.modules_))
    assert forward_calls >= len(m.modules_)  # every backbone module ran at least once
    predicted = None if request.config.getoption("hpff_no_predict") else predict_cuda_peak(cfg)

    stats = benchmark.stats.stats if getattr(benchmark, "stats", None) else None
    median = stats.median if stats else None
    ips = cfg.batch_size / median if median else None
    record = store.make_record(
        "benchmark", "ok", config=cfg, suite="pytest-benchmark", run_name=request.node.callspec.id,
        env=capture_env(init_cuda=hpff_device.type == "cuda"),
        modules=modules, params=sum(p.numel() for p in m.parameters()), forward_calls=forward_calls,
        memory=memory, predicted=predicted, flops=flop_counter.split(),
        timing=None if median is None else {"step_seconds": median, "images_per_second": ips, "steps": stats.rounds},
        accuracy=None,
    )
    info = benchmark.extra_info
    info.update({
        "label": cfg.label,
        "batch_size": cfg.batch_size,
        "modules": modules,
        "forward_calls": forward_calls,
        "peak_memory_bytes": memory["peak_memory_bytes"],
        "peak_memory_MiB": round(memory["peak_memory_bytes"] / 2**20, 2),
        "memory_source": memory["source"],
        "predicted_cuda_peak_bytes": predicted["peak_allocated_bytes"] if predicted else None,
        "predicted_cuda_peak_MiB": round(predicted["peak_allocated_bytes"] / 2**20, 2) if predicted else None,
        "images_per_second": ips,
        "flops": flop_counter.split(),  # per step: total, backbone, aux, other
        "record": store.sanitize(record),
    })
    hpff_summary({
        "name": request.node.name, "group": benchmark.group, "network": network, "method": cfg.method,
        "variant": method, "k": k, "network_order": (len(network), network),
        "modules": modules, "forward_calls": forward_calls, "peak_bytes": memory["peak_memory_bytes"],
        "source": memory["source"], "predicted_bytes": info["predicted_cuda_peak_bytes"],
        "images_per_second": ips, "step_seconds": median,
    })
