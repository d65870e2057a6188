"""Multi-process training under torchrun, with DistributedDataParallel's semantics.

Why not wrap the model in DistributedDataParallel: DDP all-reduces from autograd hooks during
*every* backward call and expects each parameter to become ready once per iteration. Local
learning runs one backward per module (HiLo even several per module), so DDP would reduce
partial gradients several times or fail on parameters that are "ready twice". Instead each
process runs the whole local step on its shard, and once per step, after the last local
backward and before the optimizer step, every gradient (backbone and auxiliary nets) is
averaged across processes with one all-reduce per bucket. The result is what DDP computes:
the mean over processes of each process's gradient.

BatchNorm layers normalise with each process's own batch statistics, as under DDP. Gradients
therefore equal a single-process step on the concatenated batch exactly when no layer couples
samples; with BatchNorm they equal the mean of the per-shard gradients (what the tests check).
SyncBatchNorm would restore the concatenated-batch statistics, but it runs on GPUs only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

_BUCKET_BYTES = 25 * 1024 * 1024  # DDP's default bucket size


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU); a no-op alone."""
    if not launched_by_torchrun():
        return Context()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return Context(rank, world, local)


def device_for(ctx: Context, device: str) -> torch.device:
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", ctx.local_rank)


def average_gradients(parameters, world_size: int) -> None:
    """All-reduce-average every existing .grad, bucketed like DDP (flatten, reduce, copy back)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    bucket, size = [], 0
    for g in grads:
        bucket.append(g)
        size += g.numel() * g.element_size()
        if size >= _BUCKET_BYTES:
            _reduce_bucket(bucket, world_size)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket, world_size)


def _reduce_bucket(bucket: list[torch.Tensor], world_size: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in bucket])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in bucket:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def sum_across(values: list[float], ctx: Context) -> list[float]:
    """Sum numbers (e.g. correct / total counts) over processes."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def gather(obj, ctx: Context) -> list:
    """Every process's `obj` (e.g. its peak memory), in rank order."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def attach(method, ctx: Context) -> None:
    """Make `method.train_step` average gradients across processes before its optimizer step."""
    if ctx.enabled:
        params = list(method.parameters())
        method.grad_sync = lambda: average_gradients(params, ctx.world_size)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
