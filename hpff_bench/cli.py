"""`hpff-bench` entry point: one sub-command per module in hpff_bench.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from hpff_bench.errors import ConfigError

# Each module defines add_parser(subparsers), which sets `func(args) -> int` on its parser.
COMMANDS = ("profile", "estimate", "plan", "train", "sweep", "report", "aux_params", "networks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpff-bench",
        description="Memory, speed and accuracy of end-to-end and locally supervised training.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hpff_bench.commands.{name}")
        except ModuleNotFoundError as e:  # a command whose module is not written yet
            if e.name != f"hpff_bench.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"hpff-bench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling (sweep keeps its summary)
        print(f"hpff-bench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
