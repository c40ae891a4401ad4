"""The compiled trim path (gpudoc.events.trim._trim_compiled over _core.trim_pass) against the
pure-Python one on large records: CRCs continued across the core's three lanes and joined per
record, run-level marks found by the vectorised search wherever they sit, records that straddle
read blocks or outgrow them, damage and cut-off ends handed to the reader, the staged copy
checked before it is placed, and hparams sessions found after the first pass."""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2, summary_pb2

from gpudoc.errors import GpudocError
from gpudoc.events import records
from gpudoc.events.discover import discover
from gpudoc.events.records import frame
from gpudoc.events.trim import TrimSpec, trim

try:
    from gpudoc.events import _core as COMPILED
except ImportError:
    COMPILED = None
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="the compiled core is not built here")
trim_module = importlib.import_module("gpudoc.events.trim")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MARKS = [b"_hparams_/", b"graph_", b"custom_scalars"]


@pytest.fixture
def events_core() -> str:
    """These tests compare both cores themselves: run once (overrides the conftest's)."""
    return "both"


@needs_compiled
@SETTINGS
@given(st.integers(0, 100_000) | st.integers(240, 1100), st.integers(0, 2**32 - 1), st.integers(0, 2**16),
       st.integers(0, 63))
def test_crc32c_of_long_buffers_matches_google_crc32c(length: int, start: int, seed: int, skew: int) -> None:
    """Every way this CPU runs (crc_methods: the table, one and three lanes of crc32 instructions
    across the 3 x 8192 and 3 x 256 byte lanes, VPCLMULQDQ folding of 256-byte steps, 64- and
    16-byte pieces and the bytes left) at any alignment, continuing any CRC."""
    assert COMPILED is not None
    data = random.Random(seed).randbytes(length + skew)
    view = memoryview(data)[skew:]
    expected = google_crc32c.extend(start, bytes(view))
    assert COMPILED.extend(start, view) == expected
    for method in COMPILED.crc_methods:
        assert COMPILED.extend_with(method, start, view) == expected, method


@needs_compiled
def test_gpudoc_events_crc_forces_a_slower_way_for_both_extensions(tmp_path: Path) -> None:
    """GPUDOC_EVENTS_CRC=<method> makes both compiled modules use it (a name the CPU cannot run is
    ignored), and each way gives the same CRCs, trims and info counts as the fastest."""
    assert COMPILED is not None
    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    payload = random.Random(7).randbytes(300_000)
    with open(run / "events.out.tfevents.1.host", "wb") as handle:
        for step in range(6):
            image = summary_pb2.Summary.Image(height=1, width=1, encoded_image_string=payload[step:])
            values = [summary_pb2.Summary.Value(tag="img", image=image),
                      summary_pb2.Summary.Value(tag="loss", simple_value=step / 7)]
            for value in values:
                event = event_pb2.Event(wall_time=1.0 + step, step=step, summary=summary_pb2.Summary(value=[value]))
                handle.write(frame(event.SerializeToString()))
    code = ("import sys, json, google_crc32c\n"
            "from pathlib import Path\n"
            "from gpudoc.events import _core, _scan\n"
            "from gpudoc.events.discover import discover\n"
            "from gpudoc.events.info import run_info\n"
            "from gpudoc.events.trim import TrimSpec, trim\n"
            "data = Path(sys.argv[1]).read_bytes()\n"
            "crcs = [_core.extend(7, data[:n]) == google_crc32c.extend(7, data[:n]) for n in (0, 5, 300, 70_000)]\n"
            "root, runs = discover(sys.argv[2])\n"
            "trim(root, runs, Path(sys.argv[3]), TrimSpec(first_step=2))\n"
            "info = run_info(runs[0], root)\n"
            "print(json.dumps([_core.crc_method, crcs, repr(info)]))\n")
    results = {}
    for method in (*COMPILED.crc_methods, "no-such-way"):
        env = {k: v for k, v in os.environ.items() if k != "GPUDOC_EVENTS_CORE"}
        env["GPUDOC_EVENTS_CRC"] = method
        out = tmp_path / method
        line = subprocess.run([sys.executable, "-c", code, str(run / "events.out.tfevents.1.host"),
                               str(tmp_path / "logs"), str(out)], capture_output=True, text=True, check=True,
                              env=env).stdout
        used, crcs, info = json.loads(line)
        assert used == (COMPILED.crc_methods[-1] if method == "no-such-way" else method)
        assert all(crcs), method
        results[method] = (info, (out / "run" / "events.out.tfevents.1.host").read_bytes())
    assert len(set(results.values())) == 1


def _pass(data: list[bytes], marks: tuple[bytes, ...] = tuple(MARKS)) -> tuple[Any, ...]:
    """trim_pass over framed ``data`` keeping everything (no bounds, run-level kept)."""
    assert COMPILED is not None
    buffer = b"".join(frame(d) for d in data)
    return COMPILED.trim_pass(buffer, 0, 0, 0, 0, 0, 0.0, 0.0, sum(1 << f for f in (3, 4, 7, 8, 9, 10)), True, False,
                              marks, -1, 0, b"_hparams_/")


def _summary(body: bytes) -> bytes:
    """Event bytes as peek reads them: wall_time, step 1, then a summary field holding ``body``."""
    length, size = bytearray(), len(body)
    while size >= 0x80:
        length.append(size & 0x7F | 0x80)
        size >>= 7
    length.append(size)
    return b"\x09" + struct.pack("<d", 1.0) + b"\x10\x01\x2a" + bytes(length) + body


@needs_compiled
@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 45, 46, 47, 63, 64, 65, 77, 78, 79, 96, 100, 127, 128, 129, 150,
                                  300])
def test_a_mark_anywhere_in_a_summary_stops_the_core(size: int) -> None:
    """Every start position, in the vectorised blocks and the positions after them: the core
    leaves the record to Python; without a mark it keeps it and continues the output's CRC."""
    body = bytes(random.Random(size).choice(b"abcdefghijklmnop") for _ in range(size))
    _, count, kept, _, crc, mentions = _pass([_summary(body)])
    assert (count, kept, mentions) == (1, 1, False)
    assert crc == google_crc32c.value(frame(_summary(body)))
    for mark in MARKS:
        for at in range(size - len(mark) + 1):
            data = _summary(body[:at] + mark + body[at + len(mark):])
            assert _pass([data])[1] == 0, (mark, at)
            assert _pass([data], (b"x", mark, b"y"))[1] == 0, (mark, at)
            assert _pass([data], (*(m for m in MARKS if m != mark), b"zz"))[1] == 1, (mark, at)
            assert _pass([data], ())[1] == 1, (mark, at)  # no marks to search: kept


@needs_compiled
def test_the_avx2_search_finds_every_mark_too() -> None:
    """Where the CPU has AVX-512BW the search above used it; the AVX2 one, as other CPUs run it."""
    assert COMPILED is not None
    if COMPILED.search != "AVX-512BW":
        pytest.skip(f"this CPU searches with {COMPILED.search} (tested above)")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_trim_compiled as t; "
            "assert t.COMPILED.search == 'AVX2', t.COMPILED.search\n"
            "for size in (46, 47, 63, 64, 65, 77, 96, 150): t.test_a_mark_anywhere_in_a_summary_stops_the_core(size)")
    env = {**os.environ, "GPUDOC_EVENTS_NO_AVX512": "1"}
    subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], check=True, env=env)


@needs_compiled
def test_the_prefix_in_a_record_the_core_keeps_is_reported() -> None:
    """A graph (or any record not a summary) holding '_hparams_/' is kept by the core, which says so."""
    graph = event_pb2.Event(step=1, wall_time=1.0, graph_def=b"x" * 50 + b"_hparams_/" + b"y" * 40).SerializeToString()
    version = event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString()
    assert _pass([version])[1:3] + _pass([version])[5:] == (1, 1, False)
    result = _pass([version, graph])
    assert result[1:3] == (2, 2) and result[5] is True
    assert result[4] == google_crc32c.value(frame(version) + frame(graph))


@st.composite
def large_event(draw: st.DrawFn) -> bytes:
    """An image-like summary (payloads either side of the sizes the core treats apart), with a
    run-level mark planted at its start, end or anywhere, sometimes; or a small record."""
    step = draw(st.sampled_from([0, 1, 3, 7, 10]))
    event = event_pb2.Event(wall_time=draw(st.sampled_from([0.0, 1.0, 5.0, 9.5])), step=step)
    what = draw(st.sampled_from(["image"] * 6 + ["version", "scalar", "graph"]))
    if what == "version":
        event.file_version = "brain.Event:2"
    elif what == "graph":
        event.graph_def = random.Random(step).randbytes(draw(st.sampled_from([10, 5000])))
    elif what == "scalar":
        event.summary.value.add(tag=draw(st.sampled_from(["loss", "J"])), simple_value=1.0)
    else:
        size = draw(st.sampled_from([0, 100, 2030, 2047, 2048, 3 * 256, 3 * 8192 - 1, 3 * 8192 + 37, 40_000]))
        payload = bytearray(random.Random(draw(st.integers(0, 99))).randbytes(size))
        mark = draw(st.none() | st.sampled_from(MARKS))
        if mark is not None and size >= len(mark):
            at = draw(st.sampled_from([0, size - len(mark) - draw(st.integers(0, min(40, size - len(mark)))),
                                       draw(st.integers(0, size - len(mark)))]))
            payload[at : at + len(mark)] = mark
        value = event.summary.value.add(tag=draw(st.sampled_from(["img", "J"])))
        value.image.encoded_image_string = bytes(payload)
        if draw(st.integers(0, 5)) == 0:
            value.metadata.plugin_data.plugin_name = "images"
    return event.SerializeToString()


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
@given(st.lists(large_event(), max_size=10), st.none() | st.integers(0, 8), st.none() | st.sampled_from([0.5, 6.0]),
       st.booleans(), st.none() | st.integers(0, 9), st.sampled_from(["flip", "cut", "lie"]),
       st.sampled_from([64, 4096, 60_000, 1 << 21]), st.booleans())
def test_large_records_trim_to_the_bytes_python_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: list[bytes], first: int | None, end: float | None,
    salvage: bool, damage_at: int | None, damage: str, block: int, threaded: bool,
) -> None:
    """Read blocks from 64 bytes (every record outgrows its block) to the default, the kept
    runs written by the trimming thread or by a second one (two read buffers in turn)."""
    monkeypatch.setattr(trim_module, "_BLOCK", block)
    monkeypatch.setattr(trim_module, "_THREADED_WRITES", 0 if threaded else 1 << 62)
    source = tmp_path / "logs"
    (source / "run").mkdir(parents=True, exist_ok=True)
    framed = [frame(e) for e in events]
    if damage_at is not None and damage_at < len(framed):
        record = bytearray(framed[damage_at])
        if damage == "flip":
            record[len(record) // 2] ^= 0x20
        elif damage == "lie":  # a length whose CRC checks, past the file's end
            record[:12] = struct.pack("<Q", 1 << 30) + struct.pack("<I", records.masked_crc(struct.pack("<Q", 1 << 30)))
        else:
            del record[len(record) // 3 :]
        framed[damage_at] = bytes(record)
        if damage != "flip":
            framed = framed[: damage_at + 1]
    (source / "run" / "events.out.tfevents.1.big").write_bytes(b"".join(framed))
    spec = TrimSpec(first_step=first, end=end)
    saved = records._core
    try:
        records._core = None
        expected = _trim(source, tmp_path / "python", spec, salvage)
        records._core = COMPILED
        assert _trim(source, tmp_path / "compiled", spec, salvage) == expected
    finally:
        records._core = saved


@needs_compiled
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("flip", [10, -5])
def test_a_staged_copy_that_does_not_read_back_is_never_placed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              split: bool, flip: int) -> None:
    """The compiled path writes from its checked buffer; the staged file is still CRC-checked
    before the rename (by one thread, or a large one by two, each reading back half): a write
    that went wrong, in either half, leaves nothing at the destination."""
    monkeypatch.setattr(trim_module, "_SPLIT_VERIFY", 1 if split else 1 << 62)
    source = tmp_path / "logs"
    (source / "run").mkdir(parents=True)
    image = event_pb2.Event(step=1, wall_time=1.0, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag="img", image=summary_pb2.Summary.Image(encoded_image_string=os.urandom(100_000)))]))
    (source / "run" / "events.out.tfevents.1.x").write_bytes(frame(image.SerializeToString()) * 3)
    written = trim_module._Output._write_all

    def flipped(self: Any, data: memoryview) -> None:
        changed = bytearray(data)
        changed[flip] ^= 1
        written(self, memoryview(changed))

    monkeypatch.setattr(trim_module._Output, "_write_all", flipped)
    root, runs = discover(source)
    with pytest.raises(GpudocError, match="does not read back intact; nothing was replaced"):
        trim(root, runs, tmp_path / "out", TrimSpec())
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


@needs_compiled
@pytest.mark.parametrize("threaded", [False, True])
def test_a_write_that_fails_names_the_staged_file_and_places_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    threaded: bool) -> None:
    """A full disk mid-trim (a write by either thread) is an OSError naming the staged file
    (the CLI's one line, exit 2), nothing is placed, and no writing thread is left running."""
    import errno
    import threading

    monkeypatch.setattr(trim_module, "_THREADED_WRITES", 0 if threaded else 1 << 62)
    monkeypatch.setattr(trim_module, "_BLOCK", 4096)
    source = tmp_path / "logs"
    (source / "run").mkdir(parents=True)
    image = event_pb2.Event(step=1, wall_time=1.0, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag="img", image=summary_pb2.Summary.Image(encoded_image_string=os.urandom(70_000)))]))
    (source / "run" / "events.out.tfevents.1.x").write_bytes(frame(image.SerializeToString()) * 5)
    real = os.write
    calls: list[int] = []

    def full(fd: int, data: Any) -> int:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", full)
    root, runs = discover(source)
    descriptors = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    with pytest.raises(OSError) as raised:
        trim(root, runs, tmp_path / "out", TrimSpec())
    assert raised.value.errno == errno.ENOSPC and ".gpudoc-trim-" in str(raised.value.filename)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert not [t for t in threading.enumerate() if t.name == "gpudoc-trim-writer"]
    if descriptors:  # the writing thread's own descriptor is closed too
        assert set(os.listdir("/proc/self/fd")) <= descriptors


@needs_compiled
def test_a_trim_where_no_thread_can_start_writes_from_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads exhausted (RuntimeError at start): the writes and the read-back stay in the
    trimming thread, same bytes."""
    import threading

    source = tmp_path / "logs"
    (source / "run").mkdir(parents=True)
    image = event_pb2.Event(step=1, wall_time=1.0, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag="img", image=summary_pb2.Summary.Image(encoded_image_string=os.urandom(90_000)))]))
    (source / "run" / "events.out.tfevents.1.x").write_bytes(frame(image.SerializeToString()) * 4)
    monkeypatch.setattr(trim_module, "_THREADED_WRITES", 0)
    monkeypatch.setattr(trim_module, "_SPLIT_VERIFY", 1)

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    root, runs = discover(source)
    trim(root, runs, tmp_path / "out", TrimSpec())
    assert (tmp_path / "out" / "run" / "events.out.tfevents.1.x").read_bytes() == (
        source / "run" / "events.out.tfevents.1.x").read_bytes()


@needs_compiled
@SETTINGS
@given(st.integers(1, 300_000), st.integers(0, 2**16))
def test_a_staged_copy_read_back_in_two_halves_has_the_files_crc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 size: int, seed: int) -> None:
    """The two halves' CRCs, read on two threads, join into the whole file's (odd sizes too)."""
    monkeypatch.setattr(trim_module, "_SPLIT_VERIFY", 1)
    data = random.Random(seed).randbytes(size)
    staged = tmp_path / f"{size}-{seed}.tmp"
    staged.write_bytes(data)
    assert trim_module._staged_crc(staged) == (google_crc32c.extend(0, data), size)
    staged.unlink()


@pytest.mark.parametrize("logdir", ["keras", "tbx"])
@pytest.mark.parametrize("core", ["compiled", "python"])
def test_sessions_found_after_the_first_pass_are_counted_once(written: dict[str, Path], tmp_path: Path,
                                                              logdir: str, core: str) -> None:
    """A run an hparams session owns is trimmed again once the session is known: its files
    are listed once, with every record, and a dry run counts every value once (as a trim
    that never looks for sessions does)."""
    if core == "compiled" and COMPILED is None:
        pytest.skip("the compiled core is not built here")
    saved = records._core
    records._core = COMPILED if core == "compiled" else None
    try:
        root, runs = discover(written[logdir])
        report = trim(root, runs, tmp_path / "out", TrimSpec(first_step=1, last_step=1))
        sources = [f[0] for f in report.files]
        assert sorted(sources) == sorted(str(p) for run in runs for p in run.files)
        for source, _, records_in, _ in report.files:
            assert records_in == sum(1 for _ in records.RecordReader(source))
        spec = TrimSpec(first_step=1, last_step=1)
        counted = trim(root, runs, None, spec, dry_run=True).before
        unsearched = trim(root, runs, None, TrimSpec(first_step=1, last_step=1, keep_run_level=False),
                          dry_run=True).before
        assert counted == unsearched and sum(counted.values()) > 0
    finally:
        records._core = saved


@needs_compiled
def test_dropped_images_are_not_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step trim of add_image's old-style images: those out of range (their encoded bytes
    hold 0x4a, the metadata key, as any image does) are dropped by the core, not parsed."""
    source = tmp_path / "logs"
    (source / "run").mkdir(parents=True)
    events = []
    for step in range(10):
        image = summary_pb2.Summary.Image(height=8, width=8, colorspace=3,
                                          encoded_image_string=b"\x4a" + random.Random(step).randbytes(5000))
        events.append(event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="img", image=image)])).SerializeToString())
    (source / "run" / "events.out.tfevents.1.x").write_bytes(b"".join(frame(e) for e in events))
    saved = records._core
    try:
        records._core = None
        expected = _trim(source, tmp_path / "python", TrimSpec(first_step=5), False)
        records._core = COMPILED

        def parse(*_: object) -> None:
            raise AssertionError("parsed")

        monkeypatch.setattr(trim_module, "decode", parse)
        assert _trim(source, tmp_path / "compiled", TrimSpec(first_step=5), False) == expected
    finally:
        records._core = saved
    assert expected[1] == [(10, 5)]


@pytest.mark.parametrize("args", [[], ["--steps", "2:"], ["--tags", "loss"]], ids=["all", "steps", "tags"])
@pytest.mark.parametrize("damaged", [False, True], ids=["intact", "after-damage"])
def test_a_record_that_is_no_event_is_skipped_as_damage_by_a_salvaging_trim(tmp_path: Path, args: list[str],
                                                                            damaged: bool) -> None:
    """Framed records whose CRCs check but whose bytes are no Event (the second one after a
    record failing its CRC, when ``damaged``: the compiled path has then handed the file to the
    reader): trim --salvage failed on them (exit 2). On both cores it now skips them as damage
    (file, bytes, record index), writing every other record it keeps, byte for byte the trim of
    the file without them, and a dry run reports the same; without --salvage it is one line
    naming the file and byte (exit 2), and nothing is left at the destination."""
    from click.testing import CliRunner
    from tensorboardX import SummaryWriter

    from gpudoc.cli import cli

    with SummaryWriter(str(tmp_path / "clean" / "run")) as writer:
        for step in range(6):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
            writer.add_scalar("acc", step / 6, step)
    (clean,) = (tmp_path / "clean" / "run").iterdir()
    framed = [frame(r) for r in records.read_records(clean)[0]]
    if damaged:
        broken = bytearray(framed[4])
        broken[-6] ^= 0x20  # its data CRC fails
        framed[4] = bytes(broken)
    clean.write_bytes(b"".join(framed))
    garbage = [frame(b"\xff\xff\xff not a protobuf"), frame(b"\xff\xff\xff neither _hparams_/ this")]
    layout = [*framed[:2], garbage[0], *framed[2:5], garbage[1], *framed[5:]]
    source = tmp_path / "logs" / "run" / clean.name
    source.parent.mkdir(parents=True)
    source.write_bytes(b"".join(layout))
    starts = [sum(map(len, layout[:index])) for index in (2, 6)]
    reason = "record {}: not a TensorBoard Event (its CRCs check, its bytes do not parse); record skipped"
    expected = [{"file": str(source), "start": start, "end": start + len(g), "reason": reason.format(index)}
                for start, g, index in zip(starts, garbage, (2, 6))]
    if damaged:
        start = sum(map(len, layout[:5]))
        expected.insert(1, {"file": str(source), "start": start, "end": start + len(framed[4]),
                            "reason": "data CRC mismatch; record skipped"})

    def gpudoc(*words: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, ["events", "trim", *words, *args])
        return result.exit_code, result.stdout, result.stderr

    outputs = []
    saved = records._core
    try:
        for core in ([COMPILED] if COMPILED is not None else []) + [None]:
            records._core = core
            out = tmp_path / f"out-{core is None}"
            code, text, err = gpudoc(str(tmp_path / "clean"), "-o", str(tmp_path / "reference"), "--salvage",
                                     "--json")
            assert code == 0, err
            (reference,) = json.loads(text)["files"]
            code, text, err = gpudoc(str(tmp_path / "logs"), "-o", str(out), "--salvage", "--json")
            assert code == 0, err
            report = json.loads(text)
            assert report["damage"] == expected
            (file,) = report["files"]
            assert (file["records_in"], file["records_out"]) == (reference["records_in"], reference["records_out"])
            outputs.append((out / "run" / source.name).read_bytes())
            assert outputs[-1] == (tmp_path / "reference" / "run" / clean.name).read_bytes()
            if not args and not damaged:
                assert outputs[-1] == b"".join(framed)
            shutil.rmtree(tmp_path / "reference")
            code, text, err = gpudoc(str(tmp_path / "logs"), "-o", str(tmp_path / "dry"), "--salvage", "--dry-run",
                                     "--json")
            assert code == 0, err
            dry = json.loads(text)
            assert dry["damage"] == expected and [(f["records_in"], f["records_out"]) for f in dry["files"]] == [
                (file["records_in"], file["records_out"])]
            code, text, err = gpudoc(str(tmp_path / "logs"), "-o", str(tmp_path / "strict"))
            (line,) = err.splitlines()
            assert code == 2 and f"{source}: the record at byte {starts[0]} is not a TensorBoard Event" in line
            assert not (tmp_path / "strict").exists()
    finally:
        records._core = saved
    assert len(set(outputs)) == 1
