"""Run a suite: plan it, give its tasks to a launcher, append every result to the store.

- Launchers (runner/launchers/): `local` (default) runs each task in a worker process on this
  machine (`--jobs N` at a time, or one per GPU with `--gpus`): a crash, an OOM or a kill loses
  only the task in flight and is recorded as `error` with the reason; `slurm` submits each
  task as a job through submitit. Both write the same records (run names, config ids,
  statuses); launchers/status.py (`sweep --status`) says what is queued, running, done or failed.
- Results: `<results>/<suite>/<run-name>.jsonl`, appended as soon as each task finishes, so
  Ctrl-C or a kill of the sweep keeps every finished line; `--resume` skips tasks whose
  (kind, config_id, options) already has an `ok` record there.
- Training runs whose dataset is missing (and cannot be downloaded) are recorded as `skipped`
  without starting a worker; the summary says how to point --data-root at a copy.
- Logs: every worker's stderr goes to `<results>/<suite>/logs/`; training checkpoints to
  `<results>/<suite>/checkpoints/<run-name>-<key>/` (resumed by --resume).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpff_bench import validation as V
from hpff_bench.errors import ConfigError
from hpff_bench.runner import store
from hpff_bench.runner.claim import MINE, Claims
from hpff_bench.runner.launchers import Dispatch, Outcome, make_launcher
from hpff_bench.runner.suite import Plan, Task, load_suite
from hpff_bench.runner.worker import INJECT_ENV, THREADS_ENV, parse_inject


@dataclass
class SweepResult:
    suite: str
    preset: str | None
    results_dir: Path
    planned: int
    already_done: int = 0
    done_elsewhere: int = 0  # claimed and finished by a concurrent sweep on the same directory
    records: list[dict] = field(default_factory=list)  # written by this sweep, in order
    interrupted: bool = False
    seconds: float = 0.0
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # reason -> count
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        c = collections.Counter(r["status"] for r in self.records)
        return {s: c.get(s, 0) for s in store.STATUSES}

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r["status"] in ("error", "oom", "diverged"))


def task_payload(task: Task, suite: str, preset: str | None, results_dir: Path, data_root: str | None,
                 download: bool | None, resume: bool) -> dict:
    """The JSON a worker gets for `task`."""
    options = dict(task.options)
    if task.kind == "train":
        if data_root is not None:
            options["data_root"] = data_root
        if download is not None:
            options["download"] = download
        options["checkpoint_dir"] = str(checkpoint_dir(results_dir, task))
        options["resume"] = resume
    return {
        "suite": suite,
        "preset": preset,
        "run_name": task.run.name,
        "kind": task.kind,
        "config": task.config.to_dict(),
        "options": options,
        "result_options": task.result_options or None,
    }


def checkpoint_dir(results_dir: Path, task: Task) -> Path:
    key = hashlib.sha256(json.dumps(task.key).encode()).hexdigest()[:10]
    return results_dir / "checkpoints" / f"{task.run.name}-{key}"


def _check_injection(tasks) -> None:
    """A fault-injection entry that names no task would test nothing: say so before running."""
    labels = [t.label for t in tasks]
    try:
        entries = parse_inject(os.environ.get(INJECT_ENV))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for mode, sub in entries:
        if not any(sub in label for label in labels):
            example = f"; labels look like {labels[0]!r}" if labels else ""
            raise ConfigError(f"{INJECT_ENV}: {mode}:{sub!r} matches no task of this sweep{example}")


def check_options(jobs, timeout_s, results, data_root) -> None:
    """The sweep's own options and environment (ConfigError before anything runs)."""
    V.integer("--jobs", jobs, low=1, allow_none=True)
    V.number("--timeout", timeout_s, low=0, low_open=True, high=V.MAX_SECONDS, allow_none=True)
    V.output_dir("--results", results)
    V.string("--data-root", data_root, allow_none=True)
    V.env_int(THREADS_ENV)


def preflight(tasks: list[Task]) -> None:
    """Shape, device and host-memory checks of every task (runner.preflight), before any worker
    starts; the first failure is raised with the number of tasks that fail."""
    from hpff_bench.runner.preflight import (
        check_device,
        check_host_memory,
        check_patch_grid,
        check_tensor_sizes,
    )

    failures: list[str] = []
    seen: set[tuple] = set()
    for t in tasks:
        key = (t.kind in ("profile", "train"), t.config.config_id())
        if key in seen:
            continue
        seen.add(key)
        try:
            check_tensor_sizes(t.config)
            check_patch_grid(t.config)
            if t.kind in ("profile", "train"):
                what = "a profile" if t.kind == "profile" else "training"
                check_device(t.config, what)
                check_host_memory(t.config, what)
        except ConfigError as e:
            failures.append(f"{t.label}: {e}")
    if failures:
        more = f" ({len(failures) - 1} more task(s) fail too)" if len(failures) > 1 else ""
        raise ConfigError(f"{failures[0]}{more}")


def changed_configuration_notes(results_dir: Path, tasks: list[Task]) -> list[str]:
    """--resume into a directory whose run files hold records of other configurations under the
    same run names: the suite changed since; say so (the report keeps the latest of each)."""
    if not results_dir.exists():
        return []
    planned: dict[str, set[str]] = collections.defaultdict(set)
    for t in tasks:
        planned[t.run.name].add(t.config.config_id())
    have: dict[str, set[str]] = collections.defaultdict(set)
    for r in store.read_records([results_dir]).records:
        if r.get("run_name") in planned and r.get("config_id"):
            have[r["run_name"]].add(r["config_id"])
    changed = sorted(n for n, ids in have.items() if ids - planned[n])
    if not changed:
        return []
    return [f"--resume: {len(changed)} run file(s) hold records of a different configuration under the same name "
            f"(the suite changed since they were written), e.g. {changed[0]}; new records are appended next to them"]


def run_sweep(
    suite_path: str | os.PathLike,
    *,
    preset: str | None = None,
    only: str | None = None,
    results: str | os.PathLike = "results",
    resume: bool = False,
    jobs: int | None = None,
    data_root: str | None = None,
    download: bool | None = None,
    isolate: str = "auto",
    timeout_s: float | None = None,
    launcher: str = "local",
    gpus: str | None = None,
    slurm_options: dict | None = None,
    progress: bool = True,
    log=print,
    exit_after_interrupt: bool = False,
    estimate_cost: bool = True,
) -> SweepResult:
    """Run the suite (see the module docstring) through `launcher`; returns what happened.
    KeyboardInterrupt is handled: finished records stay, `interrupted` is set; further Ctrl-C
    are ignored while the launcher stops, and with `exit_after_interrupt` (the CLI, which
    exits next) for good, so none can cut the summary short."""
    check_options(jobs, timeout_s, results, data_root)
    suite = load_suite(suite_path)
    plan: Plan = suite.plan(preset, only)
    _check_injection(plan.tasks)
    preflight(plan.tasks)
    timeout_s = timeout_s if timeout_s is not None else plan.sweep_options.get("timeout_s")
    runner = make_launcher(launcher, jobs=jobs, default_jobs=plan.sweep_options.get("jobs", 1), isolate=isolate,
                           timeout_s=timeout_s, gpus=gpus, slurm_options=slurm_options, tasks=plan.tasks, log=log)
    results_dir = Path(results) / plan.suite  # plan.suite is sanitised (suite.py): never outside `results`
    V.create_dir("--results", results_dir)  # the input is good: the first write, one line if it fails
    res = SweepResult(plan.suite, preset, results_dir, len(plan.tasks), notes=list(plan.notes))
    t_start = time.monotonic()

    tasks = list(plan.tasks)
    if resume:
        done = store.finished_keys(results_dir)
        before = len(tasks)
        tasks = [t for t in tasks if t.key not in done]
        res.already_done = before - len(tasks)
        for note in changed_configuration_notes(results_dir, plan.tasks):
            log(f"note: {note}")
            res.notes.append(note)
    claims = Claims(results_dir)
    env_record = None

    def collect(record: dict) -> None:
        res.records.append(record)
        if record["status"] == "skipped":
            res.skipped_reasons[record["message"]] = res.skipped_reasons.get(record["message"], 0) + 1

    def write(task: Task, record: dict) -> None:
        store.append_record(store.run_file(results_dir, task.run.name), record)
        collect(record)

    def done_elsewhere(task: Task) -> None:
        res.done_elsewhere += 1

    def error_record(task: Task, message: str, **env) -> dict:
        from hpff_bench.runner.env import capture_env

        return store.make_record(task.kind, "error", config=task.config, suite=plan.suite, run_name=task.run.name,
                                 message=message, env={**capture_env(init_cuda=False), **env}, preset=preset,
                                 options=task.result_options or None)

    # training data: check once per (dataset, root); missing -> `skipped` without a worker
    unavailable: dict[tuple, str | None] = {}
    runnable: list[Task] = []
    for t in tasks:
        if t.kind != "train":
            runnable.append(t)
            continue
        root = data_root or t.options.get("data_root") or "data"
        dl = download if download is not None else t.options.get("download", True)
        key = (t.config.dataset, root, dl)
        if key not in unavailable:
            from hpff_bench.data.datasets import availability

            log(f"checking training data: {t.config.dataset} under {root!r}" + (" (may download)" if dl else ""))
            unavailable[key] = availability(t.config.dataset, root, download=dl)
        if unavailable[key] is None:
            runnable.append(t)
            continue
        if env_record is None:
            from hpff_bench.runner.env import capture_env

            env_record = capture_env(init_cuda=False)
        if claims.claim(t.key, t.label) != MINE:
            continue  # a concurrent sweep records it
        write(t, store.make_record("train", "skipped", config=t.config, suite=plan.suite, run_name=t.run.name,
                                   message=unavailable[key], env={**env_record, "time": store_time()}, preset=preset,
                                   options=t.result_options or None))
        claims.finish(t.key, "skipped")

    if estimate_cost and launcher == "local" and any(t.kind == "train" for t in runnable):
        _log_train_cost(runnable, runner.jobs, runner.worker_threads, data_root, download, log)

    dispatch = Dispatch(
        suite=plan.suite, preset=preset, results_dir=results_dir, tasks=runnable,
        payload=lambda task: task_payload(task, plan.suite, preset, results_dir, data_root, download, resume),
        write=write, collect=collect, error_record=error_record, claims=claims, done_elsewhere=done_elsewhere,
        resume=resume, progress=progress, log=log, exit_after_interrupt=exit_after_interrupt,
    )
    outcome = runner.run(dispatch) if runnable else Outcome()
    res.interrupted = outcome.interrupted
    res.notes += outcome.notes
    res.seconds = time.monotonic() - t_start
    return res


def _log_train_cost(tasks: list[Task], jobs: int, threads: int, data_root, download, log) -> None:
    """Print what the training tasks will cost (runner.train_cost), before any of them starts."""
    from hpff_bench.runner.train_cost import estimate_train_cost

    log("timing a few steps of each training configuration to estimate the cost ...")
    try:
        lines = estimate_train_cost(tasks, jobs, threads, data_root, download).lines()
    except Exception as e:  # noqa: BLE001 - a configuration that cannot step fails in its own task, recorded
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        lines = [f"training: cost not estimated ({type(e).__name__}: {first}); its task will record the failure"]
    for line in lines:
        log(line)


def store_time() -> str:
    from hpff_bench.runner.env import now

    return now()


# ----- the end of a sweep ---------------------------------------------------------------------
def _mib(v) -> str:
    return "" if v is None else f"{v / 2**20:,.1f}"


def results_table(records: list[dict], max_rows: int = 80) -> str:
    """A plain-text table of the latest record per (run, kind)."""
    latest: dict[tuple, dict] = {}
    for r in records:
        latest[(r.get("run_name"), r.get("kind"))] = r
    rows = []
    order = {k: i for i, k in enumerate(("estimate", "profile", "train", "benchmark"))}
    for (name, kind), r in sorted(latest.items(), key=lambda kv: (str(kv[0][0]), order.get(kv[0][1], 9))):
        cfg = r.get("config") or {}
        mem = r.get("memory") or {}
        pred = r.get("predicted") or {}
        timing = r.get("timing") or {}
        acc = r.get("accuracy") or {}
        measured = mem.get("peak_allocated_bytes") or mem.get("peak_memory_bytes")
        step = timing.get("step_seconds")
        top1 = acc.get("top1")
        rows.append([
            str(name), str(kind), str(r.get("status")), str(r.get("modules") or ""), str(cfg.get("batch_size", "")),
            _mib(measured), _mib(pred.get("peak_allocated_bytes")),
            "" if step is None else f"{step:.3f}", "" if top1 is None else f"{100 * top1:.2f}",
        ])
    head = ["run", "kind", "status", "modules", "batch", "measured MiB", "predicted MiB", "step s", "top-1 %"]
    shown = rows[:max_rows]
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(head)]
    right = {3, 4, 5, 6, 7, 8}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, shown)]
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more rows (hpff-bench report renders them all)")
    return "\n".join(lines)


def summary_lines(res: SweepResult, data_root_flag: str = "--data-root") -> list[str]:
    c = res.counts
    mins, secs = divmod(int(res.seconds), 60)
    head = (
        f"sweep {res.suite}" + (f" (preset {res.preset})" if res.preset else "")
        + (" INTERRUPTED" if res.interrupted else "")
        + f": {len(res.records)} of {res.planned} tasks recorded in {mins}m{secs:02d}s: "
        + ", ".join(f"{c[s]} {s}" for s in store.STATUSES)
    )
    if res.already_done:
        head += f"; {res.already_done} already ok (--resume)"
    if res.done_elsewhere:
        head += f"; {res.done_elsewhere} run by a concurrent sweep on the same directory"
    lines = [head]
    for reason, n in res.skipped_reasons.items():
        lines.append(f"skipped {n} task(s): {reason}")
    if res.skipped_reasons:
        lines.append(
            f"  -> to train, point {data_root_flag} at a copy, e.g. `hpff-bench sweep ... --data-root /path/to/cifar10` "
            "or `make bench-cifar DATA_ROOT=/path/to/cifar10`"
        )
    for note in res.notes:
        lines.append(f"note: {note}")
    if res.interrupted:
        lines.append("interrupted: every finished task is recorded; rerun with --resume to do the rest")
    return lines
