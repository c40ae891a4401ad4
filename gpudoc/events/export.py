"""``events export``: a long table (run, tag, kind, step, wall_time, value; CSV adds
value_type) of every value — no sampling, no cap — with an explicit policy for restarted
writers."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from gpudoc.errors import EnvironmentMissing, InputError
from gpudoc.events.discover import Run
from gpudoc.events.model import Kind, TagPlugins, decode, is_start
from gpudoc.events.records import Damage, RecordReader, check_whole, damage_json
from gpudoc.output import atomic_file, output_target

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


def _value(value: event_pb2.Summary.Value, kind: Kind) -> Any:
    if value.WhichOneof("value") == "simple_value":
        return float(value.simple_value)
    if kind is Kind.HISTOGRAM and value.HasField("histo"):
        h = value.histo
        return {"min": h.min, "max": h.max, "num": h.num, "sum": h.sum, "sum_squares": h.sum_squares,
                "bucket_limit": list(h.bucket_limit), "bucket": list(h.bucket)}
    array = tensor_util.make_ndarray(value.tensor)
    if array.dtype.kind in "SO":
        decoded = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in array.ravel().tolist()]
        return decoded[0] if array.size == 1 else decoded
    return array.item() if array.size == 1 else array.tolist()


def rows_of(
    run: Run,
    kinds: frozenset[Kind],
    purge: bool,
    report: ExportReport,
    progress: Callable[[int], None] | None = None,
    *,
    salvage: bool = False,
    whole: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """``(run, tag, kind, step, wall_time, value)`` in file order; with ``purge``, the rows a
    restart supersedes (steps at or after it, written before it) are left out. ``salvage``
    and ``whole`` are :class:`RecordReader`'s; what salvage skips goes to ``report.damage``."""
    plugins = TagPlugins()
    rows: list[tuple[Any, ...]] = []
    last: dict[str, int] = {}
    dropped = 0
    name = run.label
    for path in run.files:
        reader = RecordReader(path, salvage=salvage, whole=whole)
        for offset, data, _ in reader:
            event = decode(data, path, offset)
            if is_start(event) and purge:
                before = len(rows)
                rows = [r for r in rows if r[3] < event.step]
                dropped += before - len(rows)
                last.clear()
                continue
            if not event.HasField("summary"):
                continue
            for value, info in zip(event.summary.value, plugins.values(event)):
                if info.kind not in kinds:
                    continue
                previous = last.get(info.tag)
                if purge and previous is not None and event.step < previous:
                    before = len(rows)
                    rows = [r for r in rows if r[1] != info.tag or r[3] < event.step]
                    dropped += before - len(rows)
                last[info.tag] = event.step
                row = (name, info.tag, info.kind.value, event.step, event.wall_time, _value(value, info.kind))
                if purge:
                    rows.append(row)
                else:
                    yield row
        report.damage.extend((str(path), d) for d in reader.state.damage)
        if progress is not None:
            progress(path.stat().st_size)
    if dropped:
        report.purged[name] = dropped
    yield from rows


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
    """Write every run's values to ``dest`` (atomically; a stream only once every file has
    read back intact); a damaged or cut-off file is an error unless ``salvage`` skips the
    damage. ``progress`` gets each file's size once it is read."""
    unsupported = kinds - EXPORTABLE
    if unsupported:
        names = ", ".join(sorted(k.value for k in unsupported))
        raise InputError(f"--kinds: {names} cannot be exported as table values (binary or run-level)",
                         "trim keeps them; export takes scalar, histogram, tensor, text, pr_curve")
    if not salvage and output_target(dest).stream:
        check_whole(path for run in runs for path in run.files)
    report = ExportReport()
    rows = (r for run in runs for r in rows_of(run, kinds, purge, report, progress, salvage=salvage, whole=True))
    with atomic_file(dest, "wb" if fmt == "parquet" else "w") as out:
        if fmt == "parquet":
            _parquet(rows, out, report)
        else:
            _text(rows, out, fmt, report)
    return report


_COLUMNS = ("run", "tag", "kind", "step", "wall_time", "value")


def csv_value(value: Any) -> tuple[Any, str]:
    """A value as CSV holds it, with its ``value_type``: ``number`` (written as a decimal),
    ``string`` (the text itself) or ``json`` (a list, object or boolean, JSON-encoded), so the
    string ``[1, 2]`` and the list ``[1, 2]`` are told apart by the type column."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return value, "number"
    if isinstance(value, str):
        return value, "string"
    return json.dumps(value), "json"


def _text(rows: Iterator[tuple[Any, ...]], out: IO[Any], fmt: str, report: ExportReport) -> None:
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow((*_COLUMNS, "value_type"))
        for row in rows:
            writer.writerow((*row[:5], *csv_value(row[5])))
            report.rows += 1
    else:
        for row in rows:
            out.write(json.dumps(dict(zip(_COLUMNS, row)), ensure_ascii=False) + "\n")
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
    columns["value"] = pa.array(values, pa.float64()) if numeric else pa.array([json.dumps(v) for v in values])
    pq.write_table(pa.table(columns), out)
