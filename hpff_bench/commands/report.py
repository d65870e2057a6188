"""`hpff-bench report RESULTS... [-o reports/NAME]`: tables and figures from results files."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
Turn results into a paper-style report: index.html (self-contained), report.md, every table as
CSV and LaTeX (booktabs), every figure as PNG and SVG. RESULTS are result files (.jsonl, one
record per line), directories searched recursively for .jsonl/.json files, or JSON files written
by `pytest suites/ --benchmark-json FILE`. Figures without data are left out with a line saying why."""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="render tables and figures from results files", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results files or directories")
    p.add_argument(
        "-o", "--output", default=None, metavar="DIR",
        help="output directory (default: reports/NAME, NAME = the first RESULTS' name without suffix)",
    )
    p.add_argument("--title", default=None, help="page title (default: 'hpff-bench report: NAME')")
    p.set_defaults(func=run)


def default_output(first: str) -> Path:
    """reports/NAME, NAME a plain file name: the directory's own name (`..` or `.` resolved, so
    `report ..` never writes into the current directory), a file's without its suffix."""
    p = Path(first)
    name = p.resolve().name if p.is_dir() else p.stem
    return Path("reports") / (name if name not in ("", ".", "..") else "report")


def run(args: argparse.Namespace) -> int:
    from hpff_bench import validation as V
    from hpff_bench.errors import ConfigError
    from hpff_bench.report.build import render_report  # matplotlib is imported only when needed
    from hpff_bench.report.load import read_results

    V.string("-o/--output", args.output, allow_none=True)  # '' is no directory
    out = Path(args.output) if args.output is not None else default_output(args.results[0])
    V.output_dir("-o/--output", out)
    V.string("--title", args.title, allow_none=True)
    loaded = read_results(args.results)
    if loaded.frame.empty and loaded.side_by_side.empty:
        first = f"; first problem: {loaded.notes[0]}" if loaded.notes else ""
        raise ConfigError(
            f"no valid result record or side-by-side speed run in {' '.join(args.results)} ({len(loaded.files)} file(s) read, "
            f"{len(loaded.notes)} note(s){first})"
        )
    V.create_dir("-o/--output", out)
    report = render_report(loaded, out, args.title or f"hpff-bench report: {out.name}")
    ok = report.records - report.failed
    speed_runs = f", {report.side_by_side_runs} side-by-side speed run(s)" if report.side_by_side_runs else ""
    print(
        f"report: {report.index} ({report.records} records, {ok} ok, {report.failed} not ok{speed_runs}; "
        f"{len(report.figures)} figures, {len(report.tables)} tables)"
    )
    print(f"  markdown: {report.markdown}")
    print(f"  figures:  {out / 'figures'}  tables: {out / 'tables'}")
    for what, why in report.left_out.items():
        print(f"  left out {what}: {why}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0
