"""Profile one configuration (measured) and estimate it (predicted, no GPU needed).

`profile_config(cfg)` runs warm-up steps, then measured steps, and returns the profile record
of notes/INTERFACES.md. Where the peak comes from:
- CUDA: the caching allocator (`max_memory_allocated` etc. after warm-up and a peak reset
  between synchronisations), NVML sampled by a thread; then one extra step under the
  live-tensor tracker gives the breakdown, per-module peaks and the lower bound (that step is
  not timed).
- CPU: the live-tensor tracker is the measurement (exact bytes of live tensor storages); it
  runs from the method's build, so nothing live escapes it, and the timed steps include its
  overhead (see tests/test_memory_tracker.py). SGD runs with foreach kernels, as on CUDA.
Both also run the fake-tensor prediction (memory.predict) and fill `predicted`. `flops` (per
step: total, backbone, aux, other; torch's FlopCounterMode) is counted on the tracked step.

`estimate_config(cfg)` is the prediction alone; `estimate_batches` repeats it over batch
sizes and finds the largest batch that fits a memory budget: on the affine model of the event
log (memory.affine) fitted on two predictions, the answer then confirmed by real predictions
at it and the batch above it, or, where the log is not affine, by predictions alone.
"""

from __future__ import annotations

import functools
import math
import re
import statistics
import time
from collections.abc import Callable

import torch

from hpff_bench.errors import ConfigError
from hpff_bench.flops import ScopedFlopCounter
from hpff_bench.memory import cuda_probe
from hpff_bench.memory.affine import AffineLog, NotAffine
from hpff_bench.memory.bound import lower_bound, method_groups
from hpff_bench.memory.nvml import DEFAULT_INTERVAL_S, NvmlSampler
from hpff_bench.memory.predict import alloc_retries_within, device_used_bytes, predict
from hpff_bench.memory.trace import trace_training
from hpff_bench.memory.tracker import LiveTensorTracker, cuda_block_size

Progress = Callable[[str], None] | None


# ----- devices ----------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """auto -> cuda when available, else cpu; asking for cuda without one is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(device)


# ----- profile ----------------------------------------------------------------------------
def profile_config(
    cfg,
    *,
    snapshot: str | None = None,
    nvml_interval_s: float = DEFAULT_INTERVAL_S,
    with_prediction: bool = True,
    predict_options: dict | None = None,
    progress: Progress = None,
) -> dict:
    """Measure `cfg` (validated RunConfig) and return the profile record."""
    cfg.validate()
    device = resolve_device(cfg.device)
    if snapshot and device.type != "cuda":
        raise ConfigError("--snapshot records the CUDA allocator's history; it needs --device cuda")
    if nvml_interval_s <= 0:
        raise ConfigError(f"--nvml-interval-ms must be > 0, got {nvml_interval_s * 1000:g}")
    if device.type == "cuda":
        measured = _profile_cuda(cfg, device, snapshot, nvml_interval_s, progress)
    else:
        measured = _profile_cpu(cfg, device, progress)
    step = measured.pop("step_seconds")
    step_all = measured.pop("step_seconds_all")
    record = {
        "label": cfg.label,
        "ablation": cfg.ablation,
        "config": cfg.to_dict(),
        "modules": measured.pop("modules"),
        "params": measured.pop("params"),
        "device": str(device),
        "forward_calls": measured.pop("forward_calls"),
        "flops": measured.pop("flops"),
        "peak_memory_bytes": measured["memory"]["peak_memory_bytes"],
        "memory_source": measured["memory"]["source"],
        "step_seconds": step,
        "step_seconds_all": step_all,  # every measured step, for the report's spread
        # CPU: mean seconds per timed step in backbone / aux / other scopes (scope.ScopeTimer); a
        # GPU's host clock would time kernel launches, so None there
        "seconds_by_scope": measured.pop("seconds_by_scope", None),
        "images_per_second": (cfg.batch_size / step) if step else None,
        "memory": {k: v for k, v in measured["memory"].items() if k != "peak_memory_bytes"},
        "predicted": None,
    }
    if with_prediction:
        if progress:
            progress("prediction on fake tensors")
        p = predict(cfg, progress=progress, **(predict_options or {}))["predicted"]
        record["predicted"] = {
            k: p[k] for k in ("peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes", "terms")
        }
    return record


def _memory_fields(tracker: LiveTensorTracker, measured_peak: int) -> dict:
    bound = lower_bound(tracker, measured_peak)
    return {
        "breakdown_bytes": dict(tracker.peak_breakdown),
        "per_module_peak_bytes": dict(tracker.per_scope_peak),
        "aux_scope_peak_bytes": dict(tracker.aux_scope_peak),
        "tracked_peak_bytes": tracker.peak,
        "lower_bound_bytes": bound["lower_bound_bytes"],
        "lower_bound_terms": bound["terms"],
        "lower_bound_module": bound["binding_module"],
        "efficiency": bound["efficiency"],
    }


def _profile_cpu(cfg, device, progress) -> dict:
    # SGD with foreach kernels, as on CUDA: the peak then includes the optimizer temporaries a
    # GPU run has (and the prediction models), and the tracked step dispatches ~half the ops.
    # Memory comes from one tracked step (steps repeat exactly after warm-up), times from
    # `steps` untracked ones, as on CUDA: the tracker's cost is in no reported time.
    trace = trace_training(
        cfg, fake=False, device=device, foreach=True, progress=progress, steps=1, timed_steps=cfg.steps
    )
    tr = trace.tracker
    memory = {
        "source": "tensor-tracker",
        "peak_memory_bytes": tr.peak,
        "peak_allocated_bytes": None,
        "peak_reserved_bytes": None,
        "peak_active_bytes": None,
        "peak_requested_bytes": None,
        "nvml_peak_used_bytes": None,
        "nvml_process_peak_bytes": None,
        "nvml": {"available": False, "reason": "no CUDA device", "source": None},
        **_memory_fields(tr, tr.peak),
    }
    return {
        "modules": trace.modules,
        "params": trace.params,
        "forward_calls": trace.forward_calls,
        "flops": trace.flops,
        "step_seconds": trace.median_step_seconds,
        "step_seconds_all": list(trace.step_seconds),
        "seconds_by_scope": trace.seconds_by_scope,
        "memory": memory,
    }


def _profile_cuda(cfg, device, snapshot, nvml_interval_s, progress) -> dict:
    from hpff_bench.methods import build_method, synthetic_batch

    method = build_method(cfg, device=device)
    x, y = synthetic_batch(cfg, device)
    for i in range(cfg.warmup):
        if progress:
            progress(f"warm-up step {i + 1}/{cfg.warmup}")
        method.train_step(x, y)
    recorder = cuda_probe.SnapshotRecorder(snapshot) if snapshot else None
    cuda_probe.reset_peaks(device)
    if recorder:
        recorder.start()
    method.reset_counters()
    times = []
    sampler = NvmlSampler(device.index or 0, nvml_interval_s)
    with sampler:
        for i in range(cfg.steps):
            if progress:
                progress(f"measured step {i + 1}/{cfg.steps}")
            t0 = time.perf_counter()
            method.train_step(x, y)
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    peaks = cuda_probe.read_peaks(device)
    forward_calls = method.forward_calls / cfg.steps
    snapshot_files = recorder.stop() if recorder else None
    # one more, untimed step under the tracker: breakdown, per-module peaks, bound
    tracker = LiveTensorTracker(
        rounding=cuda_block_size, group_of=method_groups(cfg, method.module_count), record_events=False
    )
    tracker.register_method_state(method.parameters(), method.buffers(), method.optimizer, (x, y))
    tracker.watch_gradients(method.parameters())
    tracker.reset_peak()
    with tracker, ScopedFlopCounter() as flop_counter:
        method.train_step(x, y)
    nv = sampler.result
    memory = {
        "source": "cuda-allocator",
        "peak_memory_bytes": peaks["peak_allocated_bytes"],
        **{k: peaks[k] for k in ("peak_allocated_bytes", "peak_reserved_bytes", "peak_active_bytes", "peak_requested_bytes")},
        "nvml_peak_used_bytes": nv.peak_used_bytes,
        "nvml_process_peak_bytes": nv.peak_process_bytes,
        "nvml": nv.as_dict(),
        **_memory_fields(tracker, peaks["peak_allocated_bytes"]),
    }
    if snapshot_files:
        memory["snapshot"] = snapshot_files
    return {
        "modules": method.module_count,
        "params": sum(p.numel() for p in method.parameters()),
        "forward_calls": forward_calls,
        "flops": flop_counter.split(),
        "step_seconds": statistics.median(times) if times else None,
        "step_seconds_all": times,
        "memory": memory,
    }


# ----- estimate ---------------------------------------------------------------------------
def estimate_config(cfg, *, progress: Progress = None, keep_events: bool = False, **predict_options) -> dict:
    """The prediction for `cfg` as a record (INTERFACES.md `estimate_config`); keep_events=True
    adds "events", the trace's event log (for the budget search; never written to a record)."""
    cfg.validate()
    p = predict(cfg, progress=progress, keep_events=keep_events, **predict_options)
    record = {
        "label": cfg.label,
        "ablation": cfg.ablation,
        "config": cfg.to_dict(),
        "modules": p["modules"],
        "params": p["params"],
        "forward_calls": p["forward_calls"],
        "flops": p["flops"],
        "predicted": p["predicted"],
    }
    if keep_events:
        record["events"] = p["events"]
    return record


def estimate_batches(
    cfg,
    batch_sizes: list[int],
    *,
    budget_bytes: int | None = None,
    progress: Progress = None,
    on_probe: Callable[[int, float, bool], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    max_probes: int = 16,
    affine: bool = True,
    release_cache: bool = False,
    **predict_options,
) -> dict:
    """Estimates at each batch size; with a budget, also the largest batch whose predicted
    device use (reserved + CUDA context) fits it.

    The search (affine=True): fit the affine model of the event log (memory.affine) on two
    predicted batches, search it (milliseconds a probe), then predict the answer and the batch
    above it for real; the answer stands only if both real traces are exactly the model's logs
    and fit / do not fit. Where any of that fails (logs that do not align, a mismatch, a batch
    that cannot run) it falls back to the search on real predictions (_largest_fit), and says
    why in `fallback_reason`. The answer always comes from real predictions.
    on_probe(batch, device_used_bytes, fits) is called once per real prediction of the search;
    on_note(text) with one line about the model (its search, or why it is not used).
    release_cache=True: also the largest batch that runs when the allocator releases its cached
    segments on an out-of-memory and retries, as PyTorch's does (`budget["with_cache_release"]`,
    _largest_with_release): the device use above counts every segment a GPU with room to spare
    would keep, which a full one gives back instead."""
    results: dict[int, dict] = {}
    logs: dict[int, list | None] = {}

    def at(b: int) -> dict:
        if b not in results:
            if progress:
                progress(f"batch {b:,} (prediction {len(results) + len(unusable) + 1})")
            r = estimate_config(cfg.replace(batch_size=b), keep_events=True, **predict_options)
            logs[b] = r.pop("events", None)
            results[b] = r
        return results[b]

    unusable: dict[int, str] = {}
    for b in batch_sizes:
        at(b)
    out = {"estimates": [results[b] for b in batch_sizes], "budget": None}
    if budget_bytes is None:
        return out

    probed: dict[int, float] = {}

    def used(b: int, announce: bool = True) -> float:
        """Predicted device use (a real prediction, once per batch); inf where the step cannot
        run at this batch size (e.g. BatchNorm1d in an aux net needs 2 samples): such a batch
        never fits. announce: tell on_probe (the cache-release search says its own)."""
        if b not in probed:
            try:
                probed[b] = at(b)["predicted"]["device_used_bytes"]
            except (ValueError, RuntimeError) as e:
                unusable[b] = f"{type(e).__name__}: {e}"
                logs[b] = None
                probed[b] = math.inf
            if on_probe and announce:
                on_probe(b, probed[b], probed[b] <= budget_bytes)
        return probed[b]

    known_before = len(results)
    fit, reason = None, "the affine model was not asked for (affine=False)"
    if affine:
        model_used = functools.partial(device_used_bytes, **{
            k: v for k, v in predict_options.items() if k in ("cuda_arch", "cuda_context_bytes", "cublas_workspaces")
        })
        try:
            lo, hi, fit = _affine_largest_fit(used, logs, budget_bytes, sorted(results), model_used, on_note)
        except NotAffine as e:
            fit, reason = None, str(e)
            if on_note:
                on_note(f"affine model not used: {reason}; searching with real predictions")
    if fit is None:
        lo, hi = _largest_fit(used, budget_bytes, sorted(results), max_probes)
    exact = hi is not None and hi - lo <= 1
    out["budget"] = {
        "budget_bytes": budget_bytes,
        "largest_batch": lo if lo > 0 else None,
        "device_used_bytes": used(lo) if lo > 0 else None,
        "smallest_failing_batch": hi,
        "exact": exact,
        "predictions": len(results) + len(unusable),
        "search_predictions": len(results) + len(unusable) - known_before,
        "unusable_batches": unusable,
        "search": "affine" if fit else "full",
        "affine": fit,
        "fallback_reason": None if fit else reason,
        "compares": "predicted device_used_bytes (reserved + CUDA context) <= budget",
    }
    if release_cache:
        retries = functools.partial(alloc_retries_within, budget_bytes=budget_bytes, **{
            k: v for k, v in predict_options.items() if k in ("cuda_arch", "cuda_context_bytes", "cublas_workspaces")
        })
        release = out["budget"]["with_cache_release"] = _largest_with_release(used, logs, lo, fit, retries, on_note)
        # the given batch sizes too (plan's rows): a replay of a log already traced
        release["alloc_retries_at"] = {b: retries(logs[b]) if logs.get(b) is not None else None for b in batch_sizes}
        out["budget"]["predictions"] = len(results) + len(unusable)
        out["budget"]["search_predictions"] = len(results) + len(unusable) - known_before
    return out


def _largest_with_release(used, logs: dict, start: int, fit: dict | None, retries, on_note=None,
                          limit: int = 1 << 24) -> dict:
    """The largest batch whose step runs when cached segments are released on an out-of-memory
    (retries(events) -> retries in the measured step, None: out of memory), from `start`, a batch
    that fits without a release (0: none does). On the affine model where the budget search had
    one (model probes, then real predictions at the edge must be the model's logs and agree),
    else, or where they do not, on real predictions alone."""
    def runs_real(b: int) -> bool:
        used(b, announce=False)  # a real prediction (fills logs[b]), or the batch cannot run at all
        n = retries(logs[b]) if logs.get(b) is not None else None
        if on_note:
            on_note(f"batch {b:,}, cache released on out-of-memory: "
                    + (f"runs ({n} allocation retries per step)" if n is not None else "runs out of memory"))
        return n is not None

    def edge(runs) -> tuple[int, int | None]:
        lo, hi = start, max(2 * start, 1)
        while runs(hi):
            lo, hi = hi, 2 * hi
            if hi > limit:
                return lo, None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if runs(mid) else (lo, mid)
        return lo, hi

    search, why = "full", "the budget search had no affine model"
    lo = hi = None
    if fit is not None:
        b1, b2 = fit["fit_batches"]
        model = AffineLog.fit(b1, logs[b1], b2, logs[b2])
        try:
            lo, hi = edge(lambda b: retries(model.events(b)) is not None)
            if on_note:
                on_note(f"cache released on out-of-memory: the affine model puts the edge at {lo:,} / {hi:,}; "
                        "checking with real predictions")
            for b, runs in ((lo, True), (hi, False)):
                if b and (runs_real(b) != runs or logs.get(b) is None or model.mismatch(b, logs[b])):
                    raise NotAffine(f"the real prediction at batch {b} does not confirm the model's edge")
            search, why = "affine", None
        except NotAffine as e:
            why = str(e)
            if on_note:
                on_note(f"cache released on out-of-memory: {why}; searching with real predictions")
    if search == "full":
        lo, hi = edge(runs_real)
    return {
        "largest_batch": lo or None,
        "smallest_failing_batch": hi,
        "alloc_retries_per_step": retries(logs[lo]) if lo else None,
        "device_used_bytes_unreleased": used(lo) if lo else None,  # what a GPU with room keeps reserved
        "search": search,
        "fallback_reason": why,
        "compares": "the step's allocations run in budget - CUDA context, releasing cached segments on "
                    "out-of-memory and retrying (PyTorch's caching allocator)",
    }


def _affine_largest_fit(used, logs: dict, budget: int, known: list[int], model_used, on_note=None,
                        model_probes: int = 64) -> tuple[int, int, dict]:
    """The budget edge from the affine model of the event log, confirmed by real predictions.

    used(b): real prediction (fills logs[b]); model_used(events): device use of a log. Fits the
    model on the two largest known batches (predicting 2 x the largest when only one is known),
    checks it on any other known batch, searches it, then predicts the answer and the batch
    above it for real: both logs must be the model's exactly and the real values must put the
    edge there. Returns (largest fitting batch, smallest failing one, what the record says of
    the model); raises NotAffine(why) where any step fails, for the caller's fallback."""
    def usable() -> list[int]:
        return [b for b in sorted(logs) if logs[b] is not None and math.isfinite(used(b))]

    for b in known:
        used(b)
    if any(logs[b] is None and math.isfinite(used(b)) for b in known):
        raise NotAffine("the predictions carry no event log")
    if len(usable()) < 2:
        used(2 * max(known))
    have = usable()
    if len(have) < 2:
        raise NotAffine(f"fewer than two batch sizes with a trace (predicted: {', '.join(map(str, sorted(logs)))})")
    b1, b2 = have[-2:]
    model = AffineLog.fit(b1, logs[b1], b2, logs[b2])
    checked = []
    for b in have[:-2]:
        if why := model.mismatch(b, logs[b]):
            raise NotAffine(why)
        checked.append(b)
    probes = 0

    def synthetic(b: int) -> float:
        nonlocal probes
        probes += 1
        return model_used(model.events(b))

    t0 = time.perf_counter()
    lo, hi = _largest_fit(synthetic, budget, [b1, b2], model_probes)
    model_seconds = round(time.perf_counter() - t0, 3)
    if hi is None or hi - lo > 1:
        raise NotAffine(f"the search on the model did not close in {model_probes} probes (edge between {lo} and {hi})")
    if on_note:
        on_note(
            f"affine model of the event log (fitted at batches {b1:,} and {b2:,}; {len(model.keys):,} events, "
            f"{model.batch_dependent:,} allocations grow with the batch): {probes} model probes put the edge at "
            f"{lo:,} / {hi:,}; checking with real predictions"
        )
    for b in [lo, hi] if lo > 0 else [hi]:
        used(b)
        if logs.get(b) is None:
            raise NotAffine(f"batch {b} cannot run (see unusable_batches), which the affine model cannot know")
        if b not in (b1, b2):
            if why := model.mismatch(b, logs[b]):
                raise NotAffine(why)
            checked.append(b)
    if (lo > 0 and used(lo) > budget) or used(hi) <= budget:  # the logs agree, so this is a bug guard
        raise NotAffine(f"the real predictions do not put the edge between {lo} and {hi}")
    return lo, hi, {
        "fit_batches": [b1, b2],
        "checked_batches": checked,
        "events": len(model.keys),
        "batch_dependent_allocations": model.batch_dependent,
        "model_probes": probes,
        "model_seconds": model_seconds,  # the search on the model: synthesised logs + allocator replays
    }


def _largest_fit(used, budget: int, known: list[int], max_probes: int) -> tuple[int, int | None]:
    """(largest batch with used(b) <= budget, smallest failing batch above it or None).

    For a fixed graph the live-tensor peak is affine in the batch size between the points where
    the peak moves to another moment of the step, and the allocator's rounding adds small
    steps on top: so the secant through the two nearest known points lands on or next to the
    edge, and the probe just past it verifies the answer. Typically: the given batch, one
    more to get a slope, the guess, and its neighbour. Where the guess is off (a kink, a
    rounding step) the bracket shrinks and every other probe bisects it, so the search ends
    like a bisection would. Assumes used() grows with the batch, as the old bisection did."""
    seen: dict[int, float] = {}

    def probe(b: int) -> bool:
        if b not in seen:
            seen[b] = used(b)
        return seen[b] <= budget

    for b in known:
        probe(b)
    lo = max((b for b in seen if seen[b] <= budget), default=0)
    hi = min((b for b in seen if seen[b] > budget and b > lo), default=None)
    probes, bisect = 0, False
    while (hi is None or hi - lo > 1) and probes < max_probes:
        finite = sorted(b for b in seen if math.isfinite(seen[b]))
        if hi is not None and math.isfinite(seen[hi]) and lo > 0:
            pair = (lo, hi)  # interpolate inside the bracket
        else:
            pair = tuple(finite[-2:]) if hi is None else ()  # extrapolate upwards
        secant = len(pair) == 2 and not bisect and seen[pair[1]] > seen[pair[0]]
        if secant:
            b1, b2 = pair
            guess = b1 + math.floor((budget - seen[b1]) * (b2 - b1) / (seen[b2] - seen[b1]))
        else:
            guess = max(1, lo * 2) if hi is None else (lo + hi) // 2
        guess = max(guess, lo + 1) if hi is None else min(max(guess, lo + 1), hi - 1)
        probes += 1
        fits = probe(guess)
        if fits:
            lo = guess
        else:
            hi = guess
        if secant and probes < max_probes:
            # verify the edge the secant points at: the neighbour on the other side
            nxt = guess + 1 if fits else guess - 1
            if lo < nxt and (hi is None or nxt < hi):
                probes += 1
                if probe(nxt):
                    lo = nxt
                else:
                    hi = nxt
        # a secant that did not close the bracket is followed by a bisection (a kink, or a
        # rounding step, between the points): the search never does worse than every other probe
        bisect = secant and hi is not None and hi - lo > 1
    return lo, hi


# ----- parsing helpers for the commands ---------------------------------------------------
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "p": 1000**5, "pb": 1000**5, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5,
}


def parse_bytes(text: str, flag: str, *, positive: bool = False) -> int:
    """'24GiB', '24 GB', '600MiB', '1.5e9' -> bytes (GB = 10^9, GiB = 2^30); at most 1 PiB
    (validation.MAX_BYTES), and > 0 where `positive` (a budget), else >= 0."""
    from hpff_bench.validation import MAX_BYTES, shown

    m = re.fullmatch(r"\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ConfigError(f"{flag} {shown(text)} is not a size; use e.g. 24GiB, 24GB, 600MiB or a number of bytes")
    value = float(m.group(1)) * _UNITS[unit]
    if not (value > 0 if positive else value >= 0) or value > MAX_BYTES:
        raise ConfigError(f"{flag} must be {'> 0' if positive else '>= 0'} and at most 1 PiB (2^50 B, a size such "
                          f"as 24GiB or 80GB), got {shown(text)}")
    return int(value)


def parse_batch_sizes(text: str) -> list[int]:
    """'64,128,256' -> [64, 128, 256]; each a positive integer (at most validation.MAX_IMAGES)."""
    from hpff_bench.validation import MAX_IMAGES, natural

    sizes = []
    for part in str(text).split(","):
        part = part.strip()
        n = natural(part)
        if n is None or not 1 <= n <= MAX_IMAGES:
            raise ConfigError(
                f"--batch-size must be a positive integer or a comma-separated list of them, got {text!r}"
            )
        sizes.append(n)
    return list(dict.fromkeys(sizes))


BATCH_SWEEP = (16, 32, 64, 128, 256, 512, 1024, 2048)
