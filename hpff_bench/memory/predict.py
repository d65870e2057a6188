"""Predict a CUDA run's memory on a machine without a GPU.

How: build the method and run one measured training step inside FakeTensorMode on cpu fake
tensors (sizes and lifetimes are those of a real run; nothing is allocated or computed),
with SGD's foreach kernels as CUDA uses them, under the live-tensor tracker. The state a
warm-up step leaves behind (gradients, momentum buffers) is synthesised before it (zero
gradients + one optimizer step), which costs a fraction of a step. The tracker's event log
is replayed through a model of the CUDA caching allocator.
The prediction is of a run after warm-up: a real run's later warm-up steps can only grow the
allocator's cache further, which the model does not replay (see allocator_model).

Every number is the sum of labelled terms, each from a mechanism we can name:
- live_tensors (traced): tensor storages live at the peak, each rounded to the allocator's
  512-B blocks; exact on fake tensors.
- allocator_blocks (modelled): blocks handed out whole because the remainder was too small
  to split (large pool: <= 1 MiB), over the live bytes at the peak.
- cublas_workspace (assumed): cuBLAS allocates a workspace through the caching allocator per
  (handle, stream) the first time it runs and keeps it; handles are per thread, and a
  training step uses two threads (forward on the caller's, backward on autograd's device
  thread): 2 x 32 MiB on Hopper, 2 x 4 MiB on earlier GPUs (docs/memory.md). Present after
  warm-up, so inside max_memory_allocated.
  => peak_allocated_bytes = live_tensors + allocator_blocks + cublas_workspace
     (predicts torch.cuda.max_memory_allocated after warm-up and a peak reset)
- allocator_cache (modelled): free blocks the allocator keeps in its segments.
  => peak_reserved_bytes = peak_allocated_bytes + allocator_cache (max_memory_reserved)
- cuda_context (assumed, never measured here): CUDA context and loaded kernels, which NVML
  counts but the allocator does not; docs/memory.md gives ~0.3-0.6 GB; override it with a
  value measured on your GPU (hpff_bench.gpu_check measures one).
  => device_used_bytes = peak_reserved_bytes + cuda_context (NVML's per-process use)
- least_reserved_bytes (modelled): the smallest reserve the step runs in when the allocator
  gives its wholly free cached segments back on an out-of-memory and retries, as PyTorch's
  does on a full GPU (allocator_model.least_capacity); between the allocated and the
  reserved peak. A roomy GPU keeps the whole reserved peak; this is what the step needs.
  => least_device_bytes = least_reserved_bytes + cuda_context (the smallest GPU it runs on)
Not modelled: cuDNN convolution workspaces (transient allocations whose size cuDNN's
heuristics pick at run time), cuDNN batch-norm reserve space, other processes on the GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hpff_bench.errors import ConfigError
from hpff_bench.memory.allocator_model import OutOfMemory, least_capacity, replay
from hpff_bench.memory.bound import lower_bound
from hpff_bench.memory.trace import trace_training
from hpff_bench.memory.tracker import cuda_block_size

MIB = 1 << 20
# cuBLAS workspace per handle and stream (docs/memory.md: 4 MiB, 32 MiB on Hopper).
CUBLAS_WORKSPACE_BYTES = {
    "hopper": 32 * MIB,
    "ada": 4 * MIB,
    "ampere": 4 * MIB,
    "turing": 4 * MIB,
    "volta": 4 * MIB,
}
CUDA_ARCHS = tuple(CUBLAS_WORKSPACE_BYTES)
DEFAULT_CUDA_ARCH = "hopper"
CUBLAS_WORKSPACES = 2  # forward (caller's thread) + backward (autograd's device thread)
# An assumption, labelled as such in every output: the middle of the 0.3-0.6 GB in docs/memory.md.
DEFAULT_CUDA_CONTEXT_BYTES = 512 * MIB


def predict(
    config,
    *,
    cuda_arch: str = DEFAULT_CUDA_ARCH,
    cuda_context_bytes: int | None = None,
    cublas_workspaces: int = CUBLAS_WORKSPACES,
    progress: Callable[[str], None] | None = None,
    keep_events: bool = False,
) -> dict:
    """Predicted CUDA memory for one training step of `config` (see the module docstring).

    Returns {"modules", "params", "forward_calls", "flops", "predicted": {...}}; flops are those of
    the traced step (hpff_bench.flops: total, backbone, aux, other). keep_events=True adds
    "events", the tracker's event log (thousands of entries: for the budget search's affine
    model, memory.affine; not for records)."""
    if cuda_arch not in CUBLAS_WORKSPACE_BYTES:
        raise ConfigError(f"unknown --cuda-arch {cuda_arch!r}; allowed: {', '.join(CUDA_ARCHS)}")
    if cuda_context_bytes is not None and cuda_context_bytes < 0:
        raise ConfigError(f"--cuda-context-bytes must be >= 0, got {cuda_context_bytes}")
    context_given = cuda_context_bytes is not None
    context = _context_bytes(cuda_context_bytes)
    t0 = time.perf_counter()
    trace = trace_training(
        config,
        fake=True,
        rounding=cuda_block_size,
        # The state a warm-up step leaves (gradients, momentum buffers) is synthesised rather
        # than computed: a whole step costs seconds on fake tensors and changes no live byte.
        synthetic_warmup=True,
        warmup=0,
        steps=1,  # every step after the first is the same on fake tensors
        foreach=True,  # torch's default on CUDA: temporaries the size of all gradients
        record_events=True,
        progress=progress,
    )
    tr = trace.tracker
    ws_each = CUBLAS_WORKSPACE_BYTES[cuda_arch]
    ws_total = ws_each * cublas_workspaces
    stats = allocator_stats(tr.events, cuda_arch=cuda_arch, cublas_workspaces=cublas_workspaces)
    least = least_capacity(tr.events, persistent_bytes=[ws_each] * cublas_workspaces)
    bound = lower_bound(tr)
    live = tr.peak
    terms = {
        "live_tensors": _term(live, "traced", "tensor storages live at the peak (fake-tensor trace), each rounded to 512-B blocks"),
        "allocator_blocks": _term(
            stats.peak_allocated_bytes - live - ws_total,
            "modelled",
            "whole blocks handed out (unsplit remainders) over the live bytes, CUDA caching-allocator model",
        ),
        "cublas_workspace": _term(
            ws_total,
            "assumed",
            f"{cublas_workspaces} x {ws_each // MIB} MiB ({cuda_arch}): one per cuBLAS handle (forward and backward threads)",
        ),
        "allocator_cache": _term(
            stats.peak_reserved_bytes - stats.peak_allocated_bytes,
            "modelled",
            "free blocks cached in the allocator's segments at the reserved peak",
        ),
        "cuda_context": _term(
            context,
            "assumed" if not context_given else "given",
            "CUDA context and kernel images; not measurable without a GPU"
            + ("" if context_given else "; default assumption, set --cuda-context-bytes"),
        ),
    }
    predicted = {
        "peak_allocated_bytes": stats.peak_allocated_bytes,
        "peak_reserved_bytes": stats.peak_reserved_bytes,
        "device_used_bytes": _device_used(stats, context),
        "least_reserved_bytes": least,
        "least_device_bytes": least + context,
        "peak_requested_bytes": stats.peak_requested_bytes,
        "live_peak_bytes": live,
        "breakdown_bytes": dict(tr.peak_breakdown),
        "per_module_peak_bytes": dict(tr.per_scope_peak),
        "aux_scope_peak_bytes": dict(tr.aux_scope_peak),
        "lower_bound_bytes": bound["lower_bound_bytes"],
        "lower_bound_terms": bound["terms"],
        "lower_bound_module": bound["binding_module"],
        "efficiency": bound["efficiency"],
        "terms": terms,
        "assumptions": {
            "cuda_arch": cuda_arch,
            "cublas_workspaces": cublas_workspaces,
            "cuda_context_bytes": context,
            "optimizer_foreach": True,
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
    out = {
        "modules": trace.modules,
        "params": trace.params,
        "forward_calls": trace.forward_calls,
        "flops": trace.flops,
        "predicted": predicted,
    }
    if keep_events:
        out["events"] = tr.events
    return out


def allocator_stats(events, *, cuda_arch: str = DEFAULT_CUDA_ARCH, cublas_workspaces: int = CUBLAS_WORKSPACES):
    """The allocator model's peaks for an event log, the cuBLAS workspaces held from the start."""
    ws_each = CUBLAS_WORKSPACE_BYTES[cuda_arch]
    return replay(events, persistent_bytes=[ws_each] * cublas_workspaces)


def device_used_bytes(
    events,
    *,
    cuda_arch: str = DEFAULT_CUDA_ARCH,
    cuda_context_bytes: int | None = None,
    cublas_workspaces: int = CUBLAS_WORKSPACES,
) -> int:
    """predict()'s device_used_bytes for an event log, without tracing: what the budget search
    evaluates on the affine model's synthesised logs."""
    stats = allocator_stats(events, cuda_arch=cuda_arch, cublas_workspaces=cublas_workspaces)
    return _device_used(stats, _context_bytes(cuda_context_bytes))


def alloc_retries_within(
    events,
    budget_bytes: int,
    *,
    cuda_arch: str = DEFAULT_CUDA_ARCH,
    cuda_context_bytes: int | None = None,
    cublas_workspaces: int = CUBLAS_WORKSPACES,
) -> int | None:
    """Whether an event log runs on a device of `budget_bytes` when the allocator, as PyTorch's,
    releases its wholly free cached segments on an out-of-memory and retries: the retries in
    the measured step (num_alloc_retries; each costs a device synchronisation), or None where
    it runs out of memory all the same. The segments may take the budget less the CUDA context."""
    capacity = budget_bytes - _context_bytes(cuda_context_bytes)
    ws_each = CUBLAS_WORKSPACE_BYTES[cuda_arch]
    try:
        return replay(events, persistent_bytes=[ws_each] * cublas_workspaces, capacity=capacity).alloc_retries
    except OutOfMemory:
        return None


def _context_bytes(given: int | None) -> int:
    return DEFAULT_CUDA_CONTEXT_BYTES if given is None else given


def _device_used(stats, context: int) -> int:
    """What NVML would report for the process: the allocator's reserved peak + CUDA context."""
    return stats.peak_reserved_bytes + context


def _term(nbytes: int, source: str, what: str) -> dict:
    return {"bytes": int(nbytes), "source": source, "what": what}
