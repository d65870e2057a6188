"""The CUDA caching-allocator model gives the allocator's numbers on hand-made sequences."""

import pytest

from hpff_bench.memory.allocator_model import (
    CachingAllocatorModel,
    OutOfMemory,
    allocation_size,
    least_capacity,
    replay,
    round_size,
)
from hpff_bench.memory.tracker import ALLOC, FREE, MARK

MIB = 1 << 20


def test_rounding_and_segment_sizes():
    assert [round_size(n) for n in (1, 511, 512, 513, 1024)] == [512, 512, 512, 1024, 1024]
    assert allocation_size(512) == 2 * MIB and allocation_size(MIB) == 2 * MIB  # small pool
    assert allocation_size(MIB + 512) == 20 * MIB and allocation_size(10 * MIB - 512) == 20 * MIB
    assert allocation_size(10 * MIB) == 10 * MIB and allocation_size(10 * MIB + 512) == 12 * MIB


def test_small_pool_split_best_fit_and_coalescing():
    m = CachingAllocatorModel()
    a = m.malloc(100)  # 512-B block split off a new 2 MiB segment
    b = m.malloc(1000)  # 1024 B from the remainder
    assert (a.addr, a.size, b.addr, b.size) == (0, 512, 512, 1024)
    assert m.allocated.current == 1536 and m.reserved.current == 2 * MIB
    m.free(a)
    c = m.malloc(200)  # best fit: a's exact 512-B block, not the big remainder
    assert (c.addr, c.size) == (0, 512)
    m.free(b)  # merges with the free remainder after it
    m.free(c)  # merges with everything: one free 2 MiB block again
    assert [(s, addr) for s, addr, _ in m._free[True]] == [(2 * MIB, 0)]
    st = m.stats()
    assert (st.peak_allocated_bytes, st.peak_reserved_bytes, st.peak_requested_bytes) == (1536, 2 * MIB, 1200)
    assert (st.allocated_bytes, st.segments) == (0, 1)


def test_large_pool_splits_only_above_one_mib_and_counts_whole_blocks():
    m = CachingAllocatorModel()
    a = m.malloc(3 * MIB // 2)  # 1.5 MiB: a 20 MiB segment, remainder 18.5 MiB split off
    assert a.size == 3 * MIB // 2 and m.reserved.current == 20 * MIB
    b = m.malloc(19 * MIB)  # no free block fits: own segment rounded to 20 MiB, remainder 1 MiB kept
    assert b.size == 20 * MIB and m.reserved.current == 40 * MIB
    assert m.allocated.current == 3 * MIB // 2 + 20 * MIB  # allocated counts the whole block
    m.free(b)
    c = m.malloc(18 * MIB)  # best fit is the 18.5 MiB remainder; 0.5 MiB left is not split
    assert c.size == 37 * MIB // 2 and c.addr == 3 * MIB // 2
    assert m.malloc(0) is None  # size 0 allocates nothing
    st = m.stats()
    assert st.peak_allocated_bytes == 3 * MIB // 2 + 20 * MIB
    assert st.peak_requested_bytes == 3 * MIB // 2 + 19 * MIB
    assert st.allocated_bytes == 20 * MIB and st.peak_reserved_bytes == 40 * MIB


def test_pool_boundary_and_big_requests():
    m = CachingAllocatorModel()
    s = m.malloc(MIB)  # exactly 1 MiB is still small: a 2 MiB segment, split
    assert s.small and s.size == MIB and m.reserved.current == 2 * MIB
    big = m.malloc(10 * MIB + 1)  # >= 10 MiB: segment = request rounded to 2 MiB, remainder > 1 MiB split
    assert not big.small and big.size == 10 * MIB + 512
    assert m.reserved.current == 2 * MIB + 12 * MIB


def test_equal_sizes_are_taken_lowest_address_first():
    m = CachingAllocatorModel()
    blocks = [m.malloc(512) for _ in range(4)]
    m.free(blocks[2])
    m.free(blocks[0])  # two free 512-B blocks, each between live ones: no merge
    again = m.malloc(512)
    assert again.addr == 0


def test_replay_resets_peaks_at_the_mark():
    events = [
        (ALLOC, 1, 8 * MIB), (ALLOC, 2, 8 * MIB), (FREE, 2, 0),  # before the mark: 16 MiB peak
        (MARK, 0, 0),
        (ALLOC, 3, 4 * MIB), (FREE, 3, 0), (FREE, 1, 0),
    ]
    st = replay(events)
    assert st.peak_allocated_bytes == 12 * MIB  # 8 live at the mark + 4
    assert st.peak_reserved_bytes == 20 * MIB  # both 8 MiB requests fit one 20 MiB segment
    st = replay(events, persistent_bytes=[32 * MIB])  # e.g. a cuBLAS workspace held throughout
    assert st.peak_allocated_bytes == 44 * MIB and st.peak_reserved_bytes == 52 * MIB


def test_with_a_capacity_the_wholly_free_cached_segments_are_released_and_the_malloc_retried():
    # 12 MiB and 14 MiB requests each take a segment of their own size (>= 10 MiB: rounded to 2 MiB)
    m = CachingAllocatorModel(capacity=30 * MIB)
    a = m.malloc(12 * MIB)
    m.free(a)  # cached: a wholly free 12 MiB segment
    b = m.malloc(14 * MIB)  # does not fit the cached one: a new segment, 26 MiB reserved
    m.free(b)
    m.malloc(1 * MIB + 512)  # large pool: takes the 12 MiB segment (best fit), split off
    assert m.reserved.current == 26 * MIB and m.alloc_retries == 0
    m.malloc(16 * MIB)  # 26 + 16 > 30: the wholly free 14 MiB segment goes, the split 12 MiB stays
    assert m.alloc_retries == 1
    assert m.reserved.current == 12 * MIB + 16 * MIB and m.reserved.peak == 28 * MIB
    assert m.stats().alloc_retries == 1 and m.stats().segments == 2
    m.malloc(4 * MIB)  # fits what is left of the split 12 MiB segment: no new segment, no retry
    assert m.alloc_retries == 1
    # 12 MiB fits no cached block; 28 + 12 > 30, and nothing is wholly free to release
    with pytest.raises(OutOfMemory, match="12,582,912 B needs a 12,582,912 B segment; 29,360,128 B of "
                                          "31,457,280 B stay reserved after the release"):
        m.malloc(12 * MIB)
    assert m.alloc_retries == 2


def test_replay_in_a_capacity_runs_or_runs_out_of_memory():
    events = [(ALLOC, 1, 12 * MIB), (FREE, 1, 0), (MARK, 0, 0), (ALLOC, 2, 14 * MIB), (FREE, 2, 0)]
    assert replay(events).peak_reserved_bytes == 26 * MIB  # unlimited: both segments kept
    st = replay(events, capacity=20 * MIB)  # the 12 MiB segment released for the 14 MiB one
    assert st.peak_reserved_bytes == 14 * MIB and st.reserved_bytes == 14 * MIB and st.alloc_retries == 1
    with pytest.raises(OutOfMemory):
        replay(events, capacity=13 * MIB)


def _working_sets(sizes_mib: list[int], tensors: int = 4) -> list[tuple]:
    """One stage after another: `tensors` blocks of each size live together, then all freed
    (a checkpointed segment's recompute: its activations are made, used and dropped)."""
    events, sid = [(MARK, 0, 0)], 0
    for size in sizes_mib:
        ids = list(range(sid, sid + tensors))
        sid += tensors
        events += [(ALLOC, i, size * MIB) for i in ids] + [(FREE, i, 0) for i in ids]
    return events


def test_stages_recomputed_small_to_large_keep_every_stage_cached():
    """Gradient checkpointing's backward recomputes the last stage first: 16, then 32, then
    64 MiB tensors (ResNet-110's stages 3, 2, 1 at batch 1024). Each is a multiple of 2 MiB
    and >= 10 MiB, so each gets a segment of exactly its size; a cached segment only serves a
    request that fits in it and segments never merge, so no smaller stage's segments serve the
    next stage: the reserve is the *sum* of the stages' working sets, the allocated peak only
    the largest. The step needs no more than the allocated peak: with the cache given back on
    an out-of-memory it runs in 256 MiB."""
    up = _working_sets([16, 32, 64])
    st = replay(up)
    assert st.peak_allocated_bytes == 4 * 64 * MIB
    assert st.peak_reserved_bytes == 4 * (16 + 32 + 64) * MIB
    assert least_capacity(up) == 4 * 64 * MIB
    assert replay(up, capacity=4 * 64 * MIB).alloc_retries == 1  # the 16 and 32 MiB segments go
    with pytest.raises(OutOfMemory):
        replay(up, capacity=4 * 64 * MIB - 2 * MIB)
    # end-to-end backprop's order (largest first): a freed 64 MiB block is split for the
    # smaller requests (remainder > 1 MiB), so the one stage's segments serve them all
    down = _working_sets([64, 32, 16])
    st = replay(down)
    assert st.peak_reserved_bytes == st.peak_allocated_bytes == 4 * 64 * MIB
    assert least_capacity(down) == 4 * 64 * MIB


def test_least_capacity_counts_persistent_blocks_and_the_small_pool():
    events = [(MARK, 0, 0), (ALLOC, 1, 100), (ALLOC, 2, 12 * MIB), (FREE, 2, 0), (ALLOC, 3, 14 * MIB)]
    # the 100 B block takes a 2 MiB small segment; the 12 MiB segment cannot hold 14 MiB, but
    # once released the 14 MiB one fits: 2 + 14 MiB
    assert replay(events).peak_reserved_bytes == (2 + 12 + 14) * MIB
    assert least_capacity(events) == (2 + 14) * MIB
    # a 4 MiB workspace held from the start takes a 20 MiB segment, whose free 16 MiB serve
    # the 12 and then the 14 MiB block: 20 + 2 MiB
    assert least_capacity(events, persistent_bytes=[4 * MIB]) == (20 + 2) * MIB
