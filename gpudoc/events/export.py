"""``events export``: a long table (run, tag, kind, step, wall_time, value; CSV adds
value_type) of every value — no sampling, no cap — with an explicit policy for restarted
writers."""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from gpudoc.errors import EnvironmentMissing, GpudocError, InputError
from gpudoc.events.discover import Run
from gpudoc.events.model import Kind, TagPlugins, decode, file_version_wall, is_start
from gpudoc.events.records import CorruptRecord, Damage, RecordReader, Scalars, damage_json, scalar_decoder
from gpudoc.output import atomic_file, output_target, printable, write_all

if TYPE_CHECKING:
    import numpy as np
    from tensorboard.compat.proto import event_pb2

EXPORTABLE = frozenset({Kind.SCALAR, Kind.HISTOGRAM, Kind.TENSOR, Kind.TEXT, Kind.PR_CURVE})
FORMATS = ("csv", "jsonl", "parquet")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def format_for(dest: Path | str, fmt: str | None) -> str:
    """The table format: ``fmt``, else from the output's suffix; a name without a suffix
    (``-``, ``/dev/stdout``) is CSV, an unknown suffix is refused rather than guessed."""
    if fmt is not None:
        return fmt
    suffix = Path(dest).suffix.lower() if str(dest) != "-" else ""
    if not suffix:
        return "csv"
    if suffix not in SUFFIXES:
        raise InputError(f"{dest}: no table format is named by the suffix {suffix!r}",
                         "name the file .csv, .jsonl or .parquet, or pass --format csv|jsonl|parquet")
    return SUFFIXES[suffix]


@dataclass
class ExportReport:
    """Rows written, rows dropped by ``--on-restart purge`` per run, and (with ``salvage``)
    the damaged or cut-off stretches skipped, per file."""

    rows: int = 0
    purged: dict[str, int] = field(default_factory=dict)
    damage: list[tuple[str, Damage]] = field(default_factory=list)


def export_json(output: str, fmt: str, report: ExportReport) -> dict[str, object]:
    """What ``events export --json`` prints."""
    return {"output": output, "format": fmt, "rows": report.rows, "purged": report.purged,
            "damage": damage_json(report.damage)}


class UndecodableValue(ValueError):
    """A tensor whose dtype, shape and contents do not make an array (TensorBoard's
    ``make_ndarray`` refuses it too)."""


def tensor_array(tensor: Any) -> np.ndarray:
    """``make_ndarray`` of a TensorProto, or :class:`UndecodableValue` saying why it is none:
    an unknown dtype, contents that do not fill the shape, a byte count that is no whole
    number of elements. (numpy and TensorBoard's tensor_util, ~100 ms of imports, are loaded
    here, at the first tensor: plain scalars never need them.)"""
    from tensorboard.util import tensor_util

    try:
        return tensor_util.make_ndarray(tensor)
    except (ValueError, TypeError, KeyError) as e:
        shape = [d.size for d in tensor.tensor_shape.dim]
        raise UndecodableValue(f"tensor of dtype {tensor.dtype} and shape {shape} cannot be decoded ({e})") from None


# DT_FLOAT and DT_DOUBLE: the field of their values, and their bytes in tensor_content.
_FLOAT_TENSORS = {1: ("float_val", struct.Struct("=f")), 2: ("double_val", struct.Struct("=d"))}


def scalar_tensor_value(tensor: Any) -> float | None:
    """The value of a float or double tensor of shape [] (how tf.summary and Keras write a
    scalar), as ``tensor_array(tensor).item()`` gives it, read without numpy; None for any
    other tensor, and for one that does not decode (:func:`tensor_array` says why)."""
    layout = _FLOAT_TENSORS.get(tensor.dtype)
    if layout is None or tensor.tensor_shape.dim:
        return None
    field, packed = layout
    content = tensor.tensor_content
    if content:  # (make_ndarray reads the bytes first, whatever the value fields hold)
        return packed.unpack(content)[0] if len(content) == packed.size else None
    values = getattr(tensor, field)
    return values[0] if len(values) == 1 else None


def _value(value: event_pb2.Summary.Value, kind: Kind) -> Any:
    if value.WhichOneof("value") == "simple_value":
        return float(value.simple_value)
    if kind is Kind.HISTOGRAM and value.HasField("histo"):
        h = value.histo
        return {"min": h.min, "max": h.max, "num": h.num, "sum": h.sum, "sum_squares": h.sum_squares,
                "bucket_limit": list(h.bucket_limit), "bucket": list(h.bucket)}
    number = scalar_tensor_value(value.tensor)
    if number is not None:
        return number
    array = tensor_array(value.tensor)
    if array.dtype.kind in "SO":
        decoded = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in array.ravel().tolist()]
        return decoded[0] if array.size == 1 else decoded
    return array.item() if array.size == 1 else array.tolist()


# A value as the compiled decoder packs it (gpudoc/events/_scan.c's Row): step, wall time,
# value, tag index, record.
_PACKED = struct.Struct("<qddii")


@dataclass
class _Tags:
    """A run's tag names by the decoder's index, and their CSV line starts, as they are met."""

    run: str
    decoder: Any
    names: list[str] = field(default_factory=list)
    prefixes: list[bytes] = field(default_factory=list)

    def update(self) -> None:
        while len(self.names) < len(self.decoder):
            self.names.append(self.decoder.name(len(self.names)))
        while len(self.prefixes) < len(self.names):
            # The run, tag and kind fields exactly as csv.writer quotes them, then the comma.
            line = io.StringIO()
            csv.writer(line).writerow((self.run, self.names[len(self.prefixes)], Kind.SCALAR.value, ""))
            self.prefixes.append(line.getvalue().removesuffix("\r\n").encode())


class ScalarRows(NamedTuple):
    """Scalar rows the compiled decoder read, packed (``rows_of(..., bulk=True)``)."""

    columns: bytes
    tags: _Tags

    def __len__(self) -> int:
        return len(self.columns) // _PACKED.size

    def rows(self) -> Iterator[tuple[Any, ...]]:
        run, names, kind = self.tags.run, self.tags.names, Kind.SCALAR.value
        return ((run, names[tag], kind, step, wall, value)
                for step, wall, value, tag, _ in _PACKED.iter_unpack(self.columns))

    def csv(self) -> bytes:
        """The rows as :func:`_text` writes them with csv.writer (floats as their repr), UTF-8."""
        from gpudoc.events import _scan

        return bytes(_scan.csv(self.columns, self.tags.prefixes))


@dataclass
class _Purge:
    """``--on-restart purge``: the rows kept so far; a restart drops the ones it supersedes."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    last: dict[str, int] = field(default_factory=dict)
    dropped: int = 0

    def start(self, step: int) -> None:
        before = len(self.rows)
        self.rows = [r for r in self.rows if r[3] < step]
        self.dropped += before - len(self.rows)
        self.last.clear()

    def add(self, row: tuple[Any, ...]) -> None:
        tag, step = row[1], row[3]
        previous = self.last.get(tag)
        if previous is not None and step < previous:
            before = len(self.rows)
            self.rows = [r for r in self.rows if r[1] != tag or r[3] < step]
            self.dropped += before - len(self.rows)
        self.last[tag] = step
        self.rows.append(row)


def rows_of(
    run: Run,
    kinds: frozenset[Kind],
    purge: bool,
    report: ExportReport,
    progress: Callable[[int], None] | None = None,
    *,
    salvage: bool = False,
    whole: bool = False,
    bulk: bool = False,
) -> Iterator[Any]:
    """``(run, tag, kind, step, wall_time, value)`` in file order; with ``purge``, the rows a
    restart supersedes (steps at or after it, written before it) are left out. ``salvage``
    and ``whole`` are :class:`RecordReader`'s; what salvage skips goes to ``report.damage``.
    With the compiled core, runs of scalar records are decoded in C; with ``bulk`` (and no
    ``purge``) their rows come as :class:`ScalarRows`, in order among the other rows."""
    plugins = TagPlugins()
    decoder = scalar_decoder()
    name = printable(run.label)  # (a directory name that is not UTF-8: its bytes as \xff)
    tags = _Tags(name, decoder)
    purged = _Purge()
    for path in run.files:
        reader = RecordReader(path, salvage=salvage, whole=whole)
        for item in reader.scalars(decoder):
            if isinstance(item, Scalars):
                if not item.values or Kind.SCALAR not in kinds:
                    continue
                tags.update()
                chunk = ScalarRows(item.columns or b"", tags)
                if not purge:
                    if bulk:
                        yield chunk
                    else:
                        yield from chunk.rows()
                    continue
                for row in chunk.rows():
                    purged.add(row)
                continue
            offset, data, framed = item
            if file_version_wall(data) is not None:  # the file's version: no value (read without protobuf)
                continue
            try:
                event = decode(data, path, offset)
            except CorruptRecord as error:
                reader.skip_not_event(offset, len(framed), error)
                continue
            if is_start(event) and purge:
                purged.start(event.step)
                continue
            if not event.HasField("summary"):
                continue
            found = plugins.values(event)
            if decoder is not None:  # a tag's first metadata names its plugin: the decoder learns it
                for info in found:
                    if info.has_metadata:
                        decoder.learn(decoder.index(info.tag), plugins.plugins[info.tag])
            for value, info in zip(event.summary.value, found):
                if info.kind not in kinds:
                    continue
                try:
                    decoded = _value(value, info.kind)
                except UndecodableValue as e:
                    if not salvage:
                        raise InputError(f"{path}: offset {offset}: tag {info.tag!r}: {e}",
                                         "rewrite the value, or pass --salvage to skip it") from None
                    reader.state.damage.append(Damage(offset, offset + len(framed),
                                                      f"tag {info.tag!r}: {e}; value skipped"))
                    continue
                row = (name, info.tag, info.kind.value, event.step, event.wall_time, decoded)
                if purge:
                    purged.add(row)
                else:
                    yield row
        report.damage.extend((str(path), d) for d in reader.state.damage)
        if progress is not None:
            progress(path.stat().st_size)
    if purged.dropped:
        report.purged[name] = purged.dropped
    yield from purged.rows


def export(
    runs: list[Run],
    dest: Path,
    *,
    fmt: str,
    kinds: frozenset[Kind],
    purge: bool,
    salvage: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write every run's values to ``dest`` (atomically); a damaged or cut-off file, a record
    that is no Event or a value that does not decode is an error unless ``salvage`` skips it.
    A stream (stdout, a pipe) cannot be taken back: without ``salvage`` every file is read and
    every value decoded before the first row is written, so bad input writes none. Should a
    file still fail when it is read again (a writer appending to it meanwhile), the error says
    how many rows were written. ``progress`` gets each file's size once it is read."""
    unsupported = kinds - EXPORTABLE
    if unsupported:
        names = ", ".join(sorted(k.value for k in unsupported))
        raise InputError(f"--kinds: {names} cannot be exported as table values (binary or run-level)",
                         "trim keeps them; export takes scalar, histogram, tensor, text, pr_curve")
    stream = output_target(dest).stream
    if stream and not salvage and fmt != "parquet":  # (parquet holds every row before it writes)
        for run in runs:
            for _ in rows_of(run, kinds, False, ExportReport(), whole=True, bulk=True):
                pass
    report = ExportReport()
    rows = (r for run in runs
            for r in rows_of(run, kinds, purge, report, progress, salvage=salvage, whole=True, bulk=fmt == "csv"))
    try:
        with atomic_file(dest, "wb" if fmt == "parquet" else "w") as out:
            if fmt == "parquet":
                _parquet(rows, out, report)
            else:
                _text(rows, out, fmt, report)
    except GpudocError as error:
        if stream and report.rows:
            error.message += f" ({report.rows} rows were written to {dest} before this: the table there is incomplete)"
        raise
    return report


_COLUMNS = ("run", "tag", "kind", "step", "wall_time", "value")


def csv_value(value: Any) -> tuple[Any, str]:
    """A value as CSV holds it, with its ``value_type``: ``number`` (written as a decimal;
    ``nan``, ``inf``, ``-inf`` where not finite), ``string`` (the text itself) or ``json`` (a
    list, object or boolean, as :func:`json_text`), so the string ``[1, 2]`` and the list
    ``[1, 2]`` are told apart by the type column."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return value, "number"
    if isinstance(value, str):
        return value, "string"
    return json_text(value), "json"


def _spelling(number: float) -> str:
    """A non-finite float as CSV writes it: ``nan``, ``inf`` or ``-inf``."""
    return repr(float(number))


def json_text(value: Any) -> str:
    """A list or object as strict JSON (which has no NaN or infinity): a number in it that is
    not finite is written as the string CSV writes for it (``"nan"``, ``"inf"``, ``"-inf"``)."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:  # a non-finite float somewhere in it
        return json.dumps(_spelled(value), allow_nan=False)


def _spelled(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _spelling(value)
    if isinstance(value, list):
        return [_spelled(v) for v in value]
    if isinstance(value, dict):
        return {k: _spelled(v) for k, v in value.items()}
    return value


def _nulled(value: Any, where: str, found: dict[str, str]) -> Any:
    """``value`` with each non-finite float as null, its place (``value``, ``value.3``,
    ``value.max``) and spelling put in ``found``."""
    if isinstance(value, float) and not math.isfinite(value):
        found[where] = _spelling(value)
        return None
    if isinstance(value, list):
        return [_nulled(v, f"{where}.{i}", found) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _nulled(v, f"{where}.{k}", found) for k, v in value.items()}
    return value


def jsonl_line(row: tuple[Any, ...]) -> str:
    """A row as one line of strict JSON (what jq, JavaScript and pandas read): a number that
    is not finite is null, and the row's ``not_finite`` names each such place and what was
    there, e.g. ``"value": null, "not_finite": {"value": "nan"}`` (the key is absent when every
    number is finite)."""
    record = dict(zip(_COLUMNS, row))
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a non-finite float somewhere in the row
        found: dict[str, str] = {}
        strict = {name: _nulled(item, name, found) for name, item in record.items()}
        return json.dumps({**strict, "not_finite": found}, ensure_ascii=False, allow_nan=False)


def _text(rows: Iterator[tuple[Any, ...]], out: IO[Any], fmt: str, report: ExportReport) -> None:
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow((*_COLUMNS, "value_type"))
        # Packed scalar rows are formatted in C as UTF-8: written straight to the bytes below a
        # UTF-8 text file, decoded for any other stream.
        raw = out.buffer if isinstance(out, io.TextIOWrapper) and codecs.lookup(out.encoding).name == "utf-8" else None
        for row in rows:
            if isinstance(row, ScalarRows):
                text = row.csv()
                if raw is not None:
                    out.flush()
                    write_all(raw, text)
                else:
                    out.write(text.decode())
                report.rows += len(row)
                continue
            writer.writerow((*row[:5], *csv_value(row[5])))
            report.rows += 1
    else:
        for row in rows:
            out.write(jsonl_line(row) + "\n")
            report.rows += 1


def _parquet(rows: Iterator[tuple[Any, ...]], out: IO[Any], report: ExportReport) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise EnvironmentMissing(
            "Parquet export needs pyarrow", "pip install pyarrow, or use --format csv|jsonl"
        ) from None
    columns: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
    for row in rows:
        for name, item in zip(_COLUMNS, row):
            columns[name].append(item)
        report.rows += 1
    # One type per column: numbers as float64 when every value is one, else each value as JSON.
    values = columns["value"]
    numeric = all(isinstance(v, float | int) and not isinstance(v, bool) for v in values)
    columns["value"] = pa.array(values, pa.float64()) if numeric else pa.array([json_text(v) for v in values])
    pq.write_table(pa.table(columns), out)
