"""`--launcher local`: worker processes on this machine (`python -m hpff_bench.runner.worker`).

A crash, an OOM or a kill loses only the task in flight; the parent records it (status
`error`, with the exit code or signal and the tail of the worker's log) and carries on with a
new worker. Isolation (`isolate`): `always` = a fresh process per task; `auto` = a fresh
process per task that uses a GPU (profile and train runs when CUDA is available: a clean CUDA
context and clean NVML numbers), while tasks without one share a worker (restarted after any
crash), because a process start (importing torch) costs seconds on a laptop.

`--jobs N` runs N slots at once. `--gpus 0,1,2,3` makes one slot per GPU, each with only its
device visible (launchers/gpus.py), so N tasks run at once with their own allocator and NVML
numbers; the record's `env.gpu` names the device. Every task's slot is written to the job
ledger (`queued` for the sweep, `started` for the worker's pid) for `sweep --status`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from hpff_bench.errors import ConfigError
from hpff_bench.runner.launchers import (
    Dispatch,
    Launcher,
    Outcome,
    claim_next,
    gpus,
    ledger,
    stopping,
)
from hpff_bench.runner.worker import PREFIX, THREADS_ENV

ISOLATE = ("auto", "always")


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


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()  # no CUDA context is created
    except Exception:
        return False


def pid_alive(pid: int) -> bool:
    """A live process (not a zombie) with this pid on this machine."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def job_state(entry: dict) -> tuple[str, str]:
    """A local ledger entry: `queued` while its sweep lives, `running` while its worker lives."""
    host, _, pid = str(entry.get("job", "")).rpartition(":")
    if host != socket.gethostname():
        return "ended", f"(on host {host}: cannot check from here)"
    alive = pid.isdigit() and pid_alive(int(pid))
    if entry.get("event") == "queued":
        return ("queued", f"in sweep pid {pid}") if alive else ("ended", f"sweep pid {pid} stopped before starting it")
    return ("running", f"worker pid {pid}") if alive else ("ended", f"worker pid {pid} stopped without a record")


class _Slot:
    """One concurrent lane: at most one worker process and one task at a time."""

    def __init__(self, index: int, events: queue.Queue, log_dir: Path, env: dict):
        self.index = index
        self.events = events
        self.log_dir = log_dir
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.gen = 0
        self.task = None
        self.isolated = False
        self.started = 0.0
        self.log_path: Path | None = None
        self.log_offset = 0
        self.workers_started = 0
        self.pid: int | None = None  # the worker that has (or last had) a task

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

    def assign(self, task, payload: dict, isolated: bool) -> int:
        """Give `task` to this slot's worker (started if needed); returns the worker's pid."""
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
        return self.proc.pid

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


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, *, jobs: int | None, default_jobs: int = 1, isolate: str = "auto", timeout_s: float | None = None,
                 gpus: str | None = None, tasks: list = (), log=print):
        if isolate not in ISOLATE:
            raise ConfigError(f"--isolate must be one of {', '.join(ISOLATE)}, got {isolate!r}")
        self.devices = gpus_for(gpus, tasks) if gpus is not None else []
        if self.devices and jobs is not None and jobs != len(self.devices):
            raise ConfigError(f"--jobs {jobs} with --gpus {gpus}: one task per GPU runs "
                              f"{len(self.devices)} at a time; drop --jobs")
        jobs = len(self.devices) or int(jobs if jobs is not None else default_jobs)
        if jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {jobs}")
        self.jobs, self.isolate, self.timeout_s, self.log = jobs, isolate, timeout_s, log

    @property
    def worker_threads(self) -> int:
        """torch threads per worker: $HPFF_BENCH_THREADS, else the cores shared over the jobs."""
        return int(os.environ.get(THREADS_ENV) or max(1, (os.cpu_count() or 1) // self.jobs))

    def run(self, d: Dispatch) -> Outcome:
        from tqdm.auto import tqdm

        out = Outcome()
        cuda = _cuda_available()
        if cuda and self.jobs > 1 and not self.devices and any(t.kind in ("profile", "train") for t in d.tasks):
            self.log(f"note: --jobs {self.jobs} with a GPU: concurrent runs share it, so NVML's device-wide numbers "
                     "include each other (allocator peaks stay per process); --gpus gives each its own")
        env = dict(os.environ)
        env[THREADS_ENV] = str(self.worker_threads)
        host = socket.gethostname()
        ledger.append(d.results_dir, [ledger.entry("queued", "local", f"{host}:{os.getpid()}", t) for t in d.tasks])

        events: queue.Queue = queue.Queue()
        n = min(self.jobs, max(1, len(d.tasks)))
        slots = [_Slot(i, events, d.results_dir / "logs",
                       {**env, **(gpus.slot_env(self.devices[i]) if self.devices else {})}) for i in range(n)]
        pending = collections.deque(d.tasks)
        waiting: list = []  # claimed by a live concurrent sweep: tried again when it lets go
        bar = tqdm(total=len(d.tasks), desc=f"sweep {d.suite}", unit="run", disable=not d.progress,
                   dynamic_ncols=True, file=sys.stderr)
        status_text: dict[int, str] = {}

        def show() -> None:
            bar.set_postfix_str(" | ".join(status_text[s.index] for s in slots if s.task is not None and s.index in status_text), refresh=True)

        def finish(slot: _Slot, record: dict) -> None:
            d.write(slot.task, record)
            d.claims.finish(slot.task.key, record["status"])
            if record["status"] != "ok" and d.progress:
                bar.write(f"{slot.task.label}: {record['status']}: {(record.get('message') or '')[:300]}")
            slot.task = None
            status_text.pop(slot.index, None)
            bar.update(1)

        def crashed(slot: _Slot, why: str) -> None:
            task = slot.task
            tail = slot.log_tail()
            msg = f"worker process {why} while running {task.label}" + (f"; last output:\n{tail}" if tail else "")
            finish(slot, d.error_record(task, msg, pid=slot.pid, **gpu_env(slot)))

        def gpu_env(slot: _Slot) -> dict:
            return {"gpu": gpus.record_gpu(slot.env)} if self.devices else {}

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
                    task = claim_next(d, pending, waiting, on_drop=lambda t: bar.update(1)) if slot.task is None else None
                    if task is not None:
                        isolated = self.isolate == "always" or (cuda and task.kind in ("profile", "train"))
                        slot.pid = slot.assign(task, d.payload(task), isolated)
                        ledger.append(d.results_dir, [ledger.entry("started", "local", f"{host}:{slot.pid}", task)])
                        status_text[slot.index] = task.label
                        show()
                d.claims.refresh()
                try:
                    slot, gen, msg = events.get(timeout=0.5)
                except queue.Empty:
                    now = time.monotonic()
                    for slot in slots:
                        limit = slot.task.timeout_s if slot.task and slot.task.timeout_s else self.timeout_s
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
            out.interrupted = True
        finally:
            with stopping(d, lambda: out.interrupted):
                if out.interrupted:
                    for slot in slots:
                        slot.kill()
                if old_term is not None:
                    signal.signal(signal.SIGTERM, old_term)
                for slot in slots:
                    slot.retire(timeout=5.0)
                bar.close()
        return out


def gpus_for(spec: str, tasks: list) -> list:
    """--gpus checked against the machine and against the tasks (all on the CPU: refused)."""
    devices = gpus.select_gpus(spec)
    if tasks and all(t.config.device == "cpu" for t in tasks):
        raise ConfigError(f"--gpus {spec}: every task of this sweep runs on the CPU (device = \"cpu\"); "
                          "drop --gpus or set device = \"cuda\"")
    return devices
