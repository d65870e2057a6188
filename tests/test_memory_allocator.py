"""The CUDA caching-allocator model gives the allocator's numbers on hand-made sequences."""

import pytest

from hpff_bench.memory.allocator_model import (
    CachingAllocatorModel,
    OutOfMemory,
    allocation_size,
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
