"""The compiled scalar-record decoder of ``events info`` and ``events export`` (gpudoc/events/_scan.c)
against the pure-Python path: the same info, the same exported bytes (CSV, JSON lines, either
restart policy, any kinds), the same errors, on generated event files of every scalar encoding
the writers use, on records that are almost scalars, and on mutated bytes; its float formatting
against repr; and that real tensorboardX/torch/tf.summary scalars take the compiled path."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2, summary_pb2

from gpudoc.errors import GpudocError
from gpudoc.events import records
from gpudoc.events.discover import discover
from gpudoc.events.export import export
from gpudoc.events.info import run_info
from gpudoc.events.model import Kind
from gpudoc.events.records import RecordReader, Scalars, frame

try:
    from gpudoc.events import _core as CORE
    from gpudoc.events import _scan as SCAN
except ImportError:  # no C compiler: test_the_decoder_is_built_with_the_core says whether one is here
    CORE = SCAN = None  # type: ignore[assignment]
needs_compiled = pytest.mark.skipif(SCAN is None, reason="the compiled decoder is not built here")
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def events_core() -> str:
    """These tests compare both cores themselves: run once (overrides the conftest's)."""
    return "both"


@contextmanager
def core(module: ModuleType | None) -> Iterator[None]:
    saved = records._core
    records._core = module
    try:
        yield
    finally:
        records._core = saved


def test_the_decoder_is_built_with_the_core_and_doctor_names_it() -> None:
    from gpudoc.doctor import _events_core

    if CORE is not None:
        assert SCAN is not None, "setup.py builds gpudoc.events._scan beside _core"
    if os.environ.get("GPUDOC_EVENTS_CORE") != "python" and SCAN is not None:
        assert "info/export decode scalar records in C (_scan)" in records.CORE_REASON
    assert _events_core().detail == records.CORE_REASON
    code = ("import sys; sys.modules['gpudoc.events._scan'] = None\n"
            "from gpudoc.doctor import _events_core; print(_events_core().detail)")
    env = {k: v for k, v in os.environ.items() if k != "GPUDOC_EVENTS_CORE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    if CORE is not None:
        assert "scalar decoder for info/export (_scan) is not built" in out


# ---- generated event files ----

TAGS = st.sampled_from(["loss"] * 5 + ["acc"] * 3 + ["a,b", 'q"t', "line\nbreak", "né", "", "_hparams_/x"])


def _tensor(value: summary_pb2.Summary.Value, how: str, number: float) -> None:
    tensor = value.tensor
    if how == "float_val":
        tensor.dtype, tensor.float_val[:] = 1, [number]
    elif how == "float_content":
        tensor.dtype, tensor.tensor_content = 1, struct.pack("<f", number)
    elif how == "double_val":
        tensor.dtype, tensor.double_val[:] = 2, [number]
    elif how == "double_content":
        tensor.dtype, tensor.tensor_content = 2, struct.pack("<d", number)
    elif how == "two_floats":  # not a scalar: left to Python (whose make_ndarray reshapes it)
        tensor.dtype, tensor.float_val[:] = 1, [number, number]
        tensor.tensor_shape.dim.add(size=2)
    elif how == "int":
        tensor.dtype, tensor.int_val[:] = 3, [int(number) % 1000 if math.isfinite(number) else 0]
    tensor.tensor_shape.SetInParent()


@st.composite
def value_of(draw: st.DrawFn) -> summary_pb2.Summary.Value:
    number = draw(st.floats(width=32) | st.sampled_from([0.0, -0.0, 0.1, 1e-5, 1e16, 3.0]))
    value = summary_pb2.Summary.Value(tag=draw(TAGS))
    how = draw(st.sampled_from(["simple"] * 4 + ["float_val", "float_content", "double_val", "double_content",
                                                 "two_floats", "int", "histo", "none"]))
    if how == "simple":
        value.simple_value = number
    elif how == "histo":
        value.histo.min, value.histo.num = number, 1.0
    elif how != "none":
        _tensor(value, how, number)
    if draw(st.integers(0, 3)) == 0:  # a tag's metadata, first or again
        metadata = value.metadata
        metadata.plugin_data.plugin_name = draw(st.sampled_from(["scalars", "scalars", "histograms", "", "text"]))
        if draw(st.booleans()):
            metadata.display_name = "shown"
            metadata.plugin_data.content = b"\xff\x00"
    return value


@st.composite
def event_bytes(draw: st.DrawFn) -> bytes:
    what = draw(st.sampled_from(["scalar"] * 8 + ["start", "version", "log", "mutant", "mutant", "odd", "raw"]))
    if what == "raw":
        return draw(st.binary(max_size=24))
    event = event_pb2.Event(wall_time=draw(st.sampled_from([0.0, -0.0, 1.0, 1.7e9 + 0.25, float("nan"), -1.0, 1e-7])),
                            step=draw(st.sampled_from([0, 1, 2, 3, 5, 2, 1, -1, 2**63 - 1, -(2**63)])))
    if what in ("scalar", "mutant", "odd"):
        for value in draw(st.lists(value_of(), min_size=0 if what == "odd" else 1, max_size=3)):
            event.summary.value.append(value)
        event.summary.SetInParent()
    elif what == "start":
        event.session_log.status = event_pb2.SessionLog.START
    elif what == "version":
        event.file_version = "brain.Event:2"
    else:
        event.log_message.message = "hi"
    data = event.SerializeToString()
    if what == "mutant" and data:  # bytes that may or may not parse: both paths must agree
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data) - 1))
            how = draw(st.sampled_from(["flip", "insert", "delete"]))
            if how == "flip":
                data[at] ^= draw(st.integers(1, 255))
            elif how == "insert":
                data.insert(at, draw(st.integers(0, 255)))
            elif len(data) > 1:
                del data[at]
        return bytes(data)
    if what == "odd":  # encodings protobuf accepts that the decoder leaves to it
        data = draw(st.sampled_from([data, data + b"\x10\x07", data + b"\x09" + struct.pack("<d", 2.0),
                                     b"\x10\x80\x00" + data, data + b"\x2a\x00", data + b"\x58\x01"]))
    return data


def _write(root: Path, events: list[bytes], damage_at: int | None, cut: bool) -> None:
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    framed = [frame(e) for e in events]
    if damage_at is not None and damage_at < len(framed):
        framed[damage_at] = framed[damage_at][:-1] + bytes([framed[damage_at][-1] ^ 1])
    data = b"".join(framed)
    (run / "events.out.tfevents.1.fuzz").write_bytes(data[:-3] if cut and data else data)


def _info(root: Path) -> str:
    top, runs = discover(root)
    return repr([run_info(run, top) for run in runs])  # repr: NaN wall times compare as text


def _export(root: Path, out: Path, fmt: str, kinds: frozenset[Kind], purge: bool, salvage: bool) -> Any:
    _, runs = discover(root)
    try:
        report = export(runs, out, fmt=fmt, kinds=kinds, purge=purge, salvage=salvage)
    except GpudocError as exc:
        return str(exc), out.exists()
    data = out.read_bytes()
    out.unlink()
    return data, report


KINDS = st.sampled_from([frozenset({Kind.SCALAR}), frozenset({Kind.SCALAR, Kind.TENSOR, Kind.HISTOGRAM}),
                         frozenset({Kind.TENSOR})])


@needs_compiled
@SETTINGS
@given(st.lists(event_bytes(), max_size=16), st.none() | st.integers(0, 15), st.booleans(), st.booleans(),
       st.sampled_from(["csv", "csv", "jsonl"]), KINDS, st.booleans())
def test_info_and_export_are_the_same_on_both_paths(
    tmp_path: Path, events: list[bytes], damage_at: int | None, cut: bool, purge: bool, fmt: str,
    kinds: frozenset[Kind], salvage: bool,
) -> None:
    root = tmp_path / "logs"
    _write(root, events, damage_at, cut)
    out = tmp_path / f"table.{fmt}"
    with core(None):
        expected = _info(root), _export(root, out, fmt, kinds, purge, salvage)
    with core(CORE):
        assert (_info(root), _export(root, out, fmt, kinds, purge, salvage)) == expected


def _scalar(tag: str, step: int, number: float, wall: float = 1.0) -> bytes:
    value = summary_pb2.Summary.Value(tag=tag, simple_value=number)
    return event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[value])).SerializeToString()


@needs_compiled
def test_restarts_repeats_and_a_second_file_are_counted_alike(tmp_path: Path) -> None:
    """Steps that go back (within a run of compiled records and across the Python ones),
    repeated steps, a SessionLog.START between them, a second file of the run, tf-style tensor
    scalars whose metadata only the first value carries: one info, whichever path."""
    root = tmp_path / "logs"
    start = event_pb2.Event(step=4, wall_time=3.0)
    start.session_log.status = event_pb2.SessionLog.START
    first = event_pb2.Event(step=0, wall_time=1.0)
    value = first.summary.value.add(tag="t")
    _tensor(value, "float_content", 0.5)
    value.metadata.plugin_data.plugin_name = "scalars"
    later = [event_pb2.Event(step=s, wall_time=2.0, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag="t")])) for s in (1, 2, 1)]
    for event in later:
        _tensor(event.summary.value[0], "float_val", 0.25)
    events = ([_scalar("loss", s, 1.0 / (s + 1)) for s in [0, 1, 2, 3, 2, 2, 5, 6, 1]] + [start.SerializeToString()]
              + [_scalar("loss", s, 0.5) for s in (4, 5, 3)] + [first.SerializeToString()]
              + [e.SerializeToString() for e in later])
    _write(root, events, None, False)
    (root / "run" / "events.out.tfevents.2.fuzz").write_bytes(b"".join(frame(_scalar("loss", s, 2.0)) for s in (0, 9)))
    with core(None):
        expected = _info(root)
    with core(CORE):
        assert _info(root) == expected
    assert "cause='backwards'" in expected and "cause='start'" in expected and "duplicate_steps=" in expected
    with core(CORE):  # and the compiled path read them: every value but the first tensor's
        compiled, python = _paths(next((root / "run").glob("*.1.fuzz")))
    assert compiled == len(events) - 2 and python == 2


def _paths(path: Path) -> tuple[int, int]:
    """Records of ``path`` the decoder reads and those it leaves to Python (which, as info and
    export do, tell it each tag's plugin from the tag's first metadata)."""
    compiled = python = 0
    decoder = records.scalar_decoder()
    for item in RecordReader(path, salvage=True).scalars(decoder):
        if isinstance(item, Scalars):
            compiled += item.records
            continue
        python += 1
        event = event_pb2.Event.FromString(item[1])
        for value in event.summary.value:
            if value.HasField("metadata"):
                decoder.learn(decoder.index(value.tag), value.metadata.plugin_data.plugin_name)
    return compiled, python


@needs_compiled
def test_real_writers_scalars_take_the_compiled_path(written: dict[str, Path]) -> None:
    """tensorboardX's and torch's simple_value scalars and tf.summary's tensor scalars (their
    metadata with the first value only) are decoded in C; everything else is left to Python."""
    with core(CORE):
        for name in ("tbx", "tf", "keras", "torchhp"):
            counts = [_paths(path) for path in sorted(written[name].rglob("*tfevents*"))]
            compiled, python = (sum(c[i] for c in counts) for i in (0, 1))
            assert compiled > python, (name, compiled, python)


# ---- float formatting ----

@needs_compiled
@settings(max_examples=2000, deadline=None)
@given(st.floats() | st.floats(width=32) | st.integers(-(2**60), 2**60).map(float))
def test_floats_are_written_as_repr_writes_them(number: float) -> None:
    assert SCAN.repr(number) == repr(number)


@needs_compiled
def test_float_formatting_on_many_values_of_every_range() -> None:
    """Random bit patterns, float32 values, wall times, neighbours of round numbers, powers of
    two (where the lower gap is half the upper), ties: each exactly as repr."""
    rng = np.random.default_rng(18)
    samples = [
        rng.integers(0, 2**64, 40_000, dtype=np.uint64).view(np.float64),
        (1.0 / np.arange(1, 40_001)).astype(np.float32).astype(np.float64),
        rng.standard_normal(20_000) * 10.0 ** rng.integers(-13, 18, 20_000),
        1.7e9 + rng.random(20_000) * 1e6,
        np.array([2.0**i for i in range(-1074, 1024)] + [10.0**i for i in range(-12, 18)]),
    ]
    rounds = np.array([10.0**i * j for i in range(-8, 16) for j in (1, 2, 5, 9.5)])
    samples += [np.nextafter(rounds, np.inf), np.nextafter(rounds, -np.inf), -samples[1]]
    values = np.concatenate(samples).tolist()
    wrong = [v for v in values if SCAN.repr(v) != repr(v)]
    assert not wrong[:5]


@needs_compiled
def test_csv_lines_quote_as_csv_writer_does(tmp_path: Path) -> None:
    """Tags with commas, quotes, line breaks and non-ASCII letters, NaN and infinite values: the
    compiled CSV is csv.writer's, byte for byte, to a file and to stdout."""
    tags = ["a,b", 'say "hi"', "two\nlines", "r\r", "né", "", "plain"]
    numbers = [float("nan"), float("inf"), -float("inf"), -0.0, 1e-30, 3.5e38]
    events = [_scalar(t, i, numbers[i % len(numbers)], wall=float(i)) for i, t in enumerate(tags * 3)]
    root = tmp_path / "logs"
    _write(root, events, None, False)
    out = tmp_path / "t.csv"
    with core(None):
        expected = _export(root, out, "csv", frozenset({Kind.SCALAR}), False, False)
    with core(CORE):
        assert _export(root, out, "csv", frozenset({Kind.SCALAR}), False, False) == expected
    env = {k: v for k, v in os.environ.items() if k != "GPUDOC_EVENTS_CORE"}
    gpudoc = [sys.executable, "-m", "gpudoc", "events", "export", str(root), "-o", "-"]
    compiled = subprocess.run(gpudoc, capture_output=True, check=True, env=env).stdout
    python = subprocess.run(gpudoc, capture_output=True, check=True, env={**env, "GPUDOC_EVENTS_CORE": "python"}).stdout
    assert compiled == python == expected[0]


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _field(key: int, payload: bytes) -> bytes:
    return bytes([key]) + _varint(len(payload)) + payload


@needs_compiled
@pytest.mark.parametrize("metadata", [
    b"\x12\x01\xff",  # display_name not UTF-8
    _field(0x0A, b"\x0a\x02\xc3\x28"),  # plugin_name not UTF-8
    b"\x12\x01a\x12\x01b",  # display_name twice (protobuf takes the last)
    b"\x20\x05",  # a data_class
    b"\x2a\x00",  # an unknown field
])
def test_a_known_tags_later_metadata_is_checked_as_protobuf_checks_it(tmp_path: Path, metadata: bytes) -> None:
    """A later value's metadata is not otherwise used, but bytes protobuf refuses make the whole
    record no Event (info: damage; export: an error): the decoder must not count it either."""
    first = _scalar("loss", 0, 1.0)
    event = event_pb2.Event.FromString(first)
    event.summary.value[0].metadata.plugin_data.plugin_name = "scalars"
    value = _field(0x0A, b"loss") + b"\x15" + struct.pack("<f", 2.0) + _field(0x4A, metadata)
    later = b"\x09" + struct.pack("<d", 2.0) + b"\x10\x01" + _field(0x2A, _field(0x0A, value))
    bad_tag = b"\x10\x02" + _field(0x2A, _field(0x0A, _field(0x0A, b"\xed\xa0\x80") + b"\x15" + b"\0" * 4))
    root = tmp_path / "logs"
    _write(root, [event.SerializeToString(), later, bad_tag, _scalar("loss", 3, 4.0)], None, False)
    out = tmp_path / "t.csv"
    with core(None):
        expected = _info(root), _export(root, out, "csv", frozenset({Kind.SCALAR}), False, True)
    with core(CORE):
        assert (_info(root), _export(root, out, "csv", frozenset({Kind.SCALAR}), False, True)) == expected
    assert expected[0].count("not a TensorBoard Event") == (2 if metadata[:1] in (b"\x12", b"\x0a") and
                                                            metadata != b"\x12\x01a\x12\x01b" else 1)


@pytest.mark.parametrize("damage_at", [0, 7, 19])
def test_a_streamed_export_of_a_damaged_file_fails_alike_before_writing(tmp_path: Path, damage_at: int) -> None:
    """To stdout, every record is checked before the first row is written (through the decoder
    where it is built): the same one-line error, naming the same record and byte, and nothing
    on stdout, on both paths."""
    root = tmp_path / "logs"
    _write(root, [_scalar("loss", s, 1.0 / (s + 1)) for s in range(20)], damage_at, False)
    env = {k: v for k, v in os.environ.items() if k != "GPUDOC_EVENTS_CORE"}
    argv = [sys.executable, "-m", "gpudoc", "events", "export", str(root), "-o", "-"]
    results = [subprocess.run(argv, capture_output=True, text=True, env={**env, **extra})
               for extra in ({}, {"GPUDOC_EVENTS_CORE": "python"})]
    assert results[0].returncode == results[1].returncode == 2
    assert results[0].stdout == results[1].stdout == ""
    assert results[0].stderr == results[1].stderr
    assert f"record {damage_at} at byte" in results[0].stderr and results[0].stderr.count("\n") == 1
