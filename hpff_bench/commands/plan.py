"""`hpff-bench plan`: which methods, K and splits fit a GPU memory budget, cheapest first."""

from __future__ import annotations

import argparse
import json

from hpff_bench.cli_options import add_config_arguments, config_from_args
from hpff_bench.config import LOCAL_METHODS, METHODS
from hpff_bench.errors import ConfigError

HELP = """\
Predict (fake tensors, no GPU) every configuration of --methods x --k x split (the papers'
tables where they have the network and K, and `balanced`, searched) x HPFF off/on, and list
those whose predicted device use fits --budget, sorted by predicted FLOPs per step, with the
predicted peak, the headroom and the published CIFAR test error where a paper reports that
configuration. Every configuration is validated before anything is traced."""

MIB = 1 << 20
PAPER_SPLITS = ("infopro", "infopro-balanced", "hpff")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="what fits my GPU: configurations under a memory budget",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="resnet110")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--batch-size", default="1024", help="(default %(default)s)")
    p.add_argument("--budget", required=True, metavar="SIZE", help="GPU memory, e.g. 24GiB or 80GB")
    p.add_argument("--methods", default="bp,infopro",
                   help=f"comma-separated, from {', '.join(METHODS)} (default %(default)s)")
    p.add_argument("--k", default="2,3,4", help="K values for local methods, comma-separated (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON record per line instead of the table")
    p.add_argument("--max-batch", action="store_true",
                   help="also the largest batch that fits, per configuration (estimate --budget's search)")
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
    argv = ["--network", network, "--dataset", dataset, "--batch-size", str(batch), "--method", method,
            "--k", str(k), "--split", split] + (["--hpff"] if hpff else [])
    return config_from_args(p.parse_args(argv))


def configurations(network, dataset, batch, methods, ks) -> list:
    """Every candidate RunConfig, validated (ConfigError for bad input); paper splits that have
    no table entry for this network/K are skipped, not errors."""
    from hpff_bench.networks import NETWORKS

    if network not in NETWORKS:
        raise ConfigError(f"unknown --network {network!r}; allowed: {', '.join(NETWORKS)}")
    max_k = NETWORKS[network].num_blocks + 1
    for k in ks:
        if k > max_k:
            raise ConfigError(f"--k {k} is out of range for {network}: K is 1 to {max_k}")
    out = []
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown method {m!r} in --methods; allowed: {', '.join(METHODS)}")
        if m not in LOCAL_METHODS:
            out.append(_config(network, dataset, batch, m, 1, "auto", False))
            continue
        for k in ks:
            for split in PAPER_SPLITS + ("balanced",):
                for hpff in (False, True):
                    try:
                        out.append(_config(network, dataset, batch, m, k, split, hpff))
                    except ConfigError:
                        if split == "balanced":
                            raise
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hpff_bench.networks.splits import split_of
    from hpff_bench.profiling import estimate_batches, parse_bytes
    from hpff_bench.report.published import match

    budget = parse_bytes(args.budget, "--budget")
    if budget <= 0:
        raise ConfigError(f"--budget must be > 0, got {args.budget!r}")
    sizes = _ints(args.batch_size, "--batch-size")
    if len(sizes) != 1:
        raise ConfigError(f"--batch-size takes one batch size in plan, got {args.batch_size!r}")
    batch = sizes[0]
    cfgs = configurations(args.network, args.dataset, batch, [m.strip() for m in args.methods.split(",")],
                          _ints(args.k, "--k"))
    rows, seen = [], set()
    for cfg in tqdm(cfgs, desc="plan", unit="config", disable=None):
        split = split_of(cfg)
        key = (cfg.method, cfg.hilo, cfg.pff_grid, split.cuts)
        if key in seen:  # a paper table and the search can give the same cuts
            continue
        seen.add(key)
        res = estimate_batches(cfg, [batch], budget_bytes=budget if args.max_batch else None)
        r = res["estimates"][0]
        used = r["predicted"]["device_used_bytes"]
        pub = match(cfg.network, cfg.dataset, cfg.method, split.modules, cfg.hilo, cfg.independent,
                    cfg.pff_grid, cfg.local_loss)
        rows.append({
            "label": r["label"], "method": cfg.method, "hpff": bool(cfg.hilo), "k": cfg.k,
            "split": split.summary(), "batch_size": batch, "fits": used <= budget,
            "device_used_bytes": used, "peak_allocated_bytes": r["predicted"]["peak_allocated_bytes"],
            "headroom_bytes": budget - used, "flops_per_step": r["flops"]["total"],
            "published_test_error_pct": pub[0].test_error_pct if pub else None,
            "largest_batch": res["budget"]["largest_batch"] if res["budget"] else None,
        })
    fits = sorted((r for r in rows if r["fits"]), key=lambda r: r["flops_per_step"])
    if args.json:
        for r in fits:
            print(json.dumps(r))
        return 0
    print(format_table(fits, args.max_batch))
    print(f"{len(fits)} of {len(rows)} configurations fit {budget / MIB:,.0f} MiB (predicted device use = "
          f"reserved + assumed CUDA context); sorted by predicted FLOPs per step. No measured time ratios: "
          f"plan does not read benchmark records yet.")
    return 0


def format_table(rows: list[dict], max_batch: bool) -> str:
    head = ["method", "hpff", "K", "split", "cuts", "GFLOP/step", "peak MiB", "device MiB", "headroom MiB", "pub. err %"]
    if max_batch:
        head.append("max batch")
    lines = [head]
    for r in rows:
        cells = [r["method"], "yes" if r["hpff"] else "no", str(r["k"]), r["split"]["scheme"], r["split"]["cuts"] or "-",
                 f"{r['flops_per_step'] / 1e9:,.0f}", f"{r['peak_allocated_bytes'] / MIB:,.0f}",
                 f"{r['device_used_bytes'] / MIB:,.0f}", f"{r['headroom_bytes'] / MIB:,.0f}",
                 "-" if r["published_test_error_pct"] is None else f"{r['published_test_error_pct']:.2f}"]
        if max_batch:
            cells.append(str(r["largest_batch"]))
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in lines)
