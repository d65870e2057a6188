"""`hpff-bench plan`: bad input is one line + exit 2 before any trace; records on a tiny network."""

import json
import subprocess
import sys

import pytest

from hpff_bench.commands.plan import configurations
from hpff_bench.errors import ConfigError


def _plan(*args):
    return subprocess.run([sys.executable, "-m", "hpff_bench", "plan", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (["--budget", "4Gx"], "--budget '4Gx' is not a size"),
    (["--budget", "4GiB", "--k", "11"], "--k 11 is out of range for resnet20: K is 1 to 10"),
    (["--budget", "4GiB", "--methods", "bp,foo"], "unknown method 'foo' in --methods"),
    (["--budget", "4GiB", "--k", "two"], "--k must be comma-separated positive integers"),
])
def test_bad_input_one_line_exit_2(args, message):
    r = _plan("--network", "resnet20", "--batch-size", "8", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_paper_tables_and_balanced_enumerated():
    cfgs = configurations("resnet110", "cifar10", 1024, ["infopro"], [2])
    splits = sorted({(c.split, c.hilo) for c in cfgs})
    assert splits == [(s, h) for s in ("balanced", "hpff", "infopro", "infopro-balanced") for h in (False, True)]
    with pytest.raises(ConfigError, match="unknown method"):
        configurations("resnet110", "cifar10", 1024, ["nope"], [2])


def test_json_records_fit_and_are_sorted_by_flops():
    r = _plan("--network", "resnet20", "--batch-size", "8", "--budget", "2GiB", "--methods", "bp,greedy",
              "--k", "2", "--json")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["method"] for x in recs].count("greedy") == 2  # HPFF off and on
    assert all(x["fits"] and x["headroom_bytes"] == 2 * 2**30 - x["device_used_bytes"] for x in recs)
    assert [x["flops_per_step"] for x in recs] == sorted(x["flops_per_step"] for x in recs)
    assert {x["split"]["scheme"] for x in recs if x["method"] == "greedy"} == {"balanced"}
    tight = _plan("--network", "resnet20", "--batch-size", "8", "--budget", "100MiB", "--methods", "bp", "--json")
    assert tight.returncode == 0 and tight.stdout == ""  # nothing fits under the assumed CUDA context
