"""Which GPUs a sweep may give its worker slots (`sweep --gpus 0,1,2,3` or `--gpus all`).

Devices are named by their NVML index (what `nvidia-smi` shows). A worker slot gets its device
through `CUDA_VISIBLE_DEVICES=<index>` with `CUDA_DEVICE_ORDER=PCI_BUS_ID`: CUDA's default
order is "fastest first", NVML's is PCI bus order, and only with PCI_BUS_ID do the two agree, so
that `cuda:0` inside the worker is the physical GPU the record names and NVML reads the same
device (hpff_bench.memory.nvml maps a visible index to an NVML index). A CUDA_VISIBLE_DEVICES
already set in the sweep's environment (a Slurm allocation, a shared node) limits the choice.
Discovery reads NVML only, so the sweep process never creates a CUDA context.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from hpff_bench import validation as V
from hpff_bench.errors import ConfigError

GPU_ENV = "HPFF_BENCH_GPU"  # the slot's device, as JSON, for the worker's record


@dataclass(frozen=True)
class Gpu:
    index: int  # NVML index
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def nvml_gpus() -> tuple[list[Gpu], str | None]:
    """(every GPU NVML sees, why there are none); tests replace this function."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:  # no driver, no library: a CPU-only machine
        return [], f"NVML is not usable ({type(e).__name__}: {e})"
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append(Gpu(i, _text(pynvml.nvmlDeviceGetName(h)), _text(pynvml.nvmlDeviceGetUUID(h)),
                           _text(pynvml.nvmlDeviceGetPciInfo(h).busId)))
        return out, None if out else "NVML reports no device"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def visible_gpus(visible: str | None = None) -> tuple[list[Gpu], str | None]:
    """nvml_gpus() limited by this process's CUDA_VISIBLE_DEVICES (indices or UUIDs)."""
    gpus, why = nvml_gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible is None or not gpus:
        return gpus, why
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    kept = [g for g in gpus if str(g.index) in entries or (g.uuid and g.uuid in entries)]
    return kept, None if kept else f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"


def select_gpus(spec: str, available: list[Gpu] | None = None) -> list[Gpu]:
    """`all` or comma-separated NVML indices -> the devices, checked (ConfigError otherwise)."""
    why = None
    if available is None:
        available, why = visible_gpus()
    text = str(spec).strip()
    if not available:
        raise ConfigError(f"--gpus {text}: no GPU on this machine ({why or 'none found'}); "
                          "run without --gpus (one task at a time on the CPU, or --jobs N)")
    if text == "all":
        return list(available)
    by_index = {g.index: g for g in available}
    chosen: list[Gpu] = []
    for part in text.split(","):
        part = part.strip()
        if V.natural(part) is None:
            raise ConfigError(f"--gpus {text}: {part!r} is not a GPU index; use `all` or indices like 0,1,2,3")
        i = int(part)
        if i not in by_index:
            raise ConfigError(f"--gpus {text}: there is no GPU {i}; this machine has "
                              + ", ".join(str(g.index) for g in available))
        if by_index[i] in chosen:
            raise ConfigError(f"--gpus {text}: GPU {i} is listed twice")
        chosen.append(by_index[i])
    return chosen


def slot_env(gpu: Gpu) -> dict[str, str]:
    """Environment variables that give a worker process `gpu` and nothing else."""
    return {"CUDA_VISIBLE_DEVICES": str(gpu.index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            GPU_ENV: json.dumps(asdict(gpu))}


def record_gpu(environ=None) -> dict | None:
    """The record's `env.gpu`: the device a process with `environ` (default: this one's) was
    given, by --gpus (exact) or by Slurm (NVML's view of CUDA_VISIBLE_DEVICES); None: none."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    given = environ.get(GPU_ENV)
    if given:
        try:
            return {**json.loads(given), "cuda_visible_devices": visible}
        except json.JSONDecodeError:
            pass
    if visible is None:
        return None
    gpus, _ = visible_gpus(visible)  # Slurm's allocation: NVML names what CUDA_VISIBLE_DEVICES shows
    first = gpus[0] if gpus else None
    return {**(asdict(first) if first else {"index": None}), "cuda_visible_devices": visible}
