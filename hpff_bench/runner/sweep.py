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

from hpff_bench.errors import ConfigError
from hpff_bench.runner import store
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
    for mode, sub in parse_inject(os.environ.get(INJECT_ENV)):
        if not any(sub in label for label in labels):
            example = f"; labels look like {labels[0]!r}" if labels else ""
            raise ConfigError(f"{INJECT_ENV}: {mode}:{sub!r} matches no task of this sweep{example}")


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
) -> SweepResult:
    """Run the suite (see the module docstring); returns what happened. KeyboardInterrupt is
    handled: finished records stay, running workers are stopped, `interrupted` is set."""
    from tqdm.auto import tqdm

    if isolate not in ISOLATE:
        raise ConfigError(f"--isolate must be one of {', '.join(ISOLATE)}, got {isolate!r}")
    suite = load_suite(suite_path)
    plan: Plan = suite.plan(preset, only)
    _check_injection(plan.tasks)
    jobs = int(jobs or plan.sweep_options.get("jobs", 1))
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    timeout_s = timeout_s if timeout_s is not None else plan.sweep_options.get("timeout_s")
    results_dir = Path(results) / plan.suite
    res = SweepResult(plan.suite, preset, results_dir, len(plan.tasks), notes=list(plan.notes))
    t_start = time.monotonic()

    tasks = list(plan.tasks)
    if resume:
        done = store.finished_keys(results_dir)
        before = len(tasks)
        tasks = [t for t in tasks if t.key not in done]
        res.already_done = before - len(tasks)
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
        write(t, store.make_record("train", "skipped", config=t.config, suite=plan.suite, run_name=t.run.name,
                                   message=reason, env={**env_record, "time": store_time()}, preset=preset,
                                   options=t.result_options or None))
        res.skipped_reasons[reason] = res.skipped_reasons.get(reason, 0) + 1

    events: queue.Queue = queue.Queue()
    slots = [_Slot(i, events, results_dir / "logs", env) for i in range(min(jobs, max(1, len(runnable))))]
    pending = collections.deque(runnable)
    bar = tqdm(total=len(runnable), desc=f"sweep {plan.suite}", unit="run", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    status_text: dict[int, str] = {}

    def show() -> None:
        bar.set_postfix_str(" | ".join(status_text[s.index] for s in slots if s.task is not None and s.index in status_text), refresh=True)

    def finish(slot: _Slot, record: dict) -> None:
        write(slot.task, record)
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
        while pending or any(s.task is not None for s in slots):
            for slot in slots:
                if slot.task is None and pending:
                    task = pending.popleft()
                    isolated = isolate == "always" or (cuda and task.kind in ("profile", "train"))
                    payload = task_payload(task, plan.suite, preset, results_dir, data_root, download, resume)
                    slot.assign(task, payload, isolated)
                    status_text[slot.index] = task.label
                    show()
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
        for slot in slots:
            slot.kill()
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        for slot in slots:
            slot.retire(timeout=5.0)
        bar.close()
    res.seconds = time.monotonic() - t_start
    return res


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
