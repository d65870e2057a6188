"""Sweeps sharing a results directory (task claims), suite names that try to leave it, quick
repeated Ctrl-C, and what a resume after a suite change says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hpff_bench.runner import claim, store
from hpff_bench.runner.claim import DONE, HELD, MINE, Claims
from hpff_bench.runner.suite import Suite, load_suite
from hpff_bench.runner.sweep import changed_configuration_notes, run_sweep
from tests.fixtures.interruptible import sigint_as_default
from tests.fixtures.tiny_suite import TINY_TRAIN_SUITE

KEY = ("train", "abc", "")


# ----- claims, one process playing two sweeps ----------------------------------------------------
def test_a_live_claim_is_held_and_a_finished_one_is_done_for_a_concurrent_sweep(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    assert a.claim(KEY) == MINE
    assert b.claim(KEY) == HELD  # a's process (this one) is alive
    a.finish(KEY, "ok")
    assert json.loads(a.path(KEY).read_text())["state"] == "done"
    assert b.claim(KEY) == DONE  # finished after b started: b must not run it again
    later = Claims(tmp_path)  # a sweep started after it finished decides for itself (--resume or not)
    assert later.claim(KEY) == MINE


def test_a_dead_claimants_claim_expires(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    a.claim(KEY)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    c = json.loads(a.path(KEY).read_text())
    a.path(KEY).write_text(json.dumps({**c, "pid": dead.pid}))
    assert b.claim(KEY) == MINE
    # a live pid that is another (newer) process than the claimant: its start time differs
    c = json.loads(b.path(KEY).read_text())
    b.path(KEY).write_text(json.dumps({**c, "sweep": "other", "pid_start": "1"}))
    assert Claims(tmp_path).claim(KEY) == MINE


def test_another_hosts_claim_expires_only_when_not_refreshed(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    a.claim(KEY)
    c = json.loads(a.path(KEY).read_text())
    a.path(KEY).write_text(json.dumps({**c, "host": "elsewhere", "pid": 1}))
    assert b.claim(KEY) == HELD
    old = time.time() - claim.STALE_S - 10
    os.utime(a.path(KEY), (old, old))
    assert b.claim(KEY) == MINE


def test_release_all_lets_another_sweep_take_the_task_at_once(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    a.claim(KEY)
    a.release_all()
    assert not a.path(KEY).exists()
    assert b.claim(KEY) == MINE


# ----- two real sweep processes on one directory ---------------------------------------------------
def test_two_concurrent_resumed_sweeps_record_each_task_once(tmp_path):
    suite = tmp_path / "shared.toml"
    seeds = list(range(4))
    suite.write_text(textwrap.dedent(TINY_TRAIN_SUITE.format(name="shared", seeds=seeds)))
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "hpff_bench", "sweep", str(suite), "--results", str(results), "--resume",
           "--no-progress", "--table-rows", "0"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=280)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recs = store.read_records(results / "shared").records
    keys = [store.task_key(r) for r in recs]
    assert len(recs) == len(seeds) and len(set(keys)) == len(seeds), outs  # each task once
    assert all(r["status"] == "ok" for r in recs)
    # each sweep's summary: what it recorded + what the other one ran (or was already ok) = all
    import re

    recorded = [int(re.search(r"(\d+) of 4 tasks recorded", o).group(1)) for o in outs]
    elsewhere = [int(m.group(1)) if (m := re.search(r"(\d+) run by a concurrent sweep", o)) else 0 for o in outs]
    already = [int(m.group(1)) if (m := re.search(r"(\d+) already ok", o)) else 0 for o in outs]
    assert sum(recorded) == len(seeds), outs
    assert all(r + e + a == len(seeds) for r, e, a in zip(recorded, elsewhere, already)), outs
    claims = [json.loads(p.read_text()) for p in (results / "shared" / "claims").glob("*.claim")]
    assert len(claims) == len(seeds) and all(c["state"] == "done" for c in claims)


# ----- suite names -----------------------------------------------------------------------------------
def test_a_traversal_suite_name_writes_nothing_outside_the_results_directory(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    for name, expected in (("/abs/escape", "abs_escape"), ("../../escape", "escape")):
        suite = work / "s.toml"
        suite.write_text(textwrap.dedent(f"""
        [suite]
        name = "{name}"
        kinds = ["estimate"]
        [base]
        network = "resnet20"
        batch_size = 2
        [axes]
        method = ["bp"]
        """))
        assert load_suite(suite).name == expected
        if name.startswith("/"):
            continue  # the same sanitising; one real sweep is enough
        before = {p for p in tmp_path.rglob("*") if "res" not in p.relative_to(tmp_path).parts}
        res = run_sweep(suite, results=work / "res", progress=False)
        assert [r["status"] for r in res.records] == ["ok"]
        assert res.results_dir == work / "res" / expected
        after = {p for p in tmp_path.rglob("*") if "res" not in p.relative_to(tmp_path).parts}
        assert after == before
        assert not Path("/abs").exists()
        assert (work / "res" / expected / "resnet20-bp-k1.jsonl").is_file()


# ----- Ctrl-C pressed several times -------------------------------------------------------------------
def test_quick_repeated_ctrl_c_ends_with_the_summary_not_a_traceback(tmp_path):
    suite = tmp_path / "shared.toml"
    suite.write_text(textwrap.dedent(TINY_TRAIN_SUITE.format(name="shared", seeds=[0, 1])))
    results = tmp_path / "results"
    env = {**os.environ, "HPFF_BENCH_INJECT": "hang:-s1/"}
    cmd = [sys.executable, "-m", "hpff_bench", "sweep", str(suite), "--results", str(results), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=sigint_as_default)
    first = results / "shared" / "resnet20-bp-k1-s0.jsonl"
    deadline = time.monotonic() + 180
    while not first.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
    time.sleep(1.5)  # seed 1 hangs in its worker
    for _ in range(3):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "INTERRUPTED" in out and "rerun with --resume" in out
    # the unfinished task's claim was given back
    claims = [json.loads(p.read_text()) for p in (results / "shared" / "claims").glob("*.claim")]
    assert [c["state"] for c in claims] == ["done"]


# ----- suites that changed, lr given in [base] ---------------------------------------------------------
def test_resume_after_the_suite_changed_says_so(tmp_path):
    suite = tmp_path / "shared.toml"
    suite.write_text(textwrap.dedent(TINY_TRAIN_SUITE.format(name="shared", seeds=[0, 1])))
    plan = load_suite(suite).plan()
    d = tmp_path / "r" / "shared"
    old = plan.tasks[0].config.replace(batch_size=4)  # what the run was before the edit
    store.append_record(store.run_file(d, plan.tasks[0].run.name),
                        store.make_record("train", "ok", config=old, run_name=plan.tasks[0].run.name))
    [note] = changed_configuration_notes(d, plan.tasks)
    assert "different configuration under the same name" in note and plan.tasks[0].run.name in note
    store.append_record(store.run_file(d, plan.tasks[1].run.name),
                        store.make_record("train", "ok", config=plan.tasks[1].config, run_name=plan.tasks[1].run.name))
    assert len(changed_configuration_notes(d, plan.tasks)) == 1  # the unchanged run adds nothing


def test_an_lr_in_base_is_kept_for_training_tasks():
    data = {"suite": {"kinds": ["train", "estimate"]}, "base": {"network": "resnet20", "lr": 0.05, "batch_size": 8},
            "axes": {"seed": [0]}}
    tasks = Suite(data).plan().tasks
    assert {t.kind: t.config.lr for t in tasks} == {"estimate": 0.05, "train": 0.05}
    del data["base"]["lr"]
    tasks = Suite(data).plan().tasks
    assert {t.kind: t.config.lr for t in tasks} == {"estimate": 0.1, "train": 0.8 * 8 / 1024}
