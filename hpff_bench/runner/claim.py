"""Task claims: sweeps that share a results directory split the work and never run a task twice.

Before a sweep runs a task it claims it: `<results>/<suite>/claims/<task hash>.claim`, a small
JSON file naming the claiming sweep (id, host, pid and the pid's start time). Claiming reads,
decides and writes under an exclusive `fcntl.flock` on `claims/.lock`, so two sweeps never
both win. A claim is

- `running`: another sweep has the task. If that sweep is alive the task is left to it (and
  tried again later); if it died (same host: its pid is gone or belongs to a newer process;
  another host: the claim was not refreshed for STALE_S seconds) the claim has expired and is
  taken over;
- `done` (with the record's status): finished. Finished after this sweep started = done by a
  concurrent sweep, so not run again; finished before = an earlier sweep's, and this sweep's
  own rules decide (without --resume everything reruns; with it the store's `ok` records).

A sweep interrupted by Ctrl-C removes the claims of the tasks it did not finish.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

STALE_S = 300.0  # a claim from another host expires when not refreshed for this long
REFRESH_S = 30.0

MINE, HELD, DONE = "mine", "held", "done"


def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
        return text[text.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now = _pid_start(pid)
    return start is None or now is None or now == start


class Claims:
    """The claims of one sweep on one results directory."""

    def __init__(self, results_dir: str | os.PathLike):
        self.dir = Path(results_dir) / "claims"
        self.sweep = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.pid_start = _pid_start(self.pid)
        self.started = time.time()
        self.held: dict[tuple, Path] = {}
        self._refreshed = time.monotonic()

    def path(self, key: tuple) -> Path:
        return self.dir / (hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()[:24] + ".claim")

    @contextlib.contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self, p: Path) -> dict | None:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or unreadable: free
        return data if isinstance(data, dict) else None

    def _write(self, p: Path, data: dict) -> None:
        tmp = p.with_name(f"{p.name}.{self.pid}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, p)

    def _expired(self, c: dict, p: Path) -> bool:
        if c.get("host") == self.host:
            pid = c.get("pid")
            return not isinstance(pid, int) or not _alive(pid, c.get("pid_start"))
        try:
            return time.time() - p.stat().st_mtime > STALE_S
        except OSError:
            return True

    def claim(self, key: tuple, label: str = "") -> str:
        """MINE (run it), HELD (a live sweep runs it: try later) or DONE (a concurrent sweep finished it)."""
        p = self.path(key)
        with self._locked():
            c = self._read(p)
            if c is not None and c.get("sweep") != self.sweep:
                if c.get("state") == "done" and float(c.get("finished") or 0) >= self.started:
                    return DONE
                if c.get("state") == "running" and not self._expired(c, p):
                    return HELD
            self._write(p, {"state": "running", "sweep": self.sweep, "host": self.host, "pid": self.pid,
                            "pid_start": self.pid_start, "claimed": time.time(), "task": label})
        self.held[key] = p
        return MINE

    def finish(self, key: tuple, status: str) -> None:
        p = self.held.pop(key, None)
        if p is None:
            return
        with self._locked():
            c = self._read(p) or {}
            if c.get("sweep") == self.sweep:
                self._write(p, {**c, "state": "done", "status": status, "finished": time.time()})

    def release_all(self) -> None:
        """Give up every unfinished claim (this sweep stops): another sweep may take them at once."""
        if not self.held:
            return
        with self._locked():
            for p in self.held.values():
                c = self._read(p) or {}
                if c.get("sweep") == self.sweep and c.get("state") == "running":
                    with contextlib.suppress(OSError):
                        p.unlink()
        self.held.clear()

    def refresh(self) -> None:
        """Touch the claims this sweep holds (every REFRESH_S), so other hosts see it is alive."""
        if time.monotonic() - self._refreshed < REFRESH_S:
            return
        self._refreshed = time.monotonic()
        for p in self.held.values():
            with contextlib.suppress(OSError):
                os.utime(p)
