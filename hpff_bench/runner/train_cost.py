"""What a sweep's training will cost, from steps timed on this machine before it starts.

A seeded accuracy study runs tens of training runs; a user should know before it starts whether
that is twenty minutes or five hours. Every distinct configuration (seeds share one) is built
once, on the CPU with the thread count its worker will get, and timed: one warm-up training
step, then `TIMED_STEPS` steps on a synthetic batch of the run's batch and image size, and one
`predict` on an evaluation batch. The data path is timed too, by loading real batches from the
run's training set (JPEG decoding and augmentation cost as much as a small step). Then

    run seconds = epochs x (steps_per_epoch x (step + batch load) + eval_batches x (predict + batch load))

and the sweep's wall time is the work divided over its `jobs` workers. An estimate, not a
promise: a machine shared with other work runs slower than when it was timed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

TIMED_STEPS = 2


@dataclass(frozen=True)
class ConfigCost:
    label: str
    runs: int  # tasks (seeds) with this configuration
    step_s: float  # one training step (median of the timed ones)
    load_s: float  # one training batch from the data loader
    predict_s: float  # one evaluation batch through predict()
    run_s: float  # one whole run


@dataclass
class TrainCost:
    per_config: list[ConfigCost] = field(default_factory=list)
    jobs: int = 1
    threads: int = 1
    not_estimated: list[str] = field(default_factory=list)  # task labels, with the reason in `reason`
    reason: str | None = None

    @property
    def work_s(self) -> float:
        return sum(c.run_s * c.runs for c in self.per_config)

    @property
    def runs(self) -> int:
        return sum(c.runs for c in self.per_config)

    @property
    def wall_s(self) -> float:
        """The work spread over `jobs` workers, no shorter than the longest single run."""
        if not self.per_config:
            return 0.0
        return max(self.work_s / self.jobs, max(c.run_s for c in self.per_config))

    def lines(self) -> list[str]:
        out = []
        if self.per_config:
            finish = (datetime.now() + timedelta(seconds=self.wall_s)).strftime("%H:%M")
            out.append(
                f"training: {self.runs} run(s) of {len(self.per_config)} configuration(s), about "
                f"{_duration(self.wall_s)} at {self.jobs} job(s) x {self.threads} thread(s), done around "
                f"{finish} ({_duration(self.work_s)} of work; from {TIMED_STEPS} steps of each "
                "configuration timed here just now)"
            )
            for c in sorted(self.per_config, key=lambda c: -c.run_s):
                out.append(f"  {c.label}: {c.runs} run(s) x {_duration(c.run_s)} "
                           f"(step {c.step_s:.3f} s + batch load {c.load_s:.3f} s)")
        if self.not_estimated:
            out.append(f"training: {len(self.not_estimated)} run(s) not estimated: {self.reason}")
        return out


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def estimate_train_cost(tasks, jobs: int, threads: int, data_root: str | None, download: bool | None) -> TrainCost:
    """The cost of the `train` tasks of `tasks` (see the module docstring). Tasks that would run
    on a GPU are not timed here (the sweep's process must not take the device its workers need)."""
    import torch

    from hpff_bench.runner.train import TrainOptions

    cost = TrainCost(jobs=jobs, threads=threads)
    groups: dict[str, list] = {}
    for t in tasks:
        if t.kind != "train":
            continue
        if t.config.device == "cuda" or (t.config.device == "auto" and torch.cuda.is_available()):
            cost.not_estimated.append(t.label)
            cost.reason = "they run on a GPU, which the sweep's own process leaves to its workers"
            continue
        groups.setdefault(t.config.replace(seed=0).config_id(), []).append(t)
    if not groups:
        return cost
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        loads: dict[tuple, tuple[float, int, int]] = {}
        for ts in groups.values():
            t = ts[0]
            opts = {k: v for k, v in t.options.items() if k in TrainOptions.__dataclass_fields__}
            if data_root is not None:
                opts["data_root"] = data_root
            if download is not None:
                opts["download"] = download
            opts = TrainOptions(**{**opts, "progress": False, "num_workers": 0}).validate()
            key = (t.config.dataset, t.config.resolved_image_size, t.config.batch_size, opts.data_root,
                   opts.train_subset, opts.test_subset, opts.augment)
            if key not in loads:
                loads[key] = _time_loading(t.config, opts)
            load_s, train_batches, eval_batches = loads[key]
            step_s, predict_s = _time_steps(t.config, opts.resolved_eval_batch_size(t.config.batch_size))
            run_s = opts.epochs * (train_batches * (step_s + load_s) + eval_batches * (predict_s + load_s))
            cost.per_config.append(ConfigCost(t.config.label, len(ts), step_s, load_s, predict_s, run_s))
    finally:
        torch.set_num_threads(before)
    return cost


def _time_loading(cfg, opts) -> tuple[float, int, int]:
    """(seconds per training batch, training batches per epoch, evaluation batches)."""
    import torch

    from hpff_bench.runner.train import build_loaders

    loaders = build_loaders(cfg, opts, torch.device("cpu"))
    it = iter(loaders.train)
    next(it)  # the first batch also pays for opening the files
    t0 = time.perf_counter()
    n = 0
    for _ in range(2):
        try:
            next(it)
        except StopIteration:
            break
        n += 1
    load_s = (time.perf_counter() - t0) / n if n else 0.0
    return load_s, len(loaders.train), len(loaders.test)


def _time_steps(cfg, eval_batch: int) -> tuple[float, float]:
    """(median seconds of a training step, seconds of one predict on `eval_batch` images)."""
    from hpff_bench.methods import build_method
    from hpff_bench.methods.base import synthetic_batch

    method = build_method(cfg.replace(device="cpu"), "cpu")
    x, y = synthetic_batch(cfg.replace(device="cpu"), "cpu")
    method.train_step(x, y)  # warm-up: allocations, oneDNN primitives
    times = []
    for _ in range(TIMED_STEPS):
        t0 = time.perf_counter()
        method.train_step(x, y).loss.item()
        times.append(time.perf_counter() - t0)
    xe, _ = synthetic_batch(cfg.replace(device="cpu", batch_size=eval_batch), "cpu")
    t0 = time.perf_counter()
    method.predict(xe)
    predict_s = time.perf_counter() - t0
    return statistics.median(times), predict_s
