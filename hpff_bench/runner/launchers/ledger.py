"""The job ledger: which job runs (or ran) which task, for `sweep --status` and `--resume`.

`<results>/<suite>/jobs/ledger` holds one JSON object per line: `time`, `launcher` (local or
slurm; slurm adds `executor`, slurm or local, and submitit's `folder`), `job` (a Slurm job id, a local executor's pid,
or `<host>:<pid>` of a local worker), `host`, `label` and `key` (the task's resume key), and
`event`: `queued` (a local sweep will run it), `started` (a worker took it) or `submitted` (a
job holds it). It is not a `.jsonl`/`.json` file, so the results loader never reads it, and
records stay in the store's run files only. Lines are appended whole under an flock, like
the store's. A record names the job that wrote it (`env.job_id`, else `env.hostname:env.pid`),
so a task's state is the outcome of its latest job when that job left a record, and the
scheduler's word on the job (queued, running, ended) when it did not.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from hpff_bench.runner import store

EVENTS = ("queued", "started", "submitted")


def ledger_file(results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / "jobs" / "ledger"


def entry(event: str, launcher: str, job: str, task, **extra) -> dict:
    """One ledger line; `extra`: what the launcher needs to ask about the job later."""
    if event not in EVENTS:
        raise ValueError(f"unknown ledger event {event!r}")
    from hpff_bench.runner.env import now

    return {"time": now(), "event": event, "launcher": launcher, "job": str(job),
            "host": socket.gethostname(), "label": task.label, "key": list(task.key), **extra}


def append(results_dir: str | os.PathLike, entries: list[dict]) -> None:
    """Append entries, each one whole line, under an exclusive lock."""
    if not entries:
        return
    path = ledger_file(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def latest_entries(results_dir: str | os.PathLike) -> dict[tuple, dict]:
    """task key -> its last ledger entry (broken lines are skipped)."""
    path = ledger_file(results_dir)
    out: dict[tuple, dict] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            e = json.loads(line)
            out[tuple(e["key"])] = e
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out


def record_job(record: dict) -> str | None:
    """The job that wrote `record`: env.job_id (submitit jobs), else `<host>:<pid>`."""
    env = record.get("env") or {}
    if env.get("job_id"):
        return str(env["job_id"])
    if env.get("hostname") and env.get("pid"):
        return f"{env['hostname']}:{env['pid']}"
    return None


def records_by_key(results_dir: str | os.PathLike, tasks) -> dict[tuple, list[dict]]:
    """Every record of `tasks` in the store, oldest first, by task key."""
    out: dict[tuple, list[dict]] = {t.key: [] for t in tasks}
    files = {store.run_file(results_dir, t.run.name) for t in tasks}
    existing = [f for f in sorted(files) if f.exists()]
    if not existing:
        return out
    for rec in store.read_records(existing).records:
        key = store.task_key(rec)
        if key in out:
            out[key].append(rec)
    return out
