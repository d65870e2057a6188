"""`hpff-bench estimate`: predict a CUDA run's memory without a GPU (fake tensors + allocator model)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from hpff_bench.cli_options import add_config_arguments, config_from_args
from hpff_bench.commands.profile import add_prediction_arguments, prediction_options, progress_bar
from hpff_bench.errors import ConfigError
from hpff_bench.networks.splits import split_of

HELP = """\
Run the training step of a configuration on fake tensors (no memory, no compute; sizes and
lifetimes as on the GPU) and replay its allocations through a model of PyTorch's CUDA caching
allocator. Prints the predicted max_memory_allocated (peak alloc), max_memory_reserved, device
use (reserved + CUDA context, which is an assumption unless you give --cuda-context-bytes),
where the peak goes, and a lower bound. Takes the same options as `profile`; --batch-size also
takes a list (64,128,256), --batch-sweep tries 16..2048, and --budget finds the largest batch
whose predicted device use fits."""

MIB = 1 << 20
COLUMNS = (
    # header, width, value(record) -> str
    ("method", 24), ("K", 3), ("mods", 4), ("batch", 5), ("peak alloc", 10), ("reserved", 10),
    ("device*", 10), ("params+grads+opt", 16), ("inputs", 8), ("backbone act", 12), ("aux act", 9),
    ("other", 9), ("bound", 10), ("eff", 5), ("seconds", 7),
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "estimate", help="predict CUDA memory of a configuration without a GPU", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter, conflict_handler="resolve",
    )
    add_config_arguments(p)
    g = p.add_argument_group("batch sizes and budget")
    g.add_argument("--batch-size", default="64", help="one batch size or a comma-separated list (default %(default)s)")
    g.add_argument("--batch-sweep", action="store_true", help="batch sizes 16, 32, ..., 2048")
    g.add_argument("--budget", default=None, metavar="SIZE",
                   help="GPU memory budget, e.g. 24GiB or 80GB: also print the largest batch whose "
                   "predicted device use fits it")
    g.add_argument("--cache-release", action="store_true",
                   help="with --budget: also the largest batch that runs when the allocator releases its cached "
                   "segments on an out-of-memory and retries, as PyTorch's does (a GPU with room keeps them)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    o.add_argument("--no-header", action="store_true", help="table rows only (to append rows of several runs)")
    add_prediction_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpff_bench.profiling import BATCH_SWEEP, estimate_batches, parse_batch_sizes, parse_bytes
    from hpff_bench.runner.preflight import check_tensor_sizes

    sizes = list(BATCH_SWEEP) if args.batch_sweep else parse_batch_sizes(args.batch_size)
    budget = parse_bytes(args.budget, "--budget", positive=True) if args.budget is not None else None
    if args.cache_release and budget is None:
        raise ConfigError("--cache-release needs --budget (the device size it releases the cache at)")
    args.batch_size = sizes[0]
    cfg = config_from_args(args)  # validates everything before any model is built
    options = prediction_options(args)
    check_tensor_sizes(cfg, max(sizes))
    t0 = time.perf_counter()
    with progress_bar("estimate") as progress:
        result = estimate_batches(
            cfg, sizes, budget_bytes=budget, progress=progress, on_probe=probe_line(budget),
            on_note=note_line if budget is not None else None, release_cache=args.cache_release, **options,
        )
    wall = time.perf_counter() - t0
    if cfg.pff_grid > 1 and cfg.pff_exec == "batched" and cfg.variant == "ours":
        print(BATCHED_PFF_NOTE, file=sys.stderr)
    split = split_of(cfg)
    for r in result["estimates"]:
        r["split"] = split.summary()
    if args.json:
        if len(sizes) == 1 and budget is None:
            print(json.dumps(result["estimates"][0]))
        else:
            print(json.dumps({**result, "seconds": round(wall, 3)}))
        return 0
    print(format_table(result["estimates"], header=not args.no_header))
    if result["budget"]:
        print(format_budget(result["budget"]))
    if not args.no_header:
        print(split.describe())
        e = result["estimates"][0]["predicted"]
        ctx = e["terms"]["cuda_context"]
        print(
            f"MiB = 2^20 B. peak alloc = live tensors + whole-block rounding + cuBLAS workspaces "
            f"({e['terms']['cublas_workspace']['bytes'] // MIB} MiB, {e['assumptions']['cuda_arch']}); "
            f"*device = reserved + CUDA context ({ctx['bytes'] // MIB} MiB, {ctx['source']}). "
            "Breakdown columns: live tensors at the peak. eff = bound / live peak."
        )
    return 0


# Printed on every estimate of PFF with the default (batched) execution: why it is the default,
# and what it does and does not save (the report's "Does HPFF save memory?" section measures it).
BATCHED_PFF_NOTE = (
    "note: PFF runs batched (the default): the n x n patches are folded into the batch, all live at "
    "once, so PFF does not shrink the aux nets' activations; --pff-exec streamed (same gradients) keeps "
    "one patch live at a time, which shrinks the allocator's cache where an aux net's activations are "
    "large (InfoPro's decoder), not DGL's or PredSim's, and costs n^2 sequential aux passes "
    "(docs/memory.md, 'Does HPFF save memory?')"
)


def probe_line(budget: int | None):
    """One stderr line per batch the budget search predicts (above the tqdm bar on a terminal)."""
    if budget is None:
        return None
    from tqdm import tqdm

    def line(batch: int, used: float, fits: bool) -> None:
        where = "cannot run" if used == float("inf") else f"device {used / MIB:,.0f} MiB"
        verdict = "fits" if fits else "does not fit"
        tqdm.write(f"budget {budget / MIB:,.0f} MiB: batch {batch:,}: {where}, {verdict}", file=sys.stderr)

    return line


def note_line(text: str) -> None:
    """The budget search's line about the affine model, with the probe lines on stderr."""
    from tqdm import tqdm

    tqdm.write(f"budget search: {text}", file=sys.stderr)


def _row(r: dict) -> list[str]:
    p, b = r["predicted"], r["predicted"]["breakdown_bytes"]
    m = lambda n: f"{n / MIB:,.1f}"  # noqa: E731
    state = b["parameters"] + b["gradients"] + b["optimizer"]
    c = r["config"]
    return [
        r["label"], str(c["k"]), str(r["modules"]), str(c["batch_size"]),
        m(p["peak_allocated_bytes"]), m(p["peak_reserved_bytes"]), m(p["device_used_bytes"]), m(state),
        m(b["inputs"]), m(b["backbone_activations"]), m(b["aux_activations"]), m(b["other"]),
        m(p["lower_bound_bytes"]), f"{p['efficiency']:.2f}", f"{p['seconds']:.1f}",
    ]


def format_table(records: list[dict], header: bool = True) -> str:
    lines = []
    if header:
        lines.append("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(COLUMNS)))
    for r in records:
        cells = _row(r)
        lines.append("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, (_, w)) in enumerate(zip(cells, COLUMNS))))
    return "\n".join(lines)


def format_budget(b: dict) -> str:
    budget = f"{b['budget_bytes'] / MIB:,.0f} MiB"
    if b.get("affine"):
        a = b["affine"]
        checked = ", ".join(map(str, a["checked_batches"])) or "none besides the fit batches"
        how = (f"affine model of the event log fitted at batches {a['fit_batches'][0]} and {a['fit_batches'][1]}, "
               f"{a['model_probes']} model probes, matched by the real traces at {checked}")
    else:
        how = f"full search: {b.get('fallback_reason')}"
    searched = f"{b['predictions']} predictions ({how})"
    if b["largest_batch"] is None:
        one = b.get("unusable_batches", {}).get(1) or b.get("unusable_batches", {}).get("1")
        why = f"the smallest batch that runs exceeds it; batch 1 cannot run: {one}" if one else "predicted device use at batch 1 exceeds it"
        return f"budget {budget}: no batch size fits ({why}); {searched}"
    note = "" if b["exact"] else " (search stopped before the exact edge)"
    line = (
        f"budget {budget}: largest batch that fits = {b['largest_batch']} "
        f"(device {b['device_used_bytes'] / MIB:,.0f} MiB; batch {b['smallest_failing_batch']} does not fit){note}; "
        f"{searched}"
    )
    return line + (f"\n{format_cache_release(budget, b['with_cache_release'])}" if b.get("with_cache_release") else "")


def format_cache_release(budget: str, r: dict) -> str:
    how = "affine model, confirmed by real predictions" if r["search"] == "affine" else "real predictions"
    if r["largest_batch"] is None:
        return f"budget {budget}, cache released on out-of-memory: no batch size runs ({how})"
    above = (f"batch {r['smallest_failing_batch']:,} runs out of memory" if r["smallest_failing_batch"]
             else "no larger batch was found to run out of memory")
    return (
        f"budget {budget}, cache released on out-of-memory as PyTorch's allocator does: largest batch that runs = "
        f"{r['largest_batch']:,} ({r['alloc_retries_per_step']} allocation retries per step there, each a device "
        f"sync; a GPU with room would keep {r['device_used_bytes_unreleased'] / MIB:,.0f} MiB); {above} ({how})"
    )
