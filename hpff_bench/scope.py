"""Where in a training step the code is: the tracker attributes memory by it.

Methods wrap their work in `scope(...)`; probes read `current()`. It costs one ContextVar
set/reset per module call, so it stays on in ordinary runs. A `ScopeTimer` reads the clock at
each scope change while it runs (the speed benchmark's time per scope); a `NodeScopes` notes
which scope made each autograd node, for a backward that runs outside any scope.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass

import torch

# private torch API (2.14 has it); without it a backward outside every scope stays unsplit
_get_sequence_nr = getattr(torch._C._autograd, "_get_sequence_nr", None)


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


class CallerScope:
    """`current()` for code autograd may run on its device thread (a CUDA backward): that thread
    does not see the caller's ContextVar, so it gets the scope the thread that made this one was
    last seen in, which is where that thread waits in its backward call."""

    def __init__(self):
        self._owner = threading.get_ident()
        self._last = current()

    def get(self) -> Scope:
        if threading.get_ident() == self._owner:
            self._last = _current.get()
        return self._last


@contextlib.contextmanager
def scope(kind: str, index: int | None = None, name: str | None = None):
    entered = Scope(kind, index, name)
    token = _current.set(entered)
    if _timer is not None:
        _timer.switch(kind)
    if _nodes is not None:
        _nodes.mark(entered)
    try:
        yield
    finally:
        _current.reset(token)
        if _timer is not None:
            _timer.switch(_current.get().kind)
        if _nodes is not None:
            _nodes.mark(_current.get())


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


class NodeScopes:
    """The scope each autograd node was made in, for the nodes made while it runs.

    Why: one `loss.backward()` over aux nets and backbone modules (the official HPFF code's step,
    `--variant official`) runs outside any scope, yet each node it runs belongs to the forward
    that made it. Autograd numbers a thread's nodes in the order they are made (`_sequence_nr`),
    so the number reached at every scope change is the whole map. One at a time.
    """

    _LAST = 2**64 - 1  # AccumulateGrad's number: made for a leaf, not by a forward op

    def __init__(self):
        self._starts: list[int] = []  # the first node number made in _scopes[i]
        self._scopes: list[Scope] = []

    def mark(self, s: Scope) -> None:
        if _get_sequence_nr is not None:
            self._starts.append(_get_sequence_nr())
            self._scopes.append(s)

    def of(self, node) -> Scope | None:
        """The scope that made `node` (a torch autograd Node), or None: made before this began,
        or a gradient accumulator."""
        nr = node._sequence_nr()
        i = bisect.bisect_right(self._starts, nr) - 1
        return self._scopes[i] if i >= 0 and nr != self._LAST else None

    def __enter__(self):
        global _nodes
        if _nodes is not None:
            raise RuntimeError("a NodeScopes is already running")
        _nodes = self
        self.mark(current())
        return self

    def __exit__(self, *exc):
        global _nodes
        _nodes = None


_nodes: NodeScopes | None = None
