"""``events info``: what a run holds, where it restarts, what is duplicated or damaged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudoc.events.discover import Run, discover
from gpudoc.events.model import RUN_LEVEL, Kind, TagPlugins, ValueInfo, decode, event_kinds, file_version_wall, is_start
from gpudoc.events.records import CorruptRecord, Damage, RecordReader, Scalars, scalar_decoder
from gpudoc.events.sessions import session_metric_records
from gpudoc.output import to_jsonable


@dataclass
class TagStats:
    """One tag: its kind and plugin, how many values, their step range, repeated steps, and
    how TensorBoard shows it: ``per step``, ``per run`` (graphs, hparams, the custom-scalars
    layout) or ``per step; last value in the HParams table`` (an hparams session metric)."""

    tag: str
    kind: str
    plugin: str
    count: int = 0
    step_min: int | None = None
    step_max: int | None = None
    duplicate_steps: int = 0
    shown: str = "per step"


@dataclass(frozen=True)
class Restart:
    """A writer restart: a SessionLog.START (``start``) or a tag whose steps went back
    (``backwards``), with the points written earlier at steps at or after it."""

    file: str
    record: int
    step: int
    cause: str
    tag: str | None
    earlier_points: int
    resolution: str


@dataclass(frozen=True)
class FileInfo:
    path: str
    bytes: int
    records: int
    partial_bytes: int
    damage: tuple[Damage, ...]


@dataclass
class RunInfo:
    """A run's summary. ``records_by_kind`` counts every record once: by the Event field it
    holds (``summary`` for summaries), ``damaged`` for one salvage skipped; they add up to
    ``records``. ``values_by_kind`` counts the summaries' values by kind."""

    run: str
    files: list[FileInfo] = field(default_factory=list)
    records: int = 0
    bytes: int = 0
    step_min: int | None = None
    step_max: int | None = None
    wall_start: float | None = None
    wall_end: float | None = None
    records_by_kind: dict[str, int] = field(default_factory=dict)
    values_by_kind: dict[str, int] = field(default_factory=dict)
    tags: list[TagStats] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """Damaged stretches and incomplete tails."""
        return sum(len(f.damage) + (1 if f.partial_bytes else 0) for f in self.files)


def _start_resolution(earlier: int, step: int) -> str:
    if not earlier:
        return "no earlier point at or after this step: nothing to resolve"
    return (
        f"TensorBoard drops the {earlier} earlier point(s) at steps ≥ {step} (purge); readers that "
        "ignore SessionLog.START (tbparse, the plugin event accumulator) keep both as duplicates"
    )


def _backwards_resolution(earlier: int, step: int) -> str:
    return (
        f"no SessionLog.START: TensorBoard keeps the {earlier} earlier point(s) at steps ≥ {step} and the new "
        "ones (duplicated steps); 'gpudoc events export --on-restart purge' keeps only the new ones"
    )


def run_info(run: Run, root: Path, metric_tags: frozenset[str] = frozenset()) -> RunInfo:
    """Read every file of ``run`` in salvage mode (so damage is reported, not fatal);
    ``metric_tags`` are its hparams session metrics. With the compiled core, runs of scalar
    records are decoded and counted in C (:func:`_compiled_info`), with the same result."""
    info = RunInfo(run=run.label)
    values: Counter[str] = Counter()
    records: Counter[str] = Counter()
    decoder = scalar_decoder(tally=True)
    if decoder is not None:
        stats = _compiled_info(info, run, root, decoder, values, records)
    else:
        stats = _python_info(info, run, root, values, records)
    if info.records > sum(records.values()):
        records["damaged"] = info.records - sum(records.values())
    info.records_by_kind = dict(sorted(records.items()))
    info.values_by_kind = dict(sorted(values.items()))
    for tag in stats.values():
        if Kind(tag.kind) in RUN_LEVEL:
            tag.shown = "per run"
        elif tag.tag in metric_tags and tag.kind == Kind.SCALAR.value:
            tag.shown = "per step; last value in the HParams table"
    info.tags = sorted(stats.values(), key=lambda t: (t.kind, t.tag))
    return info


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root) if path.is_relative_to(root) else path)


def _file_done(info: RunInfo, path: Path, root: Path, reader: RecordReader) -> None:
    size = path.stat().st_size
    info.files.append(FileInfo(_shown(path, root), size, reader.state.records, reader.state.partial,
                               tuple(reader.state.damage)))
    info.records += reader.state.records
    info.bytes += size


def _tag_stats(stats: dict[str, TagStats], value: Any) -> TagStats:
    """The tag's stats, made at its first value; a value that is not metadata names its kind."""
    tag = stats.setdefault(value.tag, TagStats(value.tag, value.kind.value, value.plugin))
    if value.kind is not Kind.METADATA:
        tag.kind, tag.plugin = value.kind.value, value.plugin
    return tag


def _decoded(reader: RecordReader, path: Path, offset: int, data: bytes, framed: bytes) -> Any:
    """The record's Event, or None when it is intact but no Event (counted as damage)."""
    try:
        return decode(data, path, offset)
    except CorruptRecord as error:
        reader.skip_not_event(offset, len(framed), error)  # (info reads in salvage mode: never raises)
        return None


def _flag_undecodable(reader: RecordReader, event: Any, found: Sequence[ValueInfo], offset: int,
                      framed: bytes) -> None:
    """A scalar held as a tensor that does not decode (export refuses it, TensorBoard's
    make_ndarray too) is damage: counted, and flagged as export would report it. (Only a
    tensor other than a float scalar brings in numpy and TensorBoard's tensor_util.)"""
    for value, found_info in zip(event.summary.value, found):
        if found_info.kind is Kind.SCALAR and value.WhichOneof("value") != "simple_value":
            from gpudoc.events.export import UndecodableValue, scalar_tensor_value, tensor_array

            if scalar_tensor_value(value.tensor) is not None:
                continue
            try:
                tensor_array(value.tensor)
            except UndecodableValue as exc:
                reader.state.damage.append(Damage(offset, offset + len(framed),
                                                  f"tag {value.tag!r}: {exc}; export refuses it"))


def _python_info(info: RunInfo, run: Run, root: Path, values: Counter[str],
                 records: Counter[str]) -> dict[str, TagStats]:
    """The pure-Python loop: every record parsed, every value counted here."""
    plugins = TagPlugins()
    stats: dict[str, TagStats] = {}
    steps_seen: dict[str, set[int]] = {}
    last_step: dict[str, int] = {}
    for path in run.files:
        reader = RecordReader(path, salvage=True)
        index = -1
        for offset, data, framed in reader:
            index += 1
            event = _decoded(reader, path, offset, data, framed)
            if event is None:
                continue
            step, wall = event.step, event.wall_time
            if wall:
                info.wall_start = wall if info.wall_start is None else min(info.wall_start, wall)
                info.wall_end = wall if info.wall_end is None else max(info.wall_end, wall)
            kind = event_kinds(event)
            records[kind.value if kind is not None else "summary"] += 1
            if kind is not None:
                if is_start(event):
                    earlier = sum(sum(1 for s in seen if s >= step) for seen in steps_seen.values())
                    info.restarts.append(Restart(_shown(path, root), index, step, "start", None, earlier,
                                                 _start_resolution(earlier, step)))
                    last_step.clear()
                continue
            _step_range(info, step)
            found = plugins.values(event)
            _flag_undecodable(reader, event, found, offset, framed)
            for value in found:
                values[value.kind.value] += 1
                tag = _tag_stats(stats, value)
                tag.count += 1
                tag.step_min = step if tag.step_min is None else min(tag.step_min, step)
                tag.step_max = step if tag.step_max is None else max(tag.step_max, step)
                seen = steps_seen.setdefault(value.tag, set())
                if step in seen:
                    tag.duplicate_steps += 1
                previous = last_step.get(value.tag)
                if previous is not None and step < previous:
                    earlier = sum(1 for s in seen if s >= step)
                    info.restarts.append(Restart(_shown(path, root), index, step, "backwards", value.tag, earlier,
                                                 _backwards_resolution(earlier, step)))
                seen.add(step)
                last_step[value.tag] = step
        _file_done(info, path, root, reader)
    return stats


def _compiled_info(info: RunInfo, run: Run, root: Path, decoder: Any, values: Counter[str],
                   records: Counter[str]) -> dict[str, TagStats]:
    """:func:`_python_info`'s loop with the compiled ``decoder`` keeping every count (per-tag
    values, step ranges, repeated steps, steps going back, the run's step and time range):
    it reads runs of scalar records itself, and the records it leaves are parsed here and
    counted through it too."""
    plugins = TagPlugins()
    stats: dict[str, TagStats] = {}
    for path in run.files:
        reader = RecordReader(path, salvage=True)
        index = -1
        for item in reader.scalars(decoder):
            if isinstance(item, Scalars):
                records["summary"] += item.records
                if item.values:  # (a summary of no values counts no kind)
                    values[Kind.SCALAR.value] += item.values
                for i in item.tags:  # their values are scalars: the tag's last kind and plugin
                    name = decoder.name(i)
                    plugin = plugins.plugins.get(name, "")
                    found = stats.get(name)
                    if found is None:
                        stats[name] = TagStats(name, Kind.SCALAR.value, plugin)
                    else:
                        found.kind, found.plugin = Kind.SCALAR.value, plugin
                for record, i, step, earlier in item.backwards:
                    info.restarts.append(Restart(_shown(path, root), index + 1 + record, step, "backwards",
                                                 decoder.name(i), earlier, _backwards_resolution(earlier, step)))
                index += item.records
                continue
            offset, data, framed = item
            index += 1
            wall = file_version_wall(data)
            if wall is not None:  # the file's version: counted as parsed, without protobuf
                decoder.wall(wall)
                records[Kind.FILE_VERSION.value] += 1
                continue
            event = _decoded(reader, path, offset, data, framed)
            if event is None:
                continue
            step = event.step
            decoder.wall(event.wall_time)
            kind = event_kinds(event)
            records[kind.value if kind is not None else "summary"] += 1
            if kind is not None:
                if is_start(event):
                    earlier = decoder.start(step)
                    info.restarts.append(Restart(_shown(path, root), index, step, "start", None, earlier,
                                                 _start_resolution(earlier, step)))
                continue
            decoder.step(step)
            found = plugins.values(event)
            _flag_undecodable(reader, event, found, offset, framed)
            for value in found:
                values[value.kind.value] += 1
                tag = _tag_stats(stats, value)
                i = decoder.index(value.tag)
                if value.has_metadata:
                    decoder.learn(i, plugins.plugins[value.tag])
                _, earlier = decoder.add(i, step)
                if earlier >= 0:
                    info.restarts.append(Restart(_shown(path, root), index, step, "backwards", value.tag, earlier,
                                                 _backwards_resolution(earlier, step)))
        _file_done(info, path, root, reader)
    for tag in stats.values():
        tag.count, tag.step_min, tag.step_max, tag.duplicate_steps = decoder.stats(decoder.index(tag.tag))
    info.step_min, info.step_max, info.wall_start, info.wall_end = decoder.ranges()
    return stats


def _step_range(info: RunInfo, step: int) -> None:
    info.step_min = step if info.step_min is None else min(info.step_min, step)
    info.step_max = step if info.step_max is None else max(info.step_max, step)


def describe(paths: Sequence[str], progress: Callable[[str], None] | None = None, *,
             unreadable: list[str] | None = None) -> list[tuple[str, RunInfo]]:
    """``events info``: ``(path, info)`` of every run of each path, in order, with each run's
    hparams session metrics named; ``progress`` gets each run's name before it is read;
    directories that cannot be listed go to ``unreadable`` (:func:`discover`)."""
    infos: list[tuple[str, RunInfo]] = []
    for path in paths:
        root, runs = discover(path, unreadable)
        metrics = session_metric_records(runs)  # (records that are no Events: run_info reports them)
        for run in runs:
            if progress is not None:
                progress(run.label)
            tags = frozenset(t for f in run.files for held in metrics.get(f, {}).values() for t in held)
            infos.append((path, run_info(run, root, tags)))
    return infos


def info_json(infos: Sequence[tuple[str, RunInfo]]) -> list[dict[str, Any]]:
    """What ``events info --json`` prints."""
    return [{"path": p, **to_jsonable(i)} for p, i in infos]
