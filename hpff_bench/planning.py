"""Memory-balanced splits found automatically (`--split balanced`).

Why: InfoPro*'s balanced cuts were tuned by hand for one network and two datasets; the tracer
predicts any split's peak, so the cuts that minimise it can be searched for any network, batch,
method and K.

Cost model (the search objective; the chosen cuts are then verified by one full trace):
  peak(split) ~= persistent state + max over modules m of transient(m)
  transient(m = units a..b) = T_b + A[a] + ... + A[b-1]
where
  - T_b is the traced peak while unit b runs as a module of its own (its input, its saved
    activations, its aux net at the cut after b, or the head for the last unit), minus the
    persistent state (parameters, gradients, optimizer state) of that trace. All T_b come from
    ONE fake-tensor trace of the configuration cut after every unit;
  - A[i] is the bytes of tensors unit i saves for backward (each storage counted once, in the
    unit that first saves it, rounded to CUDA's 512-B blocks), from one fake forward pass.
Not modelled in the objective: that the persistent state depends slightly on which aux nets
exist (their parameters/gradients/momentum), allocator rounding beyond 512 B, and overlaps
between a module's activations and its aux net's peak other than the last unit's. The
min-max partition over K contiguous groups is exact for this objective (dynamic programming).
Because of those terms the chosen cuts are then predicted in full (allocator model included),
and single cuts moved by one unit while that lowers the full prediction (a few traces, not one
per combination).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hpff_bench.errors import ConfigError
from hpff_bench.memory.tracker import cuda_block_size
from hpff_bench.networks import get_network
from hpff_bench.networks.splits import Split, _stage_block, cuts_notation


@dataclass(frozen=True)
class UnitCosts:
    transient: tuple[int, ...]  # T_b: bytes, unit b as its own module (aux net/head included)
    saved: tuple[int, ...]  # A_i: bytes unit i saves for backward

    def module_cost(self, a: int, b: int) -> int:
        """Modelled transient peak of the module holding units a..b."""
        return self.transient[b] + sum(self.saved[a:b])


def unit_costs(cfg) -> UnitCosts:
    """T_b from one trace cut after every unit; A_i from one fake forward (see the module doc)."""
    from hpff_bench.memory.trace import trace_training

    spec = get_network(cfg.network)
    n = spec.num_blocks + 1
    where = cuts_notation(spec, range(n - 1))
    every = cfg.replace(split="auto", cuts=where, k=n)
    trace = trace_training(every, fake=True, rounding=cuda_block_size, synthetic_warmup=True, warmup=0,
                           steps=1, foreach=True)
    tr = trace.tracker
    b = tr.peak_breakdown
    persistent = b["parameters"] + b["gradients"] + b["optimizer"]
    transient = tuple(tr.per_scope_peak[f"module{i}"] - persistent for i in range(n))
    saved = saved_bytes_per_unit(cfg)
    saved = saved[: n - 1] + (sum(saved[n - 1:]),)  # the head rides with the last block
    return UnitCosts(transient, saved)


def saved_bytes_per_unit(cfg) -> tuple[int, ...]:
    """Bytes each unit saves for backward on fake tensors (a storage counts once, in the first
    unit that saves it)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    spec = get_network(cfg.network)
    seen: set = set()
    out: list[int] = []
    with FakeTensorMode(allow_non_fake_inputs=True):
        net = spec.build(cfg.resolved_num_classes)
        s = cfg.resolved_image_size
        x = torch.empty(cfg.batch_size, 3, s, s)
        for unit in net.units:
            got = [0]

            def pack(t, got=got):
                st = t.untyped_storage()
                key = id(st) if not hasattr(st, "_cdata") else st._cdata
                if key not in seen:
                    seen.add(key)
                    got[0] += cuda_block_size(st.nbytes())
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                x = unit(x.detach().requires_grad_(True))
            out.append(got[0])
    return tuple(out)


def min_max_partition(costs: UnitCosts, k: int) -> tuple[int, tuple[int, ...]]:
    """(modelled max transient, cut unit indices) of the best split into k contiguous modules."""
    n = len(costs.transient)
    if not 1 <= k <= n:
        raise ConfigError(f"--k {k} is out of range: K is 1 to {n}")
    prefix = [0]
    for a in costs.saved:
        prefix.append(prefix[-1] + a)

    def cost(a: int, b: int) -> int:
        return costs.transient[b] + prefix[b] - prefix[a]

    inf = float("inf")
    # best[j][b]: min over splits of units 0..b into j modules of the max module cost
    best = [[inf] * n for _ in range(k + 1)]
    back = [[-1] * n for _ in range(k + 1)]
    for b in range(n):
        best[1][b] = cost(0, b)
    for j in range(2, k + 1):
        for b in range(j - 1, n):
            for c in range(j - 2, b):  # previous module ends at unit c
                v = max(best[j - 1][c], cost(c + 1, b))
                if v < best[j][b]:
                    best[j][b], back[j][b] = v, c
    cuts, b = [], n - 1
    for j in range(k, 1, -1):
        b = back[j][b]
        cuts.append(b)
    return int(best[k][n - 1]), tuple(reversed(cuts))


_FOUND: dict[str, Split] = {}


def balanced_split(cfg) -> Split:
    """The split of `cfg.network` into `cfg.k` modules whose modelled peak is smallest (searched
    once per configuration: every trace of the method asks for its split again)."""
    import json

    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if key not in _FOUND:
        _FOUND[key] = _search(cfg)
    return _FOUND[key]


def _search(cfg) -> Split:
    spec = get_network(cfg.network)
    n = spec.num_blocks + 1
    if not 1 <= cfg.k <= n:
        raise ConfigError(f"--k {cfg.k} is out of range for {cfg.network}: K is 1 to {n}")
    if cfg.k == 1:
        return Split("balanced", 1, (), "one module: nothing to cut")
    model, cuts = min_max_partition(unit_costs(cfg), cfg.k)
    cuts, peak, traces = _refine(cfg, cuts, n)
    where = tuple(_stage_block(spec, u) for u in cuts)
    reason = (f"min-max partition of per-unit costs (hpff_bench/planning.py), batch {cfg.batch_size}, "
              f"{cfg.method}; modelled max transient {model / 2**20:,.1f} MiB; predicted peak alloc "
              f"{peak / 2**20:,.1f} MiB after {traces} verifying trace(s) of it and its one-block moves")
    return Split("balanced", cfg.k, cuts, reason, where)


def _refine(cfg, cuts: tuple[int, ...], n: int) -> tuple[tuple[int, ...], int, int]:
    """Verify the model's cuts by full prediction (peak allocated) and move single cuts by one
    unit while that lowers it: the model leaves terms out (module doc), the full trace does not.
    Returns (cuts, peak_allocated_bytes, predictions made)."""
    from hpff_bench.memory.predict import predict

    spec = get_network(cfg.network)
    peaks: dict[tuple[int, ...], int] = {}

    def peak(c: tuple[int, ...]) -> int:
        if c not in peaks:
            text = cuts_notation(spec, c)
            peaks[c] = predict(cfg.replace(split="auto", cuts=text))["predicted"]["peak_allocated_bytes"]
        return peaks[c]

    best = cuts
    improved = True
    while improved:
        improved = False
        for i in range(len(best)):
            for d in (-1, 1):
                c = best[:i] + (best[i] + d,) + best[i + 1:]
                if not all(0 <= u <= n - 2 for u in c) or any(a >= b for a, b in zip(c, c[1:])):
                    continue
                if peak(c) < peak(best):
                    best, improved = c, True
    return best, peak(best), len(peaks)

