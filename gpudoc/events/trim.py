"""``events trim``: keep a step range, tags, kinds or a time window of a run — losslessly.

Kept records are copied byte for byte; an Event is re-encoded only when some of its values
are dropped or when it must carry a tag's SummaryMetadata whose first value was dropped.
Output goes to temporary files that are read back and checked against the CRC-32C of what
was written (every record in it was CRC-checked on the way in or freshly framed) before they
are renamed into place, so an interrupted or failed trim leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tensorboard.compat.proto import event_pb2

from gpudoc.errors import InputError
from gpudoc.events.discover import Run, staging_beside
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
from gpudoc.events.records import (
    Damage,
    FastTrim,
    RecordReader,
    RecordWriter,
    Span,
    core_active,
    damage_json,
    file_crc,
    frame,
)
from gpudoc.events.sessions import session_metric_records
from gpudoc.output import output_target, place

_METADATA_KEY = b"\x4a"


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
    files copied (``(source, copy)``) or left out (``(path, why)``)."""

    files: list[tuple[str, str, int, int]] = field(default_factory=list)
    copied: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reencoded: int = 0
    reattached: int = 0
    before: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    after: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    damage: list[tuple[str, Damage]] = field(default_factory=list)


def trim_json(report: TrimReport, dry_run: bool) -> dict[str, object]:
    """What ``events trim --json`` prints."""
    return {
        "files": [{"source": s, "output": d, "records_in": i, "records_out": o} for s, d, i, o in report.files],
        "reencoded": report.reencoded, "metadata_reattached": report.reattached,
        "values": [{"run": r, "kind": k, "tag": t, "before": n, "after": report.after.get((r, k, t), 0)}
                   for (r, k, t), n in sorted(report.before.items())],
        **copied_json(report.copied, report.skipped),
        "damage": damage_json(report.damage),
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
        changed = len(kept) != len(event.summary.value)
        for value in kept:
            if value.HasField("metadata"):
                self.emitted.add(value.tag)
            elif value.tag in self.plugins.metadata and value.tag not in self.emitted:
                value.metadata.ParseFromString(self.plugins.metadata[value.tag])
                self.emitted.add(value.tag)
                self.report.reattached += 1
                changed = True
        if not changed:
            return framed
        self.report.reencoded += 1
        out = event_pb2.Event()
        out.CopyFrom(event)
        del out.summary.value[:]
        out.summary.value.extend(kept)
        return frame(out.SerializeToString())


def check_destination(src_root: Path, runs: list[Run], dst: Path, *, force: bool) -> None:
    """Refuse a destination TensorBoard would merge with the source, or one in use."""
    target = dst.resolve()
    for run in runs:
        directory = run.directory.resolve()
        if target == directory or directory in target.parents:
            raise InputError(
                f"{dst}: inside the source run {directory}; TensorBoard would merge the trimmed copy with it",
                "write to a directory outside the source runs",
            )
    root = src_root.resolve()
    if target == root:
        raise InputError(f"{dst}: the source itself", "write to another directory, or use --in-place with --backup")
    if root in target.parents:
        raise InputError(
            f"{dst}: inside the source logdir {root}; TensorBoard would show the trimmed copy as more runs",
            "write to a directory outside the source",
        )
    if dst.exists() and any(dst.iterdir()) and not force:
        raise InputError(f"{dst}: exists and is not empty", "pass --force to write into it")


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
    ``progress`` is called with each file's size once that file is done."""
    report = TrimReport()
    others = others if others is not None and dst is not None else OtherFiles()
    report.skipped = list(others.skipped)
    temps: list[tuple[Path, Path, tuple[int, int, int, int]]] = []
    # Staged in one hidden directory (no 'tfevents' in any name, so a TensorBoard watching
    # the destination reads nothing early), moved into place only once all are verified.
    created = dst is not None and not dst.exists()
    staging = (src_root if dst is None else dst) / f".gpudoc-trim-{os.getpid()}"
    done = False
    elsewhere: list[Path] = []
    metrics = session_metric_records(runs) if spec.keep_run_level else {}
    try:
        for run in runs:
            trimmer = _Trimmer(run.label, spec, report, count=dry_run or spec.filters_values)
            for path in run.files:
                relative = path.relative_to(src_root)
                dest = path if dst is None else dst / relative
                temp = staging / f"{len(temps)}.tmp"
                written = _trim_file(path, temp, trimmer, report, salvage, dry_run, metrics.get(path, {}))
                if progress is not None:
                    progress(path.stat().st_size)
                temps.append((temp, dest, written))
                report.files.append((str(path), str(dest), written[0], written[1]))
        copies = []
        for number, item in enumerate(others.files):
            assert dst is not None
            temp = staging / f"{number}.other"
            if not dry_run:
                stage(item.source, temp)
            copies.append((temp, dst / item.relative))
            report.copied.append((str(item.source), str(dst / item.relative)))
        if dry_run:
            done = True
            return report
        placements: list[tuple[Path, Path | None, Path]] = []
        for temp, dest, (_, _, crc, size) in temps:
            temp, path = _beside_target(temp, dest, elsewhere, "trim replaces event files only")
            if file_crc(temp) != (crc, size):
                raise InputError(f"{temp}: the written file does not read back intact; nothing was replaced")
            placements.append((temp, dest, path))
        for temp, dest in copies:
            temp, path = _beside_target(temp, dest, elsewhere, "write to a new directory")
            placements.append((temp, None, path))
        for temp, dest, path in placements:
            if backup is not None and dest is not None:
                copy = backup / dest.relative_to(src_root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dest, copy)
            place(temp, path)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for leftover in elsewhere:
            leftover.unlink(missing_ok=True)
        if not done and created and dst is not None and dst.exists() and not any(dst.iterdir()):
            dst.rmdir()
    return report


def _beside_target(temp: Path, dest: Path, elsewhere: list[Path], fix: str) -> tuple[Path, Path]:
    """The staged file to rename onto ``dest``'s regular-file target, and that target: a
    target on another filesystem (a symlinked file) gets a copy staged beside it, listed in
    ``elsewhere`` for clean-up, since a rename cannot cross filesystems."""
    target = output_target(dest)
    if target.stream:
        raise InputError(f"{dest}: not a regular file", fix)
    target.path.parent.mkdir(parents=True, exist_ok=True)
    if temp.stat().st_dev != target.path.parent.stat().st_dev:
        beside = staging_beside(target.path)
        elsewhere.append(beside)
        shutil.copyfile(temp, beside)
        temp = beside
    return temp, target.path


def _trim_file(
    path: Path, temp: Path, trimmer: _Trimmer, report: TrimReport, salvage: bool, dry_run: bool,
    metrics: dict[int, set[str]],
) -> tuple[int, int, int, int]:
    """Records in, records out, and the CRC-32C and size of the bytes written; ``metrics``:
    the offsets of records holding hparams session metrics' last values, and those tags."""
    reader = RecordReader(path, salvage=salvage, whole=True)
    records_in = records_out = crc = size = 0
    if dry_run:
        for offset, data, framed in reader:
            records_in += 1
            records_out += trimmer.record(data, framed, (path, offset), metrics.get(offset, frozenset())) is not None
    else:
        temp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(temp, "wb") as handle:
                writer = RecordWriter(handle)
                fast = trimmer.fast_trim(metrics)
                for item in reader.spans(fast):
                    if type(item) is Span:  # kept by the compiled core, as stored
                        writer.write_span(item)
                        continue
                    offset, data, framed = item
                    records_in += 1
                    kept = trimmer.record(data, framed, (path, offset), metrics.get(offset, frozenset()))
                    if kept is not None:
                        writer.write_framed(kept)
                    if fast is not None:
                        trimmer.update(fast)
                records_in += fast.records if fast is not None else 0
                records_out, crc, size = writer.count, writer.crc, writer.size
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    report.damage.extend((str(path), d) for d in reader.state.damage)
    return records_in, records_out, crc, size
