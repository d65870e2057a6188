"""The bytes a GPU run holds beyond its tensors, measured: CUDA context, cuBLAS and cuDNN workspaces.

Why: the prediction (memory.predict) can only *assume* these terms on a machine without a GPU
(512 MiB context, 2 x 32 MiB cuBLAS workspaces on Hopper, no cuDNN workspace). Each is
measured here by one named mechanism, from readings a probe takes (memory.cuda_probe.CudaProbe
on a GPU; a fake one in tests), so the arithmetic below is tested on the CPU:
- context: NVML before and after the CUDA context is created; the process's NVML bytes minus
  the allocator's reserved bytes (what NVML sees that the allocator did not take), or, where
  NVML cannot attribute bytes to this pid, the device's growth minus reserved.
- cuBLAS workspace: allocated bytes after minus before the first matmul of a handle, its
  operands existing before and its result freed after (cuBLAS keeps one workspace per handle
  and stream, allocated through the caching allocator). Measured for a plain mm, a Linear with
  bias (torch may route it through cuBLASLt) and a backward (autograd's own thread = a second
  handle), in that order, so each number is that call's increment.
- cuDNN workspace: for one 3x3 convolution forward and backward, the allocator's peak during
  the call minus the bytes allocated before and the bytes of the results (a transient
  workspace, freed when the call returns), and the reserved bytes it left cached; with
  cudnn.benchmark off (heuristic algorithm) and on (cudnnFind tries algorithms first).
"""

from __future__ import annotations

from collections.abc import Callable

from hpff_bench.memory.nvml import Reading

MATMUL_KINDS = ("mm", "addmm", "backward")
CONV_PASSES = ("forward", "backward")
MATMUL_N = 1024  # large enough that cuBLAS picks a kernel that uses its workspace
# (N, C, H, W) inputs of the CIFAR ResNets' first and last stages at batch 1024, C -> C channels
CONV_SHAPES = ((1024, 16, 32, 32), (1024, 64, 8, 8))


def context_bytes(before: Reading, after: Reading, reserved_after: int) -> dict:
    """The CUDA context from NVML readings (device used, this pid's bytes) around its creation."""
    (dev0, _), (dev1, mine1) = before, after
    device_growth = dev1 - dev0
    if mine1 is not None:
        value, source = mine1 - reserved_after, "NVML process bytes after context creation - allocator reserved"
    else:
        value, source = device_growth - reserved_after, "NVML device growth over context creation - allocator reserved"
    return {
        "bytes": int(value),
        "mechanism": source,
        "nvml_device_growth_bytes": int(device_growth),
        "nvml_process_bytes": mine1,
        "reserved_bytes": int(reserved_after),
    }


def workspace_increment(reading: dict) -> dict:
    """What a first library call left allocated (its workspace) and the segments it added."""
    before, after = reading["before"], reading["after"]
    return {
        "bytes": int(after["allocated"] - before["allocated"]),
        "reserved_growth_bytes": int(after["reserved"] - before["reserved"]),
    }


def transient_workspace(reading: dict) -> dict:
    """A call's transient workspace: peak during it - allocated before - its results' blocks."""
    before, after = reading["before"], reading["after"]
    return {
        "bytes": int(reading["peak_allocated"] - before["allocated"] - reading["output_bytes"]),
        "kept_allocated_bytes": int(after["allocated"] - before["allocated"]),
        "reserved_growth_bytes": int(after["reserved"] - before["reserved"]),
    }


def measure_overheads(probe, nvml_read: Callable[[], Reading] | None, cudnn_benchmark: bool) -> dict:
    """Run the whole sequence in a process whose CUDA context does not exist yet.

    nvml_read: one NVML reading (device used, this pid's bytes), or None where NVML is not
    usable (the context is then not measured)."""
    out: dict = {"cudnn_benchmark": cudnn_benchmark}
    before = _read(nvml_read)
    probe.init_context()
    after = _read(nvml_read)
    reserved = probe.reserved()
    if before is None or after is None:
        out["context"] = {"bytes": None, "mechanism": "NVML unavailable"}
    else:
        out["context"] = context_bytes(before, after, reserved)
    out["capability"] = list(probe.capability())
    out["device_name"] = probe.name()
    out["versions"] = probe.versions()
    out["cublas"] = {
        kind: {"n": MATMUL_N, **workspace_increment(probe.first_matmul(MATMUL_N, kind))} for kind in MATMUL_KINDS
    }
    out["cublas_total_bytes"] = sum(v["bytes"] for v in out["cublas"].values())
    probe.set_cudnn_benchmark(cudnn_benchmark)
    out["cudnn"] = [
        {"shape": list(shape), "pass": p, **transient_workspace(probe.first_conv(shape, shape[1], p))}
        for shape in CONV_SHAPES
        for p in CONV_PASSES
    ]
    end = _read(nvml_read)
    if end is not None and end[1] is not None:
        # kernels are loaded lazily (CUDA_MODULE_LOADING=LAZY): the context grows as they are
        out["context_after_bytes"] = int(end[1] - probe.reserved())
    return out


def _read(nvml_read):
    if nvml_read is None:
        return None
    try:
        return nvml_read()
    except Exception:  # NVML failing mid-run: the context goes unmeasured, the rest does not
        return None
