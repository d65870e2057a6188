"""The CUDA caching allocator's own numbers, and allocator snapshots.

Why: on a GPU the allocator is the ground truth for what PyTorch holds
(`max_memory_allocated` is what papers report). Its peaks only mean "this step" after a
warm-up (cuBLAS/cuDNN workspaces are allocated lazily and stay) and a peak reset between two
synchronisations (docs/memory.md).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

STAT_KEYS = {
    "peak_allocated_bytes": "allocated_bytes.all.peak",
    "peak_reserved_bytes": "reserved_bytes.all.peak",
    "peak_active_bytes": "active_bytes.all.peak",
    "peak_requested_bytes": "requested_bytes.all.peak",
    "allocated_bytes": "allocated_bytes.all.current",
    "reserved_bytes": "reserved_bytes.all.current",
}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def reset_peaks(device: torch.device | str) -> None:
    """Start a measured window: everything queued finishes, then peaks = current values."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    torch.cuda.synchronize(device)


def read_peaks(device: torch.device | str) -> dict[str, int]:
    """Allocator peaks (and current values) since the last reset; synchronises first."""
    torch.cuda.synchronize(device)
    return stats_from(torch.cuda.memory_stats(device))


def stats_from(memory_stats: dict) -> dict[str, int]:
    """Pick our fields out of a torch.cuda.memory_stats() dict (missing keys -> None)."""
    return {ours: memory_stats.get(theirs) for ours, theirs in STAT_KEYS.items()}


class SnapshotRecorder:
    """Record the allocator's history, then write a snapshot pytorch.org/memory_viz opens
    (`PATH`, a pickle) and an offline HTML render of its timeline (`PATH` + `.html`)."""

    def __init__(self, path: str | Path, max_entries: int = 200_000):
        self.path = Path(path)
        self.max_entries = max_entries
        self.html_path = self.path.with_name(self.path.name + ".html")

    def start(self) -> None:
        torch.cuda.memory._record_memory_history(max_entries=self.max_entries)

    def stop(self) -> dict[str, str]:
        """Dump and stop recording; returns the paths written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.cuda.memory._dump_snapshot(str(self.path))
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
        written = {"snapshot": str(self.path)}
        html = render_html(self.path)
        if html is not None:
            self.html_path.write_text(html)
            written["html"] = str(self.html_path)
        return written


def render_html(snapshot_path: str | Path) -> str | None:
    """The offline timeline (what `python -m torch.cuda._memory_viz trace_plot` writes)."""
    from torch.cuda import _memory_viz

    with open(snapshot_path, "rb") as f:
        data = pickle.load(f)
    try:
        return _memory_viz.trace_plot(data)
    except Exception:  # an empty or foreign snapshot: the pickle is still there
        return None


class CudaProbe:
    """The GPU-only calls of the GPU check, in one object so tests on the CPU inject a fake one.

    Each experiment returns raw allocator readings (bytes); memory.overheads turns them into
    context and workspace sizes, so that arithmetic is tested without a GPU."""

    def __init__(self, index: int = 0, device: torch.device | None = None):
        self.device = torch.device("cuda", index) if device is None else device  # tests: cpu

    # ----- the device and its allocator ----------------------------------------------------
    def init_context(self) -> None:
        """Create the CUDA context (lazy in torch until the first CUDA tensor)."""
        torch.cuda.init()
        torch.empty(1, device=self.device)
        torch.cuda.synchronize(self.device)

    def capability(self) -> tuple[int, int]:
        return tuple(torch.cuda.get_device_capability(self.device))

    def name(self) -> str:
        return torch.cuda.get_device_name(self.device)

    def versions(self) -> dict:
        """Library versions and the TF32 switches (they change which kernels, hence workspaces, run)."""
        return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}

    def allocated(self) -> int:
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.memory_allocated(self.device))

    def reserved(self) -> int:
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.memory_reserved(self.device))

    def reset_peaks(self) -> None:
        reset_peaks(self.device)

    def peak_allocated(self) -> int:
        return int(read_peaks(self.device)["peak_allocated_bytes"])

    def set_cudnn_benchmark(self, on: bool) -> None:
        torch.backends.cudnn.benchmark = bool(on)

    def limit_to(self, capacity_bytes: int) -> None:
        """Let the caching allocator reserve at most `capacity_bytes` (its cudaMalloc fails above,
        so it releases its cache and retries as on a full device)."""
        total = torch.cuda.get_device_properties(self.device).total_memory
        torch.cuda.set_per_process_memory_fraction(capacity_bytes / total, self.device)

    def alloc_retries(self) -> int:
        return int(torch.cuda.memory_stats(self.device).get("num_alloc_retries", 0))

    def release(self) -> None:
        """Give every cached segment back and forget the peaks (between two configurations)."""
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        reset_peaks(self.device)

    # ----- first calls that create workspaces ---------------------------------------------
    def first_matmul(self, n: int, kind: str) -> dict:
        """Allocated/reserved bytes around one matmul whose operands exist before and whose
        results are freed after: what stays is the library's workspace.

        kind: "mm" (cuBLAS, caller's thread), "addmm" (a Linear with bias: cuBLASLt where torch
        uses its epilogue), "backward" (the matmul's backward, which autograd runs on its own
        device thread, i.e. with another cuBLAS handle)."""
        a = torch.randn(n, n, device=self.device, requires_grad=kind == "backward")
        b = torch.randn(n, n, device=self.device)
        bias = torch.randn(n, device=self.device)
        before = self._reading()
        if kind == "mm":
            out = a @ b
            del out
        elif kind == "addmm":
            out = torch.nn.functional.linear(a, b, bias)
            del out
        elif kind == "backward":
            (a @ b).sum().backward()
            a.grad = None
        else:
            raise ValueError(f"unknown matmul kind {kind!r}")
        after = self._reading()
        return {"before": before, "after": after}

    def first_conv(self, shape: tuple[int, int, int, int], out_channels: int, pass_: str) -> dict:
        """Readings around one 3x3 convolution pass ("forward" or "backward"): allocated before,
        the peak during it, the bytes of the tensors it returns (block-rounded), allocated and
        reserved after those are freed. peak - before - outputs is cuDNN's transient workspace."""
        from hpff_bench.memory.tracker import cuda_block_size

        x = torch.randn(*shape, device=self.device)
        w = torch.randn(out_channels, shape[1], 3, 3, device=self.device)
        grad_y = torch.randn(shape[0], out_channels, shape[2], shape[3], device=self.device) if pass_ == "backward" else None
        before = self._reading()
        self.reset_peaks()
        if pass_ == "forward":
            outs = (torch.nn.functional.conv2d(x, w, padding=1),)
        elif pass_ == "backward":
            outs = torch.ops.aten.convolution_backward(
                grad_y, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, False]
            )
            outs = tuple(o for o in outs if o is not None)
        else:
            raise ValueError(f"unknown conv pass {pass_!r}")
        peak = self.peak_allocated()
        out_bytes = sum(cuda_block_size(o.untyped_storage().nbytes()) for o in outs)
        del outs
        after = self._reading()
        return {"before": before, "peak_allocated": peak, "output_bytes": out_bytes, "after": after}

    def _reading(self) -> dict:
        return {"allocated": self.allocated(), "reserved": self.reserved()}
