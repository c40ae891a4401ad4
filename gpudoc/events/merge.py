"""``events merge`` (several runs into one, with an explicit policy for overlapping steps)
and ``events replay`` (re-emit a run in real time, byte for byte)."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tensorboard.compat.proto import event_pb2

from gpudoc.errors import InputError
from gpudoc.events.discover import Run, staging_beside
from gpudoc.events.files import OtherFiles, check_free, copy_all
from gpudoc.events.model import RUN_LEVEL, SUMMARY_FIELD, TagPlugins, decode, event_kinds, peek
from gpudoc.events.records import CorruptRecord, Damage, RecordReader, RecordWriter, file_crc, frame
from gpudoc.events.sessions import session_metric_records
from gpudoc.events.trim import TrimReport, TrimSpec, _Trimmer, reattach
from gpudoc.output import output_target, place

OVERLAP_POLICIES = ("keep-last", "keep-first", "error")
# The longest pause between two replayed records: a wall-time gap longer than a day (a run
# resumed weeks later) is replayed as one day.
MAX_WAIT = 86400.0


class OverlapError(InputError):
    """Runs given to merge share (tag, step) pairs and the policy is ``error``: the user has
    to choose one (bad usage, exit 2)."""


@dataclass
class MergeReport:
    """Records in and out, values dropped as overlaps per run, and run-level records dropped
    as exact repeats (every input starts with its own file_version; a resumed run repeats
    its graph)."""

    records_in: int = 0
    records_out: int = 0
    overlaps: dict[str, int] = field(default_factory=dict)
    repeated_run_level: int = 0
    damage: list[tuple[str, Damage]] = field(default_factory=list)
    reattached: int = 0


def _event(reader: RecordReader, offset: int, data: bytes, framed: bytes) -> event_pb2.Event | None:
    """The record's Event; one that is no Event is an error, or with salvage damage (None)."""
    try:
        return decode(data, reader.path, offset)
    except CorruptRecord as error:
        reader.skip_not_event(offset, len(framed), error)
        return None


def _summary_keys(runs: list[Run], salvage: bool) -> list[set[tuple[str, int]]]:
    """For each run, the (tag, step) pairs of its summary values."""
    keys = []
    for run in runs:
        found: set[tuple[str, int]] = set()
        for path in run.files:
            reader = RecordReader(path, salvage=salvage, whole=True)
            for offset, data, framed in reader:
                peeked = peek(data)
                if peeked is not None and peeked[2] != SUMMARY_FIELD:
                    continue
                event = _event(reader, offset, data, framed)
                if event is not None:
                    found.update((v.tag, event.step) for v in event.summary.value)
        keys.append(found)
    return keys


def merge(runs: list[Run], dest: Path, *, overlap: str, salvage: bool = False,
          progress: Callable[[int], None] | None = None) -> MergeReport:
    """Write ``runs`` (in the order given) as one event file ``dest``; a damaged or cut-off
    input is an error unless ``salvage`` skips the damage. ``progress`` gets each file's size
    once it is merged."""
    if overlap not in OVERLAP_POLICIES:
        raise InputError(f"--overlap {overlap!r}: one of {', '.join(OVERLAP_POLICIES)}")
    keys = _summary_keys(runs, salvage)
    drop: list[set[tuple[str, int]]] = []
    for i, own in enumerate(keys):
        others_after = set().union(*keys[i + 1 :]) if i + 1 < len(keys) else set()
        others_before = set().union(*keys[:i]) if i else set()
        if overlap == "error" and own & others_after:
            tag, step = min(own & others_after)
            raise OverlapError(
                f"run {runs[i].directory} and a later one both have {len(own & others_after)} (tag, step) pair(s), "
                f"e.g. {tag!r} at step {step}",
                "choose --overlap keep-last (a resumed run wins) or keep-first",
            )
        drop.append(own & (others_after if overlap == "keep-last" else others_before))
    report = MergeReport()
    target = output_target(dest)
    if target.stream:
        raise InputError(f"{dest}: not a regular file", "merge writes an event file into a run directory")
    temp = staging_beside(target.path)
    try:
        with open(temp, "wb") as handle:
            writer = RecordWriter(handle)
            seen_run_level: set[bytes] = set()
            tags = _Tags(TagPlugins(), set())
            for run, dropped in zip(runs, drop):
                count = 0
                for path in run.files:
                    reader = RecordReader(path, salvage=salvage, whole=True)
                    for offset, data, framed in reader:
                        event = _event(reader, offset, data, framed)
                        if event is None:
                            continue
                        report.records_in += 1
                        out, removed = _merge_record(event, framed, dropped, seen_run_level, tags, report)
                        count += removed
                        if out is not None:
                            writer.write_framed(out)
                    report.damage.extend((str(path), d) for d in reader.state.damage)
                    if progress is not None:
                        progress(path.stat().st_size)
                report.overlaps[str(run.directory)] = count
            report.records_out = writer.count
        if file_crc(temp) != (writer.crc, writer.size):
            raise InputError(f"{temp}: the merged file does not read back intact; nothing was written")
        place(temp, target.path)
    finally:
        temp.unlink(missing_ok=True)
    return report


@dataclass
class _Tags:
    """Each tag's metadata as read (dropped values too), and the tags whose metadata is out."""

    plugins: TagPlugins
    emitted: set[str]


def _merge_record(
    event: event_pb2.Event, framed: bytes, dropped: set[tuple[str, int]], seen: set[bytes], tags: _Tags,
    report: MergeReport,
) -> tuple[bytes | None, int]:
    """The framed bytes to write for one record (None: nothing) and how many of its values
    are dropped as overlaps; a tag whose metadata went with a dropped value gets it on its
    first kept one, as trim does."""
    kind = event_kinds(event)
    if kind is not None:
        if kind in RUN_LEVEL:
            which = event.WhichOneof("what") or "source_metadata"
            payload = getattr(event, which)
            content = payload if isinstance(payload, bytes) else (
                payload.encode() if isinstance(payload, str) else payload.SerializeToString()
            )
            signature = which.encode() + b"\0" + content
            if signature in seen:
                report.repeated_run_level += 1
                return None, 0
            seen.add(signature)
        return framed, 0
    tags.plugins.values(event)
    kept = [v for v in event.summary.value if (v.tag, event.step) not in dropped]
    removed = len(event.summary.value) - len(kept)
    attached = reattach(kept, tags.plugins, tags.emitted)
    report.reattached += attached
    if not removed and not attached:
        return framed, 0
    if not kept:
        return None, removed
    del event.summary.value[:]
    event.summary.value.extend(kept)
    return frame(event.SerializeToString()), removed


def _stream(
    run: Run, salvage: bool, damage: list[tuple[str, Damage]], spec: TrimSpec | None,
    metrics: dict[Path, dict[int, set[str]]],
) -> Iterator[tuple[float, Path, bytes | None, int]]:
    """``(wall, file, framed, size)`` of a run's records in its file order; a record without
    a wall time gets the previous one's. With a ``spec`` (a step range), ``framed`` is what
    trim keeps of the record (None: nothing) — run-level data, a tag's metadata moved to its
    first kept value, the hparams session metrics' last values (``metrics``: per file, those
    records' offsets). What salvage skips goes to ``damage``."""
    wall = 0.0
    trimmer = None if spec is None else _Trimmer(run.label, spec, TrimReport(), count=False)
    for path in run.files:
        reader = RecordReader(path, salvage=salvage, whole=True)
        held = metrics.get(path, {})
        for offset, data, framed in reader:
            peeked = peek(data)
            try:
                own = peeked[1] if peeked is not None else decode(data, path, offset).wall_time
                out = framed if trimmer is None else trimmer.record(data, framed, (path, offset),
                                                                    held.get(offset, frozenset()))
            except CorruptRecord as error:  # no Event (what trim parses, it parses with decode)
                reader.skip_not_event(offset, len(framed), error)
                continue
            wall = own or wall
            yield wall, path, out, len(framed)
        damage.extend((str(path), d) for d in reader.state.damage)


@dataclass
class ReplayReport:
    """Records written, (with ``salvage``) the damaged or cut-off stretches skipped, and the
    other files copied (``(source, copy)``) or left out (``(path, why)``)."""

    records: int = 0
    damage: list[tuple[str, Damage]] = field(default_factory=list)
    copied: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def replay(
    runs: list[Run],
    dest: Path,
    *,
    speed: float | None = None,
    rate: float | None = None,
    first_step: int | None = None,
    last_step: int | None = None,
    salvage: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int], None] | None = None,
    others: OtherFiles | None = None,
) -> ReplayReport:
    """Copy the runs' records into ``dest`` (each run into ``dest/<run name>``, mirroring the
    logdir) one at a time, flushed, in wall-time order across runs, waiting the recorded gap
    divided by ``speed`` (or 1/``rate`` s) between them. Of a step range, what trim keeps
    is replayed (run-level data too; a tag's metadata moves to its first replayed value).
    A damaged or cut-off input is an error before anything is written, unless ``salvage``
    skips the damage. ``progress`` gets the
    size of each record read. ``others`` (non-event files, by their path below the logdir)
    are copied into ``dest`` first, so a dashboard finds the projector's files from the start."""
    if (speed is None) == (rate is None):
        raise InputError("give exactly one of --speed and --rate")
    if (speed is not None and not speed > 0) or (rate is not None and not rate > 0):  # NaN too
        raise InputError("--speed and --rate must be positive numbers")
    if speed is not None and speed == math.inf:
        raise InputError("--speed must be a finite number")
    if rate is not None and rate * MAX_WAIT < 1:
        raise InputError(f"--rate {rate:g}: less than one record a day", "give a larger --rate")
    targets = {path: dest / run.name / path.name for run in runs for path in run.files}
    for target in targets.values():
        if target.exists():
            raise InputError(f"{target}: exists", "replay into an empty directory")
    others = others or OtherFiles()
    check_free(others, dest)
    ranged = first_step is not None or last_step is not None
    spec = TrimSpec(first_step, last_step) if ranged else None
    metrics = session_metric_records(runs) if ranged else {}
    if not salvage:  # every record read as it will be replayed, so that bad input writes nothing
        for run in runs:
            for _ in _stream(run, False, [], spec, metrics):
                pass
    report = ReplayReport(skipped=list(others.skipped))
    report.copied = copy_all(others, dest)
    streams = [_stream(run, salvage, report.damage, spec, metrics) for run in runs]
    heap: list[tuple[float, int, tuple[float, Path, bytes | None, int]]] = []
    for order, stream in enumerate(streams):
        first = next(stream, None)
        if first is not None:
            heapq.heappush(heap, (first[0], order, first))
    handles: dict[Path, tuple[BinaryIO, RecordWriter]] = {}
    previous: float | None = None
    try:
        while heap:
            _, order, (wall, path, framed, size) = heapq.heappop(heap)
            following = next(streams[order], None)
            if following is not None:
                heapq.heappush(heap, (following[0], order, following))
            if progress is not None:
                progress(size)
            if framed is None:
                continue
            if rate is not None:
                wait = 1.0 / rate if report.records else 0.0
            else:
                assert speed is not None
                wait = max(0.0, (wall - previous) / speed) if previous is not None and wall else 0.0
            wait = min(wait, MAX_WAIT)
            if wait:
                sleep(wait)
            if path not in handles:
                targets[path].parent.mkdir(parents=True, exist_ok=True)
                opened: BinaryIO = open(targets[path], "wb")  # noqa: SIM115 - closed in the finally below
                handles[path] = (opened, RecordWriter(opened))
            out, writer = handles[path]
            writer.write_framed(framed)
            out.flush()
            report.records += 1
            if wall:
                previous = wall
    finally:
        for opened, _ in handles.values():
            opened.close()
    return report
