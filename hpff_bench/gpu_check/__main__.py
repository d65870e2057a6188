"""python -m hpff_bench.gpu_check: see hpff_bench.gpu_check."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hpff_bench.errors import ConfigError
from hpff_bench.gpu_check import __doc__ as DOC
from hpff_bench.gpu_check.plan import (
    ALL_BUDGET_S,
    DEFAULT_BUDGET_S,
    Budget,
    Part,
    fit_lines,
    parts,
    plan_table,
    session_fit,
)

DEFAULT_TIMEOUT_S = 240.0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hpff_bench.gpu_check", description=DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/gpu", help="output directory (default %(default)s)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds for the whole check; parts that do not fit are skipped (default "
                         f"{DEFAULT_BUDGET_S:g}: two tries fit in a 15-minute GPU session; {ALL_BUDGET_S:g} with --all)")
    ap.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                    help="seconds one part may run (default %(default)g)")
    ap.add_argument("--quick", action="store_true", help="the overheads and 3 configurations only")
    ap.add_argument("--all", action="store_true",
                    help="also the benchmarks and the configurations the default leaves out (a longer session)")
    ap.add_argument("--plan", action="store_true", help="print the parts and their estimated H200 times; run nothing")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one part as JSON, in a fresh process
    return ap


def check_args(args) -> None:
    if args.quick and args.all:
        raise ConfigError("--quick and --all exclude each other: pick one plan")
    if args.budget_s is None:
        args.budget_s = ALL_BUDGET_S if args.all else DEFAULT_BUDGET_S
    for flag, value in (("--budget-s", args.budget_s), ("--timeout-s", args.timeout_s)):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{flag} must be a finite number of seconds > 0, got {value:g}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {args.out!r} exists and is not a directory")


def main(argv: list[str] | None = None, *, cuda_available=None, spawn=None, clock=None, cost=None) -> int:
    """cuda_available, spawn, clock, cost: injected by tests (defaults: torch, subprocesses,
    time.monotonic, FLOPs and ops counted on fake tensors)."""
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ConfigError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.child is not None:
        from hpff_bench.gpu_check.child import run_part

        print(json.dumps(run_part(Part.from_dict(json.loads(args.child)), out)))
        return 0
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available and not args.plan:
        print("gpu_check: no CUDA device here; run it in a GPU session (--plan shows what it would run)",
              file=sys.stderr)
        return 1
    budget = Budget(args.budget_s, clock)  # counting the FLOPs is part of the run's time
    plan = parts("quick" if args.quick else "all" if args.all else "default", cost)
    print(plan_table(plan), flush=True)
    print("\n".join(fit_lines(session_fit(plan, budget.elapsed, args.budget_s))), flush=True)
    if args.plan:
        return 0
    from hpff_bench.gpu_check.runner import run_check

    doc = run_check(plan, out, budget, args.timeout_s, spawn,
                    log=lambda s: print(s, file=sys.stderr, flush=True))
    print((out / "gpu_check.md").read_text())
    print(f"gpu_check: {doc['status']} in {doc['elapsed_s']:.0f} s; wrote {out / 'gpu_check.json'} and "
          f"{out / 'gpu_check.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
