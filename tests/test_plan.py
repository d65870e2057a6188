"""`hpff-bench plan`: bad input is one line + exit 2 before any trace; records on a tiny network
(resnet20, batch 8); --max-batch agrees with `estimate --budget`; --timings ranks by measured
time x BP where a measurement matches a row exactly (tests/fixtures/timings_*)."""

import json
from pathlib import Path

import pytest

from hpff_bench.cli_options import add_config_arguments, config_from_args
from hpff_bench.commands.plan import configurations
from hpff_bench.errors import ConfigError
from hpff_bench.report.timings import read_timings, step_key

FIXTURES = Path(__file__).parent / "fixtures"
SPEED = str(FIXTURES / "timings_speed.json")  # suites/test_method_speed.py's shape, hand-written
RECORDS = str(FIXTURES / "timings_records.jsonl")  # profile records, hand-written
TINY = ["plan", "--network", "resnet20", "--batch-size", "8"]
GREEDY = [*TINY, "--budget", "2GiB", "--methods", "bp,greedy", "--k", "2"]


@pytest.fixture
def no_trace(monkeypatch):
    """Any prediction or split search fails the test: refusals must come before them."""
    import hpff_bench.planning
    import hpff_bench.profiling

    def traced(*a, **k):
        raise AssertionError("traced before the input was checked")

    for mod, name in ((hpff_bench.profiling, "estimate_batches"), (hpff_bench.profiling, "estimate_config"),
                      (hpff_bench.planning, "_search")):
        monkeypatch.setattr(mod, name, traced)


@pytest.mark.parametrize("args, message", [
    (["--budget", "4Gx"], "--budget '4Gx' is not a size"),
    (["--budget", "4GiB", "--k", "11"], "--k 11 is out of range for resnet20: K is 1 to 10"),
    (["--budget", "4GiB", "--methods", "bp,foo"], "unknown method 'foo' in --methods"),
    (["--budget", "4GiB", "--k", "two"], "--k must be comma-separated positive integers"),
    (["--budget", "4GiB", "--timings", "{d}/nope.json"], "--timings '{d}/nope.json': no such file"),
    (["--budget", "4GiB", "--timings", RECORDS, "{d}"], "--timings '{d}' is a directory; give a file"),
    (["--budget", "4GiB", "--timings", "{d}/estimates.jsonl"],
     "--timings '{d}/estimates.jsonl': no measured step time in this file"),
    (["--budget", "4GiB", "--timings", "{d}/binary.json"], "--timings '{d}/binary.json': cannot be read as text"),
])
def test_bad_input_one_line_exit_2(args, message, cli, tmp_path, no_trace):
    (tmp_path / "estimates.jsonl").write_text(json.dumps(
        {"schema": 1, "kind": "estimate", "status": "ok", "config": {"network": "resnet20"}, "timing": None}) + "\n")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x81")
    code, out, err = cli(*TINY, *(a.replace("{d}", str(tmp_path)) for a in args))
    assert code == 2, err
    assert message.replace("{d}", str(tmp_path)) in err and len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_paper_tables_and_balanced_enumerated():
    cfgs = configurations("resnet110", "cifar10", 1024, ["infopro"], [2])
    splits = sorted({(c.split, c.hilo) for c in cfgs})
    assert splits == [(s, h) for s in ("balanced", "hpff", "infopro", "infopro-balanced") for h in (False, True)]
    with pytest.raises(ConfigError, match="unknown method"):
        configurations("resnet110", "cifar10", 1024, ["nope"], [2])


def test_gc_is_tried_at_every_k_above_one_and_bp_once():
    cfgs = configurations("resnet32", "cifar10", 128, ["bp", "gc"], [1, 2, 4])
    assert [(c.method, c.k) for c in cfgs] == [("bp", 1), ("gc", 2), ("gc", 4)]
    assert {c.split for c in cfgs if c.method == "gc"} == {"auto"}  # as `estimate --method gc --k K`
    only_one = configurations("resnet32", "cifar10", 128, ["gc"], [1])
    assert [(c.method, c.k) for c in only_one] == [("gc", 1)]  # nothing to checkpoint: the BP-equal row


def _records(cli, *argv):
    code, out, err = cli(*argv, "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_json_records_fit_and_are_sorted_by_flops_vs_bp(cli):
    recs = _records(cli, *GREEDY)
    assert [(x["method"], x["hpff"]) for x in recs].count(("greedy", False)) == 1
    assert [x["method"] for x in recs].count("greedy") == 2  # HPFF off and on
    assert all(x["fits"] and x["headroom_bytes"] == 2 * 2**30 - x["device_used_bytes"] for x in recs)
    bp = next(x for x in recs if x["method"] == "bp")
    assert [x["flops_vs_bp"] for x in recs] == sorted(x["flops_per_step"] / bp["flops_per_step"] for x in recs)
    assert bp["flops_vs_bp"] == 1.0
    assert all(x["time_vs_bp"] is None and x["measured"] is None for x in recs)  # no --timings
    assert {x["split"]["scheme"] for x in recs if x["method"] == "greedy"} == {"balanced"}
    # without bp among the candidates, BP is still the FLOPs reference
    alone = _records(cli, *TINY, "--budget", "2GiB", "--methods", "greedy", "--k", "2")
    assert [x["flops_vs_bp"] for x in alone] == [x["flops_per_step"] / bp["flops_per_step"] for x in recs
                                                 if x["method"] == "greedy"]
    code, out, err = cli(*TINY, "--budget", "100MiB", "--methods", "bp", "--json")
    assert code == 0 and out == ""  # nothing fits under the assumed CUDA context


def test_max_batch_is_estimates_budget_search(cli, cli_json):
    """The largest batch per row is what `estimate --budget` finds for that configuration."""
    recs = _records(cli, *TINY, "--budget", "600MiB", "--methods", "bp", "--max-batch")
    est = cli_json("estimate", "--network", "resnet20", "--method", "bp", "--batch-size", "8", "--budget", "600MiB")
    assert [r["largest_batch"] for r in recs] == [est["budget"]["largest_batch"]]
    assert est["budget"]["exact"] and 8 <= est["budget"]["largest_batch"] < est["budget"]["smallest_failing_batch"]
    code, out, err = cli(*TINY, "--budget", "600MiB", "--methods", "bp", "--max-batch")
    assert out.splitlines()[0].split()[-1] == "batch" and out.splitlines()[1].split()[-1] == str(recs[0]["largest_batch"])
    # a balanced row keeps its cuts while other batch sizes are tried: estimate --cuts at those cuts
    greedy = _records(cli, *TINY, "--budget", "600MiB", "--methods", "greedy", "--k", "2", "--max-batch")
    off = next(r for r in greedy if not r["hpff"])
    est = cli_json("estimate", "--network", "resnet20", "--method", "greedy", "--cuts", off["split"]["cuts"],
                   "--batch-size", "8", "--budget", "600MiB")
    assert off["split"]["scheme"] == "balanced" and off["largest_batch"] == est["budget"]["largest_batch"]


def _cfg(*argv):
    import argparse

    p = argparse.ArgumentParser()
    add_config_arguments(p)
    return config_from_args(p.parse_args(["--network", "resnet20", "--batch-size", "8", *argv]))


def test_step_key_compares_what_the_step_computes():
    greedy = _cfg("--method", "greedy", "--k", "2", "--cuts", "1.1")
    # what the method never reads: the InfoPro recipe's aux, the device, steps, the split's name
    assert step_key(greedy, "1.1") == step_key(greedy.replace(aux="2c2f", device="cuda", steps=9, split="balanced",
                                                              cuts=""), "1.1")
    assert step_key(greedy, "1.1") != step_key(greedy, "2.0")  # other cuts
    assert step_key(greedy, "1.1") != step_key(greedy.replace(batch_size=16), "1.1")
    assert step_key(greedy, "1.1") != step_key(greedy.replace(pff_grid=2), "1.1")  # PFF alone
    assert step_key(greedy, "1.1") != step_key(greedy.replace(hilo=True, pff_grid=2), "1.1")  # HPFF
    assert step_key(greedy, "1.1") != step_key(greedy.replace(method="dgl"), "1.1")
    infopro = _cfg("--method", "infopro", "--k", "2", "--cuts", "1.1")
    assert step_key(infopro, "1.1") != step_key(infopro.replace(aux="2c2f"), "1.1")
    bp = _cfg("--method", "bp")
    assert step_key(bp, "") == step_key(bp.replace(k=16, split="uniform"), "1.0,2.1")  # BP's cuts only name modules
    gc = _cfg("--method", "gc", "--k", "2", "--cuts", "1.1")
    assert step_key(gc, "1.1") != step_key(gc, "2.0")  # checkpoint segments


def test_read_timings_from_both_sources():
    t = read_timings([SPEED, RECORDS])
    assert t.files == [SPEED, RECORDS]
    assert t.count() == 6  # speed: bp, greedy, greedy+hpff; records: bp, greedy balanced, greedy PFF only
    assert t.notes == [
        f"{SPEED}: test_method_speed_against_bp: case 'no-such-case' is not one of hpff_bench/speed_cases.py's; left out",
        f"{RECORDS}: 1 timed record(s) without a BP record of the same kind, setting and machine in this file "
        "(no reference for time x BP); left out",
    ]
    greedy = _cfg("--method", "greedy", "--k", "2", "--cuts", "1.1")
    m = t.lookup(step_key(greedy, "1.1"))
    assert (m.file, m.entry, m.device, m.step_seconds, m.bp_step_seconds, m.time_vs_bp) == (
        RECORDS, "record 2 (greedy-balanced)", "NVIDIA H200", 0.008, 0.010, 0.008 / 0.010)
    uniform = t.lookup(step_key(greedy, "2.0"))  # the benchmark's greedy ran split uniform: cut after 2.0
    assert (uniform.time_vs_bp, uniform.device, uniform.threads) == (1.5, "cpu, 2 threads (Test CPU @ 2.0GHz)", 2)
    assert t.lookup(step_key(greedy.replace(batch_size=16), "1.1")) is None  # no BP at batch 16
    bp = _cfg("--method", "bp")
    assert t.lookup(step_key(bp, "")).file == SPEED  # both files time BP: the first given wins
    assert read_timings([RECORDS, SPEED]).lookup(step_key(bp, "")).file == RECORDS


def test_timings_rank_rows_where_they_match(cli):
    recs = _records(cli, *GREEDY, "--timings", SPEED, RECORDS)
    got = [(x["method"], x["hpff"], x["split"]["cuts"], x["time_vs_bp"], x["measured"] and x["measured"]["file"])
           for x in recs]
    # greedy at the balanced cuts 1.1 was timed (records: 0.8 x BP); BP in both files (the first wins);
    # greedy+HPFF was timed only at the uniform cut 2.0 and PFF without HiLo: not this row
    assert got == [("greedy", False, "1.1", 0.008 / 0.010, RECORDS), ("bp", False, "", 1.0, SPEED),
                   ("greedy", True, "1.1", None, None)]
    assert recs[0]["measured"] == {"step_seconds": 0.008, "bp_step_seconds": 0.010, "device": "NVIDIA H200",
                                   "threads": None, "file": RECORDS, "entry": "record 2 (greedy-balanced)"}
    assert recs[1]["measured"]["device"] == "cpu, 2 threads (Test CPU @ 2.0GHz)"
    assert recs[2]["flops_vs_bp"] > 1.0 and recs[2]["time_vs_bp"] is None
    code, out, err = cli(*GREEDY, "--timings", RECORDS, SPEED)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[5:10] == ["GFLOP/step", "FLOPs", "x", "BP", "time"]
    assert [line.split()[7:9] for line in lines[1:4]] == [["0.80", "[1]"], ["1.00", "[1]"], ["-", "-"]]
    assert lines[4].endswith("sorted by measured time x BP (median step time / BP's on the same machine) where "
                             "measured, else by predicted FLOPs x BP.")
    assert lines[5:] == [f"time x BP measured for 2 of 3 rows (6 measured configurations read from {RECORDS}, {SPEED}):",
                         f"  [1] NVIDIA H200: {RECORDS}"]
    assert err.count("note:") == 2


def test_cache_release_adds_what_runs_only_with_the_cache_released(cli):
    from hpff_bench.commands.plan import _with_cache_release
    from hpff_bench.config import RunConfig
    from hpff_bench.profiling import estimate_config

    mib = 2**20
    # InfoPro resnet20 K=4 (uniform) in 200 MiB besides the assumed 512 MiB context: batch 98 does not
    # fit the reserved peak but runs with one release per step, 99 runs out of memory
    cfg = RunConfig(network="resnet20", method="infopro", k=4, batch_size=98, split="uniform")

    def events(b):
        return estimate_config(cfg.replace(batch_size=b), keep_events=True)["events"]

    assert _with_cache_release(events(98), 712 * mib, 98, None) == {"runs_with_cache_release": True,
                                                                     "alloc_retries_per_step": 1}
    assert _with_cache_release(events(99), 712 * mib, 99, None) == {
        "runs_with_cache_release": False, "alloc_retries_per_step": None}
    code, out, err = cli(*TINY, "--budget", "2GiB", "--methods", "bp", "--cache-release", "--max-batch")
    assert code == 0, err
    head, row = out.splitlines()[:2]
    assert head.split()[-5:] == ["batch", "retries", "max", "batch,", "released"] and row.split()[-2] == "0"
    assert "1 of 1 configurations fit 2,048 MiB" in out and "0 more run when the allocator releases its cache" in out
    rec = _records(cli, *TINY, "--budget", "2GiB", "--methods", "bp", "--cache-release", "--max-batch")[0]
    assert rec["fits"] and rec["runs_with_cache_release"] and rec["alloc_retries_per_step"] == 0
    assert rec["largest_batch_with_cache_release"] >= rec["largest_batch"] >= 8
