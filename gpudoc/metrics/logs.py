"""Metric series from training logs: Keras progress-bar output, Keras CSVLogger files,
TensorBoard event files and JSON lines — one :class:`Record` per logged step.

Metric names are recognised after their split prefix (``val_``, ``validation/``, ``test_``,
``train/``…) and Keras' ``epoch_``/``batch_`` tag prefixes are removed. A value printed with
few decimals carries its rounding (``0.0015`` is anything in [0.00145, 0.00155]) so the
invariants are not broken by print precision.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gpudoc.errors import InputError
from gpudoc.output import strip_terminal_codes

# Canonical metric -> the names it is logged under (lower case, split prefix removed).
METRIC_NAMES = {
    "mse": ("mse", "mean_squared_error", "l2", "mse_loss"),
    "mae": ("mae", "mean_absolute_error", "l1", "l1_loss"),
    "rmse": ("rmse", "root_mean_squared_error"),
    "psnr": ("psnr", "peak_signal_noise_ratio", "psnr_db"),
    "ssim": ("ssim", "structural_similarity", "structural_similarity_index_measure"),
    "ms_ssim": ("ms_ssim", "msssim", "ms-ssim", "multiscale_ssim", "multi_scale_ssim",
                "multiscale_structural_similarity_index_measure"),
    "loss": ("loss",),
}
_CANONICAL = {re.sub(r"[_\-]", "", alias): name for name, aliases in METRIC_NAMES.items() for alias in aliases}
_SPLITS = {"val": "val", "valid": "val", "validation": "val", "eval": "val", "test": "test", "train": "train",
           "training": "train"}
_SPLIT_PREFIX = re.compile(r"^(val|valid|validation|eval|test|train|training)(?:_|\.|-)", re.I)
_NUMBER = r"[-+]?(?:nan|inf(?:inity)?|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_PAIR = re.compile(r"(?:^|\s)-\s+([A-Za-z_][\w./-]*):\s+(" + _NUMBER + r")(?=\s|$)", re.I)
_EPOCH = re.compile(r"^\s*Epoch\s+(\d+)(?:/\d+)?\b")
_COUNTER = re.compile(r"^\s*(\d+)/(\d+|Unknown)\b")


@dataclass(frozen=True)
class Value:
    """A logged number, the half-width of its print rounding (0 when stored exactly) and, for
    text logs, the number as printed (so reports show ``0.7160``, not ``0.716``)."""

    value: float
    rounding: float = 0.0
    text: str | None = None

    @property
    def low(self) -> float:
        return self.value - self.rounding

    @property
    def high(self) -> float:
        return self.value + self.rounding


@dataclass
class Record:
    """The metrics logged together at one step of one split."""

    source: str
    split: str
    step: int | None
    line: int | None = None
    values: dict[str, Value] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        at = f"{self.source}:{self.line}" if self.line is not None else self.source
        return at + (f" (step {self.step}, {self.split})" if self.step is not None else f" ({self.split})")


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


def canonical(name: str, default_split: str = "train") -> tuple[str, str | None]:
    """``(split, metric)`` of a logged name; metric None when it is not one we check."""
    *folders, rest = name.strip().split("/")
    split = default_split
    for folder in folders:
        split = _SPLITS.get(folder.lower(), split)
    while match := _SPLIT_PREFIX.match(rest):
        split = _SPLITS[match.group(1).lower()]
        rest = rest[match.end():]
    rest = re.sub(r"^(epoch|batch|step)_", "", rest, flags=re.I)
    return split, _CANONICAL.get(_key(rest))


def _brief(exc: BaseException) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]


def pow10(x: float) -> float:
    """10 to the ``x``, infinite where a float overflows (a logged 1e200 squared, PSNR 5000 dB)."""
    return math.inf if x > 308 else 10.0**x


def parse_number(text: str) -> Value:
    """A printed number and its rounding: ``18.9748`` → ±0.00005, ``1.0000e-09`` → ±5e-14."""
    value = float(text)
    mantissa, _, exponent = text.lower().partition("e")
    if not math.isfinite(value):
        return Value(value, text=text)
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return Value(value, 0.5 * pow10(-decimals + (int(exponent) if exponent else 0)), text)


def _add(record: Record, metric: str, name: str, value: Value) -> None:
    record.values[metric] = value
    record.names[metric] = name


def read_keras_text(path: Path) -> Iterator[Record]:
    """Keras progress-bar lines (Keras 2 ``[====]`` and Keras 3 ``━━━`` bars with their colour
    codes, backspaces and carriage returns; ETA lines included). A bar is redrawn after every
    batch (``verbose=1``): only its last drawing counts, giving one train record and, with
    ``val_`` names, one val record per epoch (and per ``evaluate()`` bar). Steps are epoch
    indices from 0, as CSVLogger and TensorBoard number them (Keras prints ``Epoch 1`` for step 0)."""
    epoch: int | None = None
    bar: tuple[int | None, str] | None = None  # (epoch, "done/target") of the bar being drawn
    done, drawn_on, finished = -1, 0, False
    pending: list[Record] = []
    # Lines end at \n only: a bar redrawn with \r stays on the line an editor (and an annotation) shows.
    with path.open(encoding="utf-8", errors="replace", newline="\n") as lines:
        for number, line in enumerate(lines, 1):
            for segment in strip_terminal_codes(line).split("\r"):
                match = _EPOCH.match(segment)
                if match and int(match.group(1)) - 1 != epoch:
                    yield from pending
                    pending, bar, epoch = [], None, int(match.group(1)) - 1
                pairs = _PAIR.findall(segment)
                if not pairs:
                    continue
                counter = _COUNTER.match(segment)
                count = int(counter.group(1)) if counter else -1
                # A redraw continues the bar's count: on the same line (\r), or on the next line after
                # a drawing that was not the bar's last (an ETA, or fewer batches than the target).
                same_bar = counter is not None and bar == (epoch, counter.group(2)) and count >= done \
                    and (drawn_on == number or not finished)
                if not same_bar:
                    yield from pending
                bar, done = ((epoch, counter.group(2)), count) if counter else (None, -1)
                finished = counter is not None and counter.group(1) == counter.group(2) and "ETA" not in segment
                drawn_on = number
                records = {s: Record(str(path), s, epoch, number) for s in ("train", "val", "test")}
                for name, text in pairs:
                    split, metric = canonical(name)
                    if metric is not None:
                        _add(records[split], metric, name, parse_number(text))
                pending = [r for r in records.values() if r.values]
    yield from pending


def read_csv(path: Path) -> Iterator[Record]:
    """A Keras CSVLogger file (``epoch,loss,mae,…,val_loss,…``) or any CSV with a header and an
    ``epoch`` or ``step`` column."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise InputError(f"{path}: empty CSV file", "expected a header such as epoch,loss,val_loss")
        step_column = next((i for i, h in enumerate(header) if h.strip().lower() in ("epoch", "step")), None)
        for number, row in enumerate(reader, 2):
            if not row:
                continue
            step = None
            if step_column is not None:
                try:
                    step = int(float(row[step_column]))
                except (ValueError, IndexError, OverflowError):
                    raise InputError(f"{path}:{number}: column {header[step_column]!r} is not a number: "
                                     f"{row[step_column] if step_column < len(row) else ''!r}") from None
            records = {s: Record(str(path), s, step, number) for s in ("train", "val", "test")}
            for name, text in zip(header, row):
                split, metric = canonical(name)
                if metric is None or not text.strip():
                    continue
                try:
                    _add(records[split], metric, name, Value(float(text), text=text.strip()))
                except ValueError:
                    raise InputError(f"{path}:{number}: column {name!r} is not a number: {text!r}") from None
            yield from (r for r in records.values() if r.values)


def read_jsonl(path: Path) -> Iterator[Record]:
    """JSON lines, one object per step: ``{"step": 3, "psnr": 31.2, "val_ssim": 0.91}``; an
    optional ``split`` key applies to unprefixed names, nested ``metrics`` objects are read."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg} at column {exc.colno})") from None
            except (RecursionError, ValueError) as exc:  # nesting, or an integer of over 4300 digits
                raise InputError(f"{path}:{number}: unreadable JSON ({_brief(exc)})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{number}: expected a JSON object per line")
            yield from _object_records(obj, str(path), number)


def _object_records(obj: dict[str, object], source: str, line: int | None) -> Iterator[Record]:
    inner = obj.get("metrics")
    flat = {**obj, **inner} if isinstance(inner, dict) else obj
    step = next((v for k in ("step", "epoch", "global_step", "iteration") if isinstance(v := flat.get(k), int)), None)
    default = _SPLITS.get(str(flat.get("split", "train")).lower(), "train")
    records = {s: Record(source, s, step, line) for s in ("train", "val", "test")}
    for name, value in flat.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        split, metric = canonical(name, default)
        if metric is not None:
            try:
                number = float(value)
            except OverflowError:
                at = f"{source}:{line}" if line is not None else source
                raise InputError(f"{at}: {name} is an integer of {len(str(value))} digits, beyond a float's range",
                                 "log metrics as floats") from None
            _add(records[split], metric, name, Value(number))
    yield from (r for r in records.values() if r.values)


def read_events(path: Path, salvage: bool = False, damage: list[tuple[str, str]] | None = None) -> Iterator[Record]:
    """Scalars of TensorBoard event files (a file or a log directory): one record per run and
    step; the split comes from the tag (``val/psnr``) or the run directory (Keras writes
    ``train/`` and ``validation/``). Values superseded by a restarted writer are dropped. A
    damaged or cut-off file is an error naming the offset; with ``salvage`` its complete
    records are read and ``(source, what was skipped)`` goes to ``damage``."""
    from gpudoc.events.discover import discover
    from gpudoc.events.export import ExportReport, rows_of
    from gpudoc.events.model import Kind

    _, runs = discover(path)
    for run in runs:
        run_split = next((_SPLITS[p.lower()] for p in reversed(Path(run.name).parts) if p.lower() in _SPLITS), "train")
        records: dict[tuple[str, int], Record] = {}
        source = str(run.files[0] if len(run.files) == 1 else run.directory)
        report = ExportReport()
        for _, tag, _, step, _, value in rows_of(run, frozenset({Kind.SCALAR}), True, report, salvage=salvage,
                                                 whole=True):
            split, metric = canonical(tag, run_split)
            if metric is None or not isinstance(value, (int, float)):
                continue
            record = records.setdefault((split, step), Record(source, split, step))
            # TensorBoard stores float32: one part in 2^24.
            _add(record, metric, tag, Value(float(value), abs(float(value)) * 2.0**-24))
        if damage is not None:
            damage.extend((source, f"skipped bytes {d.start}..{d.end} of {file}: {d.reason}")
                          for file, d in report.damage)
        yield from sorted(records.values(), key=lambda r: (r.split, r.step or 0))


def read_log(path: str | Path, salvage: bool = False, damage: list[tuple[str, str]] | None = None) -> list[Record]:
    """The records of one log, its format chosen by name and content (``salvage`` and
    ``damage``: see :func:`read_events`)."""
    file = Path(path)
    if not file.exists():
        raise InputError(f"{file}: no such file or directory")
    if file.is_dir() or "tfevents" in file.name:
        return list(read_events(file, salvage, damage))
    suffix = file.suffix.lower()
    if suffix == ".csv":
        return list(read_csv(file))
    if suffix == ".json":
        try:
            whole = json.loads(file.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError:
            whole = None
        except (RecursionError, ValueError) as exc:
            raise InputError(f"{file}: unreadable JSON ({_brief(exc)})") from None
        if isinstance(whole, dict):
            return list(_object_records(whole, str(file), None))
    if suffix in (".jsonl", ".ndjson", ".json"):
        return list(read_jsonl(file))
    return list(read_keras_text(file))
