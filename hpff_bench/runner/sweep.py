"""Run a suite: every task in a worker process, every result appended to the store.

- Worker processes (`python -m hpff_bench.runner.worker`): a crash, an OOM or a kill loses only
  the task in flight; the parent records it (status `error`, with the exit code or signal and
  the tail of the worker's log) and carries on with a new worker. Isolation (`isolate`):
  `always` = a fresh process per task; `auto` (default) = a fresh process per task that uses
  a GPU (profile and train runs when CUDA is available: a clean CUDA context and clean NVML
  numbers), while tasks without one share a worker (restarted after any crash), because a
  process start (importing torch) costs seconds on a laptop.
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
import contextlib
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpff_bench import validation as V
from hpff_bench.errors import ConfigError
from hpff_bench.runner import store
from hpff_bench.runner.claim import HELD, MINE, Claims
from hpff_bench.runner.suite import Plan, Task, load_suite
from hpff_bench.runner.worker import INJECT_ENV, PREFIX, THREADS_ENV, parse_inject

ISOLATE = ("auto", "always")


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


def _describe_exit(rc: int | None) -> str:
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (the kernel's OOM killer sends SIGKILL when the host runs out of memory)" if -rc == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {rc}"


class _Slot:
    """One concurrent lane: at most one worker process and one task at a time."""

    def __init__(self, index: int, events: queue.Queue, log_dir: Path, env: dict):
        self.index = index
        self.events = events
        self.log_dir = log_dir
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.gen = 0
        self.task: Task | None = None
        self.isolated = False
        self.started = 0.0
        self.log_path: Path | None = None
        self.log_offset = 0
        self.workers_started = 0

    def _start(self) -> None:
        self.gen += 1
        self.workers_started += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"worker{self.index}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpff_bench.runner.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=self.env,
        )
        log.close()
        gen, proc = self.gen, self.proc

        def read() -> None:
            for raw in proc.stdout:
                line = raw.decode("utf-8", errors="replace")
                if line.startswith(PREFIX):
                    try:
                        self.events.put((self, gen, json.loads(line[len(PREFIX):])))
                    except json.JSONDecodeError:
                        pass
            self.events.put((self, gen, None))

        threading.Thread(target=read, daemon=True).start()

    def assign(self, task: Task, payload: dict, isolated: bool) -> None:
        if self.proc is not None and (isolated or self.isolated or self.proc.poll() is not None):
            self.retire()
        if self.proc is None:
            self._start()
        self.task, self.isolated, self.started = task, isolated, time.monotonic()
        try:
            self.log_offset = self.log_path.stat().st_size
        except OSError:
            self.log_offset = 0
        with open(self.log_path, "ab") as f:
            f.write(f"\n=== {time.strftime('%H:%M:%S')} {task.label} ===\n".encode())
        try:
            self.proc.stdin.write((json.dumps(payload) + "\n").encode())
            self.proc.stdin.flush()
            if isolated:
                self.proc.stdin.close()  # one task, then the worker exits
        except (BrokenPipeError, OSError):
            pass  # the worker died already; its EOF event records the crash

    def log_tail(self, chars: int = 1500) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [ln for ln in text.strip().splitlines() if not ln.startswith("=== ")]
        return "\n".join(lines)[-chars:]

    def retire(self, timeout: float = 10.0) -> None:
        """Let the worker finish (end of input) or stop it; forget it."""
        proc, self.proc = self.proc, None
        self.gen += 1  # ignore whatever its reader thread still reports
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()  # no CUDA context is created
    except Exception:
        return False


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
    V.number("--timeout", timeout_s, low=0, low_open=True, allow_none=True)
    V.output_dir("--results", results)
    V.string("--data-root", data_root, allow_none=True)
    V.env_int(THREADS_ENV)


def preflight(tasks: list[Task]) -> None:
    """Shape, device and host-memory checks of every task (runner.preflight), before any worker
    starts; the first failure is raised with the number of tasks that fail."""
    from hpff_bench.runner.preflight import check_device, check_host_memory, check_patch_grid

    failures: list[str] = []
    seen: set[tuple] = set()
    for t in tasks:
        key = (t.kind in ("profile", "train"), t.config.config_id())
        if key in seen:
            continue
        seen.add(key)
        try:
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
    progress: bool = True,
    log=print,
    exit_after_interrupt: bool = False,
) -> SweepResult:
    """Run the suite (see the module docstring); returns what happened. KeyboardInterrupt is
    handled: finished records stay, running workers are stopped, `interrupted` is set; further
    Ctrl-C are ignored while it stops, and with `exit_after_interrupt` (the CLI, which exits
    next) for good, so none can cut the summary short."""
    from tqdm.auto import tqdm

    if isolate not in ISOLATE:
        raise ConfigError(f"--isolate must be one of {', '.join(ISOLATE)}, got {isolate!r}")
    check_options(jobs, timeout_s, results, data_root)
    suite = load_suite(suite_path)
    plan: Plan = suite.plan(preset, only)
    _check_injection(plan.tasks)
    preflight(plan.tasks)
    jobs = jobs if jobs is not None else plan.sweep_options.get("jobs", 1)
    timeout_s = timeout_s if timeout_s is not None else plan.sweep_options.get("timeout_s")
    results_dir = Path(results) / plan.suite  # plan.suite is sanitised (suite.py): never outside `results`
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
    cuda = _cuda_available()
    if cuda and jobs > 1 and any(t.kind in ("profile", "train") for t in tasks):
        log(f"note: --jobs {jobs} with a GPU: concurrent runs share it, so NVML's device-wide numbers "
            "include each other (allocator peaks stay per process)")

    env = dict(os.environ)
    env.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 1) // jobs)))
    env_record = None

    def write(task: Task, record: dict) -> None:
        store.append_record(store.run_file(results_dir, task.run.name), record)
        res.records.append(record)

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
        reason = unavailable[key]
        if claims.claim(t.key, t.label) != MINE:
            continue  # a concurrent sweep records it
        write(t, store.make_record("train", "skipped", config=t.config, suite=plan.suite, run_name=t.run.name,
                                   message=reason, env={**env_record, "time": store_time()}, preset=preset,
                                   options=t.result_options or None))
        claims.finish(t.key, "skipped")
        res.skipped_reasons[reason] = res.skipped_reasons.get(reason, 0) + 1

    events: queue.Queue = queue.Queue()
    slots = [_Slot(i, events, results_dir / "logs", env) for i in range(min(jobs, max(1, len(runnable))))]
    pending = collections.deque(runnable)
    waiting: list[Task] = []  # claimed by a live concurrent sweep: tried again when it lets go
    bar = tqdm(total=len(runnable), desc=f"sweep {plan.suite}", unit="run", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    status_text: dict[int, str] = {}

    def next_task() -> Task | None:
        """The next pending task this sweep could claim (others are set aside or dropped)."""
        while pending:
            task = pending.popleft()
            state = claims.claim(task.key, task.label)
            if state == MINE:
                return task
            if state == HELD:
                waiting.append(task)
            else:
                res.done_elsewhere += 1
                bar.update(1)
        return None

    def show() -> None:
        bar.set_postfix_str(" | ".join(status_text[s.index] for s in slots if s.task is not None and s.index in status_text), refresh=True)

    def finish(slot: _Slot, record: dict) -> None:
        write(slot.task, record)
        claims.finish(slot.task.key, record["status"])
        if record["status"] == "skipped":
            res.skipped_reasons[record["message"]] = res.skipped_reasons.get(record["message"], 0) + 1
        if record["status"] != "ok" and progress:
            bar.write(f"{slot.task.label}: {record['status']}: {(record.get('message') or '')[:300]}")
        slot.task = None
        status_text.pop(slot.index, None)
        bar.update(1)

    def crashed(slot: _Slot, why: str) -> None:
        from hpff_bench.runner.env import capture_env

        task = slot.task
        tail = slot.log_tail()
        msg = f"worker process {why} while running {task.label}" + (f"; last output:\n{tail}" if tail else "")
        finish(slot, store.make_record(task.kind, "error", config=task.config, suite=plan.suite, run_name=task.run.name,
                                       message=msg, env=capture_env(init_cuda=False), preset=preset,
                                       options=task.result_options or None))

    old_term = None
    if threading.current_thread() is threading.main_thread():
        def _term(signum, frame):
            raise KeyboardInterrupt

        old_term = signal.signal(signal.SIGTERM, _term)
    try:
        while pending or waiting or any(s.task is not None for s in slots):
            if not pending and waiting:
                pending.extend(waiting)
                waiting.clear()
            for slot in slots:
                task = next_task() if slot.task is None else None
                if task is not None:
                    isolated = isolate == "always" or (cuda and task.kind in ("profile", "train"))
                    payload = task_payload(task, plan.suite, preset, results_dir, data_root, download, resume)
                    slot.assign(task, payload, isolated)
                    status_text[slot.index] = task.label
                    show()
            claims.refresh()
            try:
                slot, gen, msg = events.get(timeout=0.5)
            except queue.Empty:
                now = time.monotonic()
                for slot in slots:
                    limit = slot.task.timeout_s if slot.task and slot.task.timeout_s else timeout_s
                    if slot.task is not None and limit and now - slot.started > limit:
                        slot.kill()
                        crashed(slot, f"was stopped after the {limit:g} s timeout")
                        slot.retire()
                continue
            if gen != slot.gen:
                continue  # from a worker this slot already retired
            if msg is None:  # the worker exited
                rc = slot.proc.wait() if slot.proc is not None else None
                if slot.task is not None:
                    crashed(slot, f"died ({_describe_exit(rc)})")
                slot.proc = None
                slot.gen += 1
            elif msg.get("type") == "progress" and slot.task is not None:
                status_text[slot.index] = f"{slot.task.label}: {msg.get('text', '')}"
                show()
            elif msg.get("type") == "result" and slot.task is not None:
                finish(slot, msg["record"])
                if slot.isolated:
                    slot.retire()
    except KeyboardInterrupt:
        res.interrupted = True
    finally:
        # more Ctrl-C while stopping must not end in a traceback: ignore them until the workers
        # are stopped and the claims released (a few seconds at most), then restore the handler
        old_int = _ignore_sigint()
        try:
            if res.interrupted:
                for slot in slots:
                    slot.kill()
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            for slot in slots:
                slot.retire(timeout=5.0)
            claims.release_all()
            bar.close()
        finally:
            if old_int is not None and not (res.interrupted and exit_after_interrupt):
                signal.signal(signal.SIGINT, old_int)
    res.seconds = time.monotonic() - t_start
    return res


def _ignore_sigint():
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


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
