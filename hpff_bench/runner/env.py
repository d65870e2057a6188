"""The `env` object of a result record: software, device and commit a result was produced on.

`capture_env(init_cuda=False)` never creates a CUDA context: the sweep's parent process calls
it, and a context there would show up in the workers' NVML numbers. Device name and driver then
come from NVML. Workers that already use CUDA pass `init_cuda=True`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    return f"{name} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD of the checkout this package runs from (read-only `git rev-parse`), else None."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _nvml() -> tuple[str | None, str | None]:
    """(driver version, first visible device's name) from NVML, or Nones."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None, None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        index = 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if visible.isdigit():
            index = int(visible)  # NVML indices ignore CUDA_VISIBLE_DEVICES
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
        name = name.decode() if isinstance(name, bytes) else name
        return driver, name
    except Exception:
        return None, None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


@functools.lru_cache(maxsize=2)
def _static_env(init_cuda: bool) -> dict:
    import torch

    cudnn = None
    try:
        if torch.backends.cudnn.is_available():
            cudnn = torch.backends.cudnn.version()
    except Exception:
        pass
    driver, nvml_name = _nvml()
    device_name = nvml_name
    if init_cuda and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(torch.cuda.current_device())
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "driver": driver,
        "device_name": device_name or "cpu",
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "executable": sys.executable,
    }


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def capture_env(init_cuda: bool = False) -> dict:
    """torch, cuda, cudnn, driver, device_name, cpu, python, git_commit, time, hostname (+platform)."""
    return {**_static_env(init_cuda), "time": now()}
