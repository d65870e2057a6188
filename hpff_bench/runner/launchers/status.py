"""`sweep SUITE --status`: what every task of a plan is doing, from the store and the job ledger.

A task is `done` (its latest record is ok), `failed` (oom, diverged or error: the message
says why), `skipped` (no data), `running` or `queued` (its latest job has left no record yet
and its launcher says so), or `not started`. A Slurm job that ended without a record shows as
`failed` with the scheduler's state (`--resume` records it and submits the task again); a
local worker that stopped without one (the sweep was interrupted) as `not started`.
"""

from __future__ import annotations

from hpff_bench.runner.launchers import job_state, ledger

STATES = ("done", "failed", "skipped", "running", "queued", "not started")


def _from_record(record: dict | None) -> tuple[str, str]:
    if record is None:
        return "not started", ""
    status = record.get("status")
    first = (record.get("message") or "").strip().splitlines()
    why = f"{status}: {first[0][:160]}" if first else str(status)
    if status == "ok":
        return "done", f"ok ({(record.get('env') or {}).get('time', '')})"
    return ("skipped", why) if status == "skipped" else ("failed", why)


def task_status(tasks, results_dir) -> list[tuple[object, str, str]]:
    """(task, one of STATES, detail) for every task, in plan order."""
    entries = ledger.latest_entries(results_dir)
    records = ledger.records_by_key(results_dir, tasks)
    if any(e.get("launcher") == "slurm" for e in entries.values()):
        from hpff_bench.runner.launchers import slurm

        slurm.register(entries[t.key] for t in tasks if t.key in entries)
    rows = []
    for t in tasks:
        recs = records[t.key]
        e = entries.get(t.key)
        if e is None or any(ledger.record_job(r) == e["job"] for r in recs):
            rows.append((t, *_from_record(recs[-1] if recs else None)))
            continue
        state, detail = job_state(e)
        if state != "ended":
            rows.append((t, state, detail))
        elif e.get("launcher") == "slurm":
            rows.append((t, "failed", f"{detail}, without a record (--resume records it and resubmits)"))
        else:
            before = _from_record(recs[-1] if recs else None)
            rows.append((t, before[0], f"{before[1]}; {detail}".lstrip("; ")))
    return rows


def status_lines(tasks, results_dir) -> list[str]:
    rows = task_status(tasks, results_dir)
    width = max((len(t.label) for t, _, _ in rows), default=4)
    lines = [f"{t.label.ljust(width)}  {state:<11}  {detail}".rstrip() for t, state, detail in rows]
    counts = {s: sum(1 for _, state, _ in rows if state == s) for s in STATES}
    lines.append(f"{len(rows)} task(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return lines
