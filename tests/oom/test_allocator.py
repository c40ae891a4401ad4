"""The caching-allocator simulation against hand-computed cases of CUDACachingAllocator's rules."""

from __future__ import annotations

import pytest

from gpudoc.oom.allocator import MB, CachingAllocator, OutOfMemory, round_size, segment_size

KB = 1024


def test_rounding_and_segment_sizes() -> None:
    assert (round_size(1), round_size(512), round_size(513)) == (512, 512, 1024)
    assert segment_size(512) == segment_size(1 * MB) == 2 * MB
    assert segment_size(1 * MB + 512) == segment_size(10 * MB - 512) == 20 * MB
    assert segment_size(10 * MB) == 10 * MB and segment_size(11 * MB + 1) == 12 * MB


def test_small_requests_share_two_mib_segments() -> None:
    a = CachingAllocator()
    a.malloc(1, 1)
    assert (a.stats.allocated, a.stats.reserved) == (512, 2 * MB)
    a.malloc(2, 600 * KB)
    a.malloc(3, 600 * KB)
    assert a.stats.reserved == 2 * MB
    a.malloc(4, 900 * KB)  # 2048 - 0.5 - 1200 KiB left in the first segment: too small
    assert a.stats.reserved == 4 * MB and a.stats.segments == 2


def test_large_requests_split_a_twenty_mib_segment() -> None:
    a = CachingAllocator()
    a.malloc(1, 5 * MB)
    a.malloc(2, 5 * MB)
    assert (a.stats.allocated, a.stats.reserved) == (10 * MB, 20 * MB)
    a.malloc(3, 11 * MB + 1)  # >= 10 MiB: its own segment, rounded to 2 MiB
    assert a.stats.reserved == 32 * MB


def test_large_remainder_of_one_mib_or_less_is_not_split() -> None:
    a = CachingAllocator()
    a.malloc(1, 19 * MB + 512 * KB)  # its own 20 MiB segment; 0.5 MiB left is not split off
    assert a.stats.allocated == 20 * MB
    b = CachingAllocator()
    b.malloc(1, 18 * MB)  # 2 MiB left: split, allocated counts the block only
    assert b.stats.allocated == 18 * MB and b.stats.reserved == 18 * MB


def test_freed_blocks_merge_and_are_reused() -> None:
    a = CachingAllocator()
    a.malloc(1, 5 * MB)
    a.malloc(2, 5 * MB)
    a.free(1)
    a.free(2)
    assert a.stats.allocated == 0 and a.stats.reserved == 20 * MB
    a.malloc(3, 18 * MB)  # fits the merged 20 MiB block: no new segment
    assert a.stats.reserved == 20 * MB and a.stats.segments == 1
    a.free(3)
    a.malloc(4, 6 * MB)
    a.malloc(5, 6 * MB)
    a.malloc(6, 6 * MB)
    assert a.stats.reserved == 20 * MB and a.stats.peak_allocated == 18 * MB


def test_best_fit_takes_the_smallest_free_block() -> None:
    a = CachingAllocator()
    a.malloc(1, 4 * MB)
    a.malloc(2, 1 * MB + 512)
    a.malloc(3, 8 * MB)
    a.malloc(4, 2 * MB)
    a.free(1)  # a 4 MiB hole
    a.free(3)  # an 8 MiB hole
    a.malloc(5, 3 * MB)
    a.malloc(6, 7 * MB)  # 4 MiB hole now has 1 MiB: the 7 MiB request takes the 8 MiB hole
    assert a.stats.reserved == 20 * MB


def test_cache_is_released_before_running_out() -> None:
    a = CachingAllocator(capacity=22 * MB)
    a.malloc(1, 5 * MB)
    a.free(1)
    a.malloc(2, KB)
    assert a.stats.reserved == 22 * MB
    a.malloc(3, 19 * MB)  # fits the cached, fully free 20 MiB segment
    a.free(3)
    with pytest.raises(OutOfMemory):
        a.malloc(4, 21 * MB)  # 22 MiB segment: even after releasing the free 20 MiB one, 2 + 22 > 22
    assert a.stats.releases == 1 and a.stats.reserved == 2 * MB
    a.release_cache()
    assert a.stats.reserved == 2 * MB  # the small segment still holds a block
