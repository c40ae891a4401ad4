"""What an event record holds, decoding only as much as a question needs.

``step`` and ``wall_time`` come straight from the record's first bytes (protobuf writes fields
in number order, so they lead); the full ``Event`` is parsed only to learn tags and kinds.
"""

from __future__ import annotations

import enum
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from gpudoc.events.records import CorruptRecord

if TYPE_CHECKING:
    from tensorboard.compat.proto import event_pb2

# protobuf and tensorboard's Event are imported on the first decode (~20 ms at start-up that a
# trim the compiled core decides alone never needs).
_EVENT: Any = None
_DECODE_ERROR: type[Exception] = Exception

_DOUBLE = struct.Struct("<d")


class Kind(str, enum.Enum):
    """What a record or summary value is."""

    SCALAR = "scalar"
    HISTOGRAM = "histogram"
    IMAGE = "image"
    AUDIO = "audio"
    TEXT = "text"
    PR_CURVE = "pr_curve"
    TENSOR = "tensor"
    HPARAMS = "hparams"
    CUSTOM_SCALARS = "custom_scalars"
    GRAPH = "graph"
    RUN_METADATA = "run_metadata"
    SESSION_LOG = "session_log"
    FILE_VERSION = "file_version"
    LOG_MESSAGE = "log_message"
    SOURCE_METADATA = "source_metadata"
    METADATA = "metadata"


# What TensorBoard shows per run, not per step, is kept by a trim (unless asked otherwise)
# and by replay's step range: the file version, graphs (GraphDef, MetaGraphDef, tagged run
# metadata, and the graph plugins' summaries such as Keras's model), hparams sessions and
# experiments, the custom-scalars layout (its latest value is the dashboard's layout),
# source metadata. An hparams session's metric values are run-level too; trim and replay find
# those (see ``gpudoc.events.sessions``). The projector's config is a file beside the event
# files, copied as one (see ``gpudoc.events.files``).
RUN_LEVEL = frozenset({Kind.FILE_VERSION, Kind.GRAPH, Kind.RUN_METADATA, Kind.HPARAMS, Kind.CUSTOM_SCALARS,
                       Kind.SOURCE_METADATA})
# The Event fields (after wall_time and step) of run-level records: file_version, graph_def,
# tagged_run_metadata, meta_graph_def, source_metadata.
RUN_LEVEL_FIELDS = frozenset({3, 4, 8, 9, 10})
SUMMARY_FIELD = 5
# The records that tell TensorBoard how to read a restart are kept whatever the range or
# --drop-run-level: the file version (from version 2 on, restarts are marked, not guessed from
# steps going back) and SessionLog (a START drops the steps at and after its own that came
# before it: a restarted writer's purge_step). A trim that dropped them would show values
# TensorBoard had superseded, or hide ones it shows.
FILE_VERSION_FIELD, SESSION_LOG_FIELD = 3, 7
STRUCTURAL = frozenset({Kind.FILE_VERSION, Kind.SESSION_LOG})
_PLUGIN_KINDS = {
    "scalars": Kind.SCALAR,
    "histograms": Kind.HISTOGRAM,
    "images": Kind.IMAGE,
    "audio": Kind.AUDIO,
    "text": Kind.TEXT,
    "pr_curves": Kind.PR_CURVE,
    "hparams": Kind.HPARAMS,
    "custom_scalars": Kind.CUSTOM_SCALARS,
    # tensorboard.plugins.graph.metadata: Keras's model (tag "keras"), tf.summary.trace_export.
    "graphs": Kind.GRAPH,
    "graph_keras_model": Kind.GRAPH,
    "graph_run_metadata": Kind.GRAPH,
    "graph_run_metadata_graph": Kind.GRAPH,
    "graph_tagged_run_metadata": Kind.GRAPH,
}
# Bytes that every record carrying a run-level summary value's metadata contains: the hparams
# tags' prefix, the graph plugins' names and the custom-scalars plugin's name.
RUN_LEVEL_MARKS = (b"_hparams_/", b"graph_", b"custom_scalars")


def peek(data: bytes) -> tuple[int, float, int] | None:
    """``(step, wall_time, what)`` from the leading fields — ``what`` is the number of the
    Event field that follows (3 file_version, 4 graph_def, 5 summary, 6 log_message,
    7 session_log, 8 tagged_run_metadata, 9 meta_graph_def, 10 source_metadata; 0 none) —
    or None when the record does not start in canonical field order (then parse it)."""
    pos, wall, step = 0, 0.0, 0
    size = len(data)
    if size >= 9 and data[0] == 0x09:
        (wall,) = _DOUBLE.unpack_from(data, 1)
        pos = 9
    if pos < size and data[pos] == 0x10:
        pos += 1
        shift = 0
        while True:
            if pos >= size:
                return None
            byte = data[pos]
            pos += 1
            step |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 63:  # longer than a 64-bit varint: the parser decides
                return None
        step &= 0xFFFFFFFFFFFFFFFF  # the low 64 bits, as protobuf keeps them
        if step >= 1 << 63:
            step -= 1 << 64
    if pos >= size:
        return step, wall, 0
    # Fields 3-10 are all length-delimited; anything else (a repeated field, a stray key, bytes
    # that are no Event at all) is left to the parser.
    key = data[pos]
    if key & 7 != 2 or not 3 <= key >> 3 <= 10:
        return None
    return step, wall, key >> 3


def file_version_wall(data: bytes) -> float | None:
    """The wall time of a record that is exactly an Event of a wall time, a step and an ASCII
    ``file_version`` (every writer's first record), read without protobuf (~12 ms of imports
    a file of plain scalars needs for nothing else); None for any other record: parse it."""
    size = len(data)
    wall, pos = (_DOUBLE.unpack_from(data, 1)[0], 9) if size >= 9 and data[0] == 0x09 else (0.0, 0)
    if pos < size and data[pos] == 0x10:  # the step: a varint, of at most 9 bytes here
        last = pos + 1
        while last < size and data[last] & 0x80 and last - pos < 9:
            last += 1
        if last >= size or data[last] & 0x80:
            return None
        pos = last + 1
    if pos >= size or data[pos] != 0x1A:
        return None
    length, shift, pos = 0, 0, pos + 1
    while pos < size and shift < 28:  # the string's length: a varint of at most 4 bytes here
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            break
    else:
        return None
    return wall if pos + length == size and data[pos:].isascii() else None


def _event_type() -> Any:
    global _EVENT, _DECODE_ERROR
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2

    _EVENT, _DECODE_ERROR = event_pb2.Event, DecodeError
    return _EVENT


def decode(data: bytes, path: Path, offset: int) -> event_pb2.Event:
    """The record's Event. A record whose CRCs check but whose bytes are no Event (a TFRecord
    file of something else) is a :class:`CorruptRecord` naming the file and offset."""
    event = _EVENT or _event_type()
    try:
        return event.FromString(data)
    except _DECODE_ERROR:
        raise CorruptRecord(
            f"{path}: the record at byte {offset} is not a TensorBoard Event (its CRCs check, its bytes do not parse)",
            "this is not an event file (a TFRecord file of something else?)",
        ) from None


class ValueInfo(NamedTuple):
    """One summary value: its tag, kind, plugin, and whether it carries the tag's metadata."""

    tag: str
    kind: Kind
    plugin: str
    has_metadata: bool


def value_kind(value: event_pb2.Summary.Value, plugin: str) -> Kind:
    """The kind of a summary value; ``plugin`` is the tag's plugin (from its first value)."""
    which = value.WhichOneof("value")
    if which == "simple_value":
        return Kind.SCALAR
    if which == "histo":
        return Kind.HISTOGRAM
    if which == "image":
        return Kind.IMAGE
    if which == "audio":
        return Kind.AUDIO
    if which is None:
        return Kind.HPARAMS if value.tag.startswith("_hparams_/") or plugin == "hparams" else Kind.METADATA
    return _PLUGIN_KINDS.get(plugin, Kind.TENSOR)


def event_kinds(event: event_pb2.Event) -> Kind | None:
    """The record's kind when it is not a summary (None for a summary)."""
    which = event.WhichOneof("what")
    if which == "summary":
        return None
    return {
        "file_version": Kind.FILE_VERSION,
        "graph_def": Kind.GRAPH,
        "meta_graph_def": Kind.GRAPH,
        "tagged_run_metadata": Kind.RUN_METADATA,
        "session_log": Kind.SESSION_LOG,
        "log_message": Kind.LOG_MESSAGE,
    }.get(which or "", Kind.SOURCE_METADATA if event.HasField("source_metadata") else Kind.METADATA)


class TagPlugins:
    """Remembers each tag's plugin and metadata, which only its first value carries."""

    def __init__(self) -> None:
        self.plugins: dict[str, str] = {}
        self.metadata: dict[str, bytes] = {}
        # Tags of run-level values: their later values may lack the metadata that says so.
        self.run_level: set[bytes] = set()

    def values(self, event: event_pb2.Event) -> list[ValueInfo]:
        found = []
        for value in event.summary.value:
            has = value.HasField("metadata")
            if has and value.tag not in self.plugins:
                self.plugins[value.tag] = value.metadata.plugin_data.plugin_name
                self.metadata[value.tag] = value.metadata.SerializeToString()
            plugin = self.plugins.get(value.tag, "")
            kind = value_kind(value, plugin)
            if kind in RUN_LEVEL:
                self.run_level.add(value.tag.encode())
            found.append(ValueInfo(value.tag, kind, plugin, has))
        return found

    def may_be_run_level(self, data: bytes) -> bool:
        """Whether a summary record, unparsed, may hold a run-level value (a cheap byte
        search: its metadata names the plugin, or it mentions a known run-level tag)."""
        return any(mark in data for mark in RUN_LEVEL_MARKS) or any(tag in data for tag in self.run_level)


def is_start(event: event_pb2.Event) -> bool:
    """Whether the record is a SessionLog.START (a writer restart)."""
    return event.HasField("session_log") and event.session_log.status == event.session_log.START
