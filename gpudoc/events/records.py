"""TFRecord framing as TensorBoard event files use it, with both CRCs verified.

A record is ``u64le length | u32le masked_crc32c(length bytes) | data | u32le masked_crc32c(data)``.
Reading is strict by default (a bad record is an error naming the file, byte offset and record
index); salvage mode skips bad records, resynchronising after a damaged length, and lists what
it skipped. An incomplete last record — a writer still at work, or a cut-off file — ends the
records without being read, and the reader can resume from that offset later.

The per-record loop runs in a compiled core (``gpudoc/events/_core.c``: framing, both CRCs, and
trim's keep/drop decision for whole records) when it is built; the environment variable
``GPUDOC_EVENTS_CORE=python`` forces the pure-Python loop, which gives the same results.
``events info`` and ``events export`` read runs of canonical scalar records through a second
compiled module (``gpudoc/events/_scan.c``: framing, CRCs and the Event's fields decoded in
place, see :meth:`RecordReader.scalars`) when it is built and the compiled core is active.
Whatever the compiled loop cannot decide cleanly (damage, a cut-off end, a record trim must
parse) it leaves to the Python code below, so errors and salvage behave the same on both.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, NamedTuple

from gpudoc.errors import ExitCode, GpudocError

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
_CHUNK = 1 << 22
# A record longer than this is taken as a damaged length, not read (TensorBoard's own
# writers stay far below: a large image summary is a few MB).
MAX_RECORD = 1 << 31
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _load_core() -> tuple[ModuleType | None, str]:
    """The compiled core, or None, and a line saying which core is active and why."""
    if os.environ.get("GPUDOC_EVENTS_CORE", "").strip().lower() == "python":
        return None, "pure Python (GPUDOC_EVENTS_CORE=python)"
    try:
        from gpudoc.events import _core
    except ImportError:
        return None, ("pure Python: the compiled core is not built (no C compiler at install?); "
                      "reinstall with one for ~10x faster trims")
    return _core, f"compiled C ({_core.crc} for CRC-32C)"


def _load_scan() -> tuple[ModuleType | None, str]:
    """The compiled scalar-record decoder of info and export, or None, and what that means."""
    try:
        from gpudoc.events import _scan
    except ImportError:
        return None, "; its scalar decoder for info/export (_scan) is not built"
    return _scan, "; info/export decode scalar records in C (_scan)"


_core, CORE_REASON = _load_core()
_scan, _SCAN_REASON = _load_scan()
if _core is not None:
    CORE_REASON += _SCAN_REASON


def core_active() -> bool:
    """Whether the compiled core reads the records (see :data:`CORE_REASON`)."""
    return _core is not None


def scalar_decoder(*, tally: bool = False) -> Any:
    """A compiled decoder of scalar records for :meth:`RecordReader.scalars` (``tally``: it
    counts values as ``events info`` does), or None with the pure-Python core."""
    if _core is None or _scan is None:
        return None
    return _scan.Decoder(tally=tally)


def crc32c_extend(crc: int, data: bytes | memoryview) -> int:
    """The CRC-32C ``crc`` continued over ``data`` (0 to start)."""
    if _core is not None:
        return int(_core.extend(crc, data))
    import google_crc32c  # the pure-Python core's CRC (the compiled core never imports it)

    return int(google_crc32c.extend(crc, bytes(data)))


def masked_crc(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC-32C of ``data``."""
    if _core is not None:
        return int(_core.masked_crc(data))
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _crc32c() -> Callable[[bytes], int]:
    """The plain CRC-32C of a buffer: the compiled core's, else google_crc32c's (imported only
    then: ~1.5 ms of every start otherwise)."""
    if _core is not None:
        return partial(_core.extend, 0)
    import google_crc32c

    return google_crc32c.value


def frame(data: bytes) -> bytes:
    """One record: ``data`` with its length and both CRCs."""
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(masked_crc(length)) + data + _FOOTER.pack(masked_crc(data))


class CorruptRecord(GpudocError):
    """A record failed its length or data CRC (or its length is impossible), or the file is
    cut off: input the command cannot use as it is (exit 2; ``events info`` reports it as a
    finding instead)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Damage:
    """A stretch of bytes salvage mode skipped: ``start``/``end`` offsets and why."""

    start: int
    end: int
    reason: str


def damage_json(damage: Iterable[tuple[str, Damage]]) -> list[dict[str, str | int]]:
    """Damaged stretches per file as the commands' ``--json`` lists them."""
    return [{"file": f, "start": d.start, "end": d.end, "reason": d.reason} for f, d in damage]


@dataclass
class ReadState:
    """Where reading stopped: ``offset`` after the last complete record, ``records`` read,
    ``partial`` bytes of an incomplete last record, ``damage`` skipped in salvage mode."""

    offset: int = 0
    records: int = 0
    partial: int = 0
    damage: list[Damage] = field(default_factory=list)


class Span(NamedTuple):
    """Consecutive kept records, as stored (``RecordReader.spans``): copy ``data`` as it is."""

    data: memoryview
    records: int


class Scalars(NamedTuple):
    """Consecutive scalar records the compiled decoder read (``RecordReader.scalars``):
    ``records`` holding ``values`` values; ``columns`` packs each value (step, wall time, value,
    tag index, record; see ``_scan.c``) unless the decoder tallies them; ``tags``: the indexes
    of the tags the values name; ``backwards``: ``(record, tag, step, earlier points)`` where a
    tag's steps went back (tallying only)."""

    records: int
    values: int
    columns: bytes | None
    tags: list[int]
    backwards: list[tuple[int, int, int, int]]


@dataclass
class FastTrim:
    """What trim decides without parsing a record (the compiled core applies it): the step and
    wall-time bounds (None: open), whether run-level records are kept and which Event fields
    make one, whether a tag's metadata is still to be re-attached (``pending``: every in-range
    summary is then parsed), the byte strings that make a summary possibly run-level
    (``marks``), and the sorted offsets of the records that must be parsed whatever they hold
    (``stops``)."""

    first_step: int | None
    last_step: int | None
    start: float | None
    end: float | None
    keep_run_level: bool
    run_level_fields: frozenset[int]  # the Event fields that make a record run-level
    stops: list[int] = field(default_factory=list)
    pending: bool = False
    marks: tuple[bytes, ...] = ()
    records: int = 0  # records the core decided (kept or dropped)

    def usable(self) -> bool:
        """Whether the steps fit the core's 64-bit compare (else every record is parsed)."""
        return all(s is None or _INT64[0] <= s <= _INT64[1] for s in (self.first_step, self.last_step))

    def arguments(self, at: int) -> tuple[object, ...]:
        bounds = sum(bit for bit, value in ((1, self.first_step), (2, self.last_step), (4, self.start),
                                            (8, self.end)) if value is not None)
        index = bisect_left(self.stops, at)
        stop = self.stops[index] if index < len(self.stops) else -1
        fields = sum(1 << f for f in self.run_level_fields if 0 <= f < 32)
        return (bounds, self.first_step or 0, self.last_step or 0, float(self.start or 0.0),
                float(self.end or 0.0), fields, self.keep_run_level, self.pending, self.marks, stop)


def _valid_header(buffer: bytes, at: int) -> int | None:
    """The data length of a record header at ``at`` whose length CRC checks, else None."""
    length_bytes = buffer[at : at + 8]
    length, crc = _HEADER.unpack_from(buffer, at)
    if masked_crc(length_bytes) != crc or length > MAX_RECORD:
        return None
    return length


class RecordReader:
    """Iterates ``(offset, data, framed)`` over a file's records from ``state.offset``;
    ``framed`` is the record's bytes as stored (length, CRCs and data), for byte-exact copies.

    ``salvage`` skips bad records instead of raising :class:`CorruptRecord`. Reading the
    same reader again continues where it stopped (tailing a file that is being written).
    ``whole`` is for a file that should be finished: an incomplete last record is then an
    error naming its offset (with ``salvage``: skipped and listed as damage).
    """

    def __init__(self, path: str | Path, *, salvage: bool = False, state: ReadState | None = None,
                 whole: bool = False) -> None:
        self.path = Path(path)
        self.salvage = salvage
        self.whole = whole
        self.state = state or ReadState()

    def __iter__(self) -> Iterator[tuple[int, bytes, bytes]]:
        return self._read(None)  # type: ignore[return-value]

    def spans(self, fast: FastTrim | None) -> Iterator[tuple[int, bytes, bytes] | Span]:
        """The records as :meth:`__iter__` gives them, except that runs of records the compiled
        core keeps by ``fast`` come as one :class:`Span` and those it drops not at all. With the
        pure-Python core (or ``fast`` None) every record is given, for the caller to decide."""
        return self._read(fast if fast is not None and fast.usable() else None)

    def scalars(self, decoder: Any) -> Iterator[tuple[int, bytes, bytes] | Scalars]:
        """The records as :meth:`__iter__` gives them, except that runs of scalar records the
        compiled ``decoder`` (:func:`scalar_decoder`) reads come as :class:`Scalars`; every other
        record (and all of them with ``decoder`` None) is given as it is, for the caller to parse."""
        return self._read(None, decoder if _core is not None else None)  # type: ignore[return-value]

    def _read(self, fast: FastTrim | None,
              decoder: Any = None) -> Iterator[tuple[int, bytes, bytes] | Span | Scalars]:
        with open(self.path, "rb") as handle:
            yield from self._records(handle, fast, decoder)
        state = self.state
        if self.whole and state.partial:
            if not self.salvage:
                raise CorruptRecord(
                    f"{self.path}: ends in an incomplete record ({state.partial} bytes at byte {state.offset}): "
                    "cut off, or still being written",
                    "wait for the writer to finish, or pass --salvage to keep the complete records",
                )
            state.damage.append(Damage(state.offset, state.offset + state.partial,
                                       "cut off: an incomplete last record"))

    def skip_not_event(self, offset: int, size: int, error: CorruptRecord) -> None:
        """The record just read, at ``offset`` (``size`` bytes as framed), checks its CRCs but
        its bytes are no Event: ``error`` is raised, or with ``salvage`` the record is skipped
        as damage, named by its index like a record that fails its CRC. After intact Events the
        file is an event file, so the error's fix then points to ``--salvage`` instead."""
        if not self.salvage:
            if self.state.records:
                raise CorruptRecord(error.message, f"the {self.state.records} record(s) before it were read as "
                                    "Events: it is damaged, or was written by something else; '--salvage' skips it")
            raise error
        self.state.damage.append(Damage(offset, offset + size, f"record {self.state.records}: not a TensorBoard "
                                        "Event (its CRCs check, its bytes do not parse); record skipped"))

    def _error(self, offset: int, message: str) -> CorruptRecord:
        return CorruptRecord(
            f"{self.path}: record {self.state.records} at byte {offset}: {message}",
            "the file is damaged; '--salvage' reads the records that are intact",
        )

    @staticmethod
    def _too_long(handle: BinaryIO, offset: int, length: int) -> str:
        """Why a header whose length CRC checks is not read: its length is beyond a record's limit."""
        size = os.fstat(handle.fileno()).st_size
        beyond = f" and beyond the file's end ({size} bytes)" if offset + _HEADER.size + length + 4 > size else ""
        return (f"the length field says {length} bytes (its CRC checks), beyond the {MAX_RECORD}-byte limit of a "
                f"record{beyond}: not a record TensorBoard's writers make")

    def _records(self, handle: BinaryIO, fast: FastTrim | None,
                 decoder: Any = None) -> Iterator[tuple[int, bytes, bytes] | Span | Scalars]:
        state = self.state
        core = _core
        handle.seek(state.offset)
        buffer = b""
        base = state.offset
        at = 0
        eof = False
        state.partial = 0
        crc32c = _crc32c()
        header = _HEADER.unpack_from
        footer = _FOOTER.unpack_from
        delta = _MASK_DELTA
        while True:
            if len(buffer) - at < _HEADER.size + 4 or (not eof and len(buffer) - at < _CHUNK // 2):
                chunk = handle.read(_CHUNK)
                if chunk:
                    buffer = buffer[at:] + chunk
                    base += at
                    at = 0
                else:
                    eof = True
            available = len(buffer) - at
            if available < _HEADER.size:
                state.partial = available
                return
            if core is not None:
                # The compiled loop takes every intact record it can; the record it stops at
                # (damaged, cut off, past the buffer, or one trim must parse) is read below.
                if decoder is not None:
                    records, values, stop, end, columns, tags, backwards = decoder.scan(buffer, at)
                    if records:
                        yield Scalars(records, values, columns, tags, backwards)
                        state.records += records
                        state.offset = base + stop
                    if end > stop:  # intact, but not a record the decoder reads
                        yield base + stop, buffer[stop + 12 : end - 4], buffer[stop:end]
                        state.records += 1
                        state.offset = base + end
                        stop = end
                elif fast is None:
                    found, stop = core.scan(buffer, at, base)
                    for record in found:
                        yield record
                        state.records += 1
                        state.offset = record[0] + len(record[2])
                else:
                    spans, count, _, stop = core.trim_scan(buffer, at, base, *fast.arguments(base + at))
                    if spans:
                        view = memoryview(buffer)
                        for first, last, kept in spans:
                            yield Span(view[first:last], kept)
                    state.records += count
                    fast.records += count
                    state.offset = base + stop
                if stop != at:
                    at = stop
                    continue
            length, length_crc = header(buffer, at)
            c = crc32c(buffer[at : at + 8])
            crc_ok = ((((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF) == length_crc
            if not crc_ok or length > MAX_RECORD:
                if not self.salvage:
                    raise self._error(base + at, self._too_long(handle, base + at, length) if crc_ok
                                      else "length CRC mismatch (the length field is damaged)")
                what = f"length {length} beyond a record's limit" if crc_ok else "damaged length"
                skip = self._resync(buffer, at + 1)
                if skip is None and eof:
                    state.damage.append(Damage(base + at, base + len(buffer), f"{what}; no record after it"))
                    state.offset = base + len(buffer)
                    return
                if skip is None:
                    skip = len(buffer) - _HEADER.size + 1
                state.damage.append(Damage(base + at, base + skip, f"{what}; skipped to the next record"))
                at = skip
                state.offset = base + at
                continue
            end = at + _HEADER.size + length + 4
            if end > len(buffer):
                if eof:
                    state.partial = available
                    return
                more = handle.read(max(_CHUNK, end - len(buffer)))
                if not more:
                    eof = True
                    state.partial = available
                    return
                buffer = buffer[at:] + more
                base += at
                at = 0
                continue
            data = buffer[at + 12 : end - 4]
            (data_crc,) = footer(buffer, end - 4)
            c = crc32c(data)
            if ((((c >> 15) | (c << 17)) + delta) & 0xFFFFFFFF) != data_crc:
                if not self.salvage:
                    raise self._error(base + at, "data CRC mismatch (the record's contents are damaged)")
                state.damage.append(Damage(base + at, base + end, "data CRC mismatch; record skipped"))
            else:
                yield base + at, data, buffer[at:end]
            state.records += 1
            at = end
            state.offset = base + at

    def _resync(self, buffer: bytes, start: int) -> int | None:
        """The next offset in ``buffer`` where an intact record starts (or a valid header
        whose record runs past the buffer: reading on will check it)."""
        if _core is not None:
            found = _core.resync(buffer, min(start, len(buffer)))
            return None if found < 0 else int(found)
        limit = len(buffer) - _HEADER.size
        for candidate in range(start, limit + 1):
            length = _valid_header(buffer, candidate)
            if length is None:
                continue
            end = candidate + _HEADER.size + length + 4
            if end > len(buffer):
                return candidate
            (crc,) = _FOOTER.unpack_from(buffer, end - 4)
            if masked_crc(buffer[candidate + _HEADER.size : end - 4]) == crc:
                return candidate
        return None


def read_records(path: str | Path, *, salvage: bool = False) -> tuple[list[bytes], ReadState]:
    """Every record's data, and how reading ended."""
    reader = RecordReader(path, salvage=salvage)
    records = [data for _, data, _ in reader]
    return records, reader.state


class RecordWriter:
    """Appends framed records to a binary file object, keeping a CRC-32C of everything
    written (``crc``, ``size``) so the file can be checked after it is written."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.count = 0
        self.crc = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        self.write_framed(frame(data))

    def write_framed(self, framed: bytes) -> None:
        """A record already framed (copied byte for byte from an input)."""
        self.handle.write(framed)
        self.crc = crc32c_extend(self.crc, framed)
        self.size += len(framed)
        self.count += 1

    def write_span(self, span: Span) -> None:
        """Records already framed, in one write."""
        self.handle.write(span.data)
        self.crc = crc32c_extend(self.crc, span.data)
        self.size += len(span.data)
        self.count += span.records


def file_crc(path: str | Path) -> tuple[int, int]:
    """CRC-32C and size of a whole file, read back in large blocks."""
    crc, size = 0, 0
    block = bytearray(_CHUNK)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(block):
            crc = crc32c_extend(crc, view[:count])
            size += count
    return crc, size
