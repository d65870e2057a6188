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
