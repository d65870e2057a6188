"""A lower bound on a training step's memory, from the same trace as the measured peak.

Why: a peak alone does not say whether an implementation wastes memory. The bound is what
any implementation of the same method at the same granularity has to hold at once:
the persistent state (parameters, gradients, optimizer state, the input batch) plus the
largest working set of a single gradient-isolated module with its auxiliary nets.

Definition (every term taken at one real moment of the trace, so the bound can never exceed
the measured peak of that trace):
- working set of module k = live bytes, not persistent, that were born in module k's forward
  or backward or in its auxiliary nets (tracker groups, see `method_groups`);
- candidate(k) = its largest value during the step + the persistent state live at that
  moment (what is "already counted");
- persistent peak = the largest parameters + gradients + optimizer + inputs at one moment
  (all gradients exist together just before optimizer.step);
- bound = max(persistent peak, max_k candidate(k)); efficiency = bound / measured peak.
Live bytes a module did not create (its input from the module before, a graph another
window still needs, tensors held too long) are what the bound leaves out: the gap between
bound and peak is where memory goes beyond a single module's need.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable

from hpff_bench.memory.tracker import PERSISTENT, LiveTensorTracker
from hpff_bench.scope import Scope

_AUX = re.compile(r"aux/(independent|cascade)/(\d+)")


def method_groups(config, module_count: int) -> Callable[[Scope], Hashable | None]:
    """Scope -> gradient-isolated module index, for the bound's working sets.

    bp/gc: one module (every backbone and loss scope is module 0). Local methods: backbone
    scope k is module k; `aux/independent/j` belongs to module j; `aux/cascade/i` (the aux net
    on the output of window i's last module) to module i + span - 1."""
    span = config.cascade_span if getattr(config, "hilo", False) else 1
    if module_count <= 1:

        def one(s: Scope):
            return 0 if s.kind in ("backbone", "aux", "loss") else None

        return one

    def local(s: Scope):
        if s.kind == "backbone":
            return s.index
        if s.kind == "aux" and s.name:
            m = _AUX.fullmatch(s.name)
            if m:
                j = int(m.group(2))
                return j if m.group(1) == "independent" else j + span - 1
        return None

    return local


def lower_bound(tracker: LiveTensorTracker, measured_peak: int | None = None) -> dict:
    """The bound and its terms; `efficiency` = bound / measured_peak (default: the tracker's peak)."""
    persistent = dict(tracker.persistent_peak_breakdown)
    best_value, best = tracker.persistent_peak, None
    for group, (value, parts, ws, key) in tracker.group_peak.items():
        if value > best_value:
            best_value, best = value, (group, parts, ws, key)
    if best is None:
        terms = {**persistent, "working_set": 0}
        module = scope_key = None
    else:
        group, parts, ws, scope_key = best
        terms = {**parts, "working_set": ws}
        module = f"module{group}" if isinstance(group, int) else str(group)
    peak = tracker.peak if measured_peak is None else measured_peak
    assert sum(terms[c] for c in PERSISTENT) + terms["working_set"] == best_value
    return {
        "lower_bound_bytes": best_value,
        "terms": terms,
        "binding_module": module,
        "binding_scope": scope_key,
        "efficiency": (best_value / peak) if peak else None,
    }
