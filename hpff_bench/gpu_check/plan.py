"""What the GPU check runs (its parts) and how long each should take on an H200.

Time estimates, from one training step traced on fake tensors (torch's per-op FLOP formulas,
and the number of ops dispatched):
- GPU time of a step: its FLOPs at H200_FLOPS_PER_S, or its ops at LAUNCH_S each where that is
  longer (small CIFAR kernels: eager PyTorch is launch-bound);
- the CPU work per op that does not overlap the GPU: the tracked step and the fake-tensor
  prediction, TRACE_OP_S per op (measured here: the prediction took 310-560 us per op on the
  2-core VM under a load of 5 per core; an idle core is several times faster);
- a fixed PROCESS_S per process (python + torch import, CUDA context, building the method).
All four are assumptions with a margin, not measurements of an H200: the real seconds of every
part are written next to its estimate, so the next GPU session can correct them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ~60 TFLOP/s is an optimistic effective fp32 rate on an H200 (TF32 off); a third of it leaves
# a margin for small CIFAR convolutions, which reach far less.
H200_FLOPS_PER_S = 20e12
LAUNCH_S = 20e-6  # one eager op: Python, dispatcher and kernel launch
TRACE_OP_S = 200e-6  # one op under the live-tensor tracker plus one in the fake-tensor prediction
PROCESS_S = 10.0
# cudnn.benchmark tries every algorithm of each new convolution shape once
CUDNN_BENCHMARK_S = 10.0
# GPU training steps in one configuration's process: warm-up and measured steps of the profile,
# its tracked step, and the two steps of the hidden-allocation measurement
EXTRA_STEPS = 1 + 2
# pytest start-up plus two quick-preset benchmark cases (each: rounds, a tracked step, a prediction),
# and suites/test_method_speed.py: every method's step against BP's side by side on the GPU
# (resnet32 K=16 batch 128: 11 methods built, a FLOP-counted warm-up step each, 7 rounds)
BENCHMARKS_S = 45.0 + 60.0
BENCHMARK_CASES = ("resnet20-bp-k1", "resnet20-infopro+hpff-k2", "method_speed")

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
# `estimate --cache-release` checked: a step small enough to run in seconds whose cached
# segments differ in size (InfoPro's decoders), in a device made small by
# torch.cuda.set_per_process_memory_fraction; predicted there (200 MiB, no context): 80 fits
# without a release, 98 runs with one retry per step, 99 runs out of memory
CACHE_RELEASE_CONFIG = ("resnet20", "infopro", 4, 4, {"split": "uniform"})
CACHE_RELEASE_CAPACITY = 200 * 2**20
CACHE_RELEASE_S = 20.0  # the prediction's budget search (~10 s on the 2-core VM) and three tiny steps


@dataclass(frozen=True)
class Part:
    """One unit of the check, run in its own process."""

    kind: str  # "overheads" | "config" | "benchmarks" | "cache_release"
    name: str
    config: dict | None = None  # RunConfig fields (kind "config")
    cudnn_benchmark: bool = False
    snapshot: bool = False
    flops: float | None = None  # one training step (kind "config")
    ops: int | None = None  # aten ops dispatched in one training step (kind "config")
    estimate_s: float = 0.0
    capacity_bytes: int | None = None  # the device size the cache-release part emulates

    def as_dict(self) -> dict:
        return {
            "kind": self.kind, "name": self.name, "config": self.config, "cudnn_benchmark": self.cudnn_benchmark,
            "snapshot": self.snapshot, "flops": self.flops, "ops": self.ops, "estimate_s": round(self.estimate_s, 1),
            "capacity_bytes": self.capacity_bytes,
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


def parts(quick: bool = False, cost=None) -> list[Part]:
    """The parts in the order they run: the overheads first (cheap, and what the prediction
    assumes), the snapshot config and the benchmark path early, the largest configs last.

    cost: a function RunConfig dict -> (FLOPs, ops) of one step (default step_cost, counted in
    parallel processes); tests pass a cheap one."""
    chosen = [CONFIGS[i] for i in QUICK] if quick else list(CONFIGS)
    cfgs = [config_dict(network, method, k, batch, extra) for network, method, k, batch, extra, _ in chosen]
    costs = count_costs(cfgs) if cost is None else [cost(c) for c in cfgs]
    out = [
        Part("overheads", f"context + workspaces, cudnn.benchmark {'on' if on else 'off'}", cudnn_benchmark=on,
             estimate_s=PROCESS_S + (CUDNN_BENCHMARK_S if on else 0.0))
        for on in (False, True)
    ]
    cfg_parts = []
    for (*_, options), cfg, (flops, ops) in zip(chosen, cfgs, costs):
        bench = bool(options.get("cudnn_benchmark"))
        cfg_parts.append(Part("config", config_name(cfg, bench), cfg, bench, bool(options.get("snapshot")), flops, ops,
                              estimate_seconds(flops, ops, bench)))
    out.append(cfg_parts[0])
    out.append(Part("benchmarks", "pytest suites/ --benchmark-only --hpff-device cuda (2 cases, method speed)",
                    estimate_s=BENCHMARKS_S))
    # last: it runs where time is left, and never displaces a configuration
    network, method, k, batch, extra = CACHE_RELEASE_CONFIG
    release = config_dict(network, method, k, batch, extra)
    last = Part("cache_release", f"cache released on out-of-memory: {config_name(release)} in "
                                 f"{CACHE_RELEASE_CAPACITY // 2**20} MiB", release,
                estimate_s=PROCESS_S + CACHE_RELEASE_S, capacity_bytes=CACHE_RELEASE_CAPACITY)
    return out + cfg_parts[1:] + [last]


def estimate_seconds(flops: float, ops: int, cudnn_benchmark: bool = False) -> float:
    """One configuration's process on an H200 (see the module docstring)."""
    gpu_step = max(flops / H200_FLOPS_PER_S, ops * LAUNCH_S)
    steps = WARMUP + STEPS + EXTRA_STEPS
    return PROCESS_S + steps * gpu_step + ops * TRACE_OP_S + (CUDNN_BENCHMARK_S if cudnn_benchmark else 0.0)


def count_costs(cfgs: list[dict]) -> list[tuple[float, int]]:
    """step_cost of each config, in parallel processes, one per core: with enough cores the
    largest trace bounds it (InfoPro+HPFF K=55 streamed, 142k ops); 95 s for the default plan on
    the 2-core VM, not yet timed on a GPU machine. It counts against --budget-s."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    workers = max(1, min(len(cfgs), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(step_cost, cfgs))


def step_cost(cfg_dict: dict) -> tuple[float, int]:
    """FLOPs and aten ops of one training step (forward and backward of backbone and aux nets),
    counted on fake tensors with torch's per-op formulas (torch.utils.flop_counter.flop_registry):
    nothing is computed, so it costs what tracing the step costs (~0.1-12 s on a 2-core VM).

    Not FlopCounterMode itself: its module tracker registers backward hooks on every module
    input and fails on a local method's detached module inputs."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from hpff_bench.config import RunConfig
    from hpff_bench.flops import ScopedFlopCounter
    from hpff_bench.methods import build_method, synthetic_batch

    cfg = RunConfig.from_dict({**cfg_dict, "device": "cpu"}).validate()
    cpu = torch.device("cpu")
    with FakeTensorMode(allow_non_fake_inputs=True):
        method = build_method(cfg, device=cpu)
        x, y = synthetic_batch(cfg, cpu)
        with ScopedFlopCounter() as counter:
            method.compute_gradients(x, y)
    return float(counter.total), counter.ops


def plan_table(plan: list[Part]) -> str:
    """The plan as printed before a run: FLOPs and estimated seconds per part, and the total."""
    lines = [f"{'part':<96} {'GFLOP/step':>11} {'ops/step':>9} {'est. s':>7}"]
    for p in plan:
        g = "" if p.flops is None else f"{p.flops / 1e9:,.0f}"
        n = "" if p.ops is None else f"{p.ops:,}"
        lines.append(f"{p.name:<96} {g:>11} {n:>9} {p.estimate_s:>7.0f}")
    total = sum(p.estimate_s for p in plan)
    lines.append(f"{'total (estimated, H200)':<96} {'':>11} {'':>9} {total:>7.0f}")
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
