"""Launchers: how a sweep's tasks get run. One interface, two implementations.

- `local` (launchers/local.py): worker processes on this machine, `--jobs N` at a time, or one
  slot per GPU with `--gpus 0,1,2,3|all`. Today's default.
- `slurm` (launchers/slurm.py): every task a job submitted through submitit (job arrays), to a
  Slurm cluster, or to submitit's LocalExecutor (`--slurm-executor local`: each task its own
  process on this machine, as Slurm would start it; how the tests run this path).

The sweep (runner/sweep.py) plans, drops what `--resume` skips and records runs whose dataset
is missing; the launcher runs the rest. Both run a task with worker.execute and give back the
same record (run name, config id, status); only `env` says where it ran. `sweep --status`
reads the job ledger (launchers/ledger.py) and asks each launcher about its jobs.
"""

from __future__ import annotations

import abc
import contextlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hpff_bench.errors import ConfigError

LAUNCHERS = ("local", "slurm")
JOB_STATES = ("queued", "running", "ended")  # what a launcher can say about one of its jobs


@dataclass
class Dispatch:
    """What the sweep hands a launcher: the tasks, and how to describe and record them."""

    suite: str
    preset: str | None
    results_dir: Path
    tasks: list  # runner.suite.Task, in plan order
    payload: Callable[[object], dict]  # task -> the JSON worker.execute takes
    write: Callable[[object, dict], None]  # append a record to the store (and the sweep's list)
    collect: Callable[[dict], None]  # a record a job already appended: only the sweep's list
    error_record: Callable[..., dict]  # (task, message, **env) -> an `error` record
    claims: object  # runner.claim.Claims: claim a task before running it, finish it after
    done_elsewhere: Callable[[object], None]  # a concurrent sweep finished this task
    resume: bool = False
    progress: bool = True
    log: Callable[[str], None] = print
    exit_after_interrupt: bool = False  # after Ctrl-C leave SIGINT ignored (the CLI exits next)


@dataclass
class Outcome:
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


class Launcher(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    def run(self, d: Dispatch) -> Outcome:
        """Run every task of `d` that `d.claims` gives this sweep (claims.py: concurrent sweeps
        on one directory never run a task twice); Ctrl-C returns with `interrupted` set."""


def claim_next(d: Dispatch, pending, waiting: list, on_drop: Callable[[object], None] = lambda task: None):
    """The next pending task this sweep could claim; tasks a live concurrent sweep holds go to
    `waiting` (tried again later), finished ones are dropped (`d.done_elsewhere`)."""
    from hpff_bench.runner.claim import HELD, MINE

    while pending:
        task = pending.popleft()
        state = d.claims.claim(task.key, task.label)
        if state == MINE:
            return task
        if state == HELD:
            waiting.append(task)
        else:
            d.done_elsewhere(task)
            on_drop(task)
    return None


@contextlib.contextmanager
def stopping(d: Dispatch, interrupted: Callable[[], bool]):
    """While a launcher stops: more Ctrl-C must not end in a traceback; ignore them until it has
    stopped and released its claims, then restore the handler (unless the CLI exits next)."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
        d.claims.release_all()
    finally:
        if old is not None and not (interrupted() and d.exit_after_interrupt):
            signal.signal(signal.SIGINT, old)


def job_state(entry: dict) -> tuple[str, str]:
    """(one of JOB_STATES, detail) for a ledger entry, from the launcher that wrote it."""
    if entry.get("launcher") == "slurm":
        from hpff_bench.runner.launchers import slurm

        return slurm.job_state(entry)
    from hpff_bench.runner.launchers import local

    return local.job_state(entry)


def make_launcher(name: str, *, jobs: int | None, default_jobs: int, isolate: str, timeout_s: float | None, gpus: str | None,
                  slurm_options: dict | None, tasks: list, log=print) -> Launcher:
    """The launcher `name`, its options checked (ConfigError: one line) before anything runs.
    `jobs`: --jobs as given (None: `default_jobs`, the suite's; with --gpus: one per GPU)."""
    if name not in LAUNCHERS:
        raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {name!r}")
    given = {k: v for k, v in (slurm_options or {}).items() if v is not None}
    if name == "slurm":
        if gpus is not None:
            raise ConfigError("--gpus is for --launcher local; with --launcher slurm, Slurm assigns "
                              "devices: use --slurm-gpus-per-task N")
        from hpff_bench.runner.launchers.slurm import SlurmLauncher

        return SlurmLauncher(timeout_s=timeout_s, tasks=tasks, **given)
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(f"{flags}: only with --launcher slurm (the launcher is {name!r})")
    from hpff_bench.runner.launchers.local import LocalLauncher

    return LocalLauncher(jobs=jobs, default_jobs=default_jobs, isolate=isolate, timeout_s=timeout_s, gpus=gpus, tasks=tasks, log=log)
