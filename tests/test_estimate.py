"""`hpff-bench estimate`: predictions on the command line, batch lists and the budget search."""

from __future__ import annotations

import pytest

from hpff_bench import profiling
from hpff_bench.config import RunConfig

SMALL = ("--network", "resnet20", "--method", "dgl", "--k", "2")


def test_estimate_json_has_prediction_breakdown_and_bound(cli_json):
    r = cli_json("estimate", *SMALL, "--batch-size", "8")
    p = r["predicted"]
    assert r["modules"] == 2 and r["config"]["batch_size"] == 8 and r["label"] == "DGL"
    assert p["peak_allocated_bytes"] <= p["peak_reserved_bytes"] < p["device_used_bytes"]
    # the smallest reserve it runs in, cache given back on out-of-memory: 2 MiB segments
    assert p["peak_allocated_bytes"] <= p["least_reserved_bytes"] <= p["peak_reserved_bytes"]
    assert p["least_reserved_bytes"] % (2 << 20) == 0
    assert p["least_device_bytes"] - p["least_reserved_bytes"] == p["terms"]["cuda_context"]["bytes"]
    assert sum(p["breakdown_bytes"].values()) == p["live_peak_bytes"]
    assert p["lower_bound_bytes"] <= p["live_peak_bytes"]
    assert {"module0", "module1", "aux/independent/0"} <= set(p["per_module_peak_bytes"])
    assert p["terms"]["cuda_context"]["source"] == "assumed"


def test_estimate_batch_list_table(cli):
    code, out, err = cli("estimate", *SMALL, "--batch-size", "4,8")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("DGL")]
    assert [row.split()[3] for row in rows] == ["4", "8"]
    assert "assumed" in out  # the CUDA context is labelled as an assumption


def fake_estimate(cfg, **_):
    """device use = 100 MiB + 1 MiB per sample, with a 2 MiB step at each multiple of 64."""
    b = cfg.batch_size
    used = (100 + b + 2 * (b // 64)) << 20
    return {"config": cfg.to_dict(), "predicted": {"device_used_bytes": used}}


@pytest.mark.parametrize("budget_mib", [300, 1000, 160, 50])
def test_budget_search_finds_the_largest_batch_that_fits(budget_mib, monkeypatch):
    monkeypatch.setattr(profiling, "estimate_config", fake_estimate)
    used = lambda n: fake_estimate(RunConfig(batch_size=n))["predicted"]["device_used_bytes"]  # noqa: E731
    expected = max((n for n in range(1, 4096) if used(n) <= budget_mib << 20), default=None)
    out = profiling.estimate_batches(RunConfig(), [64, 128], budget_bytes=budget_mib << 20)
    b = out["budget"]
    assert b["largest_batch"] == expected and b["exact"]
    if expected is not None:
        assert b["smallest_failing_batch"] == expected + 1
    assert b["predictions"] <= 2 + 16
    assert b["search"] == "full" and b["fallback_reason"] == "the predictions carry no event log"


def test_budget_on_the_command_line(cli):
    # a budget below batch 4's predicted use: the search walks down (batch 2, 1), so it is quick
    code, out, err = cli("estimate", *SMALL, "--batch-size", "4", "--budget", "1MiB", "--cuda-context-bytes", "0")
    assert code == 0, err
    assert "budget 1 MiB: no batch size fits" in out
    # the model puts the edge at 0 / 1, but batch 1 cannot run (BatchNorm1d in the aux net): the
    # real search decides, and both outputs say so
    assert "budget search: affine model not used: batch 1 cannot run (see unusable_batches)" in err
    assert "(full search: batch 1 cannot run (see unusable_batches), which the affine model cannot know)" in out
    assert "batch 1 cannot run: ValueError: Expected more than 1 value per channel when training" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (("--batch-size", "64,abc"), "--batch-size"),
        (("--batch-size", "0"), "--batch-size"),
        (("--budget", "lots"), "--budget"),
        (("--budget", "0GiB"), "--budget"),
        (("--cuda-arch", "pascal"), "--cuda-arch"),
        (("--k", "99"), "--k"),
        (("--cache-release",), "--cache-release needs --budget"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, cli):
    code, out, err = cli("estimate", *SMALL, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_parse_bytes():
    assert profiling.parse_bytes("24GiB", "--budget") == 24 << 30
    assert profiling.parse_bytes("24 GB", "--budget") == 24 * 10**9
    assert profiling.parse_bytes("1.5e9", "--budget") == 1_500_000_000
    assert profiling.parse_batch_sizes("64, 128,64") == [64, 128]


def test_every_batched_pff_estimate_says_why_batched_is_the_default(cli):
    from hpff_bench.commands.estimate import BATCHED_PFF_NOTE

    code, out, err = cli("estimate", *SMALL, "--hpff", "--batch-size", "4", "--json")
    assert code == 0 and BATCHED_PFF_NOTE in err
    code, out, err = cli("estimate", *SMALL, "--hpff", "--pff-exec", "streamed", "--batch-size", "4", "--json")
    assert code == 0 and "PFF runs batched" not in err
