"""Where in a training step the code is: the tracker attributes memory by it.

Methods wrap their work in `scope(...)`; probes read `current()`. It costs one ContextVar
set/reset per module call, so it stays on in ordinary runs. A `ScopeTimer` reads the clock at
each scope change while it runs (the speed benchmark's time per scope).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    # "backbone": a backbone module; "aux": an auxiliary net; "loss": loss arithmetic;
    # "optimizer": optimizer.step / zero_grad; "step": anything else in a step.
    kind: str
    index: int | None = None  # module index for backbone; aux-net id position for aux
    name: str | None = None  # readable name, e.g. "module3" or "aux/independent/3"

    @property
    def key(self) -> str:
        return self.name or (self.kind if self.index is None else f"{self.kind}{self.index}")


# the kinds a step's FLOPs and seconds are split into; "loss", "optimizer", "step" go to "other"
SPLIT = ("backbone", "aux")


def by_split(per_kind: dict) -> dict:
    """{kind: amount} summed into {"backbone", "aux", "other"}: how records split FLOPs and time."""
    out = {kind: per_kind.get(kind, 0) for kind in SPLIT}
    out["other"] = sum(v for k, v in per_kind.items() if k not in SPLIT)
    return out


_STEP = Scope("step")
_current: contextvars.ContextVar[Scope] = contextvars.ContextVar("hpff_scope", default=_STEP)


def current() -> Scope:
    return _current.get()


@contextlib.contextmanager
def scope(kind: str, index: int | None = None, name: str | None = None):
    token = _current.set(Scope(kind, index, name))
    if _timer is not None:
        _timer.switch(kind)
    try:
        yield
    finally:
        _current.reset(token)
        if _timer is not None:
            _timer.switch(_current.get().kind)


class ScopeTimer:
    """Wall seconds spent in each scope kind (`seconds`) by everything run inside: where a step's
    time goes, on the same steps that are timed. The clock is read at every scope change, so
    it is right where ops finish before the host goes on (the CPU); on a GPU it would measure
    kernel launches, not kernels. One at a time."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._kind = "step"
        self._since = 0.0

    def split(self, steps: int = 1) -> dict:
        """Seconds per step: {"backbone", "aux", "other"}, as hpff_bench.flops splits FLOPs."""
        return {kind: float(v) / max(steps, 1) for kind, v in by_split(self.seconds).items()}

    def switch(self, kind: str) -> None:
        now = time.perf_counter()
        self.seconds[self._kind] = self.seconds.get(self._kind, 0.0) + now - self._since
        self._kind, self._since = kind, now

    def __enter__(self):
        global _timer
        if _timer is not None:
            raise RuntimeError("a ScopeTimer is already running")
        self._kind, self._since = current().kind, time.perf_counter()
        _timer = self
        return self

    def __exit__(self, *exc):
        global _timer
        self.switch(self._kind)
        _timer = None


_timer: ScopeTimer | None = None
