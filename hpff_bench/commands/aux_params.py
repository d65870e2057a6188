"""`hpff-bench aux-params`: the aux nets' parameter counts, ours vs the official code's."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "aux-params", help="aux-net parameter counts per cut channel count, ours vs the official code",
        description="Build every aux net at each cut channel count (C) and spatial size (s) and print "
        "its parameter count next to the official code's (measured by building the official modules; "
        "hpff_bench/aux/param_table.py names the files), with the reason where they differ.",
    )
    p.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpff_bench.aux.param_table import ROWS, markdown

    if args.markdown:
        print(markdown())
        return 0
    head = f"{'method':15} {'aux net':17} {'C':>5} {'s':>3} {'ours':>12} {'official':>12}  difference"
    print(head)
    for r in ROWS:
        print(f"{r.method:15} {r.net:17} {r.channels:>5} {r.spatial:>3} {r.ours():>12,} {r.official:>12,}  "
              f"{r.difference or 'equal'}")
    return 0
