"""Sweeps: worker processes, injected OOM / crash / kill mid-sweep, resume, Ctrl-C, timeouts.

Runs use `train` on FakeData at 8x8 (a second each) so the tests measure the sweep machinery,
not the methods. Faults come from HPFF_BENCH_INJECT, which the worker honours."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpff_bench.errors import ConfigError
from hpff_bench.runner import store
from hpff_bench.runner.sweep import run_sweep
from tests.fixtures.interruptible import sigint_as_default
from tests.fixtures.tiny_suite import TINY_TRAIN_SUITE


def write_suite(tmp_path: Path, seeds=(0, 1, 2, 3, 4), extra: str = "") -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(textwrap.dedent(TINY_TRAIN_SUITE.format(name="tiny", seeds=list(seeds))) + textwrap.dedent(extra))
    return p


def lines(results: Path, seed: int) -> list[dict]:
    f = results / "tiny" / f"resnet20-bp-k1-s{seed}.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def test_injected_oom_crash_and_kill_lose_only_their_run_and_resume_finishes(tmp_path, monkeypatch):
    suite = write_suite(tmp_path)
    results = tmp_path / "results"
    monkeypatch.setenv("HPFF_BENCH_INJECT", "oom:-s1/|crash:-s2/|kill:-s3/")
    res = run_sweep(suite, results=results, jobs=2, progress=False)
    assert not res.interrupted and len(res.records) == 5
    assert res.counts == {"ok": 2, "oom": 1, "diverged": 0, "skipped": 0, "error": 2}
    by_seed = {s: lines(results, s) for s in range(5)}
    assert all(len(v) == 1 for v in by_seed.values())  # one whole line per finished run
    assert by_seed[0][0]["status"] == by_seed[4][0]["status"] == "ok"  # the sweep went on after the faults
    oom = by_seed[1][0]
    assert oom["status"] == "oom" and "batch size 8" in oom["message"] and "out of memory" in oom["message"]
    assert oom["config"]["batch_size"] == 8 and oom["kind"] == "train"
    crash = by_seed[2][0]
    assert crash["status"] == "error" and "exit code 70" in crash["message"] and "injected crash" in crash["message"]
    kill = by_seed[3][0]
    assert kill["status"] == "error" and "SIGKILL" in kill["message"]
    assert all(r[0]["schema"] == 1 and r[0]["env"]["torch"] for r in by_seed.values())

    # --resume: only the three that did not finish `ok` run again
    monkeypatch.delenv("HPFF_BENCH_INJECT")
    again = run_sweep(suite, results=results, resume=True, progress=False)
    assert again.already_done == 2 and [r["status"] for r in again.records] == ["ok"] * 3
    assert [len(lines(results, s)) for s in range(5)] == [1, 2, 2, 2, 1]
    assert [r["status"] for r in lines(results, 1)] == ["oom", "ok"]  # history is kept
    nothing = run_sweep(suite, results=results, resume=True, progress=False)
    assert nothing.already_done == 5 and nothing.records == []
    frame = store.load_results(results / "tiny")
    assert len(frame) == 8 and "accuracy.top1" in frame.columns


def test_ctrl_c_keeps_finished_lines_and_resume_does_the_rest(tmp_path):
    suite = write_suite(tmp_path, seeds=(0, 1, 2))
    results = tmp_path / "results"
    env = {**os.environ, "HPFF_BENCH_INJECT": "hang:-s1/"}
    cmd = [sys.executable, "-m", "hpff_bench", "sweep", str(suite), "--results", str(results), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=sigint_as_default)
    deadline = time.monotonic() + 180
    while not lines(results, 0) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert lines(results, 0), proc.communicate()[0] if proc.poll() is not None else "no first record"
    time.sleep(2)  # seed 1 is now hanging in the worker
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "INTERRUPTED" in out and "--resume" in out
    assert [r["status"] for r in lines(results, 0)] == ["ok"]
    assert lines(results, 1) == [] and lines(results, 2) == []
    # resume, one fresh process per task this time
    res = run_sweep(suite, results=results, resume=True, isolate="always", progress=False)
    assert res.already_done == 1 and [r["status"] for r in res.records] == ["ok", "ok"]
    assert len({r["env"]["pid"] for r in res.records}) == 2  # really separate processes


def test_a_hung_task_times_out_and_is_recorded(tmp_path, monkeypatch):
    suite = write_suite(tmp_path, seeds=(0,), extra="")
    # one seed is not a varying axis, so the run's name has no -s0: name the task's whole label
    # (a substring that matched nothing let this pass only when the real run took over 3 s)
    monkeypatch.setenv("HPFF_BENCH_INJECT", "hang:resnet20-bp-k1/train")
    res = run_sweep(suite, results=tmp_path / "r", timeout_s=3, progress=False)
    [rec] = res.records
    assert rec["status"] == "error" and "timeout" in rec["message"]


def test_an_injection_that_names_no_task_is_refused_before_running(tmp_path, monkeypatch):
    suite = write_suite(tmp_path, seeds=(0,))
    monkeypatch.setenv("HPFF_BENCH_INJECT", "hang:-s0/")  # one seed: the name has no -s0
    with pytest.raises(ConfigError, match="'-s0/' matches no task of this sweep; labels look like 'resnet20-bp-k1/train'"):
        run_sweep(suite, results=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_bad_injection_spec_is_an_error_record(tmp_path, monkeypatch):
    from hpff_bench.runner.worker import parse_inject

    assert parse_inject("oom:a|crash:b") == [("oom", "a"), ("crash", "b")]
    with pytest.raises(ValueError, match="MODE:SUBSTRING"):
        parse_inject("explode:x")


def test_missing_training_data_is_skipped_without_a_worker(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(textwrap.dedent("""
    [suite]
    name = "nodata"
    kinds = ["train"]
    [base]
    network = "resnet20"
    dataset = "cifar10"
    [axes]
    method = ["bp", "greedy"]
    k = [2]
    [kind.train]
    epochs = 1
    """))
    res = run_sweep(p, results=tmp_path / "r", data_root=str(tmp_path / "none"), download=False, progress=False)
    assert [r["status"] for r in res.records] == ["skipped", "skipped"]
    assert all("--data-root" in r["message"] for r in res.records)
    assert sum(res.skipped_reasons.values()) == 2
    from hpff_bench.runner.sweep import summary_lines

    text = "\n".join(summary_lines(res))
    assert "skipped 2 task(s)" in text and "--data-root" in text
