"""Run a method's training steps under the live-tensor tracker, on real or fake tensors.

Why one function for both: the prediction (fake tensors) and the CPU measurement (real
tensors) must do exactly the same thing (build, warm-up, peak reset, measured steps) for
their peaks to be comparable; only the tensor mode differs.

The tracker is entered before the method is built, so every storage that is live during
the measured steps is known, whoever holds it; at the peak reset the step's starting state
is labelled (parameters and buffers, gradients, optimizer state, inputs). The measured steps
also run under a FLOP counter (hpff_bench.flops), so the FLOPs are those of the traced step.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hpff_bench.flops import ScopedFlopCounter
from hpff_bench.memory.bound import method_groups
from hpff_bench.memory.tracker import LiveTensorTracker
from hpff_bench.scope import ScopeTimer


@dataclass
class Trace:
    tracker: LiveTensorTracker
    modules: int
    params: int
    forward_calls: float  # backbone-module forward calls per measured step
    step_seconds: list[float] = field(default_factory=list)  # the untracked timed steps
    flops: dict | None = None  # FLOPs per measured step (hpff_bench.flops.ScopedFlopCounter.split)
    seconds_by_scope: dict | None = None  # mean seconds per timed step by scope (ScopeTimer.split)

    @property
    def median_step_seconds(self) -> float | None:
        return statistics.median(self.step_seconds) if self.step_seconds else None


def trace_training(
    config,
    *,
    fake: bool,
    device: str | torch.device = "cpu",
    rounding: Callable[[int], int] | None = None,
    warmup: int | None = None,
    steps: int | None = None,
    foreach: bool | None = None,
    record_events: bool = False,
    progress: Callable[[str], None] | None = None,
    synthetic_warmup: bool = False,
    timed_steps: int = 0,
) -> Trace:
    """Build `config`'s method, run `warmup` then `steps` training steps, tracking live bytes.

    fake=True runs everything inside FakeTensorMode on cpu fake tensors (no memory, no compute;
    shapes and lifetimes as on a real device). Peaks cover the measured steps only.

    synthetic_warmup=True first creates the state a warm-up step leaves behind (a gradient for
    every parameter, then one optimizer step, which creates its state from them) instead of
    paying for a whole step; `warmup` real steps still follow. If a parameter then gets no
    gradient in the measured steps, the state was wrong for it and the trace is redone with a
    real warm-up step.

    timed_steps: after the tracked steps, run and time this many steps with the tracker off
    (real tensors only), so that step times carry none of the tracker's cost."""
    from hpff_bench.methods import (  # a lazy import: memory sits below methods
        build_method,
        synthetic_batch,
    )

    if timed_steps and fake:
        raise ValueError("timed_steps needs real tensors: fake steps do no work to time")
    from hpff_bench.networks.splits import split_of

    split_of(config)  # a searched split (--split balanced) traces itself: resolve it before our tracker is on
    warmup = config.warmup if warmup is None else warmup
    steps = config.steps if steps is None else steps
    device = torch.device(device)
    mode = contextlib.nullcontext()
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        # non-fake inputs: shape inference on the meta device and small constants made with
        # torch.tensor(...) inside the build are turned into fake tensors instead of failing
        mode = FakeTensorMode(allow_non_fake_inputs=True)
    tracker = LiveTensorTracker(rounding=rounding, record_events=record_events)
    with mode, tracker:
        method = build_method(config, device=device, foreach=foreach)
        tracker.group_of = method_groups(config, method.module_count)
        tracker.watch_gradients(method.parameters())
        x, y = synthetic_batch(config, device)
        if synthetic_warmup:
            _synthesize_warm_state(method)
        for i in range(warmup):
            if progress:
                progress(f"warm-up step {i + 1}/{warmup}")
            method.train_step(x, y)  # the StepOutput is dropped at once, as in a training loop
        tracker.register_method_state(method.parameters(), method.buffers(), method.optimizer, (x, y))
        tracker.reset_peak()
        method.reset_counters()
        with ScopedFlopCounter() as flop_counter:  # FLOPs of the same tracked steps
            _timed_steps(method, x, y, steps, "measured step", progress)
        forward_calls = method.forward_calls / max(steps, 1)
        ungraded = [p for p in method.parameters() if p.requires_grad and p.grad is None]
    if synthetic_warmup and ungraded:
        # a parameter the step never touches would have no gradient nor momentum after a real
        # warm-up; the synthetic one gave it both, so measure again with a real warm-up step
        return trace_training(
            config, fake=fake, device=device, rounding=rounding, warmup=max(1, warmup), steps=steps,
            foreach=foreach, record_events=record_events, progress=progress, synthetic_warmup=False,
            timed_steps=timed_steps,
        )
    # seconds per scope on the CPU only: on a GPU the host's clock would time kernel launches
    timer = ScopeTimer() if timed_steps and device.type == "cpu" else None
    times = _timed_steps(method, x, y, timed_steps, "timed step (tracker off)", progress, timer)
    n_params = sum(p.numel() for p in method.parameters())
    return Trace(tracker, method.module_count, n_params, forward_calls, times, flop_counter.split(steps),
                 timer.split(timed_steps) if timer else None)


def _timed_steps(method, x, y, n: int, label: str, progress, timer: ScopeTimer | None = None) -> list[float]:
    """Run n training steps; their wall times in seconds (and, into `timer`, by scope)."""
    times = []
    for i in range(n):
        if progress:
            progress(f"{label} {i + 1}/{n}")
        t0 = time.perf_counter()
        with timer or contextlib.nullcontext():
            method.train_step(x, y)  # the StepOutput is dropped at once, as in a training loop
        times.append(time.perf_counter() - t0)
    return times


def _synthesize_warm_state(method) -> None:
    """Gradients for every trainable parameter and the optimizer state one step creates.

    For SGD that state is one momentum buffer per parameter (a copy of its first gradient),
    made here directly: running a foreach step over thousands of fake parameters costs
    seconds. Any other optimizer takes one real step on the zero gradients."""
    from hpff_bench.scope import scope

    opt = method.optimizer
    with scope("optimizer"), torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        if type(opt) is torch.optim.SGD:
            for group in opt.param_groups:
                if group["momentum"] != 0:
                    for p in group["params"]:
                        if p.grad is not None:
                            opt.state[p]["momentum_buffer"] = torch.clone(p.grad)
        else:
            opt.step()
