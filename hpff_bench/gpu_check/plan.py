"""What the GPU check runs (its parts) and how long each should take on an H200.

Time estimates: FLOPs of one training step counted by torch's FlopCounterMode on fake tensors
(matmuls and convolutions: what dominates the GPU time), at H200_FLOPS_PER_S, plus a fixed
cost per process (PROCESS_S). Both constants are assumptions with a margin, not measurements:
the real seconds of every part are written next to its estimate, so the next GPU session can
check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

# ~60 TFLOP/s is an optimistic effective fp32 rate on an H200 (TF32 off); a third of it leaves
# a margin for small CIFAR convolutions, which reach far less.
H200_FLOPS_PER_S = 20e12
# python + torch import, CUDA context, building the method, the fake-tensor prediction (1-6 s
# for these sizes on a 2-core VM) and the hidden-allocation step: assumed, with a margin.
PROCESS_S = 20.0
# cudnn.benchmark tries every algorithm of each new convolution shape once
CUDNN_BENCHMARK_S = 10.0
# GPU training steps in one configuration's process: warm-up and measured steps of the profile,
# its tracked step, and the two steps of the hidden-allocation measurement
EXTRA_STEPS = 1 + 2
# pytest start-up plus two quick-preset benchmark cases (each: rounds, a tracked step, a prediction)
BENCHMARKS_S = 45.0
BENCHMARK_CASES = ("resnet20-bp-k1", "resnet20-infopro+hpff-k2")

WARMUP, STEPS = 2, 3
HPFF = {"hilo": True, "pff_grid": 2}

# (network, method, k, batch, extra RunConfig fields); options: cudnn_benchmark, snapshot
CONFIGS: tuple[tuple[str, str, int, int, dict, dict], ...] = (
    ("resnet32", "bp", 1, 256, {}, {"snapshot": True}),
    ("resnet32", "gc", 2, 256, {}, {}),
    ("resnet32", "dgl", 2, 256, {}, {}),
    ("resnet32", "infopro", 2, 256, {}, {}),
    ("resnet32", "dgl", 16, 1024, {}, {}),
    ("resnet32", "infopro", 16, 1024, HPFF, {}),
    ("resnet32", "infopro", 16, 1024, HPFF, {"cudnn_benchmark": True}),
    ("resnet32", "dgl", 16, 1024, HPFF, {}),
    ("resnet110", "bp", 1, 1024, {}, {}),
    ("resnet110", "gc", 16, 1024, {}, {}),
    ("resnet110", "dgl", 2, 256, {}, {}),
    ("resnet110", "infopro", 16, 256, {}, {}),
    ("resnet110", "infopro", 55, 1024, HPFF, {}),
    ("resnet110", "infopro", 55, 1024, {**HPFF, "hilo_exec": "reference"}, {}),
    ("resnet110", "infopro", 55, 1024, {**HPFF, "pff_exec": "streamed"}, {}),
    ("resnet110", "dgl", 55, 1024, HPFF, {}),
    ("resnet34", "bp", 1, 64, {"dataset": "imagenet"}, {}),
)
# --quick: the snapshot config, InfoPro+HPFF and DGL+HPFF at K=16
QUICK = (0, 5, 7)


@dataclass(frozen=True)
class Part:
    """One unit of the check, run in its own process."""

    kind: str  # "overheads" | "config" | "benchmarks"
    name: str
    config: dict | None = None  # RunConfig fields (kind "config")
    cudnn_benchmark: bool = False
    snapshot: bool = False
    flops: float | None = None  # one training step (kind "config")
    estimate_s: float = 0.0

    def as_dict(self) -> dict:
        return {
            "kind": self.kind, "name": self.name, "config": self.config, "cudnn_benchmark": self.cudnn_benchmark,
            "snapshot": self.snapshot, "flops": self.flops, "estimate_s": round(self.estimate_s, 1),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Part:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def config_dict(network, method, k, batch, extra) -> dict:
    return {"network": network, "method": method, "k": k, "batch_size": batch, "warmup": WARMUP,
            "steps": STEPS, "device": "cuda", **extra}


def config_name(cfg: dict, cudnn_benchmark: bool = False) -> str:
    from hpff_bench.config import RunConfig

    c = RunConfig.from_dict(cfg)
    tail = []
    if c.hilo:
        tail += [f"hilo-exec={c.hilo_exec}", f"pff-exec={c.pff_exec}"] if c.pff_grid > 1 else [f"hilo-exec={c.hilo_exec}"]
    if cudnn_benchmark:
        tail.append("cudnn.benchmark")
    return f"{c.network} {c.label} K={c.k} b={c.batch_size}" + (f" ({', '.join(tail)})" if tail else "")


def parts(quick: bool = False, flops=None) -> list[Part]:
    """The parts in the order they run: the overheads first (cheap, and what the prediction
    assumes), the snapshot config and the benchmark path early, the largest configs last.

    flops: a function RunConfig dict -> FLOPs of one step (default step_flops); tests pass a
    cheap one."""
    chosen = [CONFIGS[i] for i in QUICK] if quick else list(CONFIGS)
    cfgs = [config_dict(network, method, k, batch, extra) for network, method, k, batch, extra, _ in chosen]
    counted = count_flops(cfgs) if flops is None else [flops(c) for c in cfgs]
    out = [
        Part("overheads", f"context + workspaces, cudnn.benchmark {'on' if on else 'off'}", cudnn_benchmark=on,
             estimate_s=PROCESS_S)
        for on in (False, True)
    ]
    cfg_parts = []
    for (*_, options), cfg, f in zip(chosen, cfgs, counted):
        bench = bool(options.get("cudnn_benchmark"))
        estimate = PROCESS_S + (WARMUP + STEPS + EXTRA_STEPS) * f / H200_FLOPS_PER_S + (CUDNN_BENCHMARK_S if bench else 0.0)
        cfg_parts.append(Part("config", config_name(cfg, bench), cfg, bench, bool(options.get("snapshot")), f, estimate))
    out.append(cfg_parts[0])
    out.append(Part("benchmarks", "pytest suites/ --benchmark-only --hpff-device cuda (2 cases)", estimate_s=BENCHMARKS_S))
    return out + cfg_parts[1:]


def count_flops(cfgs: list[dict]) -> list[float]:
    """step_flops of each config, in parallel processes (one per core: ~7 s in all on 16 cores,
    ~80 s on 2 busy ones)."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    workers = max(1, min(len(cfgs), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(step_flops, cfgs))


def step_flops(cfg_dict: dict) -> float:
    """FLOPs of one training step (forward and backward of backbone and aux nets), counted on
    fake tensors by torch's per-op formulas (torch.utils.flop_counter.flop_registry): nothing is
    computed, so it costs what tracing the step costs (~0.1-6 s on a 2-core VM).

    Not FlopCounterMode itself: its module tracker registers backward hooks on every module
    input and fails on a local method's detached module inputs."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from hpff_bench.config import RunConfig
    from hpff_bench.methods import build_method, synthetic_batch

    cfg = RunConfig.from_dict({**cfg_dict, "device": "cpu"}).validate()
    cpu = torch.device("cpu")
    with FakeTensorMode(allow_non_fake_inputs=True):
        method = build_method(cfg, device=cpu)
        x, y = synthetic_batch(cfg, cpu)
        with _FlopCount() as counter:
            method.compute_gradients(x, y)
    return float(counter.total)


class _FlopCount(TorchDispatchMode):
    """Sum of flop_registry's formula over every op that has one (matmuls, convolutions)."""

    total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def plan_table(plan: list[Part]) -> str:
    """The plan as printed before a run: FLOPs and estimated seconds per part, and the total."""
    lines = [f"{'part':<80} {'GFLOP/step':>11} {'est. s':>7}"]
    for p in plan:
        g = "" if p.flops is None else f"{p.flops / 1e9:,.0f}"
        lines.append(f"{p.name:<80} {g:>11} {p.estimate_s:>7.0f}")
    total = sum(p.estimate_s for p in plan)
    lines.append(f"{'total (estimated, H200)':<80} {'':>11} {total:>7.0f}")
    return "\n".join(lines)


@dataclass
class Budget:
    """Seconds allowed for the whole check; a part starts only if its estimate fits."""

    seconds: float
    clock: object = None  # a function returning seconds (time.monotonic); tests pass a fake
    started: float = field(default=0.0)

    def __post_init__(self):
        import time

        self.clock = self.clock or time.monotonic
        self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def left(self) -> float:
        return self.seconds - self.elapsed

    def fits(self, estimate_s: float) -> bool:
        return estimate_s <= self.left
