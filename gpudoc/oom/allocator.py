"""A simulation of PyTorch's CUDA caching allocator (``c10/cuda/CUDACachingAllocator.cpp``,
default settings, one stream), fed with a trace's allocations and frees.

Rules: requests are rounded up to 512 B. Requests up to 1 MiB come from the small pool, whose
segments are 2 MiB; larger ones from the large pool, whose segments are 20 MiB for requests under
10 MiB and the request rounded up to 2 MiB otherwise. A request takes the smallest cached free
block of its pool that fits (best fit, lowest address on ties) and splits it when the remainder
is at least 512 B (small pool) or more than 1 MiB (large pool). A freed block merges with free
neighbours of its segment. When a new segment does not fit in the device, every fully free
segment is released and the request retried; if it still does not fit, that is the OOM.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

KB = 1024
MB = 1024 * KB
MIN_BLOCK = 512
SMALL_SIZE = 1 * MB
SMALL_BUFFER = 2 * MB
LARGE_BUFFER = 20 * MB
MIN_LARGE_ALLOC = 10 * MB
ROUND_LARGE = 2 * MB


def round_size(size: int) -> int:
    """The allocator's request size: at least 512 B, a multiple of 512 B."""
    return max(MIN_BLOCK, -(-size // MIN_BLOCK) * MIN_BLOCK)


def segment_size(size: int) -> int:
    """The size of the segment ``cudaMalloc``'d for a (rounded) request that nothing cached fits."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass(eq=False)
class _Block:
    segment: int
    offset: int
    size: int
    small: bool
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


class OutOfMemory(Exception):
    """The simulated device cannot hold a request even after releasing its cache."""

    def __init__(self, requested: int, allocated: int, reserved: int) -> None:
        super().__init__(f"cannot allocate {requested} B with {allocated} B allocated, {reserved} B reserved")
        self.requested = requested
        self.allocated = allocated
        self.reserved = reserved


@dataclass
class AllocatorStats:
    """Peaks of what tensors hold (allocated: rounded requests) and what the allocator holds
    (reserved: segments), as ``torch.cuda.max_memory_allocated/reserved`` report them."""

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    segments: int = 0
    releases: int = 0


@dataclass
class CachingAllocator:
    """Allocate and free by handle; ``capacity`` None never runs out."""

    capacity: int | None = None
    stats: AllocatorStats = field(default_factory=AllocatorStats)
    _free: dict[bool, list[tuple[int, int, int]]] = field(default_factory=lambda: {True: [], False: []})
    _blocks: dict[tuple[int, int, int], _Block] = field(default_factory=dict)
    _live: dict[int, _Block] = field(default_factory=dict)
    _segments: dict[int, tuple[int, _Block]] = field(default_factory=dict)
    _next_segment: int = 0

    def _insert(self, block: _Block) -> None:
        key = block.key()
        bisect.insort(self._free[block.small], key)
        self._blocks[key] = block

    def _remove(self, block: _Block) -> None:
        key = block.key()
        pool = self._free[block.small]
        del pool[bisect.bisect_left(pool, key)]
        del self._blocks[key]

    def _find(self, size: int, small: bool) -> _Block | None:
        pool = self._free[small]
        at = bisect.bisect_left(pool, (size, -1, -1))
        return self._blocks[pool[at]] if at < len(pool) else None

    def _new_segment(self, size: int, small: bool) -> _Block:
        seg = segment_size(size)
        if self.capacity is not None and self.stats.reserved + seg > self.capacity:
            self.release_cache()
            if self.stats.reserved + seg > self.capacity:
                raise OutOfMemory(size, self.stats.allocated, self.stats.reserved)
        sid = self._next_segment
        self._next_segment += 1
        block = _Block(sid, 0, seg, small)
        self._segments[sid] = (seg, block)
        self.stats.reserved += seg
        self.stats.segments += 1
        self.stats.peak_reserved = max(self.stats.peak_reserved, self.stats.reserved)
        return block

    def release_cache(self) -> None:
        """``torch.cuda.empty_cache()``: give back every segment with nothing allocated in it."""
        for sid, (size, head) in list(self._segments.items()):
            if head.free and head.next is None:
                self._remove(head)
                del self._segments[sid]
                self.stats.reserved -= size
                self.stats.releases += 1

    def malloc(self, handle: int, nbytes: int) -> None:
        """Allocate ``nbytes`` for ``handle`` (a storage's identity)."""
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        block = self._find(size, small)
        if block is None:
            block = self._new_segment(size, small)
        else:
            self._remove(block)
        remaining = block.size - size
        if remaining >= MIN_BLOCK if small else remaining > SMALL_SIZE:
            rest = _Block(block.segment, block.offset + size, remaining, small, True, block, block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert(rest)
        block.free = False
        self._live[handle] = block
        self.stats.allocated += block.size
        self.stats.peak_allocated = max(self.stats.peak_allocated, self.stats.allocated)

    def free(self, handle: int) -> None:
        """Return ``handle``'s block to its pool, merged with free neighbours."""
        block = self._live.pop(handle)
        self.stats.allocated -= block.size
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._remove(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        self._insert(block)
