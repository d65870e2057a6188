"""Live tensor-storage bytes, exact, on any device (CPU, CUDA, fake tensors).

Why a dispatch mode: every tensor an op creates passes through `__torch_dispatch__`, so we
see each new storage the moment it is born, whichever Python object (if any) keeps it; a
`weakref` callback on the storage sees the moment it dies. Views share their base's
storage and are counted once (keyed by storage identity). tracemalloc never sees tensor
memory and RSS is not exact, so this is the only exact count we have without a GPU.

Why not torch's MemTracker: its module tracking raises when a module runs twice per step or
when backward runs inside forward, which is what local learning does (docs/memory.md).

What it keeps (all in bytes, after the optional per-storage rounding, e.g. `cuda_block_size`):
- current and peak total, and the breakdown by category at the moment of the peak (sums to
  the peak);
- the peak while each scope (hpff_bench.scope) was active: `per_scope_peak`;
- per aux scope, the peak of the aux activations born in it and still live: `aux_scope_peak`
  (one aux net's forward working set: what PFF's streamed patches are meant to shrink);
- for the lower bound (memory.bound): per scope group, the largest "persistent state + live
  bytes born in that group" seen at one moment;
- an ordered event log (alloc id/raw bytes, free id, a mark where the measurement starts),
  which memory.allocator_model replays through a model of the CUDA caching allocator.

Categories: tensors that exist before the step are registered (parameters and buffers,
gradients, optimizer state, inputs). New storages take their category from the scope they
are born in: forward under a "backbone" scope -> backbone_activations, under "aux" ->
aux_activations; born while autograd executes a backward node (with grad mode off, so
gradient checkpointing's recomputed forward still counts as activations), or in the loss,
optimizer or step scopes -> other (temporaries). A storage that becomes a parameter's `.grad` moves to
gradients (post-accumulate-grad hook).

Cost: every op of a tracked step makes a round trip into Python (~500 per resnet32 step).
Views and in-place ops (about half of them; their kind is read once from the op's schema)
return at once. On a resnet32 batch-64 CPU step the tracker costs 5.5-7.6 % on an idle 2-core VM, of
which 4-6 % is any dispatch mode's floor (suites/test_tracker_overhead.py; 10-17 % when the VM
was loaded), so `profile` times untracked steps.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hpff_bench import scope as _scope

CATEGORIES = (
    "parameters",
    "gradients",
    "optimizer",
    "inputs",
    "backbone_activations",
    "aux_activations",
    "other",
)
PERSISTENT = ("parameters", "gradients", "optimizer", "inputs")
_PERSISTENT = frozenset(PERSISTENT)

# Event log entries: (ALLOC, id, raw nbytes) / (FREE, id, 0) / (MARK, 0, 0) where the
# measured window starts (peaks are reset there, as torch.cuda.reset_peak_memory_stats does).
ALLOC, FREE, MARK = 1, 0, 2

_PRIM_DEVICE = torch.ops.prim.device.default
_grad_enabled = torch.is_grad_enabled
_graph_task_id = torch._C._current_graph_task_id  # -1 outside backward

KIB = 1024
CUDA_MIN_BLOCK = 512


def cuda_block_size(nbytes: int) -> int:
    """Bytes the CUDA caching allocator hands out for a request (round_size in
    c10/cuda/CUDACachingAllocator.cpp): 0 -> no allocation; else a multiple of 512, at least 512."""
    if nbytes <= 0:
        return 0
    return (nbytes + CUDA_MIN_BLOCK - 1) // CUDA_MIN_BLOCK * CUDA_MIN_BLOCK


def _storages(out) -> list:
    """Storages of the tensors in an op's output (a tensor, or a tuple/list of them, nested once).

    Tensors on the meta device hold no memory anywhere (shape inference) and are skipped; a
    fake tensor reports the device it stands for, so it is kept."""
    if isinstance(out, torch.Tensor):
        return [] if out.is_meta else [out.untyped_storage()]
    found = []
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                if not o.is_meta:
                    found.append(o.untyped_storage())
            elif isinstance(o, (tuple, list)):
                found.extend(
                    t.untyped_storage() for t in o if isinstance(t, torch.Tensor) and not t.is_meta
                )
    return found


# How an op can change live storages, decided once per op from its schema (_OpKind.__missing__).
NO_NEW_STORAGE = 0  # a view, or an in-place op on its own arguments: storages stay as they are
CREATES = 1  # a functional op: its outputs are new storages (or, unannotated, known ones)
MAY_RESIZE = 2  # out= variants, resize_/set_ and anything not understood: check everything


class _OpKind(dict):
    """func -> NO_NEW_STORAGE, CREATES or MAY_RESIZE."""

    def __missing__(self, func) -> int:
        kind = MAY_RESIZE  # not an OpOverload, or an op that can grow or swap a storage
        schema = getattr(func, "_schema", None)
        if schema is not None:
            name = schema.name.split("::")[-1]
            writes = [a for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
            out_variant = any(a.kwarg_only for a in writes)
            if not (out_variant or name.startswith("set_") or "resize" in name):
                # lift_fresh turns a tensor made outside dispatch (torch.tensor) into one
                # inside it: its storage is new to us although the schema says alias
                aliases = writes or (func.is_view and not name.startswith("lift_fresh"))
                kind = NO_NEW_STORAGE if aliases else CREATES
        self[func] = kind
        return kind


_OP_KIND = _OpKind()


class _Entry:
    __slots__ = ("sid", "raw", "size", "category", "group", "ref", "aux_key")

    def __init__(self, sid, raw, size, category, group, ref, aux_key=None):
        self.sid, self.raw, self.size = sid, raw, size
        self.category, self.group, self.ref = category, group, ref
        self.aux_key = aux_key  # the aux scope an aux activation was born in


def default_group(s: _scope.Scope) -> Hashable | None:
    """A scope's group for the lower bound: backbone module k is group k (memory.bound's
    method_groups also puts each module's aux nets in its group)."""
    if s.kind == "backbone":
        return s.index
    return None


class LiveTensorTracker(TorchDispatchMode):
    """Use as a context manager around the work to track; `reset_peak()` starts the measured window.

    rounding: bytes -> bytes, applied per storage (None = exact nbytes).
    group_of: Scope -> group id (or None) for the lower bound's per-module working sets.
    record_events: keep the event log for the allocator model.
    """

    def __init__(
        self,
        rounding: Callable[[int], int] | None = None,
        group_of: Callable[[_scope.Scope], Hashable | None] = default_group,
        record_events: bool = True,
    ):
        super().__init__()
        self.rounding = rounding
        self._group_of = group_of
        self.record_events = record_events
        self.events: list[tuple[int, int, int]] = []
        self._entries: dict[int, _Entry] = {}
        self._next_sid = 1
        self.current = 0
        self.by_category = dict.fromkeys(CATEGORIES, 0)
        self.persistent = 0  # parameters + gradients + optimizer + inputs, now
        self.group_bytes: dict[Hashable, int] = {}  # live non-persistent bytes born in a group
        self.aux_scope_live: dict[str, int] = {}  # live aux activations born in each aux scope
        self._scope: _scope.Scope | None = None  # the scope of the last birth, and what it means:
        self._scope_info: tuple[str, Hashable | None, str] | None = None  # see _describe
        self._caller = _scope.CallerScope()  # where the step is, from any thread
        self._hooks: list = []
        self.reset_peak()

    @property
    def group_of(self) -> Callable[[_scope.Scope], Hashable | None]:
        return self._group_of

    @group_of.setter
    def group_of(self, fn: Callable[[_scope.Scope], Hashable | None]) -> None:
        self._group_of = fn
        self._scope = None  # forget what the old grouping said

    # ----- peaks ------------------------------------------------------------------------
    def reset_peak(self) -> None:
        """Forget peaks: the peak becomes what is live now (reset_peak_memory_stats semantics)."""
        self.peak = self.current
        self.peak_breakdown = dict(self.by_category)
        self.per_scope_peak: dict[str, int] = {}
        self.aux_scope_peak: dict[str, int] = dict(self.aux_scope_live)
        self.persistent_peak = self.persistent
        self._persistent_parts = {c: self.by_category[c] for c in PERSISTENT}
        self.persistent_peak_breakdown = self._persistent_parts
        # group -> (persistent + group bytes, breakdown of persistent, group bytes, scope key)
        self.group_peak: dict[Hashable, tuple[int, dict, int, str]] = {}
        if self.record_events:
            self.events.append((MARK, 0, 0))

    # ----- registration -----------------------------------------------------------------
    def register(self, tensors: Iterable[torch.Tensor | None], category: str) -> None:
        """Record tensors that already exist (or re-label known ones) under `category`."""
        if category not in self.by_category:
            raise ValueError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
        for t in tensors:
            if t is None:
                continue
            st = t.untyped_storage()
            e = self._entries.get(id(st))
            if e is None:
                self._add(st, category, None, None)
            elif e.category != category:
                self._move(e, category)

    def register_method_state(self, params: Iterable[torch.nn.Parameter], buffers: Iterable[torch.Tensor],
                              optimizer: torch.optim.Optimizer | None, inputs: Iterable[torch.Tensor]) -> None:
        """Register everything a training step starts with, by category."""
        params = list(params)
        self.register(params, "parameters")
        self.register(buffers, "parameters")
        self.register((p.grad for p in params), "gradients")
        if optimizer is not None:
            state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
            self.register(state, "optimizer")
        self.register(inputs, "inputs")

    def watch_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Move a storage to `gradients` when it becomes a parameter's .grad."""
        for p in params:
            if p.requires_grad:
                self._hooks.append(p.register_post_accumulate_grad_hook(self._on_grad))

    def _on_grad(self, p: torch.Tensor) -> None:
        if p.grad is not None:
            e = self._entries.get(id(p.grad.untyped_storage()))
            if e is not None and e.category != "gradients":
                self._move(e, "gradients")

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def __exit__(self, *exc):
        self.remove_hooks()
        self.record_events = False  # what dies after the tracked work is not part of the log
        return super().__exit__(*exc)

    # ----- the dispatch hook ------------------------------------------------------------
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps every mode's __torch_dispatch__ in a dynamo-disable frame by default, a
        # few microseconds per op; nothing is compiled inside a tracked step
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # Every op of a step passes here (~500 in a resnet32 step): the common cases (one new
        # tensor; a view or in-place op on a known storage) take the fewest steps.
        if func is _PRIM_DEVICE:
            # A fake tensor's device query (autograd and foreach grouping ask it for every
            # tensor; 2/3 of all dispatches of a fake step) is answered as FakeTensor does,
            # without a second trip through FakeTensorMode; it creates nothing.
            device = getattr(args[0], "fake_device", None)
            if device is not None:
                return device
        out = func(*args, **kwargs) if kwargs else func(*args)
        kind = _OP_KIND[func]
        if kind == NO_NEW_STORAGE:
            return out
        if isinstance(out, torch.Tensor):
            st = out.untyped_storage()
            e = self._entries.get(id(st))
            if e is None:
                if not out.is_meta:
                    self._born((st,))
            elif kind == MAY_RESIZE and e.raw != st.nbytes():
                self._resize(e, st.nbytes())
        elif isinstance(out, (tuple, list)):
            entries = self._entries
            sts = _storages(out)
            # one entry per storage, even if two outputs share one
            new = list({id(st): st for st in sts if id(st) not in entries}.values())
            if new:
                self._born(new)
            if kind == MAY_RESIZE and len(new) < len(sts):
                for st in sts:
                    e = entries.get(id(st))
                    if e is not None and e.raw != st.nbytes():
                        self._resize(e, st.nbytes())
        return out

    def _born(self, storages) -> None:
        """Add storages an op just created, labelled by where the step is now."""
        s = self._caller.get()
        if s is not self._scope:
            self._scope = s
            self._scope_info = self._describe(s)
        category, group, key = self._scope_info
        if not _grad_enabled() and _graph_task_id() != -1:
            category = "other"  # a backward temporary (backward runs with grad mode off)
        for st in storages:
            self._add(st, category, group, key)

    def _describe(self, s: _scope.Scope) -> tuple[str, Hashable | None, str]:
        """(category in forward, group, key) of storages born in scope `s`."""
        # a checkpointed forward recomputed in backward runs with grad mode on: activations
        category = {"backbone": "backbone_activations", "aux": "aux_activations"}.get(s.kind, "other")
        return category, self._group_of(s), s.key

    # ----- bookkeeping ------------------------------------------------------------------
    def _add(self, st, category: str, group, key: str | None) -> None:
        raw = st.nbytes()
        size = raw if self.rounding is None else self.rounding(raw)
        sid = self._next_sid
        self._next_sid = sid + 1
        k = id(st)
        # the weakref dies with the storage (torch keeps a storage's Python object alive as
        # long as the storage lives), and its callback removes the entry
        aux_key = key if category == "aux_activations" else None
        self._entries[k] = _Entry(sid, raw, size, category, group, weakref.ref(st, lambda _r: self._free(k)), aux_key)
        if self.record_events:
            self.events.append((ALLOC, sid, raw))
        current = self.current = self.current + size
        by_category = self.by_category
        by_category[category] += size
        if category in _PERSISTENT:
            self.persistent += size
            self._persistent_changed()
        elif group is not None:
            self.group_bytes[group] = self.group_bytes.get(group, 0) + size
        if current > self.peak:
            self.peak = current
            self.peak_breakdown = by_category.copy()
        if key is not None:
            per_scope = self.per_scope_peak
            if current > per_scope.get(key, -1):
                per_scope[key] = current
            if group is not None:
                self._group_working_set(group, key)
            if aux_key is not None:
                own = self.aux_scope_live[aux_key] = self.aux_scope_live.get(aux_key, 0) + size
                if own > self.aux_scope_peak.get(aux_key, -1):
                    self.aux_scope_peak[aux_key] = own

    def _persistent_changed(self) -> None:
        """Keep a snapshot of the persistent categories (a new dict each change, so peaks that
        refer to it keep the values of their moment) and their peak."""
        self._persistent_parts = {c: self.by_category[c] for c in PERSISTENT}
        if self.persistent > self.persistent_peak:
            self.persistent_peak = self.persistent
            self.persistent_peak_breakdown = self._persistent_parts

    def _group_working_set(self, group, key: str) -> None:
        """The lower bound's per-group peak of persistent state plus the group's live bytes."""
        gb = self.group_bytes.get(group, 0)
        cand = self.persistent + gb
        best = self.group_peak.get(group)
        if best is None or cand > best[0]:
            self.group_peak[group] = (cand, self._persistent_parts, gb, key)

    def _free(self, k: int) -> None:
        e = self._entries.pop(k, None)
        if e is None:
            return
        if self.record_events:
            self.events.append((FREE, e.sid, 0))
        size = e.size
        self.current -= size
        self.by_category[e.category] -= size
        if e.category in _PERSISTENT:
            self.persistent -= size
            self._persistent_changed()
        elif e.group is not None:
            self.group_bytes[e.group] -= size
        if e.aux_key is not None:
            self.aux_scope_live[e.aux_key] -= size

    def _move(self, e: _Entry, category: str) -> None:
        was = e.category in _PERSISTENT
        now = category in _PERSISTENT
        self.by_category[e.category] -= e.size
        self.by_category[category] += e.size
        e.category = category
        if e.aux_key is not None:  # no longer an aux activation
            self.aux_scope_live[e.aux_key] -= e.size
            e.aux_key = None
        if was and not now:
            self.persistent -= e.size
            if e.group is not None:
                self.group_bytes[e.group] = self.group_bytes.get(e.group, 0) + e.size
        elif now and not was:
            self.persistent += e.size
            if e.group is not None:
                self.group_bytes[e.group] -= e.size
        if was or now:
            self._persistent_changed()

    def _resize(self, e: _Entry, nbytes: int) -> None:
        """A storage changed size in place: model it as free + alloc of the same id."""
        size = self.rounding(nbytes) if self.rounding is not None else nbytes
        delta = size - e.size
        if self.record_events:
            self.events.append((FREE, e.sid, 0))
            self.events.append((ALLOC, e.sid, nbytes))
        e.raw, e.size = nbytes, size
        self.current += delta
        self.by_category[e.category] += delta
        if e.category in _PERSISTENT:
            self.persistent += delta
            self._persistent_changed()
        elif e.group is not None:
            self.group_bytes[e.group] += delta
        if e.aux_key is not None:
            live = self.aux_scope_live[e.aux_key] = self.aux_scope_live[e.aux_key] + delta
            self.aux_scope_peak[e.aux_key] = max(self.aux_scope_peak.get(e.aux_key, 0), live)
        if self.current > self.peak:
            self.peak = self.current
            self.peak_breakdown = dict(self.by_category)

    # ----- results ----------------------------------------------------------------------
    @property
    def live_storages(self) -> int:
        return len(self._entries)

    def summary(self) -> dict:
        return {
            "peak_bytes": self.peak,
            "current_bytes": self.current,
            "breakdown_bytes": dict(self.peak_breakdown),
            "per_module_peak_bytes": dict(self.per_scope_peak),
            "aux_scope_peak_bytes": dict(self.aux_scope_peak),
        }
