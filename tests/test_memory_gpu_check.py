"""The GPU check (hpff_bench.gpu_check) and the CUDA probes, run on the CPU with injected readers.

A fake probe simulates the allocator's counters (a CUDA context, cuBLAS workspaces kept after the
first matmul of a handle, cuDNN workspaces freed after each convolution) and a fake NVML reader
derives its readings from the same state, so every number the check writes is known here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import subprocess
from pathlib import Path

import pytest

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS, RunConfig
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
# per configuration, MiB: (measured allocated, reserved; predicted allocated, reserved); the
# default is MEASURED's and PREDICTED's
FAKE_MIB = {
    "whole-map": (400, 500, 404, 450), "official": (600, 704, 606, 640), "batched": (400, 470, 404, 440),
    "streamed": (390, 440, 392, 430), "gc": (300, 420, 310, 600),
}


def fake_key(cfg) -> str | None:
    if cfg.method == "gc":
        return "gc"
    if cfg.hilo:
        return "official" if cfg.variant == "official" else cfg.pff_exec if cfg.pff_grid > 1 else "whole-map"
    return None


def fake_profile(calls):
    def profile(cfg, snapshot=None, with_prediction=True):
        calls.append({"config": cfg, "snapshot": snapshot, "with_prediction": with_prediction})
        memory = dict(MEASURED)
        if fake_key(cfg):  # NVML: the context and the reserve of this process, on a device shared with 1000 MiB
            a, r, _, _ = FAKE_MIB[fake_key(cfg)]
            memory.update(peak_allocated_bytes=a * MIB, peak_active_bytes=a * MIB, peak_reserved_bytes=r * MIB,
                          nvml_process_peak_bytes=CONTEXT + r * MIB,
                          nvml_peak_used_bytes=OTHER_PROCESSES + CONTEXT + r * MIB)
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
    predicted = dict(PREDICTED)
    if fake_key(cfg):  # the device total: the reserve and the assumed 512 MiB context
        _, _, a, r = FAKE_MIB[fake_key(cfg)]
        predicted.update(peak_allocated_bytes=a * MIB, peak_reserved_bytes=r * MIB, device_used_bytes=(r + 512) * MIB)
    return {"predicted": predicted}


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
def resolved(tier="default"):
    return [(RunConfig.from_dict(plan.config_dict(e.fields)).validate(), e) for e in plan.entries(tier)]


def test_pff_decomposition_differs_only_in_the_decoders_execution():
    """Four executions of InfoPro+HiLo's decoder at ResNet-32 "K=16" (15 modules), batch 1024:
    the whole-map decoder, the official execution (its quadrant decoders), ours batched and
    streamed; no configuration field but the execution's differs (same split, loss settings, λ,
    batch)."""
    from hpff_bench.networks.splits import split_of

    rows = [(c, e) for c, e in resolved() if e.group == "pff"]
    assert [e.row for _, e in rows][0] == "whole-map decoder (HiLo, no PFF)"  # the baseline of the changes
    execs = [(c.variant, c.hilo_exec, c.pff_grid, c.pff_exec if c.pff_grid > 1 else None) for c, _ in rows]
    assert execs == [("ours", "fused", 1, None), ("official", "official", 2, "batched"),
                     ("ours", "fused", 2, "batched"), ("ours", "fused", 2, "streamed")]
    assert {(c.network, c.method, c.k, c.split, c.batch_size, c.aux, c.local_loss, c.lambdas, c.hilo, c.independent)
            for c, _ in rows} == {("resnet32", "infopro", 16, "hpff", 1024, "2c2f", "ce", HPFF_INFOPRO_LAMBDAS,
                                   True, True)}
    assert {split_of(c).modules for c, _ in rows} == {15}
    assert not any(e.cudnn_benchmark or e.snapshot for _, e in rows)


def test_table3_rows_are_the_papers_suites():
    """The Table-3 group is suites/papers.toml's CIFAR-10 E2E, GC and InfoPro* K=2 profiles (the
    configurations the report compares with the paper), InfoPro* K=2 once with cudnn.benchmark
    on (as the paper measured) and once off."""
    from hpff_bench.runner.suite import load_suite

    suite = load_suite(runner.SUITES / "papers.toml").plan()
    same = {"steps": plan.STEPS, "warmup": plan.WARMUP, "device": "cuda"}
    papers = {t.config.replace(**same) for t in suite.tasks if t.kind == "profile"}
    rows = [(c, e) for c, e in resolved() if e.group == "table3"]
    assert all(c in papers for c, _ in rows)
    assert [(c.network, c.dataset, c.batch_size, c.method, c.k, e.cudnn_benchmark) for c, e in rows] == [
        ("resnet110", "cifar10", 1024, "bp", 1, False), ("resnet110", "cifar10", 1024, "gc", 4, False),
        ("resnet110", "cifar10", 1024, "infopro", 2, True), ("resnet110", "cifar10", 1024, "infopro", 2, False)]
    assert rows[2][0] == rows[3][0] and rows[2][0].split == "infopro-balanced"


def test_tiers_nest_and_the_default_keeps_the_issues_parts():
    quick, default, full = (resolved(t) for t in plan.TIERS)
    assert [e for _, e in quick] == [e for _, e in default if e.tier == "quick"]
    assert [e for _, e in default] == [e for _, e in full if e.tier != "all"]
    assert len(quick) == 3 and len(default) == 9 and {e.group for _, e in default} == {None, "pff", "table3"}
    assert all(c.device == "cuda" and c.warmup >= 1 for c, _ in full)
    assert sum(e.snapshot for _, e in full) == 1 and default[0][1].snapshot and default[0][0].batch_size <= 256
    assert all(e.group in plan.GROUPS and e.row for _, e in full if e.group)
    # --all keeps what the default leaves out: HPFF at K=55 with both --hilo-exec and --pff-exec
    # values, DGL+HPFF, torchvision at 224 px
    k55 = {(c.method, c.hilo_exec, c.pff_exec) for c, _ in full if c.k == 55}
    assert k55 >= {("infopro", "fused", "batched"), ("infopro", "reference", "batched"),
                   ("infopro", "fused", "streamed"), ("dgl", "fused", "batched")}
    assert any(c.dataset == "imagenet" and c.network == "resnet34" for c, _ in full)
    names = [plan.config_name(plan.config_dict(e.fields), e.cudnn_benchmark) for _, e in full]
    assert len(set(names)) == len(names)  # unique
    assert names[1] == "resnet32 InfoPro+HiLo K=16 b=1024 (split=hpff, hilo-exec=fused)"
    assert names[2] == "resnet32 InfoPro+HPFF (official code) K=16 b=1024 (split=hpff, hilo-exec=official)"
    with pytest.raises(ValueError, match="unknown tier 'huge'; allowed: quick, default, all"):
        plan.entries("huge")


def test_plan_order_and_estimates():
    parts = plan.parts(cost=cheap_cost)
    kinds = [p.kind for p in parts]
    assert kinds == ["overheads", "overheads"] + ["config"] * 9 + ["cache_release"]
    assert [p.cudnn_benchmark for p in parts[:2]] == [False, True]
    assert parts[2].snapshot and not any(p.snapshot for p in parts[3:])
    assert [p.group for p in parts[3:11]] == ["pff"] * 4 + ["table3"] * 4
    configs = [p for p in parts if p.kind == "config"]
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
    quick = plan.parts("quick", cost=cheap_cost)
    assert [p.kind for p in quick] == ["overheads", "overheads", "config", "config", "config"]
    assert [p.row for p in quick[3:]] == ["whole-map decoder (HiLo, no PFF)", "ours, batched patches"]
    full = plan.parts("all", cost=cheap_cost)
    assert [p.name for p in full[:11]] == [p.name for p in parts[:11]]  # the default's parts first
    assert full[11].kind == "benchmarks" and full[-1].kind == "cache_release"
    assert len([p for p in full if p.kind == "config"]) == len(plan.CONFIGS)
    table = plan.plan_table(parts)
    assert "total (estimated, H200)" in table and parts[-1].name in table


def test_the_default_budget_leaves_a_rerun():
    """Two tries of the default run (a machine's start, then the run under `timeout`) fit in a
    session's device time; the fit is reported from the plan's estimates and the counting time."""
    per_try = plan.MACHINE_START_S + plan.DEFAULT_BUDGET_S + plan.KILL_MARGIN_S
    assert 2 * per_try <= plan.DEVICE_SESSION_S < 3 * per_try
    parts = [plan.Part("config", f"p{i}", estimate_s=e) for i, e in enumerate((100, 100, 30, 60))]
    fit = plan.session_fit(parts, counting_s=20, budget_s=plan.DEFAULT_BUDGET_S)
    assert fit["estimate_s"] == 290 and fit["fits_budget"] is False
    assert fit["skipped"] == ["p3"]  # 250 s left after counting: p0, p1, p2 (230 s); p3 needs 60
    assert fit["timeout_s"] == plan.DEFAULT_BUDGET_S + plan.KILL_MARGIN_S and fit["tries"] == 2
    lines = plan.fit_lines(fit)
    assert lines[0] == f"estimated 290 s + 20 s counting FLOPs = 310 s of the {plan.DEFAULT_BUDGET_S:.0f} s budget: over by 40 s"
    assert lines[1] == "skipped if every part takes its estimate: p3"
    assert lines[2] == (f"one try = machine start ~150 s + `timeout {fit['timeout_s']:.0f}` = {fit['per_try_s']:.0f} s: "
                        "2 tries fit in 900 s of device time")
    ok = plan.session_fit(parts[:3], counting_s=20, budget_s=plan.DEFAULT_BUDGET_S)
    assert ok["fits_budget"] and ok["skipped"] == [] and len(plan.fit_lines(ok)) == 2
    long = plan.fit_lines(plan.session_fit(parts, counting_s=20, budget_s=480))
    assert long[-1].endswith("1 try fit in 900 s of device time (no rerun: lower --budget-s)")


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
    assert e["device"] == e["nvml_process"]  # NVML gives this process's bytes
    no_pid = report.compare(MEASURED | {"nvml_process_peak_bytes": None}, PREDICTED)
    assert no_pid["device"] == no_pid["nvml_device"] == pytest.approx(962 / 2000 - 1)
    assert report.relative_error(1, None) is None and report.relative_error(None, 5) is None
    assert report.relative_error(3, 0) is None
    missing = report.compare({}, {})
    assert set(missing) == set(report.QUANTITIES) | {"device", "nvml_process_measured_context", "workspaces"}
    assert all(v is None for v in missing.values())


# ----- the whole flow -------------------------------------------------------------------------
def test_whole_check_with_fake_gpu(tmp_path, capsys):
    calls = []
    now = [0.0]
    rc = cli.main(["--out", str(tmp_path)], cuda_available=True, spawn=in_process_spawn(calls),
                  clock=lambda: now[0], cost=cheap_cost)
    assert rc == 0
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["schema"] == report.SCHEMA and doc["status"] == "complete"
    assert [p["kind"] for p in doc["parts"]] == ["overheads"] * 2 + ["config"] * 9 + ["cache_release"]
    assert all(p["status"] == "ok" for p in doc["parts"])
    for p in doc["parts"]:
        assert {"kind", "name", "status", "estimate_s", "seconds", "config", "flops", "ops", "group", "row"} <= set(p)
    cfg_parts = [p for p in doc["parts"] if p["kind"] == "config"]
    for p in cfg_parts:
        assert {"memory", "predicted", "errors", "context_at_init", "context_after_run_bytes", "cuda_arch",
                "device_name", "env", "step_seconds"} <= set(p)
        assert p["context_at_init"]["bytes"] == CONTEXT and p["context_after_run_bytes"] == CONTEXT
        assert p["memory"]["hidden_allocated_bytes"] == 64 * MIB and p["errors"]["workspaces"] == 0
    assert cfg_parts[0]["errors"]["allocated"] == pytest.approx(0.01)
    assert cfg_parts[0]["errors"]["device"] == pytest.approx(962 / 1000 - 1)  # this process's NVML peak
    # the profile ran without its own prediction; only the first config recorded a snapshot
    assert [c["with_prediction"] for c in calls] == [False] * 9
    # a name of letters, digits, '-' and '_' (a GPU session's file transfer keeps no other)
    assert calls[0]["snapshot"] == str(tmp_path / "snapshot" / "resnet32_BP_K_1_b_256.pickle")
    assert all(c["snapshot"] is None for c in calls[1:])
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
    # the groups: the PFF decomposition and the Table-3 rows, in the JSON and the Markdown
    pff, t3 = doc["groups"]["pff"], doc["groups"]["table3"]
    assert pff["title"] == plan.GROUPS["pff"] and pff["baseline"] == "whole-map decoder (HiLo, no PFF)"
    assert [r["row"] for r in pff["rows"]] == [e.row for e in plan.CONFIGS if e.group == "pff"]
    official = pff["rows"][1]
    assert official["measured"] == {"allocated": 600 * MIB, "reserved": 704 * MIB, "device": (500 + 704) * MIB}
    assert official["predicted"] == {"allocated": 606 * MIB, "reserved": 640 * MIB, "device": (640 + 512) * MIB}
    assert official["errors"] == {"allocated": pytest.approx(0.01), "reserved": pytest.approx(640 / 704 - 1),
                                  "device": pytest.approx(1152 / 1204 - 1)}
    assert official["device_source"] == "process"
    assert pff["rows"][3]["change_measured"] == {"allocated": -10 * MIB, "reserved": -60 * MIB, "device": -60 * MIB}
    assert pff["rows"][3]["change_predicted"] == {"allocated": -12 * MIB, "reserved": -20 * MIB, "device": -20 * MIB}
    assert pff["rows"][0]["change_measured"] == {"allocated": 0, "reserved": 0, "device": 0}
    gc = next(r for r in t3["rows"] if r["row"].startswith("gradient checkpointing"))
    assert gc["errors"]["reserved"] == pytest.approx(600 / 420 - 1) and t3["baseline"] == "E2E (BP)"
    md = (tmp_path / "gpu_check.md").read_text()
    assert md == report.markdown(doc)
    assert f"## {plan.GROUPS['pff']}" in md and f"## {plan.GROUPS['table3']}" in md
    assert md.index(plan.GROUPS["pff"]) < md.index(plan.GROUPS["table3"]) < md.index("## Configurations")
    assert ("| whole-map decoder (HiLo, no PFF) | 400.0 / 404.0 (+1.0 %) | 500.0 / 450.0 (-10.0 %) "
            "| 1,000.0 / 962.0 (-3.8 %) |") in md
    assert ("| official execution (quadrant decoders) | 600.0 / 606.0 (+1.0 %) | 704.0 / 640.0 (-9.1 %) "
            "| 1,204.0 / 1,152.0 (-4.3 %) |") in md
    assert "Change from whole-map decoder (HiLo, no PFF), MiB, measured / predicted:" in md
    assert "| ours, batched patches | +0.0 / +0.0 | -30.0 / -10.0 | -30.0 / -10.0 |" in md
    assert "| ours, streamed patches | -10.0 / -12.0 | -60.0 / -20.0 | -60.0 / -20.0 |" in md
    assert ("| gradient checkpointing (cuts: InfoPro K=4) | 300.0 / 310.0 (+3.3 %) | 420.0 / 600.0 (+42.9 %) "
            "| 920.0 / 1,112.0 (+20.9 %) |") in md
    assert "| gradient checkpointing (cuts: InfoPro K=4) | -100.0 / -94.0 | -80.0 / +150.0 | -80.0 / +150.0 |" in md
    assert "Fake H200" in md and "cudnn.benchmark on" in md and "| forward | 24.0 |" in md
    assert "assumed 512.0 MiB: error +2.4 %" in md
    out = capsys.readouterr().out
    assert "total (estimated, H200)" in out and "# GPU check" in out
    assert f"s of the {plan.DEFAULT_BUDGET_S:.0f} s budget" in out and "2 tries fit in 900 s of device time" in out


def test_group_rows_that_did_not_run_and_a_device_only_nvml():
    """A group row that failed says so, and the rows after a failed first row have no change;
    where NVML gives no per-process bytes the device peak is compared (marked *)."""
    def rec(row, status="ok", process=True):
        memory = {**MEASURED, "nvml_process_peak_bytes": MEASURED["nvml_process_peak_bytes"] if process else None}
        return {"kind": "config", "group": "pff", "row": row, "name": row, "status": status, "memory": memory,
                "predicted": PREDICTED, "errors": report.compare(memory, PREDICTED),
                "message": "killed after 30 s" if status != "ok" else None}

    assert report.device_peak(MEASURED) == (1000 * MIB, "process")
    assert report.device_peak({**MEASURED, "nvml_process_peak_bytes": None}) == (2000 * MIB, "device")
    assert report.device_peak({}) == (None, None)
    g = report.group_summary([rec("a", "timeout"), rec("b", process=False)], "pff")
    assert g["baseline"] == "a" and g["rows"][0] == {"row": "a", "name": "a", "status": "timeout",
                                                     "message": "killed after 30 s"}
    assert "change_measured" not in g["rows"][1] and g["rows"][1]["device_source"] == "device"
    assert g["rows"][1]["errors"]["device"] == pytest.approx(962 / 2000 - 1)
    md = "\n".join(report._group_lines(g))
    assert "| a | timeout: killed after 30 s | | |" in md and "2,000.0* / 962.0 (-51.9 %)" in md
    assert "Change from" not in md
    assert report.document([], "complete", 1, 1)["groups"] == {}


def test_config_part_with_the_real_prediction(tmp_path):
    """One tiny config through the child with the real fake-tensor prediction: its numbers land
    in the record and the errors are computed from them."""
    part = plan.Part("config", "tiny", plan.config_dict({"network": "resnet20", "method": "bp", "batch_size": 4}))
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
    p = plan.parts("quick", cost=cheap_cost)[4]  # HPFF's λ travel as a table
    assert p.group == "pff" and p.config["lambdas"] == dataclasses.asdict(HPFF_INFOPRO_LAMBDAS)
    back = plan.Part.from_dict(json.loads(json.dumps(p.as_dict())))
    assert back == plan.Part(**{**p.__dict__, "estimate_s": round(p.estimate_s, 1)})
    assert RunConfig.from_dict(back.config).lambdas == HPFF_INFOPRO_LAMBDAS


# ----- the command line ------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--budget-s", "nan"], "--budget-s must be a finite number of seconds > 0, got nan"),
    (["--budget-s", "0"], "--budget-s must be a finite number of seconds > 0, got 0"),
    (["--timeout-s", "inf"], "--timeout-s must be a finite number of seconds > 0, got inf"),
    (["--timeout-s", "-5"], "--timeout-s must be a finite number of seconds > 0, got -5"),
    (["--quick", "--all"], "--quick and --all exclude each other: pick one plan"),
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
    out = capsys.readouterr().out
    assert "total (estimated, H200)" in out and not list(tmp_path.iterdir())
    assert f"of the {plan.DEFAULT_BUDGET_S:.0f} s budget" in out and "2 tries fit" in out
    # --all: one try in one command's limit (600 s) unless --budget-s says otherwise
    assert cli.main(["--plan", "--all", "--out", str(tmp_path)], cuda_available=False, cost=cheap_cost) == 0
    out = capsys.readouterr().out
    assert plan.ALL_BUDGET_S + plan.KILL_MARGIN_S == plan.COMMAND_LIMIT_S
    assert f"of the {plan.ALL_BUDGET_S:.0f} s budget" in out and "1 try fit in 900 s" in out
    assert cli.main(["--plan", "--all", "--budget-s", "2000", "--out", str(tmp_path)], cuda_available=False,
                    cost=cheap_cost) == 0
    assert "of the 2000 s budget" in capsys.readouterr().out


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
    cfg = RunConfig.from_dict({**plan.config_dict(plan.CACHE_RELEASE_CONFIG), "device": "cpu"}).validate()
    edges = child.release_edges(cfg, plan.CACHE_RELEASE_CAPACITY, "hopper")
    assert edges["fits"] < edges["runs"] < edges["fails"] == edges["runs"] + 1  # 80, 98, 99 when written
    assert edges["alloc_retries_per_step"] >= 1
