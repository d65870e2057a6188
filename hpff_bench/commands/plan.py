"""`hpff-bench plan`: which methods, K and splits fit a GPU memory budget, cheapest first."""

from __future__ import annotations

import argparse
import json
import sys

from hpff_bench.cli_options import NETWORK_HELP, add_config_arguments, config_from_args
from hpff_bench.errors import ConfigError
from hpff_bench.method_registry import METHODS, hilo_methods, local_methods, method_names

HELP = """\
Predict (fake tensors, no GPU) every configuration of --methods x --k x split (the papers'
tables where they have the network and K, and `balanced`, searched) x HPFF off/on, and list
those whose predicted device use fits --budget, cheapest step first, with the predicted peak,
the headroom and the published CIFAR test error where a paper reports that configuration.
A step's cost is its measured time x BP where a --timings file timed exactly that step (same
network, data, batch, method, K, cuts, HPFF options, variant; hpff_bench/report/timings.py),
else its predicted FLOPs x BP. Every configuration and file is checked before anything is
traced."""

MIB = 1 << 20
PAPER_SPLITS = ("infopro", "infopro-balanced", "hpff")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="what fits my GPU: configurations under a memory budget",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="resnet110", help=NETWORK_HELP + " (default %(default)s)")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--batch-size", default="1024", help="(default %(default)s)")
    p.add_argument("--budget", required=True, metavar="SIZE", help="GPU memory, e.g. 24GiB or 80GB")
    p.add_argument("--methods", default="bp,infopro",
                   help=f"comma-separated, from {', '.join(METHODS.registered())} and those installed packages "
                   "register (default %(default)s)")
    p.add_argument("--k", default="2,3,4", help="K values for local methods and gc's checkpointed segments, "
                   "comma-separated (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON record per line instead of the table")
    p.add_argument("--max-batch", action="store_true",
                   help="also the largest batch that fits, per configuration at its cuts (estimate --budget's search)")
    p.add_argument("--cache-release", action="store_true",
                   help="also list what runs only when the allocator releases its cached segments on an "
                   "out-of-memory and retries, as PyTorch's does (estimate --cache-release); a 'retries' column")
    p.add_argument("--timings", nargs="+", default=[], metavar="PATH",
                   help="measured step times to rank by: suites/test_method_speed.py's --benchmark-json, or "
                   "result records with timing.step_seconds (JSONL from profile/sweep, profile --json, "
                   "suites/test_benchmarks.py's --benchmark-json) holding a BP record to compare with; "
                   "where several files time a configuration, the first given wins")
    p.set_defaults(func=run)


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated positive integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ConfigError(f"{flag} must be comma-separated positive integers, got {text!r}")
    return values


def _config(network, dataset, batch, method, k, split, hpff):
    """A RunConfig built as `estimate` would build it from these flags (paper recipes included)."""
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    # flag=value: a value never reads as an option (a --dataset of '-1e+16' is refused by the check)
    argv = [f"--network={network}", f"--dataset={dataset}", f"--batch-size={batch}", f"--method={method}",
            f"--k={k}", f"--split={split}"] + (["--hpff"] if hpff else [])
    return config_from_args(p.parse_args(argv))


def configurations(network, dataset, batch, methods, ks) -> list:
    """Every candidate RunConfig, validated (ConfigError for bad input); paper splits that have
    no table entry for this network/K are skipped, not errors."""
    from hpff_bench.networks import get_network

    max_k = get_network(network).num_blocks + 1
    for k in ks:
        if k > max_k:
            raise ConfigError(f"--k {k} is out of range for {network}: K is 1 to {max_k}")
    out = []
    for m in methods:
        if m not in method_names():
            raise ConfigError(f"unknown method {m!r} in --methods; allowed: {', '.join(method_names())}")
        if m not in local_methods():
            # gc checkpoints at K's module boundaries (K=1 would be BP itself); bp has no K
            gc_ks = [k for k in ks if k > 1] if m == "gc" else []
            out.extend(_config(network, dataset, batch, m, k, "auto", False) for k in gc_ks or [1])
            continue
        # AugLocal's modules are its code's own (no split choice); HPFF composes with hilo_methods() only
        splits = ("auto",) if m == "auglocal" else PAPER_SPLITS + ("balanced",)
        for k in ks:
            for split in splits:
                for hpff in (False, True) if m in hilo_methods() else (False,):
                    try:
                        out.append(_config(network, dataset, batch, m, k, split, hpff))
                    except ConfigError:
                        if split in ("balanced", "auto"):
                            raise
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hpff_bench.networks.splits import split_of
    from hpff_bench.profiling import estimate_batches, estimate_config, parse_bytes
    from hpff_bench.report.published import match
    from hpff_bench.report.timings import read_timings, step_key
    from hpff_bench.runner.preflight import check_tensor_sizes

    budget = parse_bytes(args.budget, "--budget", positive=True)
    sizes = _ints(args.batch_size, "--batch-size")
    if len(sizes) != 1:
        raise ConfigError(f"--batch-size takes one batch size in plan, got {args.batch_size!r}")
    batch = sizes[0]
    cfgs = configurations(args.network, args.dataset, batch, [m.strip() for m in args.methods.split(",")],
                          _ints(args.k, "--k"))
    for cfg in cfgs[:1]:  # they share the network, data and batch: the same tensors
        check_tensor_sizes(cfg)
    timings = read_timings(args.timings) if args.timings else None  # before any trace
    for note in timings.notes if timings else ():
        print(f"hpff-bench plan: note: {note}", file=sys.stderr)
    rows, seen = [], set()
    for cfg in tqdm(cfgs, desc="plan", unit="config", disable=None):
        try:
            split = split_of(cfg)
        except ConfigError as e:
            if cfg.split != "balanced" or cfg.pff_grid == 1:
                raise
            # the search cuts after every unit to cost it; PFF cannot split some units' maps into its
            # grid (odd or 1x1 maps of a network cut by structure): this configuration is left out
            print(f"hpff-bench plan: note: left out {cfg.label} K={cfg.k} --split balanced: {e}", file=sys.stderr)
            continue
        key = (cfg.method, cfg.hilo, cfg.pff_grid, split.cuts)
        if key in seen:  # a paper table and the search can give the same cuts
            continue
        seen.add(key)
        # the row's cuts stay fixed when --max-batch tries other batch sizes (a balanced split
        # would otherwise be searched again, for another configuration, at every batch tried)
        fixed = cfg.replace(split="auto", cuts=split.cuts_text) if cfg.split == "balanced" and split.cuts else cfg
        if args.max_batch:
            res = estimate_batches(fixed, [batch], budget_bytes=budget, release_cache=args.cache_release)
            r, searched = res["estimates"][0], res["budget"]
        else:
            r, searched = estimate_config(fixed, keep_events=args.cache_release), None
        events = r.pop("events", None)
        used = r["predicted"]["device_used_bytes"]
        release = _with_cache_release(events, budget, batch, searched) if args.cache_release else None
        pub = match(cfg.network, cfg.dataset, cfg.method, split.modules, cfg.hilo, cfg.independent,
                    cfg.pff_grid, cfg.local_loss)
        measured = timings.lookup(step_key(cfg, split.cuts_text)) if timings else None
        rows.append({
            "label": r["label"], "method": cfg.method, "hpff": bool(cfg.hilo), "k": cfg.k,
            "split": split.summary(), "batch_size": batch, "fits": used <= budget,
            "device_used_bytes": used, "peak_allocated_bytes": r["predicted"]["peak_allocated_bytes"],
            "headroom_bytes": budget - used, "flops_per_step": r["flops"]["total"],
            "published_test_error_pct": pub[0].test_error_pct if pub else None,
            "largest_batch": searched["largest_batch"] if searched else None,
            **(release or {}),
            "time_vs_bp": measured.time_vs_bp if measured else None,
            "measured": measured.summary() if measured else None,
        })
    bp_flops = next((r["flops_per_step"] for r in rows if r["method"] == "bp"), None)
    if bp_flops is None:  # BP is the reference even where it is not a candidate
        bp_flops = estimate_config(_config(args.network, args.dataset, batch, "bp", 1, "auto", False))["flops"]["total"]
    for r in rows:
        r["flops_vs_bp"] = r["flops_per_step"] / bp_flops
    fits = sorted((r for r in rows if r["fits"] or r.get("runs_with_cache_release")), key=cost)
    if args.json:
        for r in fits:
            print(json.dumps(r))
        return 0
    refs = sources(fits)
    print(format_table(fits, args.max_batch, refs if timings else None, args.cache_release))
    n_fit = sum(r["fits"] for r in rows)
    more = (f"; {len(fits) - n_fit} more run when the allocator releases its cache on out-of-memory (retries "
            "per step in the 'retries' column)" if args.cache_release else "")
    print(f"{n_fit} of {len(rows)} configurations fit {budget / MIB:,.0f} MiB (predicted device use = "
          f"reserved + assumed CUDA context){more}; " + (
              "sorted by measured time x BP (median step time / BP's on the same machine) where measured, "
              "else by predicted FLOPs x BP." if timings else
              f"sorted by predicted FLOPs x BP (FLOPs per step / BP's at batch {batch}); no measured step "
              "times read (--timings adds them)."))
    if timings:
        n = sum(r["measured"] is not None for r in fits)
        print(f"time x BP measured for {n} of {len(fits)} rows ({timings.count()} measured configurations "
              f"read from {', '.join(timings.files)})" + (":" if refs else "."))
        for (device, file), i in refs.items():
            print(f"  [{i}] {device}: {file}")
    return 0


def _with_cache_release(events, budget: int, batch: int, searched: dict | None) -> dict:
    """Whether the row's step runs in `budget` when the allocator releases its cache on an
    out-of-memory, and its retries per step there: the row's own trace replayed (`events`), or,
    where --max-batch searched, what that search replayed at the batch, with its edge."""
    from hpff_bench.memory.predict import alloc_retries_within

    if searched is not None:
        r = searched["with_cache_release"]
        retries = r["alloc_retries_at"][batch]
        return {"runs_with_cache_release": retries is not None, "alloc_retries_per_step": retries,
                "largest_batch_with_cache_release": r["largest_batch"]}
    retries = alloc_retries_within(events, budget)
    return {"runs_with_cache_release": retries is not None, "alloc_retries_per_step": retries}


def cost(row: dict) -> tuple:
    """Sort key: measured time x BP where there is one, else predicted FLOPs x BP."""
    return (row["time_vs_bp"] if row["time_vs_bp"] is not None else row["flops_vs_bp"], row["flops_per_step"])


def sources(rows: list[dict]) -> dict[tuple[str, str], int]:
    """(device, file) of each measurement shown -> its footnote number, in table order."""
    refs: dict[tuple[str, str], int] = {}
    for r in rows:
        if r["measured"]:
            refs.setdefault((r["measured"]["device"], r["measured"]["file"]), len(refs) + 1)
    return refs


def format_table(rows: list[dict], max_batch: bool, refs: dict | None = None, cache_release: bool = False) -> str:
    """The table; `refs` (from `sources`) adds the measured columns; `cache_release` the allocation
    retries per step with the cache released on out-of-memory (0: it fits without)."""
    head = ["method", "hpff", "K", "split", "cuts", "GFLOP/step", "FLOPs x BP"]
    if refs is not None:
        head += ["time x BP", "on"]
    head += ["peak MiB", "device MiB", "headroom MiB", "pub. err %"]
    if max_batch:
        head.append("max batch")
    if cache_release:
        head.append("retries")
        if max_batch:
            head.append("max batch, released")
    lines = [head]
    for r in rows:
        cells = [r["method"], "yes" if r["hpff"] else "no", str(r["k"]), r["split"]["scheme"], r["split"]["cuts"] or "-",
                 f"{r['flops_per_step'] / 1e9:,.0f}", f"{r['flops_vs_bp']:.2f}"]
        if refs is not None:
            m = r["measured"]
            cells += ["-", "-"] if m is None else [f"{r['time_vs_bp']:.2f}", f"[{refs[m['device'], m['file']]}]"]
        cells += [f"{r['peak_allocated_bytes'] / MIB:,.0f}",
                 f"{r['device_used_bytes'] / MIB:,.0f}", f"{r['headroom_bytes'] / MIB:,.0f}",
                 "-" if r["published_test_error_pct"] is None else f"{r['published_test_error_pct']:.2f}"]
        if max_batch:
            cells.append(str(r["largest_batch"]))
        if cache_release:
            cells.append(str(r["alloc_retries_per_step"]))
            if max_batch:
                cells.append(str(r["largest_batch_with_cache_release"]))
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in lines)
