"""``events trim``: keep a step range, tags, kinds or a time window of a run — losslessly.

Kept records are copied byte for byte; an Event is re-encoded only when some of its values
are dropped or when it must carry a tag's SummaryMetadata whose first value was dropped.
Output goes to temporary files that are read back and checked against the CRC-32C of what
was written (every record in it was CRC-checked on the way in or freshly framed) before they
are renamed into place, so an interrupted or failed trim leaves nothing behind.
"""

from __future__ import annotations

import copy
import mmap
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gpudoc.errors import InputError
from gpudoc.events.discover import Run, is_event_file, staging_beside
from gpudoc.events.files import OtherFiles, copied_json, stage
from gpudoc.events.model import (
    RUN_LEVEL,
    RUN_LEVEL_FIELDS,
    FILE_VERSION_FIELD,
    SESSION_LOG_FIELD,
    STRUCTURAL,
    RUN_LEVEL_MARKS,
    SUMMARY_FIELD,
    Kind,
    TagPlugins,
    decode,
    event_kinds,
    peek,
)
from gpudoc.events import records
from gpudoc.events.records import (
    CorruptRecord,
    Damage,
    FastTrim,
    RecordReader,
    RecordWriter,
    Span,
    core_active,
    crc32c_extend,
    damage_json,
    file_crc,
    frame,
)
from gpudoc.events.sessions import PREFIX, session_metric_records
from gpudoc.output import output_target, place

if TYPE_CHECKING:
    from tensorboard.compat.proto import event_pb2, summary_pb2

_METADATA_KEY = b"\x4a"
# The compiled path reads a file in blocks of this size (a record longer than that gets a
# block of its own size).
_BLOCK = 1 << 21


@dataclass(frozen=True)
class TrimSpec:
    """What to keep. Steps and times are inclusive; None leaves that end open."""

    first_step: int | None = None
    last_step: int | None = None
    tags: tuple[re.Pattern[str], ...] = ()
    exclude_tags: tuple[re.Pattern[str], ...] = ()
    kinds: frozenset[Kind] | None = None
    start: float | None = None
    end: float | None = None
    keep_run_level: bool = True

    @property
    def filters_values(self) -> bool:
        """Whether single values (not whole records) may be dropped."""
        return bool(self.tags or self.exclude_tags or self.kinds is not None)

    def in_range(self, step: int, wall: float) -> bool:
        if self.first_step is not None and step < self.first_step:
            return False
        if self.last_step is not None and step > self.last_step:
            return False
        if self.start is not None and wall < self.start:
            return False
        return self.end is None or wall <= self.end

    def keeps_tag(self, tag: str) -> bool:
        if self.tags and not any(p.search(tag) for p in self.tags):
            return False
        return not any(p.search(tag) for p in self.exclude_tags)


def parse_steps(text: str) -> tuple[int | None, int | None]:
    """``A:B``, ``A:`` or ``:B`` (inclusive) as a pair."""
    first, sep, last = text.partition(":")
    if not sep:
        raise InputError(f"--steps {text!r}: expected A:B, A: or :B")
    try:
        a = int(first) if first.strip() else None
        b = int(last) if last.strip() else None
    except ValueError:
        raise InputError(f"--steps {text!r}: steps are integers") from None
    if a is not None and b is not None and a > b:
        raise InputError(f"--steps {text!r}: the first step is after the last")
    return a, b


@dataclass
class TrimReport:
    """Records in and out per file, values re-encoded, metadata re-attached, (on a dry run or
    when values are filtered) per (run, kind, tag) counts before and after, and the other
    files copied (``(source, copy)``) or left out (``(path, why)``), and the event files of an
    earlier output removed (or, on a dry run, to be removed) from the run directories written."""

    files: list[tuple[str, str, int, int]] = field(default_factory=list)
    copied: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reencoded: int = 0
    reattached: int = 0
    before: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    after: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    damage: list[tuple[str, Damage]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def trim_json(report: TrimReport, dry_run: bool) -> dict[str, object]:
    """What ``events trim --json`` prints."""
    return {
        "files": [{"source": s, "output": d, "records_in": i, "records_out": o} for s, d, i, o in report.files],
        "reencoded": report.reencoded, "metadata_reattached": report.reattached,
        "values": [{"run": r, "kind": k, "tag": t, "before": n, "after": report.after.get((r, k, t), 0)}
                   for (r, k, t), n in sorted(report.before.items())],
        **copied_json(report.copied, report.skipped),
        "damage": damage_json(report.damage),
        "removed": report.removed,
        "dry_run": dry_run,
    }


class _Trimmer:
    """Trims the files of one run, carrying tag metadata across its files."""

    def __init__(self, run: str, spec: TrimSpec, report: TrimReport, count: bool) -> None:
        self.run = run
        self.spec = spec
        self.report = report
        self.count = count
        self.plugins = TagPlugins()
        self.emitted: set[str] = set()
        self.pending: set[str] = set()
        self.fast = not spec.filters_values and not count

    def record(self, data: bytes, framed: bytes, where: tuple[Path, int],
               metrics: set[str] | frozenset[str] = frozenset()) -> bytes | None:
        """The framed bytes to write for one record (from file and offset ``where``), or None
        to drop it; ``metrics`` are tags whose value in this record is an hparams session
        metric's last value (run-level)."""
        spec = self.spec
        peeked = peek(data) if self.fast and not metrics else None
        if peeked is not None:
            step, wall, what = peeked
            if what in (FILE_VERSION_FIELD, SESSION_LOG_FIELD):
                return framed
            if what in RUN_LEVEL_FIELDS:
                return framed if spec.keep_run_level else None
            if what != SUMMARY_FIELD:
                return framed if spec.in_range(step, wall) else None
            if not self.plugins.may_be_run_level(data):
                if not spec.in_range(step, wall):
                    # Dropped; parsed only if it may carry a tag's metadata (Value field 9,
                    # key byte 0x4a), which the first kept value of that tag must then get.
                    if _METADATA_KEY not in data:
                        return None
                elif not self.pending:
                    return framed
        kept = self._slow(decode(data, where[0], where[1]), framed, metrics)
        self.pending = {tag for tag in self.plugins.metadata if tag not in self.emitted}
        return kept

    def fast_trim(self, metrics: dict[int, set[str]]) -> FastTrim | None:
        """The part of :meth:`record`'s fast branch the compiled core applies to whole records
        (``metrics``' records are always given to :meth:`record`), or None when it has none."""
        spec = self.spec
        # The core keeps the given fields exactly when run-level data is kept: the session
        # logs go with them, and without run-level data every record comes to Python.
        if not self.fast or not core_active() or not spec.keep_run_level:
            return None
        return self.update(FastTrim(spec.first_step, spec.last_step, spec.start, spec.end, spec.keep_run_level,
                                    RUN_LEVEL_FIELDS | {SESSION_LOG_FIELD}, sorted(metrics)))

    def update(self, fast: FastTrim) -> FastTrim:
        """``fast`` after :meth:`record` parsed a record (tags' metadata and run-level tags seen)."""
        fast.pending = bool(self.pending)
        fast.marks = RUN_LEVEL_MARKS + tuple(self.plugins.run_level)
        return fast

    def _slow(self, event: event_pb2.Event, framed: bytes, metrics: set[str] | frozenset[str]) -> bytes | None:
        spec = self.spec
        kind = event_kinds(event)
        if kind is not None:
            keep = kind in STRUCTURAL or (spec.keep_run_level if kind in RUN_LEVEL
                                          else spec.in_range(event.step, event.wall_time))
            if self.count:
                self.report.before[(self.run, kind.value, "")] += 1
                if keep:
                    self.report.after[(self.run, kind.value, "")] += 1
            return framed if keep else None
        infos = self.plugins.values(event)
        in_range = spec.in_range(event.step, event.wall_time)
        kept = []
        for value, info in zip(event.summary.value, infos):
            run_level = info.kind in RUN_LEVEL or info.tag in metrics
            keep = (spec.keep_run_level and run_level) or (
                in_range and spec.keeps_tag(info.tag) and (spec.kinds is None or info.kind in spec.kinds)
            )
            if self.count:
                self.report.before[(self.run, info.kind.value, info.tag)] += 1
                if keep:
                    self.report.after[(self.run, info.kind.value, info.tag)] += 1
            if keep:
                kept.append(value)
        if not kept:
            return None
        attached = reattach(kept, self.plugins, self.emitted)
        self.report.reattached += attached
        if not attached and len(kept) == len(event.summary.value):
            return framed
        self.report.reencoded += 1
        from tensorboard.compat.proto import event_pb2

        out = event_pb2.Event()
        out.CopyFrom(event)
        del out.summary.value[:]
        out.summary.value.extend(kept)
        return frame(out.SerializeToString())


def reattach(kept: list[summary_pb2.Summary.Value], plugins: TagPlugins, emitted: set[str]) -> int:
    """Give each tag's first kept value (of ``kept``, in output order) the tag's
    SummaryMetadata (``plugins``: seen on any value read so far, kept or dropped) where it
    lacks it, since TensorBoard takes a tag's plugin from the first value carrying it;
    ``emitted``: the tags whose metadata is out. The number of values given it."""
    attached = 0
    for value in kept:
        if value.HasField("metadata"):
            emitted.add(value.tag)
        elif value.tag in plugins.metadata and value.tag not in emitted:
            value.metadata.ParseFromString(plugins.metadata[value.tag])
            emitted.add(value.tag)
            attached += 1
    return attached


def check_outside(runs: list[Run], dst: Path, root: Path | None = None, *, what: str = "copy",
                  same: str = "write to another directory") -> None:
    """Refuse a destination inside (or equal to) a source run, or, given the source's
    ``root``, inside that logdir: TensorBoard would mix ``what`` is written with the source.
    Symlinks are followed, so a link into the source is refused too."""
    target = dst.resolve()
    for run in runs:
        directory = run.directory.resolve()
        if target == directory or directory in target.parents:
            raise InputError(
                f"{dst}: inside the source run {directory}; TensorBoard would merge the {what} with it",
                "write to a directory outside the source runs",
            )
    if root is None:
        return
    resolved = root.resolve()
    if target == resolved:
        raise InputError(f"{dst}: the source itself", same)
    if resolved in target.parents:
        raise InputError(
            f"{dst}: inside the source logdir {resolved}; TensorBoard would show the {what} as more runs",
            "write to a directory outside the source",
        )


def check_destination(src_root: Path, runs: list[Run], dst: Path, *, force: bool) -> None:
    """Refuse a destination TensorBoard would merge with the source, or one in use."""
    check_outside(runs, dst, src_root, what="trimmed copy",
                  same="write to another directory, or use --in-place with --backup")
    if dst.exists() and any(dst.iterdir()) and not force:
        raise InputError(f"{dst}: exists and is not empty", "pass --force to write into it")


def check_backup(src_root: Path, runs: list[Run], backup: Path) -> None:
    """Refuse a ``--backup`` where a copy of an original would replace anything: a backup
    is the only copy of what an in-place trim rewrites, so nothing (not --force) replaces it."""
    for run in runs:
        for path in run.files:
            relative = path.relative_to(src_root)
            for part in (relative, *relative.parents[:-1]):
                there = backup / part
                if os.path.lexists(there) and (part == relative or not there.is_dir()):
                    what = "a backup is already there" if part == relative else "not a directory"
                    raise InputError(
                        f"{there}: {what}; trim never replaces a file in a --backup (not with --force either)",
                        "choose another --backup, or move that file away first",
                    )


def stale_event_files(written: list[Path], sources: list[Run]) -> list[Path]:
    """The event files (what TensorBoard and :func:`discover` read) already in the run
    directories that ``written`` goes into, other than ``written`` itself: left there they
    would show as part of the new run. A source file (through a symlink) is never one."""
    keep = {path.resolve() for path in written} | {f.resolve() for run in sources for f in run.files}
    stale: set[Path] = set()
    for directory in {path.parent for path in written}:
        if directory.is_dir():
            stale.update(p for p in directory.iterdir() if is_event_file(p) and p.resolve() not in keep)
    return sorted(stale)


def remove_stale(stale: list[Path]) -> None:
    """Remove ``stale`` event files (a symlink itself, never what it points to); call only
    once the new output is in place."""
    for path in stale:
        path.unlink(missing_ok=True)


def trim(
    src_root: Path,
    runs: list[Run],
    dst: Path | None,
    spec: TrimSpec,
    *,
    salvage: bool = False,
    dry_run: bool = False,
    backup: Path | None = None,
    progress: Callable[[int], None] | None = None,
    others: OtherFiles | None = None,
) -> TrimReport:
    """Trim ``runs`` into ``dst`` (mirroring paths below ``src_root``), or in place
    (``dst`` None) after copying each original to ``backup``; ``others`` (non-event files
    below ``src_root``) are copied into ``dst`` as they are. A dry run writes nothing.
    ``progress`` is called with each file's size once that file is done. The event files
    already in the run directories written to (see :func:`stale_event_files`) are removed once
    the new ones are in place; a backup is never replaced (:func:`check_backup`)."""
    if backup is not None and dst is None:
        check_backup(src_root, runs, backup)
    report = TrimReport()
    others = others if others is not None and dst is not None else OtherFiles()
    report.skipped = list(others.skipped)
    # Staged in one hidden directory (no 'tfevents' in any name, so a TensorBoard watching
    # the destination reads nothing early), moved into place only once all are verified.
    created = dst is not None and not dst.exists()
    staging = (src_root if dst is None else dst) / f".gpudoc-trim-{os.getpid()}"
    done = False
    elsewhere: list[Path] = []
    count = dry_run or spec.filters_values
    try:
        # Each run is trimmed as if no hparams session were there (its metrics' last values
        # kept as run-level); the records read say whether any names one, and only then are
        # the sessions found and the runs they own trimmed again, knowing them.
        places: list[list[tuple[Path, Path]]] = []
        parts: list[TrimReport] = []
        outcomes: list[list[tuple[int, int, int, int]]] = []
        mentioned: set[Path] = set()
        for run in runs:
            places.append([])
            for path in run.files:
                temp = staging / f"{sum(map(len, places))}.tmp"
                places[-1].append((temp, path if dst is None else dst / path.relative_to(src_root)))
            part, written = _trim_run(run, places[-1], spec, count, salvage, dry_run, {}, mentioned, progress)
            parts.append(part)
            outcomes.append(written)
        if spec.keep_run_level and mentioned:
            metrics = session_metric_records(runs, mentioned)
            for index, run in enumerate(runs):
                if any(path in metrics for path in run.files):
                    parts[index], outcomes[index] = _trim_run(run, places[index], spec, count, salvage, dry_run,
                                                              metrics, set(), None)
        temps: list[tuple[Path, Path, tuple[int, int, int, int]]] = []
        for part, run_places, written in zip(parts, places, outcomes):
            report.files += part.files
            report.reencoded += part.reencoded
            report.reattached += part.reattached
            report.before.update(part.before)
            report.after.update(part.after)
            report.damage += part.damage
            temps += [(temp, dest, w) for (temp, dest), w in zip(run_places, written)]
        stale = [] if dst is None else stale_event_files([dest for _, dest, _ in temps], runs)
        report.removed = [str(path) for path in stale]
        copies = []
        for number, item in enumerate(others.files):
            assert dst is not None
            temp = staging / f"{number}.other"
            if not dry_run:
                stage(item.source, temp)
            copies.append((temp, dst / item.relative))
            report.copied.append((str(item.source), str(dst / item.relative)))
        if dry_run:
            # Refuse what the real run would refuse: a destination that is no regular file.
            for _, dest, _ in temps:
                _regular_target(dest, _EVENT_FILES_ONLY)
            for _, dest in copies:
                _regular_target(dest, _NEW_DIRECTORY)
            done = True
            return report
        placements: list[tuple[Path, Path | None, Path]] = []
        for temp, dest, (_, _, crc, size) in temps:
            temp, path = _beside_target(temp, dest, elsewhere, _EVENT_FILES_ONLY)
            if _staged_crc(temp) != (crc, size):
                raise InputError(f"{temp}: the written file does not read back intact; nothing was replaced")
            placements.append((temp, dest, path))
        for temp, dest in copies:
            temp, path = _beside_target(temp, dest, elsewhere, _NEW_DIRECTORY)
            placements.append((temp, None, path))
        for temp, dest, path in placements:
            if backup is not None and dest is not None:
                copy = backup / dest.relative_to(src_root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                _copy_new(dest, copy)
            place(temp, path)
        remove_stale(stale)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for leftover in elsewhere:
            leftover.unlink(missing_ok=True)
        if not done and created and dst is not None and dst.exists() and not any(dst.iterdir()):
            dst.rmdir()
    return report


_EVENT_FILES_ONLY = "trim replaces event files only"
_NEW_DIRECTORY = "write to a new directory"


def _copy_new(source: Path, copy: Path) -> None:
    """Copy ``source`` (contents, flushed to disk, and times) to ``copy``, which must not
    exist yet; a copy that fails part way is removed."""
    try:
        writing = open(copy, "xb")  # noqa: SIM115 - closed below
    except FileExistsError:
        raise InputError(f"{copy}: a backup is already there; trim never replaces a backup",
                         "choose another --backup, or move that file away first") from None
    try:
        with open(source, "rb") as reading, writing:
            shutil.copyfileobj(reading, writing)
            writing.flush()
            os.fsync(writing.fileno())
        shutil.copystat(source, copy)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise


def _regular_target(dest: Path, fix: str) -> Path:
    """The regular file ``dest`` names (a symlink followed); a directory, device, FIFO or a
    path below a file is bad input."""
    target = output_target(dest)
    if target.stream:
        raise InputError(f"{dest}: not a regular file", fix)
    return target.path


def _beside_target(temp: Path, dest: Path, elsewhere: list[Path], fix: str) -> tuple[Path, Path]:
    """The staged file to rename onto ``dest``'s regular-file target, and that target: a
    target on another filesystem (a symlinked file) gets a copy staged beside it, listed in
    ``elsewhere`` for clean-up, since a rename cannot cross filesystems."""
    path = _regular_target(dest, fix)
    path.parent.mkdir(parents=True, exist_ok=True)
    if temp.stat().st_dev != path.parent.stat().st_dev:
        beside = staging_beside(path)
        elsewhere.append(beside)
        shutil.copyfile(temp, beside)
        temp = beside
    return temp, path


def _trim_run(
    run: Run, places: list[tuple[Path, Path]], spec: TrimSpec, count: bool, salvage: bool, dry_run: bool,
    metrics: dict[Path, dict[int, set[str]]], mentioned: set[Path], progress: Callable[[int], None] | None,
) -> tuple[TrimReport, list[tuple[int, int, int, int]]]:
    """Trim one run's files into their staged ``places`` (``(temp, destination)``): what it
    reports and each file's :func:`_trim_file` outcome; files whose records hold
    :data:`~gpudoc.events.sessions.PREFIX` are added to ``mentioned``."""
    part = TrimReport()
    trimmer = _Trimmer(run.label, spec, part, count=count)
    written = []
    for path, (temp, dest) in zip(run.files, places):
        outcome, mentions = _trim_file(path, temp, trimmer, part, salvage, dry_run, metrics.get(path, {}))
        if mentions:
            mentioned.add(path)
        if progress is not None:
            progress(path.stat().st_size)
        written.append(outcome)
        part.files.append((str(path), str(dest), outcome[0], outcome[1]))
    return part, written


# A staged file at least this large is read back by two threads, each CRC-ing half of it.
_SPLIT_VERIFY = 1 << 23


def _staged_crc(path: Path) -> tuple[int, int]:
    """CRC-32C and size of a staged file, read back (mapped, at memory speed, with the compiled
    core; a large one on two cores: the time is mostly the kernel mapping its pages, which two
    threads do at once, since the core's CRC releases the GIL)."""
    core = records._core
    if core is not None:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size:
                with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as view:
                    if size < _SPLIT_VERIFY or _cpus() < 2:
                        return int(core.extend(0, view)), size
                    return _split_crc(core.extend, core.combine, view), size
    return file_crc(path)


def _split_crc(extend: Callable[[int, memoryview], int], combine: Callable[[int, int, int], int],
               view: memoryview) -> int:
    """CRC-32C of ``view``: its second half on another thread, the two joined."""
    import threading

    half = len(view) // 2
    second: list[int] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with view[half:] as tail:
                second.append(extend(0, tail))
        except BaseException as error:  # handed to the caller's thread
            failed.append(error)

    thread = threading.Thread(target=run, name="gpudoc-verify", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread can be started: all of it here
        return extend(0, view)
    try:
        with view[:half] as head:
            first = extend(0, head)
    finally:
        thread.join()
    if failed:
        raise failed[0]
    return int(combine(first, second[0], len(view) - half))


def _trim_file(
    path: Path, temp: Path, trimmer: _Trimmer, report: TrimReport, salvage: bool, dry_run: bool,
    metrics: dict[int, set[str]],
) -> tuple[tuple[int, int, int, int], bool]:
    """Records in, records out, and the CRC-32C and size of the bytes written, and whether a
    record read holds :data:`PREFIX` (may hold, where the file's damage was skipped by the
    compiled core); ``metrics``: the offsets of records holding hparams session metrics' last
    values, and those tags. A record whose CRCs check but whose bytes are no Event is an
    error, or with ``salvage`` skipped as damage (not counted in)."""
    reader = RecordReader(path, salvage=salvage, whole=True)
    records_in = records_out = crc = size = 0
    mentions = False
    if dry_run:
        for offset, data, framed in reader:
            try:
                kept = trimmer.record(data, framed, (path, offset), metrics.get(offset, frozenset()))
            except CorruptRecord as error:
                # Decided as the real trim decides it: one that is copied or dropped whole by
                # its leading fields (a step or time trim) is never parsed there either.
                unparsed = copy.copy(trimmer)
                unparsed.fast, unparsed.count = not trimmer.spec.filters_values, False
                try:
                    kept = unparsed.record(data, framed, (path, offset), metrics.get(offset, frozenset()))
                except CorruptRecord:
                    reader.skip_not_event(offset, len(framed), error)
                    continue
            records_in += 1
            mentions = mentions or PREFIX in data
            records_out += kept is not None
        report.damage.extend((str(path), d) for d in reader.state.damage)
        return (records_in, records_out, crc, size), mentions
    temp.parent.mkdir(parents=True, exist_ok=True)
    fast = trimmer.fast_trim(metrics)
    try:
        if fast is not None and fast.usable():
            with open(temp, "wb", buffering=0) as handle:
                out = _Output(handle.fileno(), temp,
                              threaded=path.stat().st_size >= _THREADED_WRITES and _cpus() > 1)
                try:
                    records_in, mentions, damage = _trim_compiled(path, out, trimmer, fast, metrics, salvage)
                    out.flush()
                finally:
                    out.close()
            report.damage.extend((str(path), d) for d in damage)
            return (records_in, out.count, out.crc, out.size), mentions
        with open(temp, "wb") as handle:
            writer = RecordWriter(handle)
            for offset, data, framed in reader:
                try:
                    kept = trimmer.record(data, framed, (path, offset), metrics.get(offset, frozenset()))
                except CorruptRecord as error:
                    reader.skip_not_event(offset, len(framed), error)
                    continue
                records_in += 1
                mentions = mentions or PREFIX in data
                if kept is not None:
                    writer.write_framed(kept)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    report.damage.extend((str(path), d) for d in reader.state.damage)
    return (records_in, writer.count, writer.crc, writer.size), mentions


# A file at least this large is trimmed with its staged copy written by a second thread
# (the kernel's copy into the page cache overlaps the next block's read and check).
_THREADED_WRITES = 1 << 23


def _cpus() -> int:
    """The CPUs this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


# What the writing thread is given: data to write, a fence to set, or (None, None): stop.
_Item = tuple[bytes | bytearray | memoryview | None, Callable[[], None] | None]


class _Output:
    """A staged file (``fd``, at ``path``) being written by the compiled path, straight from the
    buffer its bytes were checked in (small writes gathered): the CRC-32C, size and record count.
    ``threaded``: the writes are made by a second thread, in order; a buffer given to
    :meth:`put` must then stay unchanged until the :meth:`fence` taken after it returns."""

    def __init__(self, fd: int, path: Path, threaded: bool = False) -> None:
        self.fd = fd
        self.path = path
        self.crc = 0
        self.size = 0
        self.count = 0
        self._pending = bytearray()
        self._failed: list[BaseException] = []
        self._put: Callable[[_Item], None] | None = None
        self._join: Callable[[], None] | None = None
        self.threaded = threaded and self._start_writer()

    def _start_writer(self) -> bool:
        """Start the writing thread; False (the writes stay in this thread) where it cannot be."""
        import queue
        import threading

        items: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        # The thread writes through a descriptor of its own, which it closes: one it is still
        # finishing with (an interrupt) never becomes some other file's.
        try:
            own = os.dup(self.fd)
        except OSError:  # out of descriptors
            return False
        shared, self.fd = self.fd, own
        try:
            thread = threading.Thread(target=self._writer, args=(items.get, own), name="gpudoc-trim-writer",
                                      daemon=True)
            thread.start()
        except BaseException as error:
            self.fd = shared
            os.close(own)
            if isinstance(error, RuntimeError):  # no thread can be started
                return False
            raise
        self._put = items.put
        self._join = thread.join
        return True

    def write(self, framed: bytes | memoryview, records: int) -> None:
        """Framed records (copied if they are a view: its buffer may change once this returns)."""
        self.crc = crc32c_extend(self.crc, framed)
        self.put(framed if self._put is None or isinstance(framed, bytes) else bytes(framed), records)

    def put(self, framed: bytes | memoryview, records: int) -> None:
        """Framed records whose CRC the caller adds to :attr:`crc` (the core computes it as it checks them)."""
        self.size += len(framed)
        self.count += records
        if len(framed) >= 1 << 16:
            self._send_pending()
            self._send(framed)
            return
        self._pending += framed
        if len(self._pending) >= 1 << 20:
            self._send_pending()

    def fence(self) -> Callable[[], object]:
        """A wait that returns once everything given so far is written."""
        import threading

        done = threading.Event()
        if self._put is None:
            done.set()
        else:
            self._send_pending()
            self._put((None, done.set))
        return done.wait

    def flush(self) -> None:
        """Write everything given so far (and raise what a write raised)."""
        self._send_pending()
        self.fence()()
        if self._failed:
            raise self._failed[0]

    def close(self) -> None:
        """Stop the writing thread, after what it was given (the file may be closed after this)."""
        if self._put is not None and self._join is not None:
            self._put((None, None))
            self._join()
            self._put = self._join = None

    def _send_pending(self) -> None:
        if self._pending:
            self._send(self._pending)
            self._pending = bytearray()

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        if self._put is None:
            self._write_all(memoryview(data))
            return
        if self._failed:
            raise self._failed[0]
        self._put((data, None))

    def _writer(self, get: Callable[[], _Item], own: int) -> None:
        """The writing thread: each item in order (after a failure, only the fences), through
        its descriptor ``own``, closed at the end."""
        try:
            while True:
                data, signal = get()
                if data is None and signal is None:
                    return
                if signal is not None:
                    signal()
                elif data is not None and not self._failed:
                    try:
                        self._write_all(memoryview(data))
                    except BaseException as error:  # raised in the trimming thread
                        self._failed.append(error)
        finally:
            os.close(own)

    def _write_all(self, data: memoryview) -> None:
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as error:  # e.g. a full disk: named, so the CLI says which file (exit 2)
            if error.filename is None:
                error.filename = str(self.path)
            raise


def _trim_compiled(
    path: Path, out: _Output, trimmer: _Trimmer, fast: FastTrim, metrics: dict[int, set[str]], salvage: bool,
) -> tuple[int, bool, list[Damage]]:
    """Trim one file with the compiled core into ``out``, in one pass over its bytes: the core
    checks both CRCs of each record, decides it (as :meth:`_Trimmer.record`'s fast branch),
    continues the output's CRC over the kept ones and looks for :data:`PREFIX`; the runs it
    keeps are written from the buffer they were checked in, and the records it leaves are
    decided by Python. At the
    first damaged or cut-off record, the rest of the file goes through :class:`RecordReader`
    (its errors, salvage and damage list; a record Python decides that is no Event is its
    error or damage too). Records in, whether one holds the prefix, damage."""
    core = records._core
    assert core is not None
    records_in = skipped = 0  # skipped: records no Event, salvaged (their indexes count them)
    mentions = False
    reader = RecordReader(path, salvage=salvage, whole=True)
    with open(path, "rb", buffering=0) as handle:
        fd = handle.fileno()
        # Threaded writes: two buffers in turn, one read and checked while the kept runs of the
        # other are written; ``written[i]`` waits until buffer i's runs are.
        buffer = bytearray(_BLOCK)
        buffers: list[bytearray | None] = [buffer, None]
        written: list[Callable[[], object] | None] = [None, None]
        current = 0
        view = memoryview(buffer)
        base = filled = at = 0  # buffer[0] is the file's byte ``base``; buffer[:filled] is read
        eof = False
        while True:
            spans, decided, _, stop, crc, found = core.trim_pass(view[:filled], at, base, *fast.arguments(base + at),
                                                                 out.crc, PREFIX)
            mentions = mentions or found
            for start, end, kept in spans:
                out.put(view[start:end], kept)
            out.crc = crc
            fast.records += decided
            records_in += decided
            at = stop
            if at == filled and eof:
                break
            length, size = core.record_at(view[:filled], at)
            if size:  # intact: a record Python decides
                data, framed = bytes(view[at + 12 : at + size - 4]), bytes(view[at : at + size])
                try:
                    kept_bytes = trimmer.record(data, framed, (path, base + at), metrics.get(base + at, frozenset()))
                except CorruptRecord as error:
                    reader.state.records = records_in + skipped
                    reader.skip_not_event(base + at, size, error)
                    skipped += 1
                else:
                    records_in += 1
                    mentions = mentions or PREFIX in data
                    if kept_bytes is not None:
                        out.write(kept_bytes, 1)
                    trimmer.update(fast)
                at += size
                continue
            need = 16 + length if length >= 0 else 12
            if eof or (length < 0 and filled - at >= 12) or filled - at >= need:
                break  # damaged, or cut off: RecordReader says which
            # The record runs past what is read: move its start to the front (of the other
            # buffer, when this one's runs may still be being written) and read on.
            if need > len(buffer) and base + at + need > os.fstat(fd).st_size:
                break  # it cannot be complete
            other = 1 - current if out.threaded else current
            wait = written[other]
            if wait is not None:
                wait()
            written[current] = out.fence() if out.threaded else None
            spare = buffers[other]
            if other == current and need <= len(buffer):
                buffer[: filled - at] = buffer[at:filled]
            else:
                if spare is None or len(spare) < max(need, len(buffer)):
                    spare = buffers[other] = bytearray(max(need, len(buffer)))
                spare[: filled - at] = view[at:filled]
                current, buffer = other, spare
                view = memoryview(buffer)
            base, filled, at = base + at, filled - at, 0
            while filled < len(buffer):
                got = handle.readinto(view[filled:])
                if not got:
                    eof = True
                    break
                filled += got
    if at == filled and eof:
        return records_in, mentions, reader.state.damage
    # Damage or a cut-off end: the rest as the reader reads it, records it keeps unseen here
    # counting as possibly holding the prefix.
    reader.state.offset, reader.state.records = base + at, records_in + skipped
    before = fast.records
    for item in reader.spans(fast):
        if type(item) is Span:
            out.write(item.data, item.records)
            continue
        offset, data, framed = item
        try:
            kept_bytes = trimmer.record(data, framed, (path, offset), metrics.get(offset, frozenset()))
        except CorruptRecord as error:
            reader.skip_not_event(offset, len(framed), error)
            continue
        records_in += 1
        mentions = mentions or PREFIX in data
        if kept_bytes is not None:
            out.write(kept_bytes, 1)
        trimmer.update(fast)
    records_in += fast.records - before
    return records_in, mentions or fast.records > before, reader.state.damage
