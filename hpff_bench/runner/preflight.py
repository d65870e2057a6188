"""Checks that need the model's shapes or the machine, run before any real tensor exists.

Why: a task that cannot run should be an exit-2 line before a worker starts or an epoch runs,
not an `error` record (or a traceback) after minutes. Everything here is shape-only: the
network is built on the meta device (no memory, no compute), so a check costs < 1 s.

- device: `--device cuda` for measured work (profile, train) needs a CUDA device here;
- patch grid: `--pff-grid n` must divide every feature map an auxiliary net sees; the method
  itself checks this while it is built, so the check is a build on the meta device;
- host memory: a run on the CPU holds at least its input batch (B x 3 x H x W fp32) and, at
  one moment, the largest output of a single network unit (every method keeps a unit's
  output until the next unit has consumed it). When those two alone exceed the memory the
  kernel reports available (/proc/meminfo MemAvailable), the run cannot fit;
- tensor sizes (every kind, estimates too): the same two tensors, the input batch and the
  largest unit output, each at most 1 PiB (validation.MAX_BYTES, the largest --budget): no
  device holds more, and far below 2^63 bytes, where torch's size arithmetic overflows (a
  fake-tensor trace of a 2^31-image batch of 65,536-pixel images would fail inside torch).
"""

from __future__ import annotations

import functools
import os

from hpff_bench.config import RunConfig
from hpff_bench.errors import ConfigError

GIB = 1 << 30
FLOAT32_BYTES = 4


def check_device(cfg: RunConfig, what: str) -> None:
    """`--device cuda` needs a CUDA device for `what` (a profile or a training run)."""
    if cfg.device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--device cuda: no CUDA device is available here for {what} (use --device cpu or auto)")


def runs_on_cpu(cfg: RunConfig) -> bool:
    if cfg.device == "cpu":
        return True
    if cfg.device == "cuda":
        return False
    import torch

    return not torch.cuda.is_available()


def check_patch_grid(cfg: RunConfig) -> None:
    """Build the method on the meta device: its own divisibility check raises ConfigError."""
    if cfg.pff_grid <= 1:
        return
    import torch

    from hpff_bench.methods import build_method

    build_method(cfg, device=torch.device("meta"))


def _sample_numels(cfg: RunConfig) -> tuple[int, int]:
    """(one input image's elements, the largest single unit output's per image), by a meta forward."""
    return _numels(cfg.network, cfg.resolved_image_size, cfg.resolved_num_classes)


@functools.lru_cache(maxsize=64)  # a sweep checks many configurations of few shapes
def _numels(network: str, size: int, num_classes: int) -> tuple[int, int]:
    import torch

    from hpff_bench.networks import get_network

    with torch.device("meta"):
        units = get_network(network).build(num_classes).units
        h = torch.empty(2, 3, size, size)  # 2: training-mode BatchNorm refuses one value per channel (1x1 maps)
        largest = 0
        for u in units:
            h = u(h)
            largest = max(largest, h[0].numel())
    return 3 * size * size, largest


def min_host_bytes(cfg: RunConfig, batch_size: int | None = None) -> int:
    """Input batch + the largest single unit output, in bytes, from a meta forward (see above)."""
    image, largest = _sample_numels(cfg)
    return (batch_size or cfg.batch_size) * (image + largest) * FLOAT32_BYTES


def check_tensor_sizes(cfg: RunConfig, batch_size: int | None = None) -> None:
    """ConfigError when the input batch or the largest unit output alone exceeds 1 PiB (see above)."""
    from hpff_bench.validation import MAX_BYTES

    b = batch_size or cfg.batch_size
    need = b * max(_sample_numels(cfg)) * FLOAT32_BYTES
    if need > MAX_BYTES:
        raise ConfigError(
            f"--batch-size {b} at --image-size {cfg.resolved_image_size}: one tensor of the step (the input batch or "
            f"a layer's output) would hold {need / MAX_BYTES:,.1f} PiB, above the 1 PiB that any memory hpff-bench "
            "predicts or measures can be; use a smaller --batch-size or --image-size"
        )


def available_host_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_host_memory(cfg: RunConfig, what: str, batch_size: int | None = None) -> None:
    """ConfigError when a CPU run's minimum (see the module docstring) exceeds available memory."""
    if not runs_on_cpu(cfg):
        return
    need = min_host_bytes(cfg, batch_size)
    have = available_host_bytes()
    if have is not None and need > have:
        b = batch_size or cfg.batch_size
        s = cfg.resolved_image_size
        raise ConfigError(
            f"{what} at --batch-size {b}, --image-size {s} cannot fit in host memory: the input batch and the "
            f"largest single layer output alone need {need / GIB:,.1f} GiB, {have / GIB:,.1f} GiB is available; "
            "use a smaller --batch-size or --image-size"
        )


def check_measured_run(cfg: RunConfig, what: str, batch_size: int | None = None) -> None:
    """Every check a profile or training run of `cfg` needs before it starts."""
    check_device(cfg, what)
    check_tensor_sizes(cfg, batch_size)
    check_patch_grid(cfg)
    check_host_memory(cfg, what, batch_size)
