"""Check the memory probes and the prediction against a real GPU, once per GPU session.

    python -m hpff_bench.memory.gpu_check --out results/gpu           # ~3-5 min on an H200
    python -m hpff_bench.memory.gpu_check --out results/gpu --quick   # 3 configurations

Why: the prediction's terms (block rounding, cuBLAS workspaces, CUDA context) are modelled or
assumed on a machine without a GPU; this script measures them. Every configuration runs in
its own process (a fresh CUDA context and caching allocator, so reserved bytes and NVML are
not polluted by the one before) and reports:
- the allocator's peaks (allocated, reserved, active, requested) after warm-up and a peak
  reset, NVML's device and per-process peaks (sampled every 5 ms);
- the prediction for the same configuration and the GPU's architecture, and the relative
  error of each predicted number against its measured counterpart;
- `hidden_allocated_bytes`: what the allocator holds after warm-up beyond the live tensors
  (cuBLAS/cuDNN workspaces; predicted: the cublas_workspace term);
- `context_bytes`: NVML's per-process use minus the allocator's reserved bytes at rest (the
  CUDA context the prediction can only assume; feed it to --cuda-context-bytes).
Writes gpu_check.json (everything) and gpu_check.md (a table of relative errors) under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MIB = 1 << 20

# (network, method, k, batch, extra RunConfig fields)
CONFIGS: tuple[tuple[str, str, int, int, dict], ...] = (
    ("resnet32", "bp", 1, 256, {}),
    ("resnet32", "dgl", 16, 256, {}),
    ("resnet32", "infopro", 16, 256, {}),
    ("resnet32", "infopro", 16, 256, {"hilo": True, "pff_grid": 2}),
    ("resnet110", "bp", 1, 1024, {}),
    ("resnet110", "gc", 2, 1024, {}),
    ("resnet110", "dgl", 2, 1024, {}),
    ("resnet110", "infopro", 16, 1024, {}),
    ("resnet110", "dgl", 16, 1024, {"hilo": True, "pff_grid": 2}),
)
QUICK = (0, 2, 7)

COMPARE = (  # (measured field, predicted field)
    ("peak_allocated_bytes", "peak_allocated_bytes"),
    ("peak_reserved_bytes", "peak_reserved_bytes"),
    ("nvml_process_peak_bytes", "device_used_bytes"),
)


def configs(quick: bool = False) -> list[dict]:
    """The RunConfig dicts checked (fields beyond the defaults)."""
    chosen = [CONFIGS[i] for i in QUICK] if quick else list(CONFIGS)
    return [
        {"network": n, "method": m, "k": k, "batch_size": b, "warmup": 2, "steps": 3, "device": "cuda", **extra}
        for n, m, k, b, extra in chosen
    ]


def cuda_arch(capability: tuple[int, int]) -> str:
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


def relative_error(predicted: int | None, measured: int | None) -> float | None:
    if predicted is None or not measured:
        return None
    return (predicted - measured) / measured


def compare(record: dict) -> dict:
    """Relative errors of the predicted numbers against the measured ones."""
    m, p = record["memory"], record.get("predicted") or {}
    return {f"{a}_vs_{b}": relative_error(p.get(b), m.get(a)) for a, b in COMPARE}


# ----- one configuration (runs in a child process) ---------------------------------------
def check_one(cfg_dict: dict) -> dict:
    import torch

    from hpff_bench.config import RunConfig
    from hpff_bench.memory.nvml import NvmlSampler
    from hpff_bench.profiling import profile_config

    cfg = RunConfig.from_dict(cfg_dict).validate()
    device = torch.device("cuda")
    torch.cuda.init()
    torch.empty(1, device=device)  # the context exists from here on
    torch.cuda.synchronize()
    at_rest = NvmlSampler(0).start().stop()
    context = None
    if at_rest.peak_process_bytes is not None:
        context = at_rest.peak_process_bytes - torch.cuda.memory_reserved(device)
    arch = cuda_arch(torch.cuda.get_device_capability(device))
    predict_options = {"cuda_arch": arch, "cuda_context_bytes": context}
    t0 = time.perf_counter()
    record = profile_config(cfg, predict_options=predict_options)
    record["hidden_allocated_bytes"] = _hidden_allocated(cfg, device)
    record["context_bytes"] = context
    record["context_nvml"] = at_rest.as_dict()
    record["cuda_arch"] = arch
    record["device_name"] = torch.cuda.get_device_name(device)
    record["errors"] = compare(record)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


def _hidden_allocated(cfg, device) -> int:
    """Allocator bytes after warm-up beyond the live tensors of the method (workspaces)."""
    import gc

    import torch

    from hpff_bench.memory.tracker import LiveTensorTracker, cuda_block_size
    from hpff_bench.methods import build_method, synthetic_batch

    gc.collect()
    torch.cuda.synchronize()
    method = build_method(cfg, device=device)
    x, y = synthetic_batch(cfg, device)
    for _ in range(2):
        method.train_step(x, y)
    torch.cuda.synchronize()
    tracker = LiveTensorTracker(rounding=cuda_block_size, record_events=False)
    tracker.register_method_state(method.parameters(), method.buffers(), method.optimizer, (x, y))
    hidden = torch.cuda.memory_allocated(device) - tracker.current
    del method, x, y
    return int(hidden)


# ----- the report -------------------------------------------------------------------------
def write_report(results: list[dict], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out / "gpu_check.json", out / "gpu_check.md"
    jpath.write_text(json.dumps(results, indent=1))
    lines = [
        "# GPU check: predicted vs measured memory",
        "",
        "Relative error = (predicted - measured) / measured. Measured after warm-up and a peak reset.",
        "",
        "| config | measured alloc MiB | predicted alloc MiB | err alloc | err reserved | err NVML process "
        "| hidden alloc MiB | context MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r.get('name', '?')} | failed: {r['error']} | | | | | | |")
            continue
        e, m, p = r["errors"], r["memory"], r["predicted"]
        lines.append(
            f"| {r['name']} | {_mib(m['peak_allocated_bytes'])} | {_mib(p['peak_allocated_bytes'])} "
            f"| {_pct(e['peak_allocated_bytes_vs_peak_allocated_bytes'])} "
            f"| {_pct(e['peak_reserved_bytes_vs_peak_reserved_bytes'])} "
            f"| {_pct(e['nvml_process_peak_bytes_vs_device_used_bytes'])} "
            f"| {_mib(r.get('hidden_allocated_bytes'))} | {_mib(r.get('context_bytes'))} |"
        )
    mpath.write_text("\n".join(lines) + "\n")
    return jpath, mpath


def _mib(n) -> str:
    return "n/a" if n is None else f"{n / MIB:,.1f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} %"


def name_of(cfg: dict) -> str:
    extra = " +HPFF" if cfg.get("hilo") and cfg.get("pff_grid", 1) > 1 else ""
    return f"{cfg['network']} {cfg['method']} K={cfg['k']} b={cfg['batch_size']}{extra}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hpff_bench.memory.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/gpu", help="output directory (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="3 configurations instead of 9")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: one config as JSON
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per configuration")
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(check_one(json.loads(args.one))))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it in a GPU session", file=sys.stderr)
        return 1
    results = []
    for cfg in configs(args.quick):
        name = name_of(cfg)
        print(f"gpu_check: {name}", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "hpff_bench.memory.gpu_check", "--one", json.dumps(cfg)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=dict(os.environ))
            if done.returncode != 0:
                results.append({"name": name, "config": cfg, "error": done.stderr.strip().splitlines()[-1:]})
                continue
            record = json.loads(done.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            results.append({"name": name, "config": cfg, "error": f"timeout after {args.timeout:g} s"})
            continue
        record["name"] = name
        results.append(record)
        print(f"  errors: {record['errors']}", file=sys.stderr, flush=True)
    jpath, mpath = write_report(results, Path(args.out))
    print(mpath.read_text())
    print(f"wrote {jpath} and {mpath}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
