"""What the GPU check runs (its parts), how long each should take on an H200, and whether a
run fits a GPU session twice.

What runs (CONFIGS, by tier: --quick < the default < --all):
- the overheads (CUDA context, cuBLAS and cuDNN workspaces; cudnn.benchmark off and on);
- the PFF decomposition (group "pff"): InfoPro+HiLo at ResNet-32 "K=16" (HPFF's split, 15
  modules), batch 1024, HPFF's InfoPro settings, one decoder execution per row: the whole-map
  decoder (HiLo without PFF), the official code's execution with its quadrant decoders
  (`--variant official`: its HiLo execution too, so that row is the paper's step as its code runs
  it), and ours with batched and with streamed patches. Whether PFF saves memory, and in which term
  (allocated, reserved, device), is read off these four;
- InfoPro Table 3's CIFAR-10 rows as suites/papers.toml runs them (group "table3"): E2E,
  gradient checkpointing (cut as InfoPro K=4, the row whose reserved prediction is furthest from
  the paper) and InfoPro* K=2 with cudnn.benchmark on (as the paper measured) and off (as our
  sweeps run: the pair isolates what cudnn.benchmark adds);
- one small configuration with an allocator snapshot, and last, where time is left,
  `estimate --cache-release` against the device.

Left to --all, for time: with them the run fits no 15-minute session with room for a rerun, and
they widen coverage (more methods, K and networks) without measuring a term the issue's findings
rest on that the default does not: the benchmarks part (pytest suites on CUDA, ~105 s: step
times, not memory), ResNet-110 "K=55" with HPFF (the decomposition's executions again at 3.6x
the ops, ~165 s), `--hilo-exec reference` (a live-tensor difference the fake-tensor prediction
already traces), DGL and DGL+HPFF at K=16, the K=2 and batch-256 rows, and torchvision resnet34 at
224 px (cuDNN at ImageNet shapes). Replaced: the old InfoPro+HPFF K=16 row (split auto, default
loss settings) by the decomposition's batched row, its cudnn.benchmark twin by the Table-3 pair,
and GC K=16 by the papers' GC K=4.

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

The session fit: a GPU session has DEVICE_SESSION_S of device time for every try together, and
each try costs MACHINE_START_S (start, transfers, return) plus the run, which the outer
`timeout` caps at the budget plus KILL_MARGIN_S. The default budget is what leaves two tries;
--all's (ALL_BUDGET_S) is one command's limit, one try, and its last parts are skipped there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hpff_bench.config import InfoProLambdas
from hpff_bench.speed_cases import CASES

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

# the session fit (module docstring)
DEVICE_SESSION_S = 900.0  # a GPU session's device time, every try together
MACHINE_START_S = 150.0  # per try: a machine's start, the transfers and its return ("a few minutes")
KILL_MARGIN_S = 30.0  # python and torch start before the budget's clock, the last write, the exit
DEFAULT_BUDGET_S = DEVICE_SESSION_S / 2 - MACHINE_START_S - KILL_MARGIN_S
# --all's default: one try, in the device tool's limit on one command (600 s); on a GPU of your
# own, give it a --budget-s that holds its estimate
COMMAND_LIMIT_S = 600.0
ALL_BUDGET_S = COMMAND_LIMIT_S - KILL_MARGIN_S
TIERS = ("quick", "default", "all")


@dataclass(frozen=True)
class Entry:
    """One configuration of the check: RunConfig fields (but device, warmup and steps) and how
    it runs and is shown."""

    fields: dict
    cudnn_benchmark: bool = False
    snapshot: bool = False
    group: str | None = None  # a GROUPS key: the report shows the group's rows in one table
    row: str | None = None  # the row's name in its group's table
    tier: str = "default"  # the smallest of TIERS that runs it


def _case(name: str, **changes) -> dict:
    """A method-speed case (hpff_bench.speed_cases: the same configuration its benchmark times)
    at ResNet-32 "K=16", batch 1024."""
    return {"network": "resnet32", "k": 16, "batch_size": 1024, **CASES[name], **changes}


def _table3(method: str, k: int, **fields) -> dict:
    """An InfoPro Table 3 CIFAR-10 row as suites/papers.toml resolves it (InfoPro's recipe
    where it has one for this K, else the defaults)."""
    from hpff_bench.runner.suite import resolve_fields

    return resolve_fields({"network": "resnet110", "dataset": "cifar10", "batch_size": 1024, "method": method, "k": k,
                           **fields})


HPFF = {"hilo": True, "pff_grid": 2}
GROUPS = {
    "pff": 'PFF decomposition: InfoPro+HiLo, ResNet-32 "K=16" (15 modules, --split hpff), batch 1024, '
           "HPFF's InfoPro settings",
    "table3": "InfoPro Table 3 rows: ResNet-110, CIFAR-10, batch 1024 (as suites/papers.toml runs them)",
}
# the order they run in (after the overheads); a group's first row is the one the report's
# changes are taken from
CONFIGS: tuple[Entry, ...] = (
    Entry({"network": "resnet32", "method": "bp", "k": 1, "batch_size": 256}, snapshot=True, tier="quick"),
    Entry(_case("infopro+hpff", pff_grid=1), group="pff",
          row="whole-map decoder (HiLo, no PFF)", tier="quick"),
    Entry(_case("infopro+hpff official"), group="pff", row="official execution (quadrant decoders)"),
    Entry(_case("infopro+hpff"), group="pff", row="ours, batched patches", tier="quick"),
    Entry(_case("infopro+hpff", pff_exec="streamed"), group="pff",
          row="ours, streamed patches"),
    Entry(_table3("bp", 1), group="table3", row="E2E (BP)"),
    Entry(_table3("gc", 4), group="table3", row="gradient checkpointing (cuts: InfoPro K=4)"),
    Entry(_table3("infopro", 2, split="infopro-balanced"), cudnn_benchmark=True,
          group="table3", row="InfoPro* K=2, cudnn.benchmark on (as the paper)"),
    Entry(_table3("infopro", 2, split="infopro-balanced"), group="table3",
          row="InfoPro* K=2, cudnn.benchmark off (as our sweeps)"),
    # --all: coverage beyond the default (module docstring)
    *(Entry({"network": n, "method": m, "k": k, "batch_size": b, **extra}, tier="all") for n, m, k, b, extra in (
        ("resnet32", "gc", 2, 256, {}),
        ("resnet32", "dgl", 2, 256, {}),
        ("resnet32", "infopro", 2, 256, {}),
        ("resnet32", "dgl", 16, 1024, {}),
        ("resnet32", "dgl", 16, 1024, HPFF),
        ("resnet110", "dgl", 2, 256, {}),
        ("resnet110", "infopro", 16, 256, {}),
        ("resnet110", "infopro", 55, 1024, HPFF),
        ("resnet110", "infopro", 55, 1024, {**HPFF, "hilo_exec": "reference"}),
        ("resnet110", "infopro", 55, 1024, {**HPFF, "pff_exec": "streamed"}),
        ("resnet110", "dgl", 55, 1024, HPFF),
        ("resnet34", "bp", 1, 64, {"dataset": "imagenet"}),
    )),
)
# `estimate --cache-release` checked: a step small enough to run in seconds whose cached
# segments differ in size (InfoPro's decoders), in a device made small by
# torch.cuda.set_per_process_memory_fraction; predicted there (200 MiB, no context): 80 fits
# without a release, 98 runs with one retry per step, 99 runs out of memory
CACHE_RELEASE_CONFIG = {"network": "resnet20", "method": "infopro", "k": 4, "batch_size": 4, "split": "uniform"}
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
    group: str | None = None  # a GROUPS key (kind "config")
    row: str | None = None  # its name in the group's table

    def as_dict(self) -> dict:
        return {
            "kind": self.kind, "name": self.name, "config": self.config, "cudnn_benchmark": self.cudnn_benchmark,
            "snapshot": self.snapshot, "flops": self.flops, "ops": self.ops, "estimate_s": round(self.estimate_s, 1),
            "capacity_bytes": self.capacity_bytes, "group": self.group, "row": self.row,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Part:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def config_dict(fields: dict) -> dict:
    """A part's RunConfig fields: the entry's, on CUDA, WARMUP and STEPS, λ as a table (the
    part travels to its process as JSON)."""
    d = {k: dataclasses.asdict(v) if isinstance(v, InfoProLambdas) else v for k, v in fields.items()}
    return {**d, "warmup": WARMUP, "steps": STEPS, "device": "cuda"}


def config_name(cfg: dict, cudnn_benchmark: bool = False) -> str:
    from hpff_bench.config import RunConfig

    c = RunConfig.from_dict(cfg)
    tail = [f"split={c.split}"] if c.split != "auto" else []
    if c.dataset != "cifar10":
        tail.append(c.dataset)
    if c.hilo:  # the official execution has one PFF: its quadrant decoders
        tail.append(f"hilo-exec={c.hilo_exec}")
        if c.pff_grid > 1 and c.variant != "official":
            tail.append(f"pff-exec={c.pff_exec}")
    if cudnn_benchmark:
        tail.append("cudnn.benchmark")
    return f"{c.network} {c.label} K={c.k} b={c.batch_size}" + (f" ({', '.join(tail)})" if tail else "")


def entries(tier: str = "default") -> list[Entry]:
    """The CONFIGS a tier runs (each tier runs the ones of the tiers below it too)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; allowed: {', '.join(TIERS)}")
    return [e for e in CONFIGS if TIERS.index(e.tier) <= TIERS.index(tier)]


def parts(tier: str = "default", cost=None) -> list[Part]:
    """The parts in the order they run: the overheads first (cheap, and what the prediction
    assumes), then the configurations in CONFIGS order (the tier's), with --all the benchmarks
    after the default ones, and last the cache-release part (not with --quick).

    cost: a function RunConfig dict -> (FLOPs, ops) of one step (default step_cost, counted in
    parallel processes); tests pass a cheap one."""
    chosen = entries(tier)
    cfgs = [config_dict(e.fields) for e in chosen]
    costs = count_costs(cfgs) if cost is None else [cost(c) for c in cfgs]
    out = [
        Part("overheads", f"context + workspaces, cudnn.benchmark {'on' if on else 'off'}", cudnn_benchmark=on,
             estimate_s=PROCESS_S + (CUDNN_BENCHMARK_S if on else 0.0))
        for on in (False, True)
    ]
    for e, cfg, (flops, ops) in zip(chosen, cfgs, costs):
        if e.tier == "all" and not any(p.kind == "benchmarks" for p in out):
            out.append(Part("benchmarks", "pytest suites/ --benchmark-only --hpff-device cuda (2 cases, method speed)",
                            estimate_s=BENCHMARKS_S))
        out.append(Part("config", config_name(cfg, e.cudnn_benchmark), cfg, e.cudnn_benchmark, e.snapshot, flops, ops,
                        estimate_seconds(flops, ops, e.cudnn_benchmark), group=e.group, row=e.row))
    if tier == "quick":
        return out
    # last: it runs where time is left, and never displaces a configuration
    release = config_dict(CACHE_RELEASE_CONFIG)
    return out + [Part("cache_release", f"cache released on out-of-memory: {config_name(release)} in "
                                        f"{CACHE_RELEASE_CAPACITY // 2**20} MiB", release,
                       estimate_s=PROCESS_S + CACHE_RELEASE_S, capacity_bytes=CACHE_RELEASE_CAPACITY)]


def estimate_seconds(flops: float, ops: int, cudnn_benchmark: bool = False) -> float:
    """One configuration's process on an H200 (see the module docstring)."""
    gpu_step = max(flops / H200_FLOPS_PER_S, ops * LAUNCH_S)
    steps = WARMUP + STEPS + EXTRA_STEPS
    return PROCESS_S + steps * gpu_step + ops * TRACE_OP_S + (CUDNN_BENCHMARK_S if cudnn_benchmark else 0.0)


def count_costs(cfgs: list[dict]) -> list[tuple[float, int]]:
    """step_cost of each config, in parallel processes, one per core: with enough cores the
    largest trace bounds it. It counts against --budget-s; --plan prints how long it took."""
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
    lines = [f"{'part':<104} {'GFLOP/step':>11} {'ops/step':>9} {'est. s':>7}"]
    for p in plan:
        g = "" if p.flops is None else f"{p.flops / 1e9:,.0f}"
        n = "" if p.ops is None else f"{p.ops:,}"
        lines.append(f"{p.name:<104} {g:>11} {n:>9} {p.estimate_s:>7.0f}")
    total = sum(p.estimate_s for p in plan)
    lines.append(f"{'total (estimated, H200)':<104} {'':>11} {'':>9} {total:>7.0f}")
    return "\n".join(lines)


def skipped_by_estimate(plan: list[Part], seconds: float) -> list[str]:
    """The parts the runner would skip if every part took its estimate, in `seconds`."""
    left, out = seconds, []
    for p in plan:
        if p.estimate_s <= left:
            left -= p.estimate_s
        else:
            out.append(p.name)
    return out


def session_fit(plan: list[Part], counting_s: float, budget_s: float) -> dict:
    """Whether the plan fits its budget (FLOP counting included) and how many tries of this run
    fit in a session's device time: a try is a machine's start plus the run, which the outer
    `timeout` (budget + KILL_MARGIN_S) caps."""
    estimate = sum(p.estimate_s for p in plan)
    timeout = budget_s + KILL_MARGIN_S
    per_try = MACHINE_START_S + timeout
    return {
        "estimate_s": estimate, "counting_s": counting_s, "budget_s": budget_s,
        "fits_budget": estimate + counting_s <= budget_s,
        "skipped": skipped_by_estimate(plan, budget_s - counting_s),
        "timeout_s": timeout, "per_try_s": per_try, "tries": int(DEVICE_SESSION_S // per_try),
    }


def fit_lines(fit: dict) -> list[str]:
    """session_fit in words, as printed after the plan."""
    used = fit["estimate_s"] + fit["counting_s"]
    lines = [f"estimated {fit['estimate_s']:.0f} s + {fit['counting_s']:.0f} s counting FLOPs = {used:.0f} s of the "
             f"{fit['budget_s']:.0f} s budget" + ("" if fit["fits_budget"] else
                                                 f": over by {used - fit['budget_s']:.0f} s")]
    if fit["skipped"]:
        lines.append("skipped if every part takes its estimate: " + "; ".join(fit["skipped"]))
    lines.append(f"one try = machine start ~{MACHINE_START_S:.0f} s + `timeout {fit['timeout_s']:.0f}` = "
                 f"{fit['per_try_s']:.0f} s: {fit['tries']} tr{'y' if fit['tries'] == 1 else 'ies'} fit in "
                 f"{DEVICE_SESSION_S:.0f} s of device time" + ("" if fit["tries"] >= 2 else " (no rerun: lower --budget-s)"))
    return lines


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
