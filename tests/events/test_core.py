"""The compiled record core against the pure-Python one: the same records, state, damage and
errors on framed garbage, the same trimmed bytes on random event files, the same CRCs as
google-crc32c (hardware instructions and the table)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2, summary_pb2

from gpudoc.doctor import _events_core
from gpudoc.errors import GpudocError
from gpudoc.events import records
from gpudoc.events.discover import discover
from gpudoc.events.records import RecordReader, ReadState, frame
from gpudoc.events.trim import TrimSpec, trim

try:
    from gpudoc.events import _core as COMPILED
except ImportError:  # an install without a C compiler: test_the_compiled_core_is_built... says if one is here
    COMPILED = None
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="the compiled core is not built here")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


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


def test_the_compiled_core_is_built_where_there_is_a_compiler() -> None:
    """An install with a C compiler builds the core, and doctor names the active one."""
    compiler = (sysconfig.get_config_var("CC") or "").split()
    if compiler and shutil.which(compiler[0]):
        assert COMPILED is not None, records.CORE_REASON
    if os.environ.get("GPUDOC_EVENTS_CORE") != "python" and COMPILED is not None:
        assert records.CORE_REASON.startswith("compiled C")
    check = _events_core()
    assert check.detail == records.CORE_REASON
    with core(None):
        assert not records.core_active()


@pytest.mark.parametrize(("setup", "expected"), [
    ("import os; os.environ['GPUDOC_EVENTS_CORE'] = 'python'", "pure Python (GPUDOC_EVENTS_CORE=python)"),
    ("import sys; sys.modules['gpudoc.events._core'] = None", "pure Python: the compiled core is not built"),
])
def test_doctor_says_which_core_and_why(setup: str, expected: str) -> None:
    """Forced by the switch, or the extension missing (an install without a compiler)."""
    code = f"{setup}\nfrom gpudoc.doctor import _events_core\nc = _events_core(); print(c.status.name, c.detail)"
    env = {k: v for k, v in os.environ.items() if k != "GPUDOC_EVENTS_CORE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert expected in out
    assert out.startswith("OK" if "GPUDOC" in expected else "INFO")


@needs_compiled
@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_crc32c_matches_google_crc32c(data: bytes, start: int) -> None:
    assert COMPILED is not None
    expected = google_crc32c.extend(start, data)
    assert COMPILED.extend(start, data) == expected
    for method in COMPILED.crc_methods:
        assert COMPILED.extend_with(method, start, data) == expected, method
    assert COMPILED.extend(start, memoryview(data)[1:]) == google_crc32c.extend(start, data[1:])
    with core(None):
        python = records.masked_crc(data)
    assert COMPILED.masked_crc(data) == python


def _framed(payload: bytes, length: int | None = None) -> bytes:
    header = struct.pack("<Q", len(payload) if length is None else length)
    with core(None):
        return (header + struct.pack("<I", records.masked_crc(header)) + payload
                + struct.pack("<I", records.masked_crc(payload)))


@st.composite
def garbage_file(draw: st.DrawFn) -> bytes:
    """Records with valid CRCs mixed with damage of every kind the reader must survive."""
    pieces = []
    for _ in range(draw(st.integers(0, 12))):
        how = draw(st.sampled_from(["record", "record", "record", "garbage", "flip", "lie", "huge", "cut"]))
        payload = draw(st.binary(max_size=40))
        if how == "record":
            pieces.append(_framed(payload))
        elif how == "garbage":
            pieces.append(draw(st.binary(min_size=1, max_size=30)))
        elif how == "flip":
            framed = bytearray(_framed(payload))
            at = draw(st.integers(0, len(framed) - 1))
            framed[at] ^= draw(st.integers(1, 255))
            pieces.append(bytes(framed))
        elif how == "lie":
            pieces.append(_framed(payload, draw(st.integers(0, 200))))
        elif how == "huge":
            pieces.append(_framed(payload, draw(st.sampled_from([2**31, 2**31 + 1, 2**63, 2**64 - 1]))))
        else:
            framed = _framed(payload)
            pieces.append(framed[: draw(st.integers(0, len(framed) - 1))])
    return b"".join(pieces)


def _read(path: Path, split: int | None, taken: int | None, **options: Any) -> tuple[Any, ...]:
    """Everything a reader gives: records, its state, and the error, if any (read in two goes,
    the file growing in between, when ``split`` is given; the first stopped after ``taken``
    records, as the run view stops at its budget, when that is given)."""
    whole = path.read_bytes()
    got: list[Any] = []
    state = ReadState()
    error = None
    try:
        if split is not None:
            path.write_bytes(whole[:split])
            for index, record in enumerate(RecordReader(path, state=state, **options)):
                if index == taken:
                    break
                got.append(record)
            got.append(("resumed", state.offset, state.records, state.partial))
            path.write_bytes(whole)
        got += list(RecordReader(path, state=state, **options))
    except GpudocError as exc:
        error = str(exc), exc.fix
    finally:
        path.write_bytes(whole)
    return got, (state.offset, state.records, state.partial, state.damage), error


@needs_compiled
@SETTINGS
@given(garbage_file(), st.booleans(), st.booleans(), st.none() | st.integers(0, 400), st.none() | st.integers(0, 4))
def test_compiled_reader_reads_framed_garbage_as_python_does(
    tmp_path: Path, data: bytes, salvage: bool, whole: bool, split: int | None, taken: int | None
) -> None:
    path = tmp_path / "events.out.tfevents.1.fuzz"
    path.write_bytes(data)
    with core(None):
        expected = _read(path, split, taken, salvage=salvage, whole=whole)
    with core(COMPILED):
        assert _read(path, split, taken, salvage=salvage, whole=whole) == expected


# Mostly one tag, so that its metadata, dropped with an early record, must move to a later one;
# "J" is the byte of a Value's metadata key (0x4a), which makes trim look closer.
TAGS = st.sampled_from(["loss"] * 4 + ["J"] * 2 + ["acc", "_hparams_/session_start_info", "graph_x", "né"])


@st.composite
def event_bytes(draw: st.DrawFn) -> bytes:
    """One record's data: a real Event of any of the kinds trim tells apart, or raw bytes."""
    what = draw(st.sampled_from(["scalar"] * 4 + ["metadata"] * 3 + ["version", "log", "graph", "start", "empty"] * 2
                                + ["raw"]))
    if what == "raw":  # mostly no Event: trim stops there, on both cores alike
        return draw(st.binary(max_size=30))
    event = event_pb2.Event(wall_time=draw(st.sampled_from([0.0, 1.0, 5.0, 9.5, float("nan"), -1.0])),
                            step=draw(st.sampled_from([0, 1, 3, 7, 10, -1, 2**63 - 1, -(2**63)])))
    if what in ("scalar", "metadata"):
        value = summary_pb2.Summary.Value(tag=draw(TAGS), simple_value=draw(st.floats(width=32)))
        if what == "metadata":
            value.metadata.plugin_data.plugin_name = draw(st.sampled_from(["scalars", "hparams", "graph_keras_model"]))
        event.summary.value.append(value)
    elif what == "version":
        event.file_version = "brain.Event:2"
    elif what == "log":
        event.log_message.message = "hi"
    elif what == "graph":
        event.graph_def = b"\x0a\x00"
    elif what == "start":
        event.session_log.status = event_pb2.SessionLog.START
    data = event.SerializeToString()
    if draw(st.integers(0, 7)) == 0 and data[:1] == b"\x09":
        # A step varint of 11 bytes (longer than 64 bits), or the fields out of their order.
        data = draw(st.sampled_from([data[:9] + b"\x10" + b"\xff" * 10 + b"\x01" + data[9:], data[9:] + data[:9]]))
    return data


def _trim(source: Path, out: Path, spec: TrimSpec, salvage: bool) -> tuple[Any, ...]:
    root, runs = discover(source)
    try:
        report = trim(root, runs, out, spec, salvage=salvage)
    except GpudocError as exc:
        return str(exc), out.exists()
    files = sorted(out.rglob("*tfevents*"))
    result = ([f.read_bytes() for f in files], [(f[2], f[3]) for f in report.files], report.reencoded,
              report.reattached, report.damage)
    shutil.rmtree(out)
    return result


@needs_compiled
@SETTINGS
@given(st.lists(event_bytes(), max_size=14), st.none() | st.integers(-1, 8), st.none() | st.integers(0, 12),
       st.none() | st.sampled_from([0.5, 1.0, 6.0]), st.none() | st.sampled_from([0.0, 1.0, 9.5]), st.booleans(),
       st.booleans(), st.none() | st.none() | st.integers(0, 13))
def test_compiled_trim_writes_the_bytes_python_does(
    tmp_path: Path, events: list[bytes], first: int | None, last: int | None, start: float | None,
    end: float | None, keep_run_level: bool, salvage: bool, damage_at: int | None,
) -> None:
    source = tmp_path / "logs"
    (source / "run").mkdir(parents=True, exist_ok=True)
    framed = [frame(e) for e in events]
    if damage_at is not None and damage_at < len(framed):
        framed[damage_at] = framed[damage_at][:-1] + bytes([framed[damage_at][-1] ^ 1])
    (source / "run" / "events.out.tfevents.1.fuzz").write_bytes(b"".join(framed))
    spec = TrimSpec(first_step=first, last_step=last, start=start, end=end, keep_run_level=keep_run_level)
    with core(None):
        expected = _trim(source, tmp_path / "python", spec, salvage)
    with core(COMPILED):
        assert _trim(source, tmp_path / "compiled", spec, salvage) == expected


@needs_compiled
@pytest.mark.parametrize("tag", ["loss", "J"])
def test_metadata_of_a_dropped_record_moves_on_both_cores(tmp_path: Path, tag: str) -> None:
    """A tag's first value, out of range, carries its SummaryMetadata (key byte 0x4a): the
    compiled core leaves that record to Python, which moves the metadata to the first kept value."""
    first = event_pb2.Event(step=0, wall_time=1.0)
    value = first.summary.value.add(tag=tag, simple_value=1.0)
    value.metadata.plugin_data.plugin_name = "scalars"
    later = [event_pb2.Event(step=step, wall_time=1.0, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=2.0)])) for step in (1, 2, 3)]
    source = tmp_path / "logs"
    (source / "run").mkdir(parents=True)
    (source / "run" / "events.out.tfevents.1.x").write_bytes(
        b"".join(frame(e.SerializeToString()) for e in [first, *later]))
    with core(None):
        expected = _trim(source, tmp_path / "python", TrimSpec(first_step=2), False)
    with core(COMPILED):
        assert _trim(source, tmp_path / "compiled", TrimSpec(first_step=2), False) == expected
    (length,) = struct.unpack_from("<Q", expected[0][0])
    kept = event_pb2.Event.FromString(expected[0][0][12 : 12 + length])
    assert kept.step == 2 and kept.summary.value[0].metadata.plugin_data.plugin_name == "scalars"
    assert expected[3] == 1  # re-attached once


@needs_compiled
def test_steps_beyond_64_bits_are_left_to_python(tmp_path: Path) -> None:
    """A step bound no 64-bit compare holds: every record goes through Python's decision."""
    source = tmp_path / "logs"
    (source / "run").mkdir(parents=True)
    events = [event_pb2.Event(step=2**63 - 1, wall_time=1.0, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="loss", simple_value=1.0)])).SerializeToString()]
    (source / "run" / "events.out.tfevents.1.x").write_bytes(b"".join(frame(e) for e in events))
    for first in (2**63, 2**64, -(2**64)):
        spec = TrimSpec(first_step=first)
        with core(None):
            expected = _trim(source, tmp_path / "python", spec, False)
        with core(COMPILED):
            assert _trim(source, tmp_path / "compiled", spec, False) == expected
        assert len(expected[0][0]) == (0 if first > 0 else len(frame(events[0])))
