"""`--launcher slurm`: every task a job, submitted through submitit (`pip install 'hpff-bench[slurm]'`).

Tasks go out as job arrays (one per time limit and GPU count: estimates and CPU-only runs ask
for no GPU), at most `--slurm-array-parallelism` running at once. Each job runs
worker.run_job: the same `execute` as a local worker, then appends its record to the store
under the store's lock (safe across nodes that share the file system). submitit keeps its job
files in `<results>/<suite>/jobs/` (pickles, `.out`/`.err` logs, none read as results), and
every job id goes into the job ledger (launchers/ledger.py).

The submitting process then waits, asking the scheduler about each job. A job that ended
without leaving a record (killed, out of time or memory, a node failure) is recorded as
`error` with the scheduler's state and the tail of the job's stderr. Ctrl-C stops the waiting
only: queued and running jobs go on, `sweep --status` shows them, and `--resume` neither
resubmits them nor loses them: it waits for those still alive, records the dead ones, and
submits only what has no live job and no `ok` record.

`--slurm-executor local` hands the same jobs to submitit's LocalExecutor (each task its own
process on this machine, started as Slurm would start it): the tests run this path.
"""

from __future__ import annotations

import collections
import math
import re
import shutil
import socket
import time
from pathlib import Path

from hpff_bench import validation as V
from hpff_bench.errors import ConfigError
from hpff_bench.runner.launchers import Dispatch, Launcher, Outcome, claim_next, ledger, stopping

EXECUTORS = ("slurm", "local")
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING", "SUSPENDED",
          "PREEMPTED", "READY", "UNKNOWN"}  # UNKNOWN: sacct has not seen a fresh job yet
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
START_MARGIN_MIN = 2  # a job's time limit over the task's timeout: the process start, imports
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: str) -> int:
    """A Slurm time limit (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes (rounded up)."""
    m = _TIME.match(str(text).strip())
    if not m:
        raise ConfigError(f"--slurm-time {text!r}: not a Slurm time; use minutes, MM:SS, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # M:S
        seconds = int(a) * 60 + int(b)
    else:
        seconds = int(a) * 60
    if seconds <= 0:
        raise ConfigError(f"--slurm-time {text!r}: must be longer than 0")
    return math.ceil(seconds / 60)


def _positive_int(flag: str, value, minimum: int) -> int:
    text = str(value).strip()
    if V.natural(text) is None or int(text) < minimum:
        raise ConfigError(f"{flag} {value!r}: must be an integer >= {minimum}")
    return int(text)


def map_state(state: str) -> str:
    """A Slurm/submitit job state (`CANCELLED by 1000`, `RUNNING`, ...) -> queued/running/ended."""
    word = (state or "UNKNOWN").split()[0].upper()
    return "queued" if word in QUEUED else "running" if word in RUNNING else "ended"


def _stderr_tail(folder: Path, job_id: str, chars: int = 800) -> str:
    from submitit.core.utils import JobPaths

    try:
        text = JobPaths(folder, job_id=job_id, task_id=0).stderr.read_text(errors="replace")
    except OSError:
        return ""
    return text.strip()[-chars:]


def _result_written(folder: Path, job_id: str) -> bool:
    """submitit pickled the job's return value: run_job appended its record before that."""
    from submitit.core.utils import JobPaths

    return JobPaths(folder, job_id=job_id, task_id=0).result_pickle.exists()


def _local_pid_state(job_id: str) -> str:
    from hpff_bench.runner.launchers.local import pid_alive

    return "RUNNING" if job_id.isdigit() and pid_alive(int(job_id)) else "FINISHED"


def _scheduler_state(executor: str, folder: Path, job_id: str, job=None) -> str:
    """The scheduler's word on a job: submitit's state (sacct for Slurm) or, for a local-executor
    job this process did not start, whether its controller process lives."""
    if job is not None:
        return job.state
    if executor == "local":
        return _local_pid_state(job_id)
    return slurm_job(folder, job_id).state


_JOBS: dict[str, object] = {}


def slurm_job(folder: Path, job_id: str):
    """One submitit.SlurmJob per id: creating one makes submitit's shared watcher call sacct
    afresh, so `register` all of them first and each later look-up reads one sacct answer."""
    if job_id not in _JOBS:
        import submitit

        _JOBS[job_id] = submitit.SlurmJob(folder, job_id)
    return _JOBS[job_id]


def register(entries) -> None:
    """Make submitit ask sacct about every Slurm job of `entries` in one call."""
    for e in entries:
        if e.get("launcher") == "slurm" and e.get("executor", "slurm") == "slurm":
            slurm_job(Path(e.get("folder", ".")), str(e["job"]))


def job_state(entry: dict) -> tuple[str, str]:
    """(queued/running/ended, the scheduler's state) for a slurm ledger entry."""
    executor = entry.get("executor", "slurm")
    if executor == "local" and entry.get("host") != socket.gethostname():
        return "ended", f"job {entry['job']}: a local-executor job on host {entry.get('host')}: cannot check from here"
    state = _scheduler_state(executor, Path(entry.get("folder", ".")), str(entry["job"]))
    return map_state(state), f"job {entry['job']}: {state}"


def dead_job_message(executor: str, folder: Path, job_id: str, state: str, label: str) -> str:
    what = "Slurm job" if executor == "slurm" else "submitit local job"
    tail = _stderr_tail(folder, job_id)
    return (f"{what} {job_id} ended ({state}) without a record for {label}"
            + (f"; last output:\n{tail}" if tail else "; no output"))


class SlurmLauncher(Launcher):
    name = "slurm"

    def __init__(self, *, timeout_s: float | None = None, tasks: list = (), slurm_executor: str = "slurm",
                 slurm_partition: str | None = None, slurm_gpus_per_task=None, slurm_time: str | None = None,
                 slurm_array_parallelism=None):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError("--launcher slurm needs submitit: pip install 'hpff-bench[slurm]'") from None
        if slurm_executor not in EXECUTORS:
            raise ConfigError(f"--slurm-executor must be one of {', '.join(EXECUTORS)}, got {slurm_executor!r}")
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if slurm_executor == "slurm" and missing:
            raise ConfigError(f"--launcher slurm: {' and '.join(missing)} not on PATH (not a Slurm login node?); "
                              "--slurm-executor local runs the jobs on this machine")
        if slurm_partition is not None and not str(slurm_partition).strip():
            raise ConfigError("--slurm-partition: empty partition name")
        self.executor_name, self.partition = slurm_executor, slurm_partition
        self.gpus_per_task = _positive_int("--slurm-gpus-per-task", slurm_gpus_per_task, 0) if slurm_gpus_per_task is not None else 0
        self.parallelism = _positive_int("--slurm-array-parallelism", slurm_array_parallelism, 1) if slurm_array_parallelism is not None else None
        self.time_min = parse_time(slurm_time) if slurm_time is not None else None
        if self.time_min is None:
            untimed = [t.label for t in tasks if not (t.timeout_s or timeout_s)]
            if untimed:
                raise ConfigError(f"--slurm-time is needed: {untimed[0]} has no timeout_s to derive a job time limit "
                                  "from (Slurm stops a job at its limit); e.g. --slurm-time 4:00:00")
        self.timeout_s = timeout_s

    # ----- submitting ----------------------------------------------------------------------
    def _minutes(self, task) -> int:
        if self.time_min is not None:
            return self.time_min
        return math.ceil((task.timeout_s or self.timeout_s) / 60) + START_MARGIN_MIN

    def _gpus(self, task) -> int:
        return 0 if task.kind == "estimate" or task.config.device == "cpu" else self.gpus_per_task

    def _executor(self, folder: Path):
        import submitit

        if self.executor_name == "local":
            return submitit.LocalExecutor(folder)
        return submitit.SlurmExecutor(folder)

    def _submit(self, d: Dispatch, tasks: list, folder: Path, watching: dict) -> None:
        """Submit `tasks` (one array per time limit and GPU count) and watch their jobs."""
        from hpff_bench.runner.worker import run_job

        executor = self._executor(folder)
        groups: dict[tuple[int, int], list] = {}
        for t in tasks:
            groups.setdefault((self._minutes(t), self._gpus(t)), []).append(t)
        for (minutes, n_gpus), group in groups.items():
            if self.executor_name == "local":
                executor.update_parameters(timeout_min=minutes, gpus_per_node=n_gpus)
            else:
                params = {"time": minutes, "job_name": f"hpff-{d.suite}", "gpus_per_task": n_gpus or None}
                if self.partition:
                    params["partition"] = self.partition
                if self.parallelism:
                    params["array_parallelism"] = self.parallelism
                executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
            with executor.batch():
                jobs = [executor.submit(run_job, d.payload(t), str(d.results_dir)) for t in group]
            watching.update({t: (job.job_id, job, self.executor_name, folder) for t, job in zip(group, jobs)})
            ledger.append(d.results_dir, [
                ledger.entry("submitted", "slurm", job.job_id, t, executor=self.executor_name, folder=str(folder))
                for t, job in zip(group, jobs)])
            d.log(f"submitted {len(group)} job(s) ({minutes} min, {n_gpus} GPU each) via {self.executor_name}: "
                  f"{jobs[0].job_id}" + (f" .. {jobs[-1].job_id}" if len(jobs) > 1 else ""))

    # ----- waiting -------------------------------------------------------------------------
    def run(self, d: Dispatch) -> Outcome:
        from tqdm.auto import tqdm

        out = Outcome()
        folder = d.results_dir / "jobs"
        watching: dict = {}  # task -> (job id, submitit job or None, executor, submitit folder)
        pending, held = collections.deque(d.tasks), []
        to_submit = []
        while (task := claim_next(d, pending, held)) is not None:
            to_submit.append(task)
        if held:
            out.notes.append(f"{len(held)} task(s) left to a concurrent sweep that holds them, e.g. {held[0].label}")
        if d.resume:
            to_submit = self._reattach(d, to_submit, folder, watching)
        bar = tqdm(total=len(to_submit) + len(watching), desc=f"sweep {d.suite}", unit="run",
                   disable=not d.progress, dynamic_ncols=True)
        try:
            if to_submit:
                self._submit(d, to_submit, folder, watching)
            while watching:
                for task, (job_id, job, executor, job_folder) in list(watching.items()):
                    state = _scheduler_state(executor, job_folder, job_id, job)
                    if map_state(state) != "ended" and not _result_written(job_folder, job_id):
                        continue  # (a written result ends the wait even where sacct never answers)
                    self._settle(d, task, job_id, state, executor, job_folder)
                    del watching[task]
                    bar.update(1)
                d.claims.refresh()
                if watching:
                    time.sleep(1.0 if self.executor_name == "local" else 10.0)
        except KeyboardInterrupt:
            out.interrupted = True
            out.notes.append(f"{len(watching)} job(s) still queued or running: they write their records when they "
                             "finish; `sweep ... --status` shows them, `sweep ... --resume` collects them")
        finally:
            with stopping(d, lambda: out.interrupted):  # the jobs keep running: only the claims go
                bar.close()
        return out

    def _settle(self, d: Dispatch, task, job_id: str, state: str, executor: str, folder: Path) -> None:
        """An ended job: collect the record it wrote, or record why it left none."""
        mine = [r for r in ledger.records_by_key(d.results_dir, [task])[task.key] if ledger.record_job(r) == job_id]
        if mine:
            d.collect(mine[-1])
        else:
            d.write(task, d.error_record(task, dead_job_message(executor, folder, job_id, state, task.label),
                                         job_id=job_id))
        d.claims.finish(task.key, (mine[-1] if mine else {"status": "error"})["status"])

    def _reattach(self, d: Dispatch, tasks: list, folder: Path, watching: dict) -> list:
        """--resume: watch the live jobs of earlier submissions of `tasks`, record the dead
        ones; return the tasks to submit."""
        entries = ledger.latest_entries(d.results_dir)
        records = ledger.records_by_key(d.results_dir, tasks)
        register(entries.get(t.key, {}) for t in tasks if t.key in entries)
        to_submit = []
        for t in tasks:
            e = entries.get(t.key)
            if e is None or e.get("launcher") != "slurm" or e.get("event") != "submitted":
                to_submit.append(t)
                continue
            if any(ledger.record_job(r) == e["job"] for r in records[t.key]):
                to_submit.append(t)  # that job finished (not ok: --resume kept the task)
                continue
            executor, job_folder = e.get("executor", "slurm"), Path(e.get("folder", folder))
            state = _scheduler_state(executor, job_folder, e["job"])
            if map_state(state) == "ended":
                d.write(t, d.error_record(t, dead_job_message(executor, job_folder, e["job"], state, t.label),
                                          job_id=e["job"]))
                to_submit.append(t)
            else:
                watching[t] = (e["job"], None, executor, job_folder)
                d.log(f"{t.label}: job {e['job']} is still {map_state(state)}: waiting for it, not resubmitting")
        return to_submit
