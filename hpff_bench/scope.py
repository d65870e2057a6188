"""Where in a training step the code is: the tracker attributes memory by it.

Methods wrap their work in `scope(...)`; probes read `current()`. It costs one ContextVar
set/reset per module call, so it stays on in ordinary runs.
"""

from __future__ import annotations

import contextlib
import contextvars
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


_STEP = Scope("step")
_current: contextvars.ContextVar[Scope] = contextvars.ContextVar("hpff_scope", default=_STEP)


def current() -> Scope:
    return _current.get()


@contextlib.contextmanager
def scope(kind: str, index: int | None = None, name: str | None = None):
    token = _current.set(Scope(kind, index, name))
    try:
        yield
    finally:
        _current.reset(token)
