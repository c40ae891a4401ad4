"""The record reader on damaged, truncated, growing and random files; info on restarts."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

from gpudoc.cli import cli
from gpudoc.errors import GpudocError
from gpudoc.events import CorruptRecord, RecordReader, RecordWriter, frame, masked_crc
from gpudoc.events.records import ReadState, read_records


def gpudoc(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["events", *args])
    return result.exit_code, result.stdout, result.stderr


def main_file(root: Path) -> Path:
    return sorted(p for p in (root / "run1").iterdir() if p.is_file() and not p.name.endswith(".restart"))[0]


def test_framing_matches_tensorboards_reader(tbx: Path) -> None:
    path = main_file(tbx)
    ours, state = read_records(path)
    assert ours == list(RawEventFileLoader(str(path)).Load())
    assert state.partial == 0 and not state.damage
    assert b"".join(frame(r) for r in ours) == path.read_bytes()
    assert masked_crc(b"") == 0xA282EAD8


def test_a_flipped_bit_is_reported_with_its_offset_and_salvage_skips_it(tbx: Path, tmp_path: Path) -> None:
    path = main_file(tbx)
    records, _ = read_records(path)
    offsets = [offset for offset, _, _ in RecordReader(path)]
    data = bytearray(path.read_bytes())
    data[offsets[100] + 20] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecord, match=f"record 100 at byte {offsets[100]}: data CRC mismatch"):
        read_records(path)
    salvaged, state = read_records(path, salvage=True)
    assert salvaged == records[:100] + records[101:]
    assert [(d.start, d.reason) for d in state.damage] == [(offsets[100], "data CRC mismatch; record skipped")]
    code, out, _ = gpudoc("info", str(tbx), "--json")
    assert code == 1 and any(f["damage"] for run in json.loads(out) for f in run["files"])
    code, _, err = gpudoc("trim", str(tbx), "-o", str(tmp_path / "out"), "--steps", "1:50")
    assert code == 2 and f"at byte {offsets[100]}" in err and "--salvage" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    code, _, _ = gpudoc("trim", str(tbx), "-o", str(tmp_path / "saved"), "--steps", "1:50", "--salvage")
    assert code == 0 and any((tmp_path / "saved").rglob("*tfevents*"))


def test_a_damaged_length_resynchronises(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.x"
    payloads = [f"record {i}".encode() * (i + 1) for i in range(20)]
    blob = bytearray(b"".join(frame(p) for p in payloads))
    start = sum(len(frame(p)) for p in payloads[:7])
    blob[start + 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    salvaged, state = read_records(path, salvage=True)
    assert salvaged == payloads[:7] + payloads[8:]
    assert state.damage[0].start == start and "damaged length" in state.damage[0].reason


def test_a_length_beyond_a_records_limit_with_a_valid_crc_says_so(tbx: Path, tmp_path: Path) -> None:
    """A header of length 2**40 whose length CRC checks was reported as a "length CRC
    mismatch (the length field is damaged)"; it now says what it is, where, on both cores."""
    import struct

    path = main_file(tbx)
    records, _ = read_records(path)
    start = path.stat().st_size
    length = struct.pack("<Q", 1 << 40)
    path.write_bytes(path.read_bytes() + length + struct.pack("<I", masked_crc(length)) + b"\0" * 64)
    said = (f"record {len(records)} at byte {start}: the length field says {1 << 40} bytes (its CRC checks), beyond "
            f"the {1 << 31}-byte limit of a record and beyond the file's end ({start + 76} bytes)")
    with pytest.raises(CorruptRecord, match=re.escape(said)):
        read_records(path)
    salvaged, state = read_records(path, salvage=True)
    assert salvaged == records and [(d.start, d.reason) for d in state.damage] == [
        (start, f"length {1 << 40} beyond a record's limit; no record after it")]
    for command in (["export", "-o", str(tmp_path / "t.csv")], ["trim", "-o", str(tmp_path / "t"), "--steps", "1:"]):
        code, _, err = gpudoc(command[0], str(tbx), *command[1:])
        assert code == 2 and f"{path}: {said}" in err and "CRC mismatch" not in err, (command, err)


def test_truncation_is_an_incomplete_record_not_an_error_when_reading(tbx: Path, tmp_path: Path) -> None:
    path = main_file(tbx)
    complete, _ = read_records(path)
    path.write_bytes(path.read_bytes()[:-7])
    records, state = read_records(path)
    assert state.partial > 0 and records == complete[:-1]
    code, out, _ = gpudoc("info", str(path))
    assert code == 1 and f"INCOMPLETE {path.name}: the last {state.partial} bytes (from byte {state.offset})" in out
    code, _, err = gpudoc("trim", str(tbx), "-o", str(tmp_path / "out"))
    assert code == 2 and "incomplete record" in err
    assert not any((tmp_path / "out").rglob("*tfevents*")) if (tmp_path / "out").exists() else True


def test_garbage_file_gives_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.garbage").write_bytes(b"this is not an event file at all, just text\n" * 10)
    code, out, _ = gpudoc("info", str(tmp_path / "logs"))
    assert code == 1 and "DAMAGED" in out
    code, _, err = gpudoc("trim", str(tmp_path / "logs"), "-o", str(tmp_path / "out"))
    assert code == 2 and "record 0 at byte 0: length CRC mismatch" in err


def test_tailing_a_growing_file_yields_each_record_once(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.live"
    payloads = [f"event {i}".encode() for i in range(50)]
    blob = b"".join(frame(p) for p in payloads)
    state = ReadState()
    seen: list[bytes] = []
    cuts = [0, 5, 33, 34, 200, 201, 202, 399, len(blob)]
    for cut in cuts:
        path.write_bytes(blob[:cut])
        seen.extend(data for _, data, _ in RecordReader(path, state=state))
    assert seen == payloads and state.partial == 0 and state.offset == len(blob)


def test_writer_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.w"
    with open(path, "wb") as handle:
        writer = RecordWriter(handle)
        for i in range(3):
            writer.write(bytes([i]) * i)
    assert read_records(path)[0] == [b"", b"\x01", b"\x02\x02"]
    assert list(RawEventFileLoader(str(path)).Load()) == [b"", b"\x01", b"\x02\x02"]


def test_info_reports_the_restart_as_tensorboard_resolves_it(tbx: Path) -> None:
    code, out, _ = gpudoc("info", str(tbx / "run1"), "--json")
    assert code == 0
    run = next(r for r in json.loads(out) if r["run"] == "run1")
    (restart,) = run["restarts"]
    assert restart["step"] == 80 and restart["cause"] == "start" and restart["earlier_points"] > 0
    loss = next(t for t in run["tags"] if t["tag"] == "loss")
    assert (loss["count"], loss["step_min"], loss["step_max"], loss["duplicate_steps"]) == (142, 0, 120, 21)
    kinds = {t["tag"]: t["kind"] for t in run["tags"]}
    assert kinds["weights"] == "histogram" and kinds["img"] == "image" and kinds["pr"] == "pr_curve"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=600), salvage=st.booleans())
def test_fuzz_random_bytes_raise_only_gpudocs_errors(tmp_path: Path, blob: bytes, salvage: bool) -> None:
    path = tmp_path / "events.out.tfevents.fuzz"
    path.write_bytes(blob)
    with contextlib.suppress(GpudocError):
        read_records(path, salvage=salvage)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=10_000), value=st.integers(0, 255), cut=st.integers(0, 64))
def test_fuzz_mutated_valid_files(tmp_path: Path, position: int, value: int, cut: int) -> None:
    payloads = [bytes([i]) * (i * 7 % 40) for i in range(40)]
    blob = bytearray(b"".join(frame(p) for p in payloads))
    blob[position % len(blob)] = value
    path = tmp_path / "events.out.tfevents.mutated"
    path.write_bytes(bytes(blob[: len(blob) - cut]))
    try:
        records, _ = read_records(path)
    except CorruptRecord:
        records, _ = read_records(path, salvage=True)
    assert all(r in payloads for r in records)


def test_info_of_an_unreadable_file_has_no_placeholder_fields(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.garbage"
    path.write_bytes(b"not an event file\n" * 8)
    code, out, _ = gpudoc("info", str(path))
    header = out.splitlines()[0]
    assert code == 1 and ": 1 file, 0 records, " in header and "no steps" in header
    assert "None" not in out and "kinds:" not in out and "records:" not in out


def test_info_accounts_for_every_record_and_names_a_run_given_directly(tbx: Path) -> None:
    path = main_file(tbx)
    offsets = [offset for offset, _, _ in RecordReader(path)]
    data = bytearray(path.read_bytes())
    data[offsets[5] + 20] ^= 0x01
    path.write_bytes(bytes(data))
    code, out, _ = gpudoc("info", str(tbx), "--json")
    runs = json.loads(out)
    assert code == 1 and all(sum(r["records_by_kind"].values()) == r["records"] for r in runs)
    run1 = next(r for r in runs if r["run"] == "run1")
    assert run1["records_by_kind"]["damaged"] == 1 and run1["records_by_kind"]["file_version"] == 3
    hparams = next(r for r in runs if r["run"].startswith("run1/"))
    assert hparams["records_by_kind"] == {"file_version": 1, "summary": 4}
    assert hparams["values_by_kind"] == {"hparams": 3, "scalar": 1}
    code, out, _ = gpudoc("info", str(tbx / "run1"))
    assert out.startswith("run run1 (")
    assert "  records: damaged 1, file_version 3, session_log 1, summary " in out
    acc = next(line for line in out.splitlines() if " hparam/acc " in line)
    assert " 1 value, steps 0..0" in acc and "values" not in acc
    code, out, _ = gpudoc("info", str(path), "--json")
    assert json.loads(out)[0]["run"] == "run1"


def test_records_that_are_not_events_are_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    with open(run / "events.out.tfevents.other", "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(b"\xff\xff\xff not a protobuf")
    code, out, _ = gpudoc("info", str(tmp_path / "logs"))
    assert code == 1 and "not a TensorBoard Event (its CRCs check, its bytes do not parse); record skipped" in out
    assert "records: damaged 1" in out
    for command in (["export", "-o", str(tmp_path / "t.csv")], ["trim", "-o", str(tmp_path / "t"), "--steps", "1:"],
                    ["merge", "-o", str(tmp_path / "m")]):
        code, _, err = gpudoc(command[0], str(run), *command[1:])
        assert code == 2 and "at byte 0 is not a TensorBoard Event" in err, (command, err)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(max_size=40), max_size=6), tail=st.binary(max_size=12),
       command=st.sampled_from(["info", "export", "trim", "merge", "replay"]), salvage=st.booleans())
def test_fuzz_commands_on_framed_garbage_never_fail_internally(tmp_path: Path, payloads: list[bytes], tail: bytes,
                                                               command: str, salvage: bool) -> None:
    """Records whose CRCs check but whose bytes are anything, and a torn tail: every command
    answers 0, 1 or 2, never an internal error."""
    import shutil

    shutil.rmtree(tmp_path / "case", ignore_errors=True)
    run = tmp_path / "case" / "src" / "run"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.fuzz").write_bytes(b"".join(frame(p) for p in payloads) + tail)
    args = [command, str(run)]
    if command != "info":
        args += ["-o", str(tmp_path / "case" / ("out.csv" if command == "export" else "out"))]
    if command == "replay":
        args += ["--rate", "1e6"]
    if salvage and command != "info":
        args.append("--salvage")
    code, _, err = gpudoc(*args)
    assert code in (0, 1, 2), err


def _no_event_after_two(tmp_path: Path) -> tuple[Path, list[bytes], int, bytes]:
    """A tensorboardX file (tmp_path/run) with a CRC-valid record that is no Event after its
    first two records: the file, its records as written, the garbage's offset and framing."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path / "run")) as writer:
        writer.add_scalar("loss", 1.0, 0)
        writer.add_scalar("loss", 2.0, 1)
    (source,) = (tmp_path / "run").iterdir()
    records, _ = read_records(source)
    start = sum(len(frame(r)) for r in records[:2])
    garbage = frame(b"\xff\xff\xff not a protobuf")
    source.write_bytes(b"".join(frame(r) for r in records[:2]) + garbage + frame(records[2]))
    return source, records, start, garbage


def test_a_record_that_is_no_event_is_skipped_as_damage_by_salvage(tmp_path: Path) -> None:
    """A framed record whose CRCs check but whose bytes are no Event, between real ones: it
    failed export, merge and replay even with --salvage. Salvage now skips it as damage
    (file, bytes, record index); without --salvage it is one line naming the file and byte,
    and nothing is written."""
    import subprocess
    import sys

    source, records, start, garbage = _no_event_after_two(tmp_path)
    where = {"file": str(source), "start": start, "end": start + len(garbage),
             "reason": "record 2: not a TensorBoard Event (its CRCs check, its bytes do not parse); record skipped"}
    commands = {"export": ["-o", str(tmp_path / "t.jsonl")], "merge": ["-o", str(tmp_path / "m")],
                "replay": ["-o", str(tmp_path / "r"), "--rate", "1000"]}
    for command, args in commands.items():
        code, out, err = gpudoc(command, str(tmp_path / "run"), *args, "--salvage", "--json")
        assert code == 0, (command, err)
        assert json.loads(out)["damage"] == [where], command
    assert [json.loads(line)["value"] for line in (tmp_path / "t.jsonl").read_text().splitlines()] == [1.0, 2.0]
    for run in (tmp_path / "m", tmp_path / "r"):
        (copy,) = run.rglob("*tfevents*")
        assert read_records(copy)[0] == records, run
    code, out, _ = gpudoc("info", str(tmp_path / "run"), "--json")
    (file,) = json.loads(out)[0]["files"]
    assert code == 1 and [dict(d, file=str(source)) for d in file["damage"]] == [where]

    for command, args in commands.items():
        dest = Path(args[1]).with_name(f"strict-{command}")
        result = subprocess.run([sys.executable, "-m", "gpudoc", "events", command, str(tmp_path / "run"),
                                 "-o", str(dest), *args[2:]], capture_output=True, text=True, timeout=120)
        (line,) = result.stderr.splitlines()
        assert result.returncode == 2 and f"{source}: the record at byte {start} is not a TensorBoard Event" in line
        assert not dest.exists() or not any(dest.rglob("*tfevents*")), command
    result = subprocess.run([sys.executable, "-m", "gpudoc", "events", "export", str(tmp_path / "run"), "-o", "-"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == "" and f"at byte {start} is not" in result.stderr


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not out[-1] & 0x80:
            return bytes(out)


@st.composite
def _near_file_version_records(draw: st.DrawFn) -> bytes:
    """Bytes near a file-version record: its fields in or out of order, steps and lengths
    canonical, too long or off by a few, strings of any text (surrogates too) or bytes, junk."""
    fields = []
    if draw(st.booleans()):
        fields.append(b"\x09" + draw(st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=9))))
    if draw(st.booleans()):
        fields.append(b"\x10" + _varint(draw(st.integers(0, (1 << 70) - 1))))
    text = draw(st.one_of(st.text(max_size=8).map(lambda t: t.encode("utf-8", "surrogatepass")),
                          st.binary(max_size=8)))
    length = max(0, len(text) + draw(st.sampled_from([0, 0, 0, -1, 1, 128])))
    fields.append(draw(st.sampled_from([b"\x1a", b"\x1a", b"\x22", b"\x12"])) + _varint(length) + text)
    if draw(st.booleans()):
        fields = draw(st.permutations(fields))
    return b"".join(fields) + draw(st.sampled_from([b"", b"", b"\x10\x01", b"\x1a\x00", b"\x00", b"\xff"]))


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(_near_file_version_records(), st.binary(max_size=40)))
def test_file_version_records_read_without_protobuf_are_what_protobuf_reads(data: bytes) -> None:
    """info and export read a record that is only a file version without importing protobuf
    (~12 ms of start-up): whatever bytes it accepts, protobuf parses to an Event holding that
    file version and that wall time, and nothing else."""
    import struct

    from tensorboard.compat.proto import event_pb2

    from gpudoc.events.model import file_version_wall

    wall = file_version_wall(data)
    if wall is None:
        return
    event = event_pb2.Event.FromString(data)
    assert event.WhichOneof("what") == "file_version" and event.file_version.isascii()
    assert struct.pack("<d", wall) == struct.pack("<d", event.wall_time)
    assert {f.name for f, _ in event.ListFields()} <= {"wall_time", "step", "file_version"}


@given(wall=st.floats(), step=st.integers(0, (1 << 63) - 1), version=st.text("brain.Event:0123456789", max_size=20))
def test_every_writers_file_version_record_is_read_without_protobuf(wall: float, step: int, version: str) -> None:
    import struct

    from tensorboard.compat.proto import event_pb2

    from gpudoc.events.model import file_version_wall

    data = event_pb2.Event(wall_time=wall, step=step, file_version=version).SerializeToString()
    assert struct.pack("<d", file_version_wall(data)) == struct.pack("<d", wall)
    assert file_version_wall(event_pb2.Event(wall_time=wall, step=-1, file_version=version).SerializeToString()) is None
    assert file_version_wall(data + b"\x10\x01") is None  # a field after it: parsed


def test_a_record_that_is_no_event_after_events_points_to_salvage(tmp_path: Path) -> None:
    """A CRC-valid record that is no Event, after real Events: the error said "this is not an
    event file (a TFRecord file of something else?)" and not that --salvage skips it. A file
    whose first record is no Event (a TFRecord file of something else) keeps that fix."""
    source, records, start, _ = _no_event_after_two(tmp_path)
    foreign = tmp_path / "foreign" / "events.out.tfevents.other"
    foreign.parent.mkdir()
    (tmp_path / "out").mkdir()
    foreign.write_bytes(frame(b"\xff\xff\xff not a protobuf") + frame(records[1]))
    for command in (["export", "-o", "t.csv"], ["trim", "-o", "t", "--steps", "1:"], ["merge", "-o", "m"],
                    ["replay", "-o", "r", "--rate", "1e6"]):
        out = ["-o", str(tmp_path / "out" / command[2]), *command[3:]]
        code, _, err = gpudoc(command[0], str(tmp_path / "run"), *out)
        assert code == 2 and err == (
            f"gpudoc: error: {source}: the record at byte {start} is not a TensorBoard Event (its CRCs check, its "
            "bytes do not parse): the 2 record(s) before it were read as Events: it is damaged, or was written by "
            "something else; '--salvage' skips it\n"), (command, err)
        code, _, err = gpudoc(command[0], str(foreign.parent), *out)
        assert code == 2 and err.endswith(
            "is not a TensorBoard Event (its CRCs check, its bytes do not parse): this is not an event file (a "
            "TFRecord file of something else?)\n") and "--salvage" not in err, (command, err)
