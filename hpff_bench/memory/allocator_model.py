"""A simulation of PyTorch's CUDA caching allocator, replayed on a tracker's event log.

Why: `torch.cuda.max_memory_allocated` counts *blocks*, not tensor bytes, and
`max_memory_reserved` counts the segments the allocator took from cudaMalloc and keeps.
Both depend on the order of allocations and frees, which a fake-tensor run gives exactly;
this model turns that order into the allocator's numbers without a GPU.

Rules, as read in c10/cuda/CUDACachingAllocator.cpp (pytorch/pytorch, the native allocator:
constants, `round_size`, `get_pool`, `get_allocation_size`, `get_free_block`,
`should_split`, `alloc_found_block`, `free_block`/`try_merge_blocks`, and the `allocate`
wrapper that skips size 0):
- sizes round up to a multiple of 512 B (kMinBlockSize), at least 512; a request of 0 B
  allocates nothing;
- rounded sizes <= 1 MiB (kSmallSize) use the small pool, others the large pool;
- a new segment (cudaMalloc) is 2 MiB (kSmallBuffer) for small requests, 20 MiB
  (kLargeBuffer) for requests below 10 MiB (kMinLargeAlloc), else the request rounded up to
  2 MiB (kRoundLarge);
- best fit: the free block of the pool with the smallest size >= the request, ties broken
  by the lower address (BlockComparatorSize orders by stream, size, pointer);
- a found block is split when the remainder is >= 512 B (small pool) or > 1 MiB (large
  pool); otherwise the whole block is handed out;
- `allocated_bytes` and `active_bytes` count the whole block handed out, `requested_bytes`
  the size asked for, `reserved_bytes` the segments;
- a freed block merges with free neighbours of its segment; segments are never returned to
  the driver (no empty_cache) unless a device capacity is given: then, when a new segment
  would not fit it, every cached segment that is wholly free is released and the cudaMalloc
  retried (`malloc`: alloc_block, then release_cached_blocks and alloc_block again, which
  counts `num_alloc_retries`; release_available_cached_blocks does nothing with the default
  max_split_size); if it still does not fit, the allocation runs out of memory (OutOfMemory).
Not modelled (defaults that do not apply to a single-stream training step): several
streams, max_split_size / roundup_power2_divisions / expandable_segments settings, CUDA
graphs, the garbage-collection threshold, and a device whose free memory is fragmented
below the capacity.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from hpff_bench.memory.tracker import ALLOC, FREE, MARK

MIN_BLOCK = 512  # kMinBlockSize
SMALL_SIZE = 1 << 20  # kSmallSize: largest small-pool request
SMALL_BUFFER = 2 << 20  # kSmallBuffer: small-pool segment
LARGE_BUFFER = 20 << 20  # kLargeBuffer: segment for 1-10 MiB requests
MIN_LARGE_ALLOC = 10 << 20  # kMinLargeAlloc
ROUND_LARGE = 2 << 20  # kRoundLarge


def round_size(nbytes: int) -> int:
    if nbytes < MIN_BLOCK:
        return MIN_BLOCK
    return (nbytes + MIN_BLOCK - 1) // MIN_BLOCK * MIN_BLOCK


def allocation_size(size: int) -> int:
    """Segment size cudaMalloc'ed for a (rounded) request that no cached block fits."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return (size + ROUND_LARGE - 1) // ROUND_LARGE * ROUND_LARGE


class OutOfMemory(Exception):
    """A cudaMalloc that does not fit the capacity even after the cached segments were released."""


class _Block:
    __slots__ = ("addr", "size", "requested", "allocated", "prev", "next", "small")

    def __init__(self, addr: int, size: int, small: bool):
        self.addr, self.size, self.small = addr, size, small
        self.requested = 0
        self.allocated = False
        self.prev: _Block | None = None
        self.next: _Block | None = None


@dataclass
class _Stat:
    current: int = 0
    peak: int = 0

    def add(self, n: int) -> None:
        self.current += n
        if self.current > self.peak:
            self.peak = self.current

    def reset_peak(self) -> None:
        self.peak = self.current


@dataclass
class AllocatorStats:
    """Peaks since the last reset, like torch.cuda.memory_stats()['*_bytes.all.peak']."""

    peak_allocated_bytes: int
    peak_reserved_bytes: int
    peak_active_bytes: int
    peak_requested_bytes: int
    allocated_bytes: int
    reserved_bytes: int
    segments: int
    alloc_retries: int = 0  # torch.cuda.memory_stats()['num_alloc_retries'], since the last reset
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "peak_active_bytes": self.peak_active_bytes,
            "peak_requested_bytes": self.peak_requested_bytes,
            "allocated_bytes": self.allocated_bytes,
            "reserved_bytes": self.reserved_bytes,
            "segments": self.segments,
            "alloc_retries": self.alloc_retries,
        }


class CachingAllocatorModel:
    """One device, one stream. `malloc(n) -> handle`, `free(handle)`, peaks as the real one.
    capacity: the bytes cudaMalloc can hand out in all (None: unlimited, segments are kept)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.alloc_retries = 0
        self._retries_at_reset = 0
        # free blocks per pool, sorted by (size, addr): best fit is a bisect
        self._free = {True: [], False: []}
        self._next_addr = 0
        self.allocated = _Stat()
        self.reserved = _Stat()
        self.requested = _Stat()
        self.segments = 0

    # ----- public API -------------------------------------------------------------------
    def malloc(self, nbytes: int) -> _Block | None:
        if nbytes == 0:  # CUDACachingAllocator::allocate skips malloc for size 0
            return None
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        block = self._take_free(size, small)
        if block is None:
            seg = allocation_size(size)
            self._make_room(seg, nbytes)
            block = _Block(self._next_addr, seg, small)
            self._next_addr += seg
            self.reserved.add(seg)
            self.segments += 1
        remaining = block.size - size
        if (remaining >= MIN_BLOCK) if small else (remaining > SMALL_SIZE):
            rest = _Block(block.addr + size, remaining, small)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert_free(rest)
        block.allocated = True
        block.requested = nbytes
        self.allocated.add(block.size)
        self.requested.add(nbytes)
        return block

    def free(self, block: _Block | None) -> None:
        if block is None:
            return
        block.allocated = False
        self.allocated.add(-block.size)
        self.requested.add(-block.requested)
        block.requested = 0
        for nb in (block.prev, block.next):
            if nb is not None and not nb.allocated:
                self._remove_free(nb)
                if nb is block.prev:
                    block.addr = nb.addr
                    block.prev = nb.prev
                    if nb.prev is not None:
                        nb.prev.next = block
                else:
                    block.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = block
                block.size += nb.size
        self._insert_free(block)

    def reset_peak(self) -> None:
        for s in (self.allocated, self.reserved, self.requested):
            s.reset_peak()
        self._retries_at_reset = self.alloc_retries

    def _make_room(self, segment: int, nbytes: int) -> None:
        """With a capacity: release the wholly free cached segments where a new one would not
        fit (a retry), and run out of memory where it still does not."""
        if self.capacity is None or self.reserved.current + segment <= self.capacity:
            return
        for small in (False, True):  # release_blocks(large_blocks), then small
            pool = self._free[small]
            whole = [entry for entry in pool if entry[2].prev is None and entry[2].next is None]
            for entry in whole:
                pool.remove(entry)
                self.reserved.add(-entry[2].size)
                self.segments -= 1
        self.alloc_retries += 1
        if self.reserved.current + segment > self.capacity:
            raise OutOfMemory(
                f"{nbytes:,} B needs a {segment:,} B segment; {self.reserved.current:,} B of "
                f"{self.capacity:,} B stay reserved after the release")

    def stats(self) -> AllocatorStats:
        return AllocatorStats(
            peak_allocated_bytes=self.allocated.peak,
            peak_reserved_bytes=self.reserved.peak,
            peak_active_bytes=self.allocated.peak,  # one stream: active == allocated
            peak_requested_bytes=self.requested.peak,
            allocated_bytes=self.allocated.current,
            reserved_bytes=self.reserved.current,
            segments=self.segments,
            alloc_retries=self.alloc_retries - self._retries_at_reset,
        )

    # ----- free lists -------------------------------------------------------------------
    def _take_free(self, size: int, small: bool) -> _Block | None:
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i == len(pool):
            return None
        _, _, block = pool.pop(i)
        return block

    def _insert_free(self, block: _Block) -> None:
        bisect.insort(self._free[block.small], (block.size, block.addr, block))

    def _remove_free(self, block: _Block) -> None:
        pool = self._free[block.small]
        i = bisect.bisect_left(pool, (block.size, block.addr))
        assert pool[i][2] is block
        pool.pop(i)


def replay(events, persistent_bytes: list[int] | tuple[int, ...] = (), capacity: int | None = None) -> AllocatorStats:
    """Replay a tracker event log; peaks count from its last MARK (the measurement start).

    persistent_bytes: allocations made before everything else that stay for the whole run
    (e.g. cuBLAS workspaces, which live as long as their handle). capacity: the device bytes
    segments may take (CachingAllocatorModel); OutOfMemory where the log does not run in it.
    """
    model = CachingAllocatorModel(capacity)
    for n in persistent_bytes:
        model.malloc(n)
    live: dict[int, _Block | None] = {}
    last_mark = max((i for i, e in enumerate(events) if e[0] == MARK), default=-1)
    for i, (op, sid, nbytes) in enumerate(events):
        if op == ALLOC:
            live[sid] = model.malloc(nbytes)
        elif op == FREE:
            if sid in live:
                model.free(live.pop(sid))
        elif i == last_mark:
            model.reset_peak()
    return model.stats()


def least_capacity(events, persistent_bytes: list[int] | tuple[int, ...] = ()) -> int:
    """The smallest capacity (bytes cudaMalloc may hand out) in which the log runs when the
    allocator gives its wholly free cached segments back on an out-of-memory and retries.

    Why: a GPU with room keeps every segment it ever took (the reserved peak), but the step
    needs only this much: the cache of segments sized for other tensors is released when a
    new one would not fit. Segments are multiples of 2 MiB, so the answer is searched on a
    2 MiB grid by bisection between the allocated peak (it never runs below) and the reserved
    peak (it always runs there). Bisection assumes that a log that runs in a capacity also
    runs in every larger one; by its invariants the answer runs and 2 MiB less does not."""
    grid = ROUND_LARGE
    free = replay(events, persistent_bytes)
    lo = max(free.peak_allocated_bytes // grid - 1, 0)  # lo never runs (or is 0), hi always runs
    hi = -(-free.peak_reserved_bytes // grid)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _runs_in(events, persistent_bytes, mid * grid):
            hi = mid
        else:
            lo = mid
    return hi * grid


def _runs_in(events, persistent_bytes, capacity: int) -> bool:
    try:
        replay(events, persistent_bytes, capacity=capacity)
    except OutOfMemory:
        return False
    return True
