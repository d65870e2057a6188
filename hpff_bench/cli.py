"""`hpff-bench` entry point: one sub-command per module in hpff_bench.commands."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from hpff_bench.errors import ConfigError

# Each module defines add_parser(subparsers), which sets `func(args) -> int` on its parser.
COMMANDS = ("profile", "estimate", "plan", "train", "sweep", "report", "aux_params", "networks")


def one_line(text: str) -> str:
    """`text` with every character that is not printable (a newline or carriage return in a path
    the user gave, a line separator) escaped as Python writes it: an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format, and values that look like negative numbers kept as
    values.

    - An error is the one line that matters, with a hint, not the whole usage (10-20 lines)
      first: `hpff-bench estimate: error: argument --lr: invalid float value: 'abc' (see
      hpff-bench estimate --help)`.
    - `--budget -1GiB`, `--lr -inf` or `--lr -1e-3` reach their option (and its check, which
      says what is allowed) instead of being read as an unknown option ("expected one
      argument"): argparse itself keeps only `-1` and `-1.5` as values. None of the CLI's
      options looks like a negative number, so nothing else changes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse's own matcher (private in Python 3.11) reads '-1' and '-.5' as values only
        self._negative_number_matcher = re.compile(r"^-(\.?\d|inf|nan)", re.IGNORECASE)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hpff-bench",
        description="Memory, speed and accuracy of end-to-end and locally supervised training.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hpff_bench.commands.{name}")
        except ModuleNotFoundError as e:  # a command whose module is not written yet
            if e.name != f"hpff_bench.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    parser.commands = sub.choices  # name -> its parser (errors about a command's arguments)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `hpff-bench argv...` and return its exit code (argparse's too: 2, or 0 after --help)."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the command's parser, which names the command
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"hpff-bench {args.command}: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling (sweep keeps its summary)
        print(f"hpff-bench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
