"""Shared fixtures: run the CLI in-process (no torch import per call)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def cli(capsys):
    """cli(*argv) -> (exit code, stdout, stderr) of `hpff-bench argv...`."""
    from hpff_bench.cli import main

    def run(*argv: str):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def cli_json(cli):
    """cli_json(*argv) -> the one JSON object printed on stdout (asserts exit 0)."""

    def run(*argv: str):
        code, out, err = cli(*argv, "--json")
        assert code == 0, err
        return json.loads(out)

    return run
