"""Launchers: `--launcher slurm` through submitit's LocalExecutor end to end on suites/smoke.toml
(records equal to the local launcher's, a killed job, resume, Ctrl-C on the submitter, status),
`--gpus` with injected device lists, and bad launcher options (one line, exit 2, nothing run).

The end-to-end tests keep to the smoke suite's two `estimate` tasks (`--only kind=estimate`):
each submitit job is its own Python process importing torch, which is the cost here."""

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

from hpff_bench import cli
from hpff_bench.runner import store
from hpff_bench.runner.launchers import gpus, ledger
from hpff_bench.runner.launchers.slurm import map_state, parse_time
from hpff_bench.runner.launchers.status import task_status
from hpff_bench.runner.suite import load_suite
from hpff_bench.runner.sweep import run_sweep
from tests.fixtures.interruptible import sigint_as_default

pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "suites" / "smoke.toml")
ESTIMATES = ["--only", "kind=estimate"]
BP, DGL = "resnet20-bp-k1/estimate", "resnet20-dgl-k2-hpff-n2/estimate"
SLURM_LOCAL = ["--launcher", "slurm", "--slurm-executor", "local"]


def sweep_cli(results: Path, *extra: str, inject: str | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPFF_BENCH_THREADS": "1"}
    env.pop("HPFF_BENCH_INJECT", None)
    if inject:
        env["HPFF_BENCH_INJECT"] = inject
    cmd = [sys.executable, "-m", "hpff_bench", "sweep", SMOKE, *ESTIMATES, "--results", str(results),
           "--no-progress", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO, **kw)


def summary(results: Path) -> list[tuple]:
    """(run name, kind, config id, status) of every record, sorted: what must match."""
    recs = store.read_records([results / "smoke"]).records
    return sorted((r["run_name"], r["kind"], r["config_id"], r["status"]) for r in recs)


def status_of(results: Path) -> dict[str, tuple[str, str]]:
    plan = load_suite(SMOKE).plan(None, "kind=estimate")
    return {t.label: (state, detail) for t, state, detail in task_status(plan.tasks, results / "smoke")}


def test_slurm_via_local_executor_writes_the_local_records_records_a_killed_job_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HPFF_BENCH_THREADS", "1")
    local = run_sweep(SMOKE, only="kind=estimate", results=tmp_path / "local", progress=False)
    assert [r["status"] for r in local.records] == ["ok", "ok"]

    # the bp task's job SIGKILLs itself: no record from the job, so the submitter writes `error`
    slurm = tmp_path / "slurm"
    first = sweep_cli(slurm, *SLURM_LOCAL, inject=f"kill:{BP}")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "2 of 2 tasks recorded" in first.stdout and "1 ok" in first.stdout and "1 error" in first.stdout
    [dead] = [r for r in store.read_records([slurm / "smoke"]).records if r["status"] == "error"]
    assert dead["run_name"] == "resnet20-bp-k1" and dead["kind"] == "estimate"
    job = dead["env"]["job_id"]
    assert f"submitit local job {job} ended (FINISHED) without a record for {BP}" in dead["message"]
    states = status_of(slurm)
    assert states[DGL][0] == "done" and states[BP][0] == "failed" and "without a record" in states[BP][1]

    again = run_sweep(SMOKE, only="kind=estimate", results=slurm, resume=True, progress=False, log=lambda s: None,
                      launcher="slurm", slurm_options={"slurm_executor": "local"})
    assert again.already_done == 1 and [(r["run_name"], r["status"]) for r in again.records] == [("resnet20-bp-k1", "ok")]
    # the same records as the local launcher's, plus the dead job's history line
    ok = [s for s in summary(slurm) if s[3] == "ok"]
    assert ok == summary(tmp_path / "local")
    assert [s[3] for s in summary(slurm) if s[0] == "resnet20-bp-k1"] == ["error", "ok"]
    submitted = [json.loads(x) for x in ledger.ledger_file(slurm / "smoke").read_text().splitlines()]
    assert sorted(e["label"] for e in submitted) == sorted([BP, DGL, BP])  # only the dead one again
    assert {s for s, _ in status_of(slurm).values()} == {"done"}

    assert cli.main(["sweep", SMOKE, "--results", str(slurm), "--status"]) == 0
    out = capsys.readouterr().out
    assert f"{DGL}  done" in out and "6 task(s): 2 done, 0 failed, 0 skipped, 0 running, 0 queued, 4 not started" in out


def test_ctrl_c_on_the_submitter_leaves_jobs_running_and_resume_collects_them_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HPFF_BENCH_THREADS", "1")
    results = tmp_path / "r"
    log = open(tmp_path / "submitter.log", "w")  # not a pipe: the orphaned jobs keep their copy open
    env = {**os.environ, "HPFF_BENCH_THREADS": "1", "HPFF_BENCH_INJECT": "slow:/estimate", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hpff_bench", "sweep", SMOKE, *ESTIMATES, "--results",
                             str(results), "--no-progress", *SLURM_LOCAL], env=env, stdout=log, stderr=log, cwd=REPO,
                            preexec_fn=sigint_as_default)
    ledger_path = ledger.ledger_file(results / "smoke")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and "submitted 2 job(s)" not in (tmp_path / "submitter.log").read_text():
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "submitter.log").read_text()
    proc.send_signal(signal.SIGINT)  # Ctrl-C on the submitting process only
    assert proc.wait(timeout=60) == 130
    log.close()
    text = (tmp_path / "submitter.log").read_text()
    assert "INTERRUPTED" in text and "2 job(s) still queued or running" in text
    assert store.read_records([results / "smoke"]).records == []  # both jobs still sleep (SLOW_S)
    states = status_of(results)
    assert {s for s, _ in states.values()} == {"running"}, states

    said: list[str] = []
    again = run_sweep(SMOKE, only="kind=estimate", results=results, resume=True, progress=False, log=said.append,
                      launcher="slurm", slurm_options={"slurm_executor": "local"})
    assert [r["status"] for r in again.records] == ["ok", "ok"] and not again.interrupted
    assert sum("is still running: waiting for it, not resubmitting" in x for x in said) == 2
    assert not any(x.startswith("submitted") for x in said), said
    assert [s[3] for s in summary(results)] == ["ok", "ok"]  # one record per task: no duplicate
    assert len(ledger_path.read_text().splitlines()) == 2


TINY = """
[suite]
name = "tiny"
kinds = ["estimate"]
[base]
network = "resnet20"
dataset = "fake"
image_size = 8
batch_size = 4
device = "{device}"
[axes]
seed = [0, 1, 2]
"""


def tiny(tmp_path: Path, device: str = "auto") -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(textwrap.dedent(TINY.format(device=device)))
    return p


FAKE_GPUS = [gpus.Gpu(0, "Fake GPU", "GPU-0000", "00000000:01:00.0"), gpus.Gpu(1, "Fake GPU", "GPU-1111", "00000000:02:00.0"),
             gpus.Gpu(2, "Fake GPU", "GPU-2222", "00000000:03:00.0")]


@pytest.fixture
def fake_gpus(monkeypatch):
    monkeypatch.setattr(gpus, "nvml_gpus", lambda: (list(FAKE_GPUS), None))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_gpus_gives_every_worker_slot_its_own_device(tmp_path, fake_gpus, monkeypatch):
    monkeypatch.setenv("HPFF_BENCH_THREADS", "1")
    res = run_sweep(tiny(tmp_path), gpus="0,2", results=tmp_path / "r", progress=False)
    assert [r["status"] for r in res.records] == ["ok"] * 3
    by_pid: dict[int, set] = {}
    for r in res.records:
        g = r["env"]["gpu"]
        assert g["cuda_visible_devices"] == str(g["index"])  # what the worker process itself saw
        assert g["uuid"] == f"GPU-{str(g['index']) * 4}" and g["pci_bus_id"]
        by_pid.setdefault(r["env"]["pid"], set()).add(g["index"])
    assert sorted(map(sorted, by_pid.values())) == [[0], [2]]  # two slots, one device each
    started = [e for e in map(json.loads, ledger.ledger_file(tmp_path / "r" / "tiny").read_text().splitlines())
               if e["event"] == "started"]
    assert len(started) == 3 and len({e["job"] for e in started}) == 2


def test_select_gpus_reads_cuda_visible_devices(fake_gpus, monkeypatch):
    assert [g.index for g in gpus.select_gpus("all")] == [0, 1, 2]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-2222,1")
    assert [g.index for g in gpus.select_gpus("all")] == [1, 2]
    assert gpus.slot_env(FAKE_GPUS[2])["CUDA_VISIBLE_DEVICES"] == "2"
    assert gpus.slot_env(FAKE_GPUS[2])["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.parametrize("argv, machine, message", [
    (["--launcher", "pbs"], FAKE_GPUS, "--launcher must be one of local, slurm, got 'pbs'"),
    (["--gpus", "0"], [], "--gpus 0: no GPU on this machine (none found)"),
    (["--gpus", "0,5"], FAKE_GPUS, "--gpus 0,5: there is no GPU 5; this machine has 0, 1, 2"),
    (["--gpus", "1,1"], FAKE_GPUS, "--gpus 1,1: GPU 1 is listed twice"),
    (["--gpus", "first"], FAKE_GPUS, "--gpus first: 'first' is not a GPU index"),
    (["--gpus", "0,1", "--jobs", "3"], FAKE_GPUS, "--jobs 3 with --gpus 0,1: one task per GPU runs 2 at a time"),
    (["--slurm-partition", "gpu"], FAKE_GPUS, "--slurm-partition: only with --launcher slurm"),
    (["--slurm-time", "1:00:00", "--slurm-executor", "local"], FAKE_GPUS,
     "--slurm-time, --slurm-executor: only with --launcher slurm"),
    (["--launcher", "slurm", "--gpus", "0"], FAKE_GPUS, "--gpus is for --launcher local"),
    (SLURM_LOCAL + ["--slurm-time", "an hour"], FAKE_GPUS, "--slurm-time 'an hour': not a Slurm time"),
    (SLURM_LOCAL + ["--slurm-gpus-per-task", "-1"], FAKE_GPUS, "--slurm-gpus-per-task '-1': must be an integer >= 0"),
    (SLURM_LOCAL + ["--slurm-array-parallelism", "0"], FAKE_GPUS, "--slurm-array-parallelism '0': must be an integer >= 1"),
    (["--launcher", "slurm", "--slurm-executor", "cloud"], FAKE_GPUS, "--slurm-executor must be one of slurm, local"),
])
def test_bad_launcher_options_are_one_line_and_exit_2_before_anything_runs(tmp_path, capsys, monkeypatch, argv, machine, message):
    monkeypatch.setattr(gpus, "nvml_gpus", lambda: (list(machine), None))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    rc = cli.main(["sweep", str(tiny(tmp_path)), "--results", str(tmp_path / "r"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_gpus_refused_for_cpu_only_tasks_and_slurm_refused_without_sbatch(tmp_path, capsys, fake_gpus, monkeypatch):
    rc = cli.main(["sweep", str(tiny(tmp_path, "cpu")), "--results", str(tmp_path / "r"), "--gpus", "all"])
    assert rc == 2 and 'every task of this sweep runs on the CPU (device = "cpu")' in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    rc = cli.main(["sweep", str(tiny(tmp_path)), "--results", str(tmp_path / "r"), "--launcher", "slurm"])
    assert rc == 2 and "sbatch and srun not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_slurm_times_and_states():
    assert [parse_time(t) for t in ("30", "1:30", "2:00:00", "1-0", "1-2:03", "0:0:61")] == [30, 2, 120, 1440, 1563, 2]
    for bad in ("", "0", "1h", "1:2:3:4", "-5"):
        with pytest.raises(Exception, match="--slurm-time"):
            parse_time(bad)
    assert [map_state(s) for s in ("PENDING", "REQUEUED", "UNKNOWN", "RUNNING", "COMPLETING")] == \
        ["queued", "queued", "queued", "running", "running"]
    assert {map_state(s) for s in ("COMPLETED", "FAILED", "CANCELLED by 1000", "TIMEOUT", "OUT_OF_MEMORY",
                                   "NODE_FAIL", "FINISHED", "INTERRUPTED")} == {"ended"}


def test_status_reads_every_state_from_the_ledger_and_the_store(tmp_path):
    plan = load_suite(SMOKE).plan(None, None)
    d = tmp_path / "smoke"
    t = {x.label: x for x in plan.tasks}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        host = __import__("socket").gethostname()
        ledger.append(d, [
            ledger.entry("queued", "local", f"{host}:{os.getpid()}", t["resnet20-bp-k1/estimate"]),
            ledger.entry("started", "local", f"{host}:{sleeper.pid}", t["resnet20-bp-k1/profile"]),
            ledger.entry("submitted", "slurm", str(gone.pid), t["resnet20-bp-k1/train"], executor="local", folder=str(d / "jobs")),
            ledger.entry("started", "local", f"{host}:{gone.pid}", t["resnet20-dgl-k2-hpff-n2/profile"]),
        ])
        cfg = t["resnet20-dgl-k2-hpff-n2/estimate"]
        store.append_record(store.run_file(d, cfg.run.name), store.make_record(
            "estimate", "oom", config=cfg.config, suite="smoke", run_name=cfg.run.name,
            message="out of memory at batch size 8", env={"hostname": host, "pid": 1}))
        states = {task.label: (s, detail) for task, s, detail in task_status(plan.tasks, d)}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert states["resnet20-bp-k1/estimate"] == ("queued", f"in sweep pid {os.getpid()}")
    assert states["resnet20-bp-k1/profile"] == ("running", f"worker pid {sleeper.pid}")
    assert states["resnet20-bp-k1/train"][0] == "failed" and f"job {gone.pid}: FINISHED" in states["resnet20-bp-k1/train"][1]
    assert states["resnet20-dgl-k2-hpff-n2/profile"] == ("not started", f"worker pid {gone.pid} stopped without a record")
    assert states["resnet20-dgl-k2-hpff-n2/estimate"] == ("failed", "oom: out of memory at batch size 8")
    assert states["resnet20-dgl-k2-hpff-n2/train"] == ("not started", "")


def _sinfo_works() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _sinfo_works(), reason="no Slurm controller reachable (sinfo does not work here)")
def test_a_real_slurm_cluster_runs_the_smoke_estimates(tmp_path):
    """Results must be on a file system the compute nodes share: HPFF_BENCH_SLURM_RESULTS, else
    a folder under the repository. HPFF_BENCH_SLURM_PARTITION picks the partition."""
    import shutil
    import uuid

    results = Path(os.environ.get("HPFF_BENCH_SLURM_RESULTS", REPO / "results" / "slurm-tests")) / uuid.uuid4().hex[:8]
    partition = os.environ.get("HPFF_BENCH_SLURM_PARTITION")
    try:
        run = sweep_cli(results, "--launcher", "slurm", "--slurm-time", "20",
                        *(["--slurm-partition", partition] if partition else []))
        assert run.returncode == 0, run.stdout + run.stderr
        assert [s[3] for s in summary(results)] == ["ok", "ok"]
        assert all(r["env"]["job_id"] for r in store.read_records([results / "smoke"]).records)
        assert {s for s, _ in status_of(results).values()} == {"done"}
    finally:
        shutil.rmtree(results, ignore_errors=True)


def test_status_asks_sacct_once_for_slurm_jobs(tmp_path, monkeypatch):
    """Slurm jobs' states come from sacct through submitit; a fake sacct stands in here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sacct-calls"
    sacct = bin_dir / "sacct"
    sacct.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> {calls}
        echo "JobID|State|NodeList"
        echo "4242|PENDING|None assigned"
        echo "4243|RUNNING|node7"
        echo "4243.batch|RUNNING|node7"
        echo "4244_1|OUT_OF_MEMORY|node8"
        """))
    sacct.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan = load_suite(SMOKE).plan(None, None)
    d = tmp_path / "smoke"
    t = {x.label: x for x in plan.tasks}
    ledger.append(d, [ledger.entry("submitted", "slurm", job, t[label], executor="slurm", folder=str(d / "jobs"))
                      for job, label in (("4242", BP), ("4243", DGL), ("4244_1", "resnet20-bp-k1/train"))])
    states = {task.label: (s, detail) for task, s, detail in task_status(plan.tasks, d)}
    assert states[BP] == ("queued", "job 4242: PENDING")
    assert states[DGL] == ("running", "job 4243: RUNNING")
    assert states["resnet20-bp-k1/train"][0] == "failed" and "job 4244_1: OUT_OF_MEMORY" in states["resnet20-bp-k1/train"][1]
    assert len(calls.read_text().splitlines()) == 1  # one sacct call for all three jobs


def test_slurm_submission_uses_sbatch_arrays_with_the_options(tmp_path, monkeypatch):
    """The real SlurmExecutor path against a fake sbatch (which keeps the script) and a fake
    sacct (every job COMPLETED without running): arrays per time limit and GPU count, the
    options as #SBATCH lines, job ids in the ledger, and a job that left no record -> `error`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        n=$(ls {tmp_path}/script-* 2>/dev/null | wc -l)
        cp "$1" {tmp_path}/script-$n.sh
        echo "Submitted batch job 77$n"
        """))
    rows = "\n".join(f'echo "{j}|COMPLETED|node1"' for j in ("770", "770_0", "770_1", "771", "771_0", "771_1"))
    (bin_dir / "sacct").write_text(f'#!/bin/sh\necho "JobID|State|NodeList"\n{rows}\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it; never run here
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    suite = tmp_path / "two.toml"
    suite.write_text(textwrap.dedent(TINY.format(device="auto")).replace('kinds = ["estimate"]', 'kinds = ["estimate", "profile"]')
                     .replace("seed = [0, 1, 2]", "seed = [0, 1]"))
    said: list[str] = []
    res = run_sweep(suite, results=tmp_path / "r", progress=False, log=said.append, launcher="slurm",
                    slurm_options={"slurm_partition": "gpu", "slurm_gpus_per_task": "1", "slurm_time": "1:30:00",
                                   "slurm_array_parallelism": "1"})
    scripts = [(tmp_path / f"script-{i}.sh").read_text() for i in range(2)]
    for s in scripts:
        assert "#SBATCH --partition=gpu" in s and "#SBATCH --time=90" in s and "#SBATCH --array=0-1%1" in s
        assert "hpff-tiny" in s
    assert ["--gpus-per-task=1" in s for s in scripts] == [False, True]  # estimates ask for no GPU
    assert said == ["submitted 2 job(s) (90 min, 0 GPU each) via slurm: 770_0 .. 770_1",
                    "submitted 2 job(s) (90 min, 1 GPU each) via slurm: 771_0 .. 771_1"]
    entries = ledger.latest_entries(tmp_path / "r" / "tiny")
    assert sorted(e["job"] for e in entries.values()) == ["770_0", "770_1", "771_0", "771_1"]
    assert [r["status"] for r in res.records] == ["error"] * 4
    assert all("Slurm job 77" in r["message"] and "ended (COMPLETED) without a record" in r["message"] for r in res.records)
