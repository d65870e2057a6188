"""`hpff-bench profile`: the record of INTERFACES.md for every method, on the CPU."""

from __future__ import annotations

import pytest

from hpff_bench.memory.tracker import CATEGORIES

SMALL = ("--network", "resnet20", "--batch-size", "4", "--steps", "1", "--warmup", "1", "--no-predict")
METHODS = {
    "bp": (),
    "gc": ("--k", "3"),
    "greedy": ("--k", "2"),
    "dgl": ("--k", "2"),
    "infopro": ("--k", "2"),
    "dgl --hilo": ("--k", "3", "--hilo"),
    "greedy --pff-grid 2": ("--k", "2", "--pff-grid", "2"),
    "infopro --hpff": ("--k", "3", "--hpff"),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_profile_json_for_every_method(name, cli_json):
    method, *flags = name.split()
    r = cli_json("profile", *SMALL, "--method", method, *METHODS[name], *flags)
    assert r["config"]["method"] == method and r["config"]["batch_size"] == 4
    assert r["device"] == "cpu" and r["memory_source"] == "tensor-tracker"
    m = r["memory"]
    assert r["peak_memory_bytes"] == m["tracked_peak_bytes"] > 0
    assert set(m["breakdown_bytes"]) == set(CATEGORIES)
    assert sum(m["breakdown_bytes"].values()) == r["peak_memory_bytes"]
    assert 0 < m["lower_bound_bytes"] <= r["peak_memory_bytes"]
    assert max(m["per_module_peak_bytes"].values()) == r["peak_memory_bytes"]
    for key in ("peak_allocated_bytes", "peak_reserved_bytes", "nvml_peak_used_bytes", "nvml_process_peak_bytes"):
        assert key in m and m[key] is None  # no allocator / NVML on the CPU
    assert r["step_seconds"] > 0 and r["images_per_second"] == pytest.approx(4 / r["step_seconds"])
    assert r["modules"] == (1 if method in ("bp", "gc") else int(METHODS[name][1]))
    assert r["params"] > 0 and r["forward_calls"] >= r["modules"]
    assert r["predicted"] is None and r["label"] and "ablation" in r
    # where the step's time went: the scopes cover the timed step (one here), aux only with aux nets
    by_scope = r["seconds_by_scope"]
    assert set(by_scope) == {"backbone", "aux", "other"} and min(by_scope.values()) >= 0
    assert sum(by_scope.values()) == pytest.approx(r["step_seconds"], rel=0.05, abs=2e-3)
    assert (by_scope["aux"] > 0) == (method not in ("bp", "gc")) and by_scope["backbone"] > 0


def test_local_learning_at_large_k_peaks_below_bp(cli_json):
    base = ("profile", "--network", "resnet32", "--batch-size", "64", "--steps", "1", "--warmup", "0", "--no-predict")
    bp = cli_json(*base, "--method", "bp")
    info = cli_json(*base, "--method", "infopro", "--k", "16")
    assert info["modules"] == 16
    assert info["peak_memory_bytes"] < 0.75 * bp["peak_memory_bytes"], (info["peak_memory_bytes"], bp["peak_memory_bytes"])


def test_profile_fills_the_prediction_and_prints_a_table(cli, cli_json):
    r = cli_json("profile", "--network", "resnet20", "--method", "dgl", "--k", "2", "--batch-size", "4",
                 "--steps", "1", "--cuda-arch", "ampere", "--cuda-context-bytes", "400MiB")
    p = r["predicted"]
    assert set(p) >= {"peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes", "terms"}
    assert p["terms"]["cuda_context"]["bytes"] == 400 << 20
    assert p["peak_allocated_bytes"] >= r["peak_memory_bytes"]  # blocks + workspaces on top of live bytes
    code, out, _ = cli("profile", *SMALL, "--method", "greedy", "--k", "2")
    assert code == 0 and "peak memory" in out and "lower bound" in out and "{" not in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (("--snapshot", "x.pickle"), "--snapshot"),
        (("--nvml-interval-ms", "0"), "--nvml-interval-ms"),
        (("--device", "cuda"), "no CUDA device"),
        (("--cuda-context-bytes", "lots"), "--cuda-context-bytes"),
        (("--cuda-arch", "pascal"), "--cuda-arch"),
        (("--method", "backprop"), "--method"),
        (("--batch-size", "0"), "--batch-size"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, cli):
    code, out, err = cli("profile", *SMALL, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
