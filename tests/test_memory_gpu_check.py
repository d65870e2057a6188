"""The GPU check script and the CUDA probe: the parts that run without a GPU."""

from __future__ import annotations

import json
import pickle

from hpff_bench.config import RunConfig
from hpff_bench.memory import cuda_probe, gpu_check


def test_configs_are_valid_and_quick_is_a_subset():
    full, quick = gpu_check.configs(), gpu_check.configs(quick=True)
    assert len(full) == len(gpu_check.CONFIGS) and len(quick) == 3
    assert all(q in full for q in quick)
    for d in full:
        cfg = RunConfig.from_dict(d).validate()
        assert cfg.device == "cuda" and cfg.warmup >= 1
    assert {d["method"] for d in full} >= {"bp", "gc", "dgl", "infopro"}


def test_cuda_arch_and_errors():
    assert gpu_check.cuda_arch((9, 0)) == "hopper" and gpu_check.cuda_arch((8, 0)) == "ampere"
    assert gpu_check.cuda_arch((8, 9)) == "ada" and gpu_check.cuda_arch((7, 0)) == "volta"
    assert gpu_check.relative_error(110, 100) == 0.1 and gpu_check.relative_error(1, None) is None
    record = {
        "memory": {"peak_allocated_bytes": 100, "peak_reserved_bytes": 200, "nvml_process_peak_bytes": None},
        "predicted": {"peak_allocated_bytes": 90, "peak_reserved_bytes": 220, "device_used_bytes": 700},
    }
    e = gpu_check.compare(record)
    assert e["peak_allocated_bytes_vs_peak_allocated_bytes"] == -0.1
    assert abs(e["peak_reserved_bytes_vs_peak_reserved_bytes"] - 0.1) < 1e-12
    assert e["nvml_process_peak_bytes_vs_device_used_bytes"] is None


def test_report_files(tmp_path):
    ok = {
        "name": "resnet32 bp K=1 b=256",
        "memory": {"peak_allocated_bytes": 100 << 20, "peak_reserved_bytes": 120 << 20, "nvml_process_peak_bytes": 700 << 20},
        "predicted": {"peak_allocated_bytes": 101 << 20, "peak_reserved_bytes": 118 << 20, "device_used_bytes": 650 << 20},
        "hidden_allocated_bytes": 64 << 20,
        "context_bytes": 500 << 20,
    }
    ok["errors"] = gpu_check.compare(ok)
    failed = {"name": "resnet110 bp K=1 b=1024", "error": "timeout after 240 s"}
    jpath, mpath = gpu_check.write_report([ok, failed], tmp_path / "gpu")
    assert json.loads(jpath.read_text())[1]["error"].startswith("timeout")
    md = mpath.read_text()
    assert "+1.0 %" in md and "-1.7 %" in md and "failed: timeout" in md


def test_main_without_cuda_says_so(capsys):
    assert gpu_check.main(["--out", "unused"]) == 1
    assert "no CUDA device" in capsys.readouterr().err


def test_allocator_stats_fields_and_offline_render(tmp_path):
    stats = {"allocated_bytes.all.peak": 5, "reserved_bytes.all.peak": 7, "active_bytes.all.peak": 5,
             "requested_bytes.all.peak": 4, "allocated_bytes.all.current": 1, "reserved_bytes.all.current": 7}
    assert cuda_probe.stats_from(stats) == {
        "peak_allocated_bytes": 5, "peak_reserved_bytes": 7, "peak_active_bytes": 5,
        "peak_requested_bytes": 4, "allocated_bytes": 1, "reserved_bytes": 7,
    }
    assert cuda_probe.stats_from({})["peak_allocated_bytes"] is None
    snap = tmp_path / "snap.pickle"
    snap.write_bytes(pickle.dumps({"segments": [], "device_traces": [[]]}))
    html = cuda_probe.render_html(snap)
    assert "<html" in html.lower()  # the offline timeline (torch.cuda._memory_viz trace_plot)
