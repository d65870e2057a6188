"""A tracker's event log as an affine function of the batch size, for a cheap budget search.

Why: a prediction costs seconds (build + one fake-tensor step), but for a fixed graph the
step does the same allocations and frees in the same order at every batch size; only the
sizes change, and each is `a + c * batch` bytes (c = 0 for parameters, gradients, optimizer
state; c = bytes per sample for activations). Two traces give a and c for every event; the
log at any other batch is then written down without tracing, and replaying it through the
allocator model (memory.allocator_model, pure Python, milliseconds) gives that batch's
predicted device use.

Nothing here is trusted unchecked: `fit` refuses two logs that do not align (another number
or order of events, a size difference not divisible by the batch difference), and
`mismatch` compares the model with a real trace at a third batch, event by event. What
breaks affinity (an op whose internal sizes depend non-linearly on the batch, chunking of
the batch, a layer that cannot run at some batch) shows up as one of those, and the caller
falls back to predicting every batch it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpff_bench.memory.tracker import ALLOC

Event = tuple[int, int, int]  # (op, storage id, raw bytes): memory.tracker's event log


class NotAffine(ValueError):
    """The logs do not align, or the model gives a negative size at a batch."""


@dataclass(frozen=True)
class AffineLog:
    """events(b)[i] = (op_i, sid_i, base_i + slope_i * b) for every event i of the step."""

    keys: tuple[tuple[int, int], ...]  # (op, sid) of each event, the same at every batch
    base: tuple[int, ...]
    slope: tuple[int, ...]
    batches: tuple[int, int]  # the two batch sizes it was fitted on

    @classmethod
    def fit(cls, b1: int, events1: list[Event], b2: int, events2: list[Event]) -> AffineLog:
        """The model through two traced logs; NotAffine (with where it fails) if they do not align."""
        if b1 == b2:
            raise ValueError(f"an affine fit needs two different batch sizes, got {b1} twice")
        if len(events1) != len(events2):
            raise NotAffine(
                f"the event logs at batch {b1} and {b2} differ in length ({len(events1):,} vs {len(events2):,} events)"
            )
        keys, base, slope = [], [], []
        db = b2 - b1
        for i, ((op1, sid1, n1), (op2, sid2, n2)) in enumerate(zip(events1, events2)):
            if op1 != op2 or sid1 != sid2:
                raise NotAffine(
                    f"the event logs at batch {b1} and {b2} differ at event {i:,}: "
                    f"{(op1, sid1)} vs {(op2, sid2)} (op, storage id)"
                )
            c, rem = divmod(n2 - n1, db)
            if rem:
                raise NotAffine(
                    f"event {i:,} allocates {n1:,} B at batch {b1} and {n2:,} B at batch {b2}: "
                    "not an integer number of bytes per sample"
                )
            keys.append((op1, sid1))
            slope.append(c)
            base.append(n1 - c * b1)
        return cls(tuple(keys), tuple(base), tuple(slope), (b1, b2))

    def events(self, batch: int) -> list[Event]:
        """The log the model gives at `batch` (NotAffine if a size would be negative there)."""
        out = [(op, sid, a + c * batch) for (op, sid), a, c in zip(self.keys, self.base, self.slope)]
        bad = next((i for i, e in enumerate(out) if e[2] < 0), None)
        if bad is not None:
            raise NotAffine(f"the affine model gives event {bad:,} a negative size at batch {batch}")
        return out

    def mismatch(self, batch: int, events: list[Event]) -> str | None:
        """None if `events` (a real trace at `batch`) is exactly the model's log, else where not."""
        if len(events) != len(self.keys):
            return f"the event log at batch {batch} has {len(events):,} events, the model {len(self.keys):,}"
        for i, (real, (key, a, c)) in enumerate(zip(events, zip(self.keys, self.base, self.slope))):
            if real[:2] != key or real[2] != a + c * batch:
                return (
                    f"the event log at batch {batch} differs from the affine model at event {i:,}: "
                    f"{real} vs {(*key, a + c * batch)}"
                )
        return None

    @property
    def batch_dependent(self) -> int:
        """How many allocations grow with the batch (slope != 0)."""
        return sum(1 for (op, _), c in zip(self.keys, self.slope) if op == ALLOC and c)
