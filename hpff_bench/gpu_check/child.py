"""One part of the GPU check, run in a fresh process (a new CUDA context and caching allocator,
so reserved bytes and NVML are not polluted by the part before).

Every GPU-only call goes through injected objects, so tests on the CPU run this code with fakes:
`probe` (memory.cuda_probe.CudaProbe), `nvml_read` (one NVML reading, memory.nvml), `profile`
(hpff_bench.profiling.profile_config) and `hidden` (hidden_allocated below).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hpff_bench.gpu_check.plan import Part
from hpff_bench.gpu_check.report import compare, compare_overheads
from hpff_bench.memory.overheads import context_bytes, measure_overheads

ENV_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_MODULE_LOADING", "CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF")
MEASURED_KEYS = (
    "peak_allocated_bytes", "peak_reserved_bytes", "peak_active_bytes", "peak_requested_bytes",
    "nvml_peak_used_bytes", "nvml_process_peak_bytes", "tracked_peak_bytes", "breakdown_bytes", "nvml", "snapshot",
)
PREDICTED_KEYS = (
    "peak_allocated_bytes", "peak_reserved_bytes", "peak_requested_bytes", "device_used_bytes", "live_peak_bytes",
    "breakdown_bytes", "terms", "assumptions", "seconds",
)


def cuda_arch(capability) -> str:
    """The prediction's --cuda-arch for a compute capability."""
    major, minor = capability
    if major >= 9:
        return "hopper"
    if (major, minor) == (8, 9):
        return "ada"
    if major == 8:
        return "ampere"
    if (major, minor) == (7, 5):
        return "turing"
    return "volta"


def default_nvml_read():
    """One NVML reading for cuda:0, or None where NVML is not usable here."""
    from hpff_bench.memory.nvml import nvml_reader

    try:
        return nvml_reader(0)
    except Exception:
        return None


def run_part(part: Part, out: Path, *, probe=None, nvml_read="default", profile=None, hidden=None, predict=None,
             edges=None, steps_at=None) -> dict:
    """Run `part` (kind "overheads", "config" or "cache_release") here and return its record."""
    if probe is None:
        from hpff_bench.memory.cuda_probe import CudaProbe

        probe = CudaProbe(0)
    if nvml_read == "default":
        nvml_read = default_nvml_read()
    t0 = time.perf_counter()
    if part.kind == "overheads":
        o = measure_overheads(probe, nvml_read, part.cudnn_benchmark)
        record = {"overheads": o, "device_name": o["device_name"], **compare_overheads(o, cuda_arch(o["capability"]))}
    elif part.kind == "config":
        record = _run_config(part, out, probe, nvml_read, profile, hidden, predict)
    elif part.kind == "cache_release":
        record = _run_cache_release(part, probe, edges or release_edges, steps_at or steps_at_batch)
    else:
        raise ValueError(f"part kind {part.kind!r} does not run in a child process")
    record.update(status="ok", seconds=round(time.perf_counter() - t0, 2),
                  env={v: os.environ.get(v) for v in ENV_VARS})
    return record


def _run_config(part, out, probe, nvml_read, profile, hidden, predict) -> dict:
    from hpff_bench.config import RunConfig

    if profile is None:
        from hpff_bench.profiling import profile_config as profile
    if predict is None:
        from hpff_bench.memory.predict import predict
    hidden = hidden_allocated if hidden is None else hidden
    cfg = RunConfig.from_dict(part.config).validate()
    before = _safe(nvml_read)
    probe.init_context()
    after = _safe(nvml_read)
    context_init = context_bytes(before, after, probe.reserved()) if before and after else None
    probe.set_cudnn_benchmark(part.cudnn_benchmark)
    arch = cuda_arch(probe.capability())
    snapshot = str(out / "snapshot" / (_slug(part.name) + ".pickle")) if part.snapshot else None
    measured_record = profile(cfg, snapshot=snapshot, with_prediction=False)
    hidden_bytes = hidden(cfg, probe)
    at_rest = _safe(nvml_read)
    # the context once this workload's kernels are loaded (lazy loading grows it)
    context_after = None
    if at_rest is not None and at_rest[1] is not None:
        context_after = int(at_rest[1] - probe.reserved())
    # the prediction as a user gets it: this GPU's architecture, the default assumed context
    predicted_full = predict(cfg, cuda_arch=arch)["predicted"]
    predicted = {k: predicted_full.get(k) for k in PREDICTED_KEYS}
    measured = {k: measured_record["memory"].get(k) for k in MEASURED_KEYS}
    measured["hidden_allocated_bytes"] = hidden_bytes
    if measured.get("snapshot"):  # what --snapshot wrote, and how big it is
        measured["snapshot"] = {k: {"path": v, "bytes": os.path.getsize(v)} for k, v in measured["snapshot"].items()}
    return {
        "config": measured_record["config"],
        "label": measured_record["label"],
        "step_seconds": measured_record["step_seconds"],
        "device_name": probe.name(),
        "capability": list(probe.capability()),
        "versions": probe.versions(),
        "cuda_arch": arch,
        "context_at_init": context_init,
        "context_after_run_bytes": context_after,
        "memory": measured,
        "predicted": predicted,
        "errors": compare(measured, predicted, context_after),
    }


def _run_cache_release(part, probe, edges, steps_at) -> dict:
    """`estimate --cache-release` against the device: predict the edges for a device of
    part.capacity_bytes (no context: the allocator's own limit), limit the allocator to it, then
    step the batch above the unreleased edge, the last batch predicted to run and the first
    predicted to run out of memory."""
    from hpff_bench.config import RunConfig

    cfg = RunConfig.from_dict(part.config).validate()
    probe.init_context()
    arch = cuda_arch(probe.capability())
    predicted = edges(cfg, part.capacity_bytes, arch)
    probe.limit_to(part.capacity_bytes)
    batches = sorted({b for b in (predicted["fits"] + 1, predicted["runs"], predicted["fails"]) if b})
    measured = {}
    for b in batches:
        measured[str(b)] = steps_at(cfg.replace(batch_size=b), probe)
        probe.release()
    expect = {b: b <= predicted["runs"] for b in batches}
    return {
        "config": part.config, "capacity_bytes": part.capacity_bytes, "device_name": probe.name(), "cuda_arch": arch,
        "predicted": predicted, "measured": measured,
        "agrees": all(measured[str(b)]["ran"] == runs for b, runs in expect.items()),
    }


def release_edges(cfg, capacity_bytes: int, arch: str) -> dict:
    """The budget search with the cache released (profiling.estimate_batches), for a device whose
    allocator may reserve capacity_bytes: the largest batch that fits unreleased, the largest that
    runs, the first that runs out of memory, and the retries per step predicted at the edge."""
    from hpff_bench.profiling import estimate_batches

    b = estimate_batches(cfg, [cfg.batch_size], budget_bytes=capacity_bytes, cuda_context_bytes=0,
                         release_cache=True, cuda_arch=arch)["budget"]
    r = b["with_cache_release"]
    return {"fits": b["largest_batch"] or 0, "runs": r["largest_batch"] or 0, "fails": r["smallest_failing_batch"],
            "alloc_retries_per_step": r["alloc_retries_per_step"]}


def steps_at_batch(cfg, probe) -> dict:
    """Warm-up steps, then one measured step: whether it ran, and the allocator's retries in it."""
    import torch

    from hpff_bench.methods import build_method, synthetic_batch

    try:
        method = build_method(cfg, device=probe.device)
        x, y = synthetic_batch(cfg, probe.device)
        for _ in range(cfg.warmup):
            method.train_step(x, y)
        before = probe.alloc_retries()
        method.train_step(x, y)
        return {"ran": True, "alloc_retries": probe.alloc_retries() - before, "reserved_bytes": probe.reserved()}
    except torch.cuda.OutOfMemoryError as e:
        return {"ran": False, "message": str(e).splitlines()[0]}


def hidden_allocated(cfg, probe) -> int:
    """Allocator bytes after warm-up beyond the method's live tensors (its parameters, gradients,
    optimizer state and batch): the workspaces the libraries keep (cuBLAS; cuDNN's are freed)."""
    import gc

    from hpff_bench.memory.tracker import LiveTensorTracker, cuda_block_size
    from hpff_bench.methods import build_method, synthetic_batch

    gc.collect()
    method = build_method(cfg, device=probe.device)
    x, y = synthetic_batch(cfg, probe.device)
    for _ in range(2):
        method.train_step(x, y)
    tracker = LiveTensorTracker(rounding=cuda_block_size, record_events=False)
    tracker.register_method_state(method.parameters(), method.buffers(), method.optimizer, (x, y))
    return int(probe.allocated() - tracker.current)


def _safe(read):
    if read is None:
        return None
    try:
        return read()
    except Exception:
        return None


def _slug(name: str) -> str:
    """A file name of letters, digits, '-' and '_' only (what every file system and copy tool keeps)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name).strip("_")
