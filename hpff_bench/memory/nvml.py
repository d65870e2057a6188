"""NVML's view of GPU memory: what the driver says is used, sampled by a background thread.

Why: the allocator does not see the CUDA context, kernel images or other processes; NVML
does (`nvmlDeviceGetMemoryInfo(h).used` for the device, `usedGpuMemory` per process). It
only gives current values, so peaks need sampling; NVML calls release the GIL, so a thread
samples without stopping the training step. NVML indices ignore CUDA_VISIBLE_DEVICES, so the
torch device is mapped through it. Without a GPU or the library the probe says it is
unavailable and why; it never raises into the run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

# a reading: (device used bytes, this process's bytes or None where NVML cannot tell)
Reading = tuple[int, "int | None"]

DEFAULT_INTERVAL_S = 0.005


@dataclass
class NvmlResult:
    available: bool
    reason: str | None = None  # why unavailable, or what went wrong while sampling
    peak_used_bytes: int | None = None
    peak_process_bytes: int | None = None  # None where NVML never saw this pid
    samples: int = 0
    interval_s: float = DEFAULT_INTERVAL_S

    @property
    def source(self) -> str | None:
        """Which peak is available: 'process' (per-pid), 'device' (device total only) or None."""
        if not self.available or self.peak_used_bytes is None:
            return None
        return "process" if self.peak_process_bytes is not None else "device"

    def as_dict(self) -> dict:
        return {
            "available": self.available,
            "reason": self.reason,
            "source": self.source,
            "peak_used_bytes": self.peak_used_bytes,
            "peak_process_bytes": self.peak_process_bytes,
            "samples": self.samples,
            "interval_s": self.interval_s,
        }


def nvml_index(torch_index: int, visible: str | None = None) -> int | str:
    """NVML device for a torch CUDA index: an int index, or a UUID string ("GPU-…"/"MIG-…").

    CUDA_VISIBLE_DEVICES (numbers or UUIDs, comma-separated) renumbers devices for CUDA but
    not for NVML; unset or empty means identity."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if not visible or not visible.strip():
        return torch_index
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if torch_index >= len(entries):
        raise ValueError(f"cuda:{torch_index} is not among CUDA_VISIBLE_DEVICES={visible!r}")
    entry = entries[torch_index]
    return int(entry) if entry.isdigit() else entry


def nvml_reader(torch_index: int = 0, pid: int | None = None) -> Callable[[], Reading]:
    """A reading function for the real NVML library (raises if NVML is not usable)."""
    import pynvml  # the nvidia-ml-py package

    pynvml.nvmlInit()
    target = nvml_index(torch_index)
    if isinstance(target, int):
        handle = pynvml.nvmlDeviceGetHandleByIndex(target)
    else:
        handle = pynvml.nvmlDeviceGetHandleByUUID(target)
    pid = os.getpid() if pid is None else pid

    def read() -> Reading:
        used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        mine = None
        try:
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory is not None:
                    mine = (mine or 0) + int(proc.usedGpuMemory)
        except pynvml.NVMLError:
            mine = None
        return used, mine

    return read


class NvmlSampler:
    """`with NvmlSampler(...) as s: work()` then `s.result`; or start()/stop().

    reader: a function returning (device used, process bytes or None); default: real NVML for
    `torch_index`. Tests inject one."""

    def __init__(
        self,
        torch_index: int = 0,
        interval_s: float = DEFAULT_INTERVAL_S,
        reader: Callable[[], Reading] | None = None,
    ):
        self.interval_s = interval_s
        self._reader = reader
        self._torch_index = torch_index
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result = NvmlResult(available=False, reason="not started", interval_s=interval_s)

    def start(self) -> NvmlSampler:
        if self._reader is None:
            try:
                self._reader = nvml_reader(self._torch_index)
            except Exception as e:  # no library, no driver, no GPU: unavailable, not fatal
                self.result = NvmlResult(False, f"NVML unavailable: {type(e).__name__}: {e}", interval_s=self.interval_s)
                return self
        self.result = NvmlResult(True, interval_s=self.interval_s)
        if not self._sample():
            return self
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> NvmlResult:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample()  # the state at the end of the work
        return self.result

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._sample():
                return

    def _sample(self) -> bool:
        r = self.result
        try:
            used, mine = self._reader()
        except Exception as e:
            if r.samples == 0:
                r.available = False
            r.reason = f"NVML read failed: {type(e).__name__}: {e}"
            return False
        r.samples += 1
        if r.peak_used_bytes is None or used > r.peak_used_bytes:
            r.peak_used_bytes = int(used)
        if mine is not None and (r.peak_process_bytes is None or mine > r.peak_process_bytes):
            r.peak_process_bytes = int(mine)
        return True
