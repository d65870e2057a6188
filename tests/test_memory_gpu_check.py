"""The GPU check (hpff_bench.gpu_check) and the CUDA probes, run on the CPU with injected readers.

A fake probe simulates the allocator's counters (a CUDA context, cuBLAS workspaces kept after the
first matmul of a handle, cuDNN workspaces freed after each convolution) and a fake NVML reader
derives its readings from the same state, so every number the check writes is known here.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
from pathlib import Path

import pytest

from hpff_bench.config import RunConfig
from hpff_bench.gpu_check import __main__ as cli
from hpff_bench.gpu_check import child, plan, report, runner
from hpff_bench.memory import cuda_probe, overheads

MIB = 1 << 20
CONTEXT = 500 * MIB
OTHER_PROCESSES = 1000 * MIB
WORKSPACE = {"mm": 32 * MIB, "addmm": 0, "backward": 32 * MIB}  # what the fake cuBLAS keeps
CUDNN_WS = {False: 3 * MIB, True: 24 * MIB}  # the fake cuDNN's transient workspace per benchmark setting


class FakeProbe:
    """CudaProbe's interface over simulated allocator counters."""

    device = "cuda:0"

    def __init__(self):
        self.alloc = self.res = 0
        self.inited = False
        self.benchmark = None

    def init_context(self):
        self.inited, self.alloc, self.res = True, 512, 2 * MIB

    def capability(self):
        return (9, 0)

    def name(self):
        return "Fake H200"

    def versions(self):
        return {"torch": "x", "cuda": "y", "cudnn": 1}

    def allocated(self):
        return self.alloc

    def reserved(self):
        return self.res

    def set_cudnn_benchmark(self, on):
        self.benchmark = on

    def limit_to(self, capacity_bytes):
        self.limit = capacity_bytes

    def alloc_retries(self):
        return self.retries

    def release(self):
        self.released = getattr(self, "released", 0) + 1

    retries = 0

    def first_matmul(self, n, kind):
        before = self._reading()
        self.alloc += WORKSPACE[kind]
        self.res += WORKSPACE[kind]  # a 32 MiB request gets its own 32 MiB segment
        return {"before": before, "after": self._reading()}

    def first_conv(self, shape, out_channels, pass_):
        before = self._reading()
        out_bytes = math.prod(shape) * 4 * (2 if pass_ == "backward" else 1)
        ws = CUDNN_WS[self.benchmark]
        self.res += 20 * MIB if ws < 10 * MIB else ws  # the segment the workspace took stays cached
        return {"before": before, "peak_allocated": before["allocated"] + out_bytes + ws,
                "output_bytes": out_bytes, "after": self._reading()}

    def _reading(self):
        return {"allocated": self.alloc, "reserved": self.res}


def fake_nvml(probe):
    """NVML as the driver would report the fake probe's state: context + reserved per process."""

    def read():
        mine = CONTEXT + probe.res if probe.inited else None
        return OTHER_PROCESSES + (mine or 0), mine

    return read


MEASURED = {
    "peak_allocated_bytes": 400 * MIB, "peak_reserved_bytes": 500 * MIB, "peak_active_bytes": 400 * MIB,
    "peak_requested_bytes": 390 * MIB, "tracked_peak_bytes": 330 * MIB, "nvml_peak_used_bytes": 2000 * MIB,
    "nvml_process_peak_bytes": 1000 * MIB, "breakdown_bytes": {}, "nvml": {"available": True},
}


def fake_profile(calls):
    def profile(cfg, snapshot=None, with_prediction=True):
        calls.append({"config": cfg, "snapshot": snapshot, "with_prediction": with_prediction})
        memory = dict(MEASURED)
        if snapshot:  # what SnapshotRecorder writes: the pickle and its HTML render
            Path(snapshot).parent.mkdir(parents=True, exist_ok=True)
            Path(snapshot).write_bytes(b"x" * 1000)
            Path(snapshot + ".html").write_text("<html></html>")
            memory["snapshot"] = {"snapshot": snapshot, "html": snapshot + ".html"}
        return {"config": cfg.to_dict(), "label": cfg.label, "step_seconds": 0.25, "memory": memory}

    return profile


PREDICTED = {
    "peak_allocated_bytes": 404 * MIB, "peak_reserved_bytes": 450 * MIB, "peak_requested_bytes": 390 * MIB,
    "device_used_bytes": 962 * MIB, "live_peak_bytes": 330 * MIB, "breakdown_bytes": {},
    "terms": {"cublas_workspace": {"bytes": 64 * MIB}}, "assumptions": {}, "seconds": 0.1,
}


def fake_predict(cfg, cuda_arch):
    assert cuda_arch == "hopper"
    return {"predicted": dict(PREDICTED)}


def in_process_spawn(calls):
    """runner's spawn, running each part here with the fakes instead of in a fresh process."""

    def spawn(part, out, timeout_s):
        if part.kind == "benchmarks":
            return runner.run_benchmarks(out, timeout_s, run=fake_pytest)
        probe = FakeProbe()
        return child.run_part(part, out, probe=probe, nvml_read=fake_nvml(probe), profile=fake_profile(calls),
                              hidden=lambda cfg, p: 64 * MIB, predict=fake_predict, edges=fake_edges,
                              steps_at=fake_steps_at)

    return spawn


def fake_edges(cfg, capacity, arch):
    return {"fits": 80, "runs": 98, "fails": 99, "alloc_retries_per_step": 1}


def fake_steps_at(cfg, probe, runs_up_to=98):
    """A device whose allocator runs up to batch `runs_up_to`, with one retry above batch 80."""
    assert probe.limit == plan.CACHE_RELEASE_CAPACITY  # limited before any step
    if cfg.batch_size > runs_up_to:
        return {"ran": False, "message": "CUDA out of memory. Tried to allocate 20.00 MiB"}
    return {"ran": True, "alloc_retries": int(cfg.batch_size > 80), "reserved_bytes": 190 * MIB}


def fake_pytest(cmd, timeout_s, cases=plan.BENCHMARK_CASES):
    out = next(a.split("=", 1)[1] for a in cmd if a.startswith("--benchmark-json="))
    with open(out, "w") as f:
        json.dump({"benchmarks": [{"name": f"test_train_step[{c}]"} for c in cases]}, f)
    return subprocess.CompletedProcess(cmd, 0, stdout=f"{len(cases)} passed in 9.9s\n", stderr="")


def cheap_cost(cfg):
    return 1e12 * cfg["batch_size"] / 1024, 1000 * cfg["k"]


# ----- the plan -----------------------------------------------------------------------------
def test_config_list_meets_the_issue():
    cfgs = [(plan.config_dict(n, m, k, b, extra), opts) for n, m, k, b, extra, opts in plan.CONFIGS]
    resolved = [(RunConfig.from_dict(d).validate(), opts) for d, opts in cfgs]
    assert len(resolved) >= 8
    assert all(c.device == "cuda" and c.warmup >= 1 for c, _ in resolved)
    assert {(c.network, c.batch_size) for c, _ in resolved} >= {
        (n, b) for n in ("resnet32", "resnet110") for b in (256, 1024)}
    assert any(c.method == "bp" for c, _ in resolved)
    for m in ("gc", "dgl", "infopro"):
        assert {c.k for c, _ in resolved if c.method == m and not c.hilo} >= {2, 16}, m
    hpff = [c for c, _ in resolved if c.hilo and c.pff_grid > 1]
    assert {(c.method, c.k) for c in hpff} >= {("dgl", 16), ("dgl", 55), ("infopro", 16), ("infopro", 55)}
    # both --hilo-exec values and both PFF executions for one HPFF configuration
    by_case = {}
    for c in hpff:
        by_case.setdefault((c.network, c.method, c.k, c.batch_size), set()).add((c.hilo_exec, c.pff_exec))
    assert any({h for h, _ in v} == {"fused", "reference"} and {p for _, p in v} == {"batched", "streamed"}
               for v in by_case.values())
    tv = [c for c, _ in resolved if c.network.startswith("resnet") and c.dataset == "imagenet"]
    assert tv and tv[0].batch_size == 64 and tv[0].network in ("resnet34", "resnet101", "resnet152")
    assert sum(bool(o.get("snapshot")) for _, o in resolved) == 1
    assert any(o.get("cudnn_benchmark") for _, o in resolved)
    assert len({plan.config_name(d, bool(o.get("cudnn_benchmark"))) for d, o in cfgs}) == len(cfgs)  # names unique


def test_plan_order_and_estimates():
    parts = plan.parts(cost=cheap_cost)
    assert [p.kind for p in parts[:4]] == ["overheads", "overheads", "config", "benchmarks"]
    assert [p.cudnn_benchmark for p in parts[:2]] == [False, True]
    assert parts[2].snapshot and not any(p.snapshot for p in parts[3:])
    configs = [p for p in parts if p.kind == "config"]
    assert len(configs) == len(plan.CONFIGS)
    steps = plan.WARMUP + plan.STEPS + plan.EXTRA_STEPS
    for p in configs:
        flops, ops = cheap_cost(p.config)
        gpu_step = max(flops / plan.H200_FLOPS_PER_S, ops * plan.LAUNCH_S)
        expected = plan.PROCESS_S + steps * gpu_step + ops * plan.TRACE_OP_S
        expected += plan.CUDNN_BENCHMARK_S if p.cudnn_benchmark else 0
        assert p.estimate_s == pytest.approx(expected) and (p.flops, p.ops) == (flops, ops)
    # FLOP-bound and launch-bound steps: 1 PFLOP at 20 TFLOP/s = 50 s; 10^6 ops at 20 us = 20 s
    assert plan.estimate_seconds(1e15, 10**6) == pytest.approx(plan.PROCESS_S + steps * 50 + 200)
    assert plan.estimate_seconds(1e12, 10**6) == pytest.approx(plan.PROCESS_S + steps * 20 + 200)
    quick = plan.parts(quick=True, cost=cheap_cost)
    assert {p.name for p in quick} <= {p.name for p in parts} and len([p for p in quick if p.kind == "config"]) == 3
    table = plan.plan_table(parts)
    assert "total (estimated, H200)" in table and parts[-1].name in table


def test_step_cost_is_torchs_flop_count():
    """The FLOP count is torch's (FlopCounterMode, where that runs: BP)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from hpff_bench.methods import build_method, synthetic_batch

    bp = {"network": "resnet20", "method": "bp", "batch_size": 4}
    cfg = RunConfig.from_dict(bp).validate()
    with FakeTensorMode(allow_non_fake_inputs=True):
        m = build_method(cfg, device=torch.device("cpu"))
        x, y = synthetic_batch(cfg, torch.device("cpu"))
        with FlopCounterMode(display=False) as fc:
            m.compute_gradients(x, y)
    flops, ops = plan.step_cost(bp)
    assert flops == fc.get_total_flops() > 0 and ops > 2 * 19  # at least a forward and a backward op per convolution
    # on a local method (where FlopCounterMode raises): convolution and matmul FLOPs are linear in
    # the batch, the ops are not
    dgl = {**bp, "method": "dgl", "k": 2}
    (f4, n4), (f8, n8) = plan.step_cost(dgl), plan.step_cost({**dgl, "batch_size": 8})
    assert f8 == 2 * f4 > 0 and n8 == n4


def test_budget_fits_what_is_left():
    now = [100.0]
    b = plan.Budget(60, clock=lambda: now[0])
    now[0] = 130.0
    assert b.elapsed == 30 and b.left == 30 and b.fits(30) and not b.fits(30.5)


# ----- measurements from readings ------------------------------------------------------------
def test_context_from_nvml_readings():
    with_pid = overheads.context_bytes((1000 * MIB, None), (1502 * MIB, 502 * MIB), 2 * MIB)
    assert with_pid["bytes"] == 500 * MIB and with_pid["nvml_device_growth_bytes"] == 502 * MIB
    assert "process" in with_pid["mechanism"]
    # NVML without per-pid bytes (a container): the device's growth minus reserved
    device_only = overheads.context_bytes((1000 * MIB, None), (1530 * MIB, None), 2 * MIB)
    assert device_only["bytes"] == 528 * MIB and "device growth" in device_only["mechanism"]


def test_workspace_arithmetic():
    r = {"before": {"allocated": 10 * MIB, "reserved": 20 * MIB}, "after": {"allocated": 42 * MIB, "reserved": 52 * MIB}}
    assert overheads.workspace_increment(r) == {"bytes": 32 * MIB, "reserved_growth_bytes": 32 * MIB}
    conv = {"before": {"allocated": 100, "reserved": 1000}, "peak_allocated": 100 + 40 + 7, "output_bytes": 40,
            "after": {"allocated": 100, "reserved": 3000}}
    assert overheads.transient_workspace(conv) == {"bytes": 7, "kept_allocated_bytes": 0, "reserved_growth_bytes": 2000}


@pytest.mark.parametrize("bench_on", [False, True])
def test_measure_overheads_on_injected_readings(bench_on):
    probe = FakeProbe()
    o = overheads.measure_overheads(probe, fake_nvml(probe), cudnn_benchmark=bench_on)
    assert o["context"]["bytes"] == CONTEXT and o["context_after_bytes"] == CONTEXT
    assert {k: v["bytes"] for k, v in o["cublas"].items()} == WORKSPACE
    assert o["cublas_total_bytes"] == 64 * MIB and probe.benchmark is bench_on
    assert len(o["cudnn"]) == len(overheads.CONV_SHAPES) * len(overheads.CONV_PASSES)
    assert all(c["bytes"] == CUDNN_WS[bench_on] and c["kept_allocated_bytes"] == 0 for c in o["cudnn"])
    assert o["device_name"] == "Fake H200" and o["capability"] == [9, 0]


def test_measure_overheads_without_nvml():
    o = overheads.measure_overheads(FakeProbe(), None, cudnn_benchmark=False)
    assert o["context"]["bytes"] is None and "context_after_bytes" not in o
    assert o["cublas_total_bytes"] == 64 * MIB


def test_cuda_arch():
    assert child.cuda_arch((9, 0)) == "hopper" and child.cuda_arch((8, 0)) == "ampere"
    assert child.cuda_arch((8, 9)) == "ada" and child.cuda_arch((7, 0)) == "volta"


def test_relative_errors_on_known_numbers():
    e = report.compare(MEASURED | {"hidden_allocated_bytes": 80 * MIB}, PREDICTED, context_after_bytes=520 * MIB)
    assert e["allocated"] == pytest.approx(0.01) and e["active"] == pytest.approx(0.01)
    assert e["reserved"] == pytest.approx(-0.1) and e["requested"] == 0 and e["live_tensors"] == 0
    assert e["nvml_process"] == pytest.approx(-0.038) and e["nvml_device"] == pytest.approx(-0.519)
    assert e["nvml_process_measured_context"] == pytest.approx(-0.03)  # (450 + 520) / 1000 - 1
    assert e["workspaces"] == pytest.approx(-0.2)  # 64 predicted / 80 measured - 1
    assert report.relative_error(1, None) is None and report.relative_error(None, 5) is None
    assert report.relative_error(3, 0) is None
    missing = report.compare({}, {})
    assert set(missing) == set(report.QUANTITIES) | {"nvml_process_measured_context", "workspaces"}
    assert all(v is None for v in missing.values())


# ----- the whole flow -------------------------------------------------------------------------
def test_whole_check_with_fake_gpu(tmp_path, capsys):
    calls = []
    now = [0.0]
    rc = cli.main(["--out", str(tmp_path), "--quick"], cuda_available=True, spawn=in_process_spawn(calls),
                  clock=lambda: now[0], cost=cheap_cost)
    assert rc == 0
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["schema"] == report.SCHEMA and doc["status"] == "complete"
    assert [p["kind"] for p in doc["parts"]] == ["overheads", "overheads", "config", "benchmarks", "config", "config",
                                                 "cache_release"]
    assert all(p["status"] == "ok" for p in doc["parts"])
    for p in doc["parts"]:
        assert {"kind", "name", "status", "estimate_s", "seconds", "config", "flops", "ops"} <= set(p)
    cfg_parts = [p for p in doc["parts"] if p["kind"] == "config"]
    for p in cfg_parts:
        assert {"memory", "predicted", "errors", "context_at_init", "context_after_run_bytes", "cuda_arch",
                "device_name", "env", "step_seconds"} <= set(p)
        assert p["context_at_init"]["bytes"] == CONTEXT and p["context_after_run_bytes"] == CONTEXT
        assert p["memory"]["hidden_allocated_bytes"] == 64 * MIB
        assert p["errors"]["allocated"] == pytest.approx(0.01) and p["errors"]["workspaces"] == 0
    # the profile ran without its own prediction; only the first config recorded a snapshot
    assert [c["with_prediction"] for c in calls] == [False] * 3
    assert calls[0]["snapshot"] == str(tmp_path / "snapshot" / (child._slug(cfg_parts[0]["name"]) + ".pickle"))
    assert calls[1]["snapshot"] is None and calls[2]["snapshot"] is None
    assert cfg_parts[0]["memory"]["snapshot"] == {
        "snapshot": {"path": calls[0]["snapshot"], "bytes": 1000},
        "html": {"path": calls[0]["snapshot"] + ".html", "bytes": 13}}
    assert "snapshot" not in cfg_parts[1]["memory"] or cfg_parts[1]["memory"]["snapshot"] is None
    on = doc["parts"][1]["overheads"]
    assert on["cudnn_benchmark"] is True and on["cudnn"][0]["bytes"] == CUDNN_WS[True]
    # against the prediction's assumptions on Hopper: 512 MiB context, 2 x 32 MiB cuBLAS
    assert doc["parts"][1]["assumed"] == {"context_bytes": 512 * MIB, "cublas_total_bytes": 64 * MIB}
    assert doc["parts"][1]["errors"] == {"context": pytest.approx(12 / 500), "context_after": pytest.approx(12 / 500),
                                         "cublas_total": 0.0}
    bench = doc["parts"][3]
    assert bench["benchmarks"] == [f"test_train_step[{c}]" for c in plan.BENCHMARK_CASES]
    assert "--benchmark-only --hpff-device cuda" in bench["command"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert md == report.markdown(doc)
    assert "Fake H200" in md and "+1.0 %" in md and "-10.0 %" in md and "500.0" in md
    assert "cudnn.benchmark on" in md and "| forward | 24.0 |" in md and f"{len(plan.BENCHMARK_CASES)} passed" in md
    assert "assumed 512.0 MiB: error +2.4 %" in md
    out = capsys.readouterr().out
    assert "total (estimated, H200)" in out and "# GPU check" in out


def test_config_part_with_the_real_prediction(tmp_path):
    """One tiny config through the child with the real fake-tensor prediction: its numbers land
    in the record and the errors are computed from them."""
    part = plan.Part("config", "tiny", plan.config_dict("resnet20", "bp", 1, 4, {}))
    probe = FakeProbe()
    rec = child.run_part(part, tmp_path, probe=probe, nvml_read=fake_nvml(probe), profile=fake_profile([]),
                         hidden=lambda cfg, p: 64 * MIB)
    p = rec["predicted"]
    assert p["terms"]["cublas_workspace"]["bytes"] == 64 * MIB and p["assumptions"]["cuda_arch"] == "hopper"
    assert rec["errors"]["allocated"] == pytest.approx(p["peak_allocated_bytes"] / MEASURED["peak_allocated_bytes"] - 1)
    assert rec["errors"]["workspaces"] == 0


def test_time_budget_stops_and_every_part_is_written_as_it_finishes(tmp_path):
    now = [0.0]
    parts = [plan.Part("benchmarks", f"p{i}", estimate_s=e) for i, e in enumerate((10, 10, 50, 5))]
    seen, timeouts = [], []

    def spawn(part, out, timeout_s):
        # what a kill at this moment would leave: every part finished so far
        seen.append([p["name"] for p in json.loads((out / "gpu_check.json").read_text())["parts"]]
                    if (out / "gpu_check.json").exists() else [])
        timeouts.append(timeout_s)
        now[0] += {"p0": 12, "p1": 14, "p3": 4}[part.name]
        return {"status": "ok", "seconds": 1.0}

    doc = runner.run_check(parts, tmp_path, plan.Budget(45, clock=lambda: now[0]), timeout_s=30, spawn=spawn,
                           log=lambda s: None)
    assert [p["status"] for p in doc["parts"]] == ["ok", "ok", "skipped", "ok"]
    assert "time budget: 19 s left, estimate 50 s" in doc["parts"][2]["message"]
    assert seen == [[], ["p0"], ["p0", "p1", "p2"]]
    assert timeouts == [30, 30, 19]  # never past the budget
    assert doc["status"] == "stopped: time budget" and doc["elapsed_s"] == 30
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == doc
    assert "- `p2`: skipped, time budget: 19 s left" in (tmp_path / "gpu_check.md").read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_benchmarks_part_needs_every_case_in_its_json(tmp_path):
    ok = runner.run_benchmarks(tmp_path, 60, run=fake_pytest)
    assert ok["status"] == "ok" and ok["summary"] == "3 passed in 9.9s"
    one = runner.run_benchmarks(tmp_path, 60, run=lambda cmd, t: fake_pytest(cmd, t, plan.BENCHMARK_CASES[:1]))
    assert one["status"] == "error" and "1 benchmark(s)" in one["message"]
    slow = runner.run_benchmarks(tmp_path, 60, run=lambda cmd, t: {"status": "timeout", "message": "killed after 60 s"})
    assert slow["status"] == "timeout"
    cmd = runner.benchmarks_command(tmp_path)
    assert cmd[cmd.index("-k") + 1] == " or ".join(plan.BENCHMARK_CASES)
    assert runner.SUITES.joinpath("test_benchmarks.py").exists() and str(runner.SUITES / "test_method_speed.py") in cmd
    assert runner.SUITES.joinpath("test_method_speed.py").exists()


def test_parts_round_trip_through_the_child_command_line():
    p = plan.parts(quick=True, cost=cheap_cost)[2]
    assert plan.Part.from_dict(json.loads(json.dumps(p.as_dict()))) == plan.Part(
        **{**p.__dict__, "estimate_s": round(p.estimate_s, 1)})


# ----- the command line ------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--budget-s", "nan"], "--budget-s must be a finite number of seconds > 0, got nan"),
    (["--budget-s", "0"], "--budget-s must be a finite number of seconds > 0, got 0"),
    (["--timeout-s", "inf"], "--timeout-s must be a finite number of seconds > 0, got inf"),
    (["--timeout-s", "-5"], "--timeout-s must be a finite number of seconds > 0, got -5"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert cli.main(argv + ["--out", str(tmp_path)], cuda_available=True) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gpu_check: error: {message}"


def test_out_must_be_a_directory(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["--out", str(f)], cuda_available=True) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_main_without_cuda_says_so(capsys, tmp_path):
    assert cli.main(["--out", str(tmp_path)], cuda_available=False) == 1
    assert "no CUDA device" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_plan_runs_without_a_gpu(capsys, tmp_path):
    assert cli.main(["--plan", "--quick", "--out", str(tmp_path)], cuda_available=False, cost=cheap_cost) == 0
    assert "total (estimated, H200)" in capsys.readouterr().out and not list(tmp_path.iterdir())


# ----- the allocator probe's pieces that run without a GPU --------------------------------------
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


class CpuProbe(cuda_probe.CudaProbe):
    """The real probe's experiments on the CPU, with the allocator readings stubbed: the tensor
    code (shapes, op signatures, the result bytes it counts) runs before a GPU session does."""

    def __init__(self):
        super().__init__(device=__import__("torch").device("cpu"))

    def allocated(self):
        return 0

    def reserved(self):
        return 0

    def reset_peaks(self):
        pass

    def peak_allocated(self):
        return 0


@pytest.mark.parametrize("kind", overheads.MATMUL_KINDS)
def test_real_probe_matmuls_run(kind):
    r = CpuProbe().first_matmul(64, kind)
    assert r == {"before": {"allocated": 0, "reserved": 0}, "after": {"allocated": 0, "reserved": 0}}


def test_real_probe_convs_count_their_results():
    probe = CpuProbe()
    fwd = probe.first_conv((2, 3, 8, 8), 4, "forward")
    assert fwd["output_bytes"] == 2 * 4 * 8 * 8 * 4  # y: 2 KiB, a multiple of 512 B
    bwd = probe.first_conv((2, 3, 8, 8), 4, "backward")
    assert bwd["output_bytes"] == 2 * 3 * 8 * 8 * 4 + 512  # grad_input 1.5 KiB + grad_weight (432 B -> 512)
    with pytest.raises(ValueError, match="unknown conv pass"):
        probe.first_conv((2, 3, 8, 8), 4, "sideways")


def test_a_failing_child_process_is_recorded_not_raised(tmp_path):
    """The real spawn path (a fresh `python -m hpff_bench.gpu_check --child` process) on a machine
    without CUDA: the part fails inside the child, and its record says why."""
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA: the child would succeed")
    part = plan.Part("overheads", "context + workspaces, cudnn.benchmark off")
    rec = runner.spawn_part(part, tmp_path, timeout_s=120)
    assert rec["status"] == "error" and rec["message"]
    assert "Traceback" in rec["stderr_tail"] and "init_context" in rec["stderr_tail"]


def test_hidden_allocation_is_allocated_minus_the_method_state(monkeypatch):
    """hidden_allocated's arithmetic on the CPU: the probe reports 10 MiB allocated; the method's
    state (parameters, gradients, momentum, buffers, batch; each a 512-B-rounded block) is
    subtracted exactly."""
    import hpff_bench.methods as methods
    from hpff_bench.memory.tracker import cuda_block_size

    class Probe(CpuProbe):
        def allocated(self):
            return 10 * MIB

    built, original = [], methods.build_method
    monkeypatch.setattr(methods, "build_method", lambda cfg, device: built.append(original(cfg, device=device)) or built[-1])
    cfg = RunConfig.from_dict({"network": "resnet20", "method": "bp", "batch_size": 4, "device": "cpu"}).validate()
    hidden = child.hidden_allocated(cfg, Probe())
    m = built[0]
    state = [*m.parameters(), *(p.grad for p in m.parameters()), *m.buffers(),
             *(s["momentum_buffer"] for s in m.optimizer.state.values())]
    batch = cuda_block_size(4 * 3 * 32 * 32 * 4) + cuda_block_size(4 * 8)  # float images, int64 labels
    expected = sum(cuda_block_size(t.untyped_storage().nbytes()) for t in state) + batch
    assert len(state) > 3 * 60 and hidden == 10 * MIB - expected


def test_cache_release_part_steps_the_predicted_edges_in_a_limited_device(tmp_path):
    release = next(p for p in plan.parts(cost=cheap_cost) if p.kind == "cache_release")
    assert release.capacity_bytes == plan.CACHE_RELEASE_CAPACITY and plan.Part.from_dict(release.as_dict()) == release
    probe = FakeProbe()
    rec = child.run_part(release, tmp_path, probe=probe, edges=fake_edges, steps_at=fake_steps_at)
    assert rec["status"] == "ok" and rec["agrees"] and probe.released == 3
    assert {b: m["ran"] for b, m in rec["measured"].items()} == {"81": True, "98": True, "99": False}
    assert rec["measured"]["81"]["alloc_retries"] == 1
    # a device that runs out earlier than predicted: the record says so, and so does the report
    rec = child.run_part(release, tmp_path, probe=FakeProbe(), edges=fake_edges,
                         steps_at=lambda cfg, probe: fake_steps_at(cfg, probe, runs_up_to=90))
    assert not rec["agrees"] and rec["measured"]["98"]["ran"] is False
    md = report.markdown(report.document([{**release.as_dict(), **rec}], "complete", 100, 10))
    assert "predicted 80 fits without a release, 98 runs (1 retries per step), 99 runs out of memory; DISAGREES" in md
    assert "batch 98: out of memory (CUDA out of memory. Tried to allocate 20.00 MiB)" in md


def test_release_edges_are_the_estimate_searchs():
    cfg = RunConfig.from_dict({**plan.config_dict(*plan.CACHE_RELEASE_CONFIG), "device": "cpu"}).validate()
    edges = child.release_edges(cfg, plan.CACHE_RELEASE_CAPACITY, "hopper")
    assert edges["fits"] < edges["runs"] < edges["fails"] == edges["runs"] + 1  # 80, 98, 99 when written
    assert edges["alloc_retries_per_step"] >= 1
