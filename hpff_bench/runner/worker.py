"""The process a sweep runs its tasks in: `python -m hpff_bench.runner.worker`.

Protocol: the parent writes one task per line (JSON) on the worker's stdin; the worker answers
on stdout with lines `@@hpff-bench@@ {json}`: `{"type": "start"}`, `{"type": "progress",
"text": ...}` and finally `{"type": "result", "record": {...}}` (a complete result record).
Everything else the task prints goes to stderr (the worker moves fd 1 there), so library
output can never corrupt the protocol. At end of input the worker exits.

Inside the worker every failure of a task becomes a record: CUDA out of memory -> `oom` (with
the batch size), missing data -> `skipped`, a bad option -> `error`, any other exception ->
`error` with the traceback. A crash of the process itself (segfault, os._exit, SIGKILL) is
recorded by the parent, which sees the pipe close before a result arrives.

Jobs (`--launcher slurm`, through submitit) run `run_job` instead: the same `execute`, in the
job's own process, which then appends its record to the store itself (the submitting process
may be gone by then); a job that dies before that is recorded by whoever next looks at it
(the waiting sweep, or `--resume`), with the scheduler's reason.

Fault injection for tests: HPFF_BENCH_INJECT="MODE:SUBSTRING|MODE:SUBSTRING..." makes every
task whose label (`<run-name>/<kind>`) contains SUBSTRING fail at its start:
`oom` raises torch.cuda.OutOfMemoryError, `error` raises RuntimeError, `crash` calls
os._exit(70), `kill` sends itself SIGKILL, `hang` sleeps for an hour (for timeouts), `slow`
sleeps 8 s and then runs the task (a job still running when a test interrupts its sweep).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

PREFIX = "@@hpff-bench@@ "
INJECT_ENV = "HPFF_BENCH_INJECT"
THREADS_ENV = "HPFF_BENCH_THREADS"
INJECT_MODES = ("oom", "error", "crash", "kill", "hang", "slow")
SLOW_S = 8.0


def parse_inject(text: str | None) -> list[tuple[str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in (text or "").split("|"))):
        mode, _, sub = part.partition(":")
        if mode not in INJECT_MODES or not sub:
            raise ValueError(f"{INJECT_ENV}: bad entry {part!r}; use MODE:SUBSTRING with MODE in {', '.join(INJECT_MODES)}")
        out.append((mode, sub))
    return out


def inject(label: str) -> None:
    """Fail as HPFF_BENCH_INJECT says, if it names this task."""
    for mode, sub in parse_inject(os.environ.get(INJECT_ENV)):
        if sub not in label:
            continue
        if mode == "oom":
            import torch

            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 2.00 GiB (injected by {INJECT_ENV} for {label})"
            )
        if mode == "error":
            raise RuntimeError(f"injected error ({INJECT_ENV}) in {label}")
        if mode == "crash":
            sys.stderr.write(f"injected crash ({INJECT_ENV}) in {label}\n")
            sys.stderr.flush()
            os._exit(70)
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "hang":
            time.sleep(3600)
        if mode == "slow":
            time.sleep(SLOW_S)


def _profile_parts(d: dict, cfg) -> dict:
    """estimate_config / profile_config dict -> record keys."""
    parts = {k: d.get(k) for k in ("label", "ablation", "modules", "params", "forward_calls", "flops", "memory", "predicted")}
    mem = parts.get("memory")
    if isinstance(mem, dict):  # keep the profile's headline numbers inside `memory`
        mem = dict(mem)
        if "source" not in mem and d.get("memory_source"):
            mem["source"] = d["memory_source"]
        if "peak_memory_bytes" not in mem and d.get("peak_memory_bytes") is not None:
            mem["peak_memory_bytes"] = d["peak_memory_bytes"]
        parts["memory"] = mem
    if d.get("step_seconds") is not None:
        parts["timing"] = {
            "step_seconds": d["step_seconds"],
            "images_per_second": d.get("images_per_second"),
            "steps": cfg.steps,
            "step_seconds_all": d.get("step_seconds_all"),
            "seconds_by_scope": d.get("seconds_by_scope"),
        }
    return parts


def execute(task: dict, emit=lambda msg: None, job_id: str | None = None) -> dict:
    """Run one task (see sweep.task_payload) and return its result record; `job_id`: the
    scheduler's id of the job running it (goes into env.job_id)."""
    import torch

    from hpff_bench.config import RunConfig
    from hpff_bench.data.datasets import DataUnavailable
    from hpff_bench.errors import ConfigError
    from hpff_bench.runner.env import capture_env
    from hpff_bench.runner.launchers.gpus import record_gpu
    from hpff_bench.runner.store import make_record

    kind = task["kind"]
    label = f"{task.get('run_name')}/{kind}"
    cfg = RunConfig.from_dict(task["config"])
    status, message, tb, parts = "ok", None, None, {}
    extra_env: dict = {}
    t0 = time.perf_counter()

    def progress(text: str) -> None:
        emit({"type": "progress", "text": text})

    try:
        inject(label)
        if kind == "estimate":
            from hpff_bench.profiling import estimate_config

            parts = _profile_parts(estimate_config(cfg), cfg)
        elif kind == "profile":
            from hpff_bench.profiling import profile_config

            d = profile_config(cfg)
            parts = _profile_parts(d, cfg)
            extra_env["device"] = d.get("device")
        elif kind == "train":
            from hpff_bench.runner.train import TrainOptions, train

            opts = TrainOptions.from_dict({**task.get("options", {}), "progress": False})

            def on_epoch(info: dict) -> None:
                progress(f"epoch {info['epoch']}/{info['epochs']} test {100 * info['top1']:.1f}%")

            result = train(cfg, opts, on_epoch=on_epoch, log=lambda s: print(s, file=sys.stderr, flush=True))
            status, message = result.status, result.message
            parts = result.record_parts()
            cfg = parts.pop("config")
            parts.pop("options", None)
        else:
            raise ConfigError(f"unknown kind {kind!r}")
    except torch.cuda.OutOfMemoryError as e:
        status = "oom"
        first = str(e).strip().splitlines()[0] if str(e).strip() else "CUDA out of memory"
        message = f"out of memory at batch size {cfg.batch_size}: {first}"
        _free_cuda()
    except DataUnavailable as e:
        status, message = "skipped", str(e)
    except ConfigError as e:
        status, message = "error", f"ConfigError: {e}"
    except ImportError as e:
        status, message, tb = "error", f"{type(e).__name__}: {e}", traceback.format_exc()
    except Exception as e:  # noqa: BLE001 - every failure is a record, never a dead sweep
        status, message, tb = "error", f"{type(e).__name__}: {e}", traceback.format_exc()
    env = capture_env(init_cuda=torch.cuda.is_available() and torch.cuda.is_initialized())
    env.update(extra_env)
    env["seconds"] = round(time.perf_counter() - t0, 3)
    env["pid"] = os.getpid()
    gpu = record_gpu()
    if gpu is not None:
        env["gpu"] = gpu
    if job_id is not None:
        env["job_id"] = job_id
    return make_record(
        kind,
        status,
        config=cfg,
        suite=task.get("suite"),
        run_name=task.get("run_name"),
        message=message,
        env=env,
        preset=task.get("preset"),
        options=task.get("result_options") or None,
        traceback=tb,
        **{k: v for k, v in parts.items() if k not in ("label", "ablation") or v is not None},
    )


def run_job(task: dict, results_dir: str) -> dict:
    """submitit's entry point: run `task` in this job and append its record to the store."""
    import submitit

    from hpff_bench.runner import store

    _set_threads(os.environ.get(THREADS_ENV) or len(os.sched_getaffinity(0)))
    job_id = submitit.JobEnvironment().job_id
    record = execute(task, job_id=job_id)
    store.append_record(store.run_file(results_dir, task["run_name"]), record)
    return record


def _set_threads(threads) -> None:
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def _free_cuda() -> None:
    try:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the sweep process dies, so no orphan keeps a GPU busy."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def main() -> int:
    _die_with_parent()
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # anything printed (Python or C) now goes to stderr
    sys.stdout = sys.stderr
    _set_threads(os.environ.get(THREADS_ENV))
    from hpff_bench.runner.store import dumps

    def emit(msg: dict) -> None:
        proto.write(PREFIX + (dumps(msg) if msg.get("type") == "result" else json.dumps(msg)) + "\n")
        proto.flush()

    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            task = json.loads(line)
            emit({"type": "start", "label": f"{task.get('run_name')}/{task.get('kind')}"})
            record = execute(task, emit)
            emit({"type": "result", "record": record})
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
