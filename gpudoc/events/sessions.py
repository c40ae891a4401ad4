"""HParams sessions' metric values: run-level data that is written as ordinary scalars.

TensorBoard's HParams table shows, per session (a run holding ``_hparams_/session_start_info``),
the last value of each metric: a scalar tag of the session's run or of a run below it (the
metric's group, as Keras's ``train``/``validation``). The metrics are the ones the experiment
(``_hparams_/experiment``) names, or, without an experiment, every scalar tag of those runs.
A trim keeps these values whatever its step range, as it keeps the session itself.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Container, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from gpudoc.events.discover import Run
from gpudoc.events.model import SUMMARY_FIELD, Kind, TagPlugins, decode, peek
from gpudoc.events.records import CorruptRecord, RecordReader

if TYPE_CHECKING:
    from tensorboard.compat.proto import event_pb2

# Every record that names an hparams session or experiment holds this (trim finds it in the
# records it reads, and asks for the sessions only when one does).
PREFIX = b"_hparams_/"
_SESSION = "_hparams_/session_start_info"
_EXPERIMENT = "_hparams_/experiment"
_BLOCK = 1 << 22


def _mentions(path: Path, needle: bytes) -> bool:
    """Whether the file's bytes contain ``needle`` (a raw scan, much cheaper than reading records)."""
    with open(path, "rb") as handle:
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return mapped.find(needle) >= 0
        except (OSError, ValueError):  # empty, or not mappable (a pipe): read it in blocks
            pass
        tail = b""
        while block := handle.read(_BLOCK):
            if needle in tail + block:
                return True
            tail = block[-len(needle) :]
    return False


def _events(path: Path, wanted: Callable[[bytes], bool]) -> Iterator[tuple[int, event_pb2.Event]]:
    """``(offset, Event)`` of the file's intact records whose bytes ``wanted`` accepts. Damage
    is passed over: a record that fails its CRCs, and one whose CRCs check but whose bytes are
    no Event (the commands' own reading of the file reports both, as an error or, with
    ``--salvage``, as damage skipped)."""
    reader = RecordReader(path, salvage=True)
    for offset, data, framed in reader:
        if not wanted(data):
            continue
        try:
            event = decode(data, path, offset)
        except CorruptRecord as error:
            reader.skip_not_event(offset, len(framed), error)  # (a salvage reader: never raises)
            continue
        yield offset, event


def _may_hold(tags: list[bytes] | None, data: bytes) -> bool:
    """Whether a record may hold a value of one of ``tags`` (any scalar's, None): a summary
    (or a record not in canonical field order) that mentions one."""
    peeked = peek(data)
    if peeked is not None and peeked[2] != SUMMARY_FIELD:
        return False
    return tags is None or any(tag in data for tag in tags)


def _hparams_values(run: Run, mentioned: Container[Path] | None) -> tuple[bool, set[tuple[str, str]]]:
    """Whether ``run`` holds a session, and the (group, tag) metrics its experiments name
    (``mentioned``: the files known to hold the prefix, if known)."""
    session = False
    metrics: set[tuple[str, str]] = set()
    for path in run.files:
        if not (_mentions(path, PREFIX) if mentioned is None else path in mentioned):
            continue
        for _, event in _events(path, lambda data: PREFIX in data):
            for value in event.summary.value:
                if value.tag == _SESSION:
                    session = True
                elif value.tag == _EXPERIMENT and value.HasField("metadata"):
                    metrics.update(_experiment_metrics(value.metadata.plugin_data.content))
    return session, metrics


def _experiment_metrics(content: bytes) -> set[tuple[str, str]]:
    """The (group, tag) metrics an experiment's plugin data names (none if it does not parse)."""
    from google.protobuf.message import DecodeError
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        parsed = plugin_data_pb2.HParamsPluginData.FromString(content)
    except DecodeError:
        return set()
    return {(m.name.group.strip("/"), m.name.tag) for m in parsed.experiment.metric_infos}


def session_metric_records(
    runs: list[Run], mentioned: Container[Path] | None = None,
) -> dict[Path, dict[int, set[str]]]:
    """For each file, the byte offsets of the records that hold a session metric's last
    value, with the tags whose value that is; ``mentioned``, when given, holds every file
    whose records hold :data:`PREFIX` (the others are not searched)."""
    sessions: list[Path] = []
    metrics: set[tuple[str, str]] = set()
    for run in runs:
        session, named = _hparams_values(run, mentioned)
        metrics |= named
        if session:
            sessions.append(run.directory.resolve())
    if not sessions:
        return {}
    keep: dict[Path, dict[int, set[str]]] = {}
    for run in runs:
        directory = run.directory.resolve()
        owners = [s for s in sessions if s == directory or s in directory.parents]
        if not owners:
            continue
        group = os.path.relpath(directory, max(owners, key=lambda s: len(s.parts)))
        group = "" if group == "." else group
        wanted = {tag for g, tag in metrics if g == group} if metrics else None
        if wanted == set():
            continue
        last: dict[str, tuple[Path, int]] = {}
        plugins = TagPlugins()
        holds = partial(_may_hold, None if wanted is None else [tag.encode() for tag in wanted])
        for path in run.files:
            for offset, event in _events(path, holds):
                for info in plugins.values(event):
                    if info.kind is Kind.SCALAR and (wanted is None or info.tag in wanted):
                        last[info.tag] = (path, offset)
        for tag, (path, offset) in last.items():
            keep.setdefault(path, {}).setdefault(offset, set()).add(tag)
    return keep
