"""suites/smoke.toml end to end through the CLI: every kind, on the CPU, recorded and loadable."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hpff_bench.runner import store

REPO = Path(__file__).resolve().parents[1]


def test_smoke_suite_end_to_end(tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "hpff_bench", "sweep", str(REPO / "suites" / "smoke.toml"), "--results", str(tmp_path),
         "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "sweep smoke: 6 of 6 tasks recorded" in out and "6 ok" in out
    assert f"results: {tmp_path / 'smoke'}/" in out and "hpff-bench report" in out
    assert "measured MiB" in out  # the results table
    frame = store.load_results(tmp_path / "smoke")
    assert len(frame) == 6 and set(frame["status"]) == {"ok"}
    assert set(frame["kind"]) == {"estimate", "profile", "train"}
    est = frame[frame["kind"] == "estimate"]
    assert (est["predicted.peak_allocated_bytes"] > 0).all()
    prof = frame[frame["kind"] == "profile"]
    assert (prof["memory.peak_memory_bytes"] > 0).all() and (prof["timing.step_seconds"] > 0).all()
    assert (prof["timing.seconds_by_scope.backbone"] > 0).all()  # where the CPU step's time went
    train = frame[frame["kind"] == "train"]
    assert (train["accuracy.epochs"] == 1).all() and train["accuracy.top1"].between(0, 1).all()
    assert set(frame["modules"]) == {1, 2}
    print(f"smoke suite: {seconds:.1f} s")
