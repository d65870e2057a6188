"""`hpff-bench profile`: measure one configuration's memory and speed (and predict its CUDA memory)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from hpff_bench.cli_options import add_config_arguments, config_from_args
from hpff_bench.memory.predict import CUDA_ARCHS, DEFAULT_CUDA_ARCH
from hpff_bench.networks.splits import split_of

HELP = """\
Run --warmup steps, then --steps measured training steps of one configuration on synthetic
data. On CUDA the peak is the caching allocator's max_memory_allocated after a peak reset
(plus reserved/active/requested peaks and NVML, sampled by a thread); on the CPU it is the
exact peak of live tensor-storage bytes. Also shown: where the peak goes (breakdown), the
peak while each module ran, a lower bound, and the fake-tensor prediction of a CUDA run."""

MIB = 1 << 20
GIB = 1 << 30


def add_prediction_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the CUDA-memory prediction (shared by profile and estimate)."""
    g = parser.add_argument_group("prediction (no GPU needed)")
    g.add_argument(
        "--cuda-arch", default=DEFAULT_CUDA_ARCH,
        help=f"GPU generation, sets the cuBLAS workspace: {', '.join(CUDA_ARCHS)} (default %(default)s)",
    )
    g.add_argument(
        "--cuda-context-bytes", default=None, metavar="SIZE",
        help="CUDA context + kernels added to device use, e.g. 600MiB (default: an assumption of "
        "512 MiB, labelled 'assumed'; measure yours with python -m hpff_bench.gpu_check)",
    )


def prediction_options(args) -> dict:
    """Validated prediction options (ConfigError on a bad value, before anything is built)."""
    from hpff_bench.errors import ConfigError
    from hpff_bench.profiling import parse_bytes

    if args.cuda_arch not in CUDA_ARCHS:
        raise ConfigError(f"unknown --cuda-arch {args.cuda_arch!r}; allowed: {', '.join(CUDA_ARCHS)}")
    ctx = args.cuda_context_bytes
    return {
        "cuda_arch": args.cuda_arch,
        "cuda_context_bytes": None if ctx is None else parse_bytes(ctx, "--cuda-context-bytes"),
    }


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "profile", help="measure peak memory and step time of one configuration", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    o = p.add_argument_group("output and probes")
    o.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    o.add_argument("--snapshot", default=None, metavar="PATH",
                   help="CUDA only: write an allocator snapshot (open it at pytorch.org/memory_viz) "
                   "and PATH.html, an offline render of its timeline")
    o.add_argument("--nvml-interval-ms", type=float, default=5.0, help="NVML sampling interval (default %(default)s)")
    o.add_argument("--no-predict", action="store_true", help="skip the fake-tensor prediction (predicted: null)")
    add_prediction_arguments(p)
    p.set_defaults(func=run)


@contextlib.contextmanager
def progress_bar(desc: str):
    """A progress callback writing to stderr (silent when stderr is not a terminal)."""
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, file=sys.stderr, disable=None, leave=False, bar_format="{desc} {elapsed}")

    def update(msg: str) -> None:
        bar.set_description_str(f"{desc}: {msg}")

    try:
        yield update
    finally:
        bar.close()


def run(args: argparse.Namespace) -> int:
    from hpff_bench import validation as V
    from hpff_bench.profiling import profile_config
    from hpff_bench.runner.preflight import check_measured_run

    cfg = config_from_args(args)
    options = prediction_options(args)
    V.number("--nvml-interval-ms", args.nvml_interval_ms, low=0, low_open=True, high=60_000)
    if args.snapshot is not None:
        V.output_dir("--snapshot's directory", Path(args.snapshot).absolute().parent)
    check_measured_run(cfg, "a profile")
    with progress_bar("profile") as progress:
        record = profile_config(
            cfg,
            snapshot=args.snapshot,
            nvml_interval_s=args.nvml_interval_ms / 1000.0,
            with_prediction=not args.no_predict,
            predict_options=options,
            progress=progress,
        )
    split = split_of(cfg)
    record["split"] = split.summary()
    if args.json:
        print(json.dumps(record))
    else:
        print(format_profile(record))
        print(f"  {split.describe()}")
    return 0


def fmt_bytes(n) -> str:
    if n is None:
        return "n/a"
    return f"{n / GIB:.2f} GiB" if abs(n) >= GIB else f"{n / MIB:.1f} MiB"


def format_breakdown(breakdown: dict) -> str:
    short = {"parameters": "params", "gradients": "grads", "optimizer": "optim", "inputs": "inputs",
             "backbone_activations": "backbone act", "aux_activations": "aux act", "other": "other"}
    return ", ".join(f"{short.get(k, k)} {fmt_bytes(v)}" for k, v in breakdown.items() if v)


def format_profile(r: dict) -> str:
    c, m = r["config"], r["memory"]
    lines = [
        f"{r['label']} on {c['network']} ({c['dataset']}, batch {c['batch_size']}, {r['modules']} modules, "
        f"{r['params']:,} params) on {r['device']}",
        f"  peak memory      {fmt_bytes(r['peak_memory_bytes'])}  [{r['memory_source']}]",
    ]
    if m.get("peak_reserved_bytes") is not None:
        lines.append(f"  reserved peak    {fmt_bytes(m['peak_reserved_bytes'])}")
    if m.get("nvml_peak_used_bytes") is not None:
        lines.append(
            f"  NVML peak        device {fmt_bytes(m['nvml_peak_used_bytes'])}, "
            f"this process {fmt_bytes(m['nvml_process_peak_bytes'])}"
        )
    step = r["step_seconds"]
    lines.append(f"  step time        {step:.3f} s  ({r['images_per_second']:.1f} images/s, "
                 f"{r['forward_calls']:g} module forwards/step)")
    lines.append(f"  at the peak      {format_breakdown(m['breakdown_bytes'])}")
    eff = m.get("efficiency")
    lines.append(
        f"  lower bound      {fmt_bytes(m['lower_bound_bytes'])}"
        + (f"  (efficiency {eff:.2f}; largest working set: {m.get('lower_bound_module')})" if eff else "")
    )
    peaks = m.get("per_module_peak_bytes") or {}
    if peaks:
        top = sorted(peaks.items(), key=lambda kv: -kv[1])[:3]
        lines.append("  highest scopes   " + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in top))
    p = r.get("predicted")
    if p:
        ctx = p["terms"]["cuda_context"]
        lines.append(
            f"  predicted (CUDA) allocated {fmt_bytes(p['peak_allocated_bytes'])}, reserved "
            f"{fmt_bytes(p['peak_reserved_bytes'])}, device {fmt_bytes(p['device_used_bytes'])} "
            f"(incl. CUDA context {fmt_bytes(ctx['bytes'])}, {ctx['source']})"
        )
    return "\n".join(lines)
