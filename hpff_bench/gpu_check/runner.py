"""Run the GPU check's parts in order within a time budget, each in its own process.

Why a budget: a GPU session is short (minutes). A part starts only if its estimated seconds fit
in what is left, and runs with a timeout of what is left, so the check stops itself; the
files are rewritten after every part, so a run killed from outside keeps what it finished.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hpff_bench.gpu_check.plan import BENCHMARK_CASES, Budget, Part
from hpff_bench.gpu_check.report import document, write_report

# spawn(part, out, timeout_s) -> the part's record (status "ok" | "error" | "timeout")
Spawn = Callable[[Part, Path, float], dict]


def run_check(plan: list[Part], out: Path, budget: Budget, timeout_s: float, spawn: Spawn | None = None,
              log: Callable[[str], None] = print) -> dict:
    spawn = spawn or spawn_part
    records: list[dict] = []
    for part in plan:
        if not budget.fits(part.estimate_s):
            record = {"status": "skipped", "message": f"time budget: {budget.left:.0f} s left, "
                                                      f"estimate {part.estimate_s:.0f} s"}
        else:
            log(f"gpu_check: {part.name} (estimate {part.estimate_s:.0f} s, {budget.left:.0f} s left)")
            record = spawn(part, out, min(timeout_s, max(budget.left, 1.0)))
        records.append({**part.as_dict(), **record})
        log(f"  -> {record['status']}" + (f": {record['message']}" if record.get("message") else ""))
        write_report(document(records, "running", budget.seconds, budget.elapsed), out)
    skipped = any(r["status"] == "skipped" for r in records)
    doc = document(records, "stopped: time budget" if skipped else "complete", budget.seconds, budget.elapsed)
    write_report(doc, out)
    return doc


def spawn_part(part: Part, out: Path, timeout_s: float) -> dict:
    """Run one part in a fresh Python process (or pytest, for the benchmarks part)."""
    if part.kind == "benchmarks":
        return run_benchmarks(out, timeout_s)
    cmd = [sys.executable, "-m", "hpff_bench.gpu_check", "--child", json.dumps(part.as_dict()), "--out", str(out)]
    done = _run(cmd, timeout_s)
    if isinstance(done, dict):
        return done
    if done.returncode != 0:
        return {"status": "error", "message": _last_line(done.stderr) or f"exit {done.returncode}",
                "stderr_tail": done.stderr[-4000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


SUITES = Path(__file__).resolve().parents[2] / "suites"  # the checkout's benchmarks


def benchmarks_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", str(SUITES / "test_benchmarks.py"), str(SUITES / "test_method_speed.py"),
            "--benchmark-only", "--hpff-device", "cuda",
            "-p", "no:cacheprovider", "-q", "-k", " or ".join(BENCHMARK_CASES),
            f"--benchmark-json={out / 'benchmarks.json'}"]


def run_benchmarks(out: Path, timeout_s: float, run=None) -> dict:
    """The benchmark suite on CUDA for two cases and the method-speed comparison; passes only if
    each ran and wrote its JSON."""
    if not SUITES.is_dir():
        return {"status": "error", "message": f"{SUITES} not found: run from a checkout (pip install -e .)"}
    cmd = benchmarks_command(out)
    t0 = time.perf_counter()
    done = (run or _run)(cmd, timeout_s)
    base = {"command": "pytest " + shlex.join(cmd[3:]), "seconds": round(time.perf_counter() - t0, 2)}
    if isinstance(done, dict):
        return {**base, **done}
    summary = _last_line(done.stdout)
    path = out / "benchmarks.json"
    names = []
    if path.exists():
        names = [b.get("name") for b in json.loads(path.read_text()).get("benchmarks", [])]
    ok = done.returncode == 0 and len(names) == len(BENCHMARK_CASES)
    return {**base, "status": "ok" if ok else "error", "summary": summary, "benchmarks": names,
            "message": None if ok else f"exit {done.returncode}, {len(names)} benchmark(s) in {path.name}: {summary}"}


def _run(cmd: list[str], timeout_s: float):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"killed after {timeout_s:.0f} s"}


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""
