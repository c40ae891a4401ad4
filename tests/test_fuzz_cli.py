"""Every command's input parsing, fuzzed in-process with hypothesis: whatever files, specs,
ranges and option values a user gives, gpudoc answers with a result or with one
``gpudoc: error: …`` line (exit 1, 2 or 3) — never exit 70 (an internal error), never a
traceback, never an error that runs on over several lines.

Event files start from a real tensorboardX file and are cut, flipped and re-framed; arrays
and logs are generated. Nothing here builds a large model, starts a server or signals a
process: ``reap`` always runs as a dry run (no ``--yes``, no terminal) under a guard that
fails the test if anything reaches ``pidfd_send_signal``/``kill``, and ``serve`` only gets
addresses and ports it cannot listen on, under a guard that fails the test if it could.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpudoc.cli import cli

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FEW = settings(FUZZ, max_examples=15)


class Escaped(BaseException):
    """Something left ``cli.main`` that must not (SystemExit), or a guard tripped."""


class Result(NamedTuple):
    code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _fd_captured(fd: int) -> Iterator[io.BytesIO]:
    """What is written to file descriptor ``fd`` (C libraries, subprocesses) meanwhile."""
    sink = io.BytesIO()
    with tempfile.TemporaryFile() as raw:
        saved = os.dup(fd)
        os.dup2(raw.fileno(), fd)
        try:
            yield sink
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            raw.seek(0)
            sink.write(raw.read())


def _stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace", write_through=True)


def run_gpudoc(args: list[str]) -> Result:
    """``gpudoc ARGS`` in this process, with stdout and stderr (Python's and the file
    descriptors') captured."""
    out, err = _stream(), _stream()
    with (_fd_captured(2) as native_err, _fd_captured(1) as native_out, contextlib.redirect_stdout(out),
          contextlib.redirect_stderr(err)):
        try:
            code = cli.main(args, prog_name="gpudoc", standalone_mode=False)
        except SystemExit as exc:  # the real gpudoc would exit with it, without a word
            raise Escaped(f"SystemExit({exc.code!r}) escaped cli.main for gpudoc {shlex.join(args)}") from exc
    assert isinstance(out.buffer, io.BytesIO) and isinstance(err.buffer, io.BytesIO)
    stdout = out.buffer.getvalue().decode("utf-8", "replace") + native_out.getvalue().decode("utf-8", "replace")
    stderr = err.buffer.getvalue().decode("utf-8", "replace") + native_err.getvalue().decode("utf-8", "replace")
    return Result(int(code), stdout, stderr)


def check(args: list[str], context: str = "") -> Result:
    """Run ``gpudoc ARGS`` and assert the contract of bad input: an exit code of 0-3, no
    traceback, at most one error line, and that line last (nothing continues it); bad input
    (exit 2) says why. (doctor's exit 3 is its checklist, not an error line.)"""
    result = run_gpudoc(args)
    where = f"gpudoc {shlex.join(args)}" + (f"\n  input: {context}" if context else "")
    report = f"{where}\n  exit {result.code}\n  stderr:\n{result.stderr[-3000:]}"
    assert result.code != 70, "internal error (exit 70): " + report
    assert result.code in (0, 1, 2, 3), "unexpected exit code: " + report
    assert "Traceback" not in result.stderr, "traceback on stderr: " + report
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("gpudoc: error:")]
    assert len(errors) <= 1, "more than one error line: " + report
    if result.code == 2:
        assert errors, "exit 2 without a 'gpudoc: error:' line: " + report
    if errors:
        line = lines[errors[0]]
        assert line.removeprefix("gpudoc: error:").strip(), "an empty error line: " + report
        assert errors[0] == len(lines) - 1, "the error runs on over several lines: " + report
    return result


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@contextlib.contextmanager
def scratch(root: Path) -> Iterator[Path]:
    """A fresh directory for one example, removed afterwards."""
    folder = Path(tempfile.mkdtemp(dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Values a user may type for a number: ordinary, out of range, not numbers at all.
NUMBERISH = st.one_of(
    st.sampled_from(["0", "-0", "1", "-1", "0.5", "1e3", "1e400", "-1e400", "1e-400", "nan", "NaN", "inf", "-inf",
                     "", " ", "abc", "1_000", "0x10", "1,5", "٣", "1e", ".", "-", "+", "9" * 40, "--1"]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
NASTY_REGEX = st.one_of(
    st.sampled_from(["(", ")", "[", "*", "+?", "a{4294967296}", "a{2,1}", "(?P<x>", "\\", "(?<=a+)b", "a**",
                     "(?i", "[z-a]", "\\p{L}", "(?#", "", ".*", "^loss$", "(?P<n>a)(?P=n)", "\\1"]),
    st.text(alphabet="ab()[]{}*+?|\\^$.-,0123456789:<>=!#PiL", max_size=10),
)


# --- event files -----------------------------------------------------------------------------------


def _masked_crc(data: bytes) -> int:
    from tensorboardX.crc32c import crc32c

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _framed(payload: bytes, length: int | None = None) -> bytes:
    """A TFRecord with valid CRCs whose header may claim another ``length``."""
    header = struct.pack("<Q", len(payload) if length is None else length)
    return header + struct.pack("<I", _masked_crc(header)) + payload + struct.pack("<I", _masked_crc(payload))


@pytest.fixture(scope="module")
def event_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real event file: scalars, a histogram and a text value from tensorboardX."""
    from tensorboardX import SummaryWriter

    run = tmp_path_factory.mktemp("fuzz-events") / "run"
    writer = SummaryWriter(str(run))
    for step in range(6):
        writer.add_scalar("loss", 1 / (step + 1), step)
        writer.add_scalar("val/psnr", 20.0 + step, step)
        writer.add_scalar("mae", 0.1 / (step + 1), step)
    writer.add_histogram("weights", np.arange(5.0), 3)
    writer.add_text("note", "hello", 2)
    writer.close()
    (found,) = run.glob("*tfevents*")
    return found


@st.composite
def damaged(draw: st.DrawFn, base: bytes) -> tuple[bytes, str]:
    """``base`` cut, flipped, overwritten, spliced, re-framed or replaced, and how."""
    n = len(base)
    how = draw(st.sampled_from(["cut", "flip", "overwrite", "insert", "random", "append", "huge-length",
                                "framed-garbage", "empty"]))
    if how == "cut":
        at = draw(st.integers(0, n - 1))
        return base[:at], f"the first {at} of {n} bytes of a tensorboardX file"
    if how == "flip":
        flips = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 255)), min_size=1, max_size=4))
        data = bytearray(base)
        for at, mask in flips:
            data[at] ^= mask
        return bytes(data), f"a tensorboardX file with (offset, xor) {flips}"
    if how == "overwrite":
        at = draw(st.integers(0, n - 1))
        chunk = draw(st.binary(min_size=1, max_size=32))
        return base[:at] + chunk + base[at + len(chunk):], f"a tensorboardX file with {chunk!r} written at {at}"
    if how == "insert":
        at = draw(st.integers(0, n))
        chunk = draw(st.binary(min_size=1, max_size=32))
        return base[:at] + chunk + base[at:], f"a tensorboardX file with {chunk!r} inserted at {at}"
    if how == "random":
        data = draw(st.binary(min_size=1, max_size=200))
        return data, f"random bytes {data!r}"
    if how == "append":
        tail = base[: draw(st.integers(1, n))]
        return base + tail, f"a tensorboardX file followed by its first {len(tail)} bytes"
    if how == "huge-length":
        length = draw(st.sampled_from([2**63, 2**64 - 1, 2**40, n * 10, 2**31]))
        at = draw(st.sampled_from([0, n]))
        record = _framed(b"\x08\x01", length)
        return base[:at] + record + base[at:], f"a record header with valid CRCs claiming {length} bytes at offset {at}"
    if how == "framed-garbage":
        payload = draw(st.binary(max_size=40))
        return base + _framed(payload), f"a tensorboardX file plus a CRC-valid record of {payload!r} (not an Event)"
    return b"", "an empty file"


@FUZZ
@given(data=st.data())
def test_events_commands_on_damaged_files(event_file: Path, several_runs: Path, scratch_root: Path,
                                          data: st.DataObject) -> None:
    """info, trim (with and without --salvage), export, merge and replay on a damaged file,
    alone in its run or the second file of a run in a logdir of several."""
    content, how = data.draw(damaged(event_file.read_bytes()))
    beside = data.draw(st.booleans(), label="in a logdir of several runs")
    with scratch(scratch_root) as folder:
        if beside:
            shutil.copytree(several_runs, folder / "logs")
        run = folder / "logs" / ("train" if beside else "run")
        run.mkdir(parents=True, exist_ok=True)
        target = run / f"{event_file.name}.z"
        target.write_bytes(content)
        ctx = f"{target} holds {how}" + (f", beside the runs of {several_runs}" if beside else "")
        check(["events", "info", str(target)], ctx)
        check(["events", "info", "--json", str(folder / "logs")], ctx)
        check(["events", "trim", str(run), "-o", str(folder / "trimmed"), "--steps", "1:3"], ctx)
        check(["events", "trim", str(run), "-o", str(folder / "salvaged"), "--salvage", "--kinds", "scalar"], ctx)
        check(["events", "trim", str(run), "-o", str(folder / "dry"), "--dry-run", "--salvage", "--json"], ctx)
        check(["events", "export", str(target), "-o", str(folder / "out.csv"), "--kinds", "scalar,histogram,text"], ctx)
        check(["events", "export", str(run), "-o", str(folder / "out.jsonl"), "--on-restart", "purge"], ctx)
        check(["events", "merge", str(run), str(event_file.parent), "-o", str(folder / "merged"),
               "--overlap", "keep-last"], ctx)
        check(["events", "replay", str(run), "-o", str(folder / "replayed"), "--rate", "1000000"], ctx)
        check(["metrics-check", str(run)], ctx)


@pytest.fixture(scope="module")
def several_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tensorboardX logdir of several runs: train (with an image, a PR curve, an hparams
    session in a sub-run and a purge_step restart in a second file) and validation."""
    from tensorboardX import SummaryWriter

    logdir = tmp_path_factory.mktemp("fuzz-runs") / "logs"
    rng = np.random.default_rng(1)
    train = SummaryWriter(str(logdir / "train"))
    for step in range(8):
        train.add_scalar("loss", 1 / (step + 1), step)
    train.add_image("img", rng.random((3, 4, 4)), 2)
    train.add_pr_curve("pr", rng.integers(0, 2, 20), rng.random(20), 3)
    train.add_hparams({"lr": 0.1}, {"hparam/loss": 0.2})
    train.close()
    restart = SummaryWriter(str(logdir / "train"), purge_step=5, filename_suffix=".restart")
    for step in range(5, 10):
        restart.add_scalar("loss", 2 / (step + 1), step)
    restart.close()
    validation = SummaryWriter(str(logdir / "validation"))
    for step in range(0, 8, 2):
        validation.add_scalar("loss", 1.5 / (step + 1), step)
    validation.close()
    return logdir


def _event_paths(folder: Path, event_file: Path, several: Path) -> dict[str, Path]:
    """Paths a user may give where an event file, run or logdir is expected."""
    run = folder / "logdir" / "run"
    run.mkdir(parents=True)
    shutil.copy(event_file, run / event_file.name)
    shutil.copytree(several, folder / "several")
    (folder / "empty").mkdir()
    (folder / "plain.txt").write_text("not an event file\n")
    (folder / "dir.tfevents" / "events.out.tfevents.1.x").mkdir(parents=True)
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "dangling.tfevents").symlink_to(folder / "nowhere")
    (folder / "link-run").symlink_to(run)
    return {
        "file": run / event_file.name, "run": run, "logdir": folder / "logdir", "missing": folder / "missing",
        "empty-dir": folder / "empty", "plain": folder / "plain.txt", "dir-named-like-a-file": folder / "dir.tfevents",
        "symlink-loop": folder / "loop", "dangling": folder / "dangling.tfevents", "link-run": folder / "link-run",
        "dev-null": Path("/dev/null"), "several-runs": folder / "several",
        "restarted-run": folder / "several" / "train",
        "restart-file": next((folder / "several" / "train").glob("*.restart")),
    }


PATH_KINDS = st.sampled_from(["file", "run", "logdir", "missing", "empty-dir", "plain", "dir-named-like-a-file",
                              "symlink-loop", "dangling", "link-run", "dev-null", "several-runs", "restarted-run",
                              "restart-file"])
KINDS = st.lists(
    st.one_of(st.sampled_from(["scalar", "histogram", "image", "audio", "text", "pr_curve", "tensor", "hparams",
                               "graph", "session_log", "Scalar", "scalars", "", " ", "all", "*"]),
              st.text(max_size=6)),
    max_size=4,
).map(",".join)
TIMES = st.one_of(NUMBERISH, st.sampled_from([
    "2026-01-01", "2026-13-01", "0001-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59",
    "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00Z", "now", "yesterday", "2026-02-30", "20260101T000000",
]))
STEPS = st.one_of(
    st.builds(lambda a, b: f"{a}:{b}", st.one_of(st.just(""), NUMBERISH), st.one_of(st.just(""), NUMBERISH)),
    st.text(alphabet="0123456789:-+ ,.e_x", max_size=12),
)
GLOBS = st.one_of(st.sampled_from(["*", "*.tsv", "**", "[", "[!", "plain.txt", "", "/", "*/*", "\\"]),
                  st.text(max_size=8))


@FUZZ
@given(data=st.data())
def test_events_info_and_trim_options(event_file: Path, several_runs: Path, scratch_root: Path,
                                      data: st.DataObject) -> None:
    with scratch(scratch_root) as folder:
        paths = _event_paths(folder, event_file, several_runs)
        chosen = data.draw(st.lists(PATH_KINDS, min_size=1, max_size=3))
        check(["events", "info", *(str(paths[k]) for k in chosen), *data.draw(st.sampled_from([[], ["--json"]]))])
        args = ["events", "trim", str(paths[data.draw(PATH_KINDS)])]
        args += data.draw(st.sampled_from([["-o", str(folder / "out")], ["-o", str(paths["logdir"])],
                                           ["-o", str(paths["run"] / "inside")], ["--dry-run"], [],
                                           ["--in-place", "--backup", str(folder / "backup")],
                                           ["--in-place", "--backup", str(paths["run"])], ["--in-place"],
                                           ["-o", str(paths["plain"])], ["-o", str(paths["file"])]]))
        for option, values in (("--steps", STEPS), ("--tags", NASTY_REGEX), ("--exclude-tags", NASTY_REGEX),
                               ("--kinds", KINDS), ("--start", TIMES), ("--end", TIMES), ("--exclude-files", GLOBS)):
            if data.draw(st.booleans()):
                args += [option, data.draw(values)]
        args += data.draw(st.lists(st.sampled_from(["--salvage", "--force", "--drop-run-level", "--json",
                                                    "--dry-run"]), max_size=3, unique=True))
        check(args)


@FUZZ
@given(data=st.data())
def test_events_export_options(event_file: Path, several_runs: Path, scratch_root: Path, data: st.DataObject) -> None:
    with scratch(scratch_root) as folder:
        paths = _event_paths(folder, event_file, several_runs)
        chosen = data.draw(st.lists(PATH_KINDS, min_size=1, max_size=2))
        suffix = data.draw(st.sampled_from([".csv", ".jsonl", ".parquet", ".xlsx", "", ".CSV", ".json", ".tsv"]))
        output = data.draw(st.sampled_from([str(folder / f"table{suffix}"), str(paths["empty-dir"]),
                                            str(folder / "missing-dir" / f"table{suffix}"), str(paths["plain"]),
                                            str(paths["dangling"])]))
        args = ["events", "export", *(str(paths[k]) for k in chosen), "-o", output]
        if data.draw(st.booleans()):
            args += ["--format", data.draw(st.one_of(st.sampled_from(["csv", "jsonl", "parquet", "xlsx", "CSV", ""]),
                                                     st.text(max_size=5)))]
        if data.draw(st.booleans()):
            args += ["--kinds", data.draw(KINDS)]
        if data.draw(st.booleans()):
            args += ["--on-restart", data.draw(st.sampled_from(["keep", "purge", "drop", ""]))]
        args += data.draw(st.lists(st.sampled_from(["--force", "--json"]), max_size=2, unique=True))
        check(args)


@FUZZ
@given(data=st.data())
def test_events_merge_and_replay_options(event_file: Path, several_runs: Path, scratch_root: Path,
                                         data: st.DataObject) -> None:
    with scratch(scratch_root) as folder:
        paths = _event_paths(folder, event_file, several_runs)
        second = folder / "second" / "run"
        second.mkdir(parents=True)
        shutil.copy(event_file, second / event_file.name)
        sources = data.draw(st.lists(st.one_of(PATH_KINDS.map(lambda k: str(paths[k])), st.just(str(second))),
                                     min_size=1, max_size=3))
        output = data.draw(st.sampled_from([folder / "merged", paths["run"], paths["run"] / "sub", paths["plain"],
                                            paths["empty-dir"], paths["logdir"]]))
        args = ["events", "merge", *sources, "-o", str(output)]
        if data.draw(st.booleans()):
            args += ["--overlap", data.draw(st.sampled_from(["keep-last", "keep-first", "error", "newest", ""]))]
        if data.draw(st.booleans()):
            args += ["--exclude-files", data.draw(GLOBS)]
        args += data.draw(st.lists(st.sampled_from(["--force", "--json"]), max_size=2, unique=True))
        check(args)

        # Replay waits between records: valid speeds and rates stay fast (the file spans a few
        # milliseconds), the rest are values that must be refused or are harmless.
        pace = data.draw(st.one_of(
            st.tuples(st.just("--speed"), st.sampled_from(["1", "10", "1e9", "0", "-1", "nan", "inf", "-inf", "abc",
                                                           "1e400", ""])),
            st.tuples(st.just("--rate"), st.sampled_from(["1000", "1e6", "0", "-5", "nan", "inf", "-inf", "abc",
                                                          "1e400", "1e-300", ""])),
        ))
        args = ["events", "replay", str(paths[data.draw(PATH_KINDS)]), "-o", str(folder / "replayed"), *pace]
        if data.draw(st.booleans()):
            args += ["--steps", data.draw(STEPS)]
        if data.draw(st.booleans()):
            args += ["--exclude-files", data.draw(GLOBS)]
        if data.draw(st.booleans()):
            args += ["--json"]
        check(args)


# --- metrics-check -------------------------------------------------------------------------------

METRIC_NAMES = st.sampled_from(["loss", "mae", "mse", "rmse", "psnr", "ssim", "ms_ssim", "val_psnr", "val_mse",
                                "val_mae", "test_ssim", "PSNR", "mean_absolute_error", "root_mean_squared_error",
                                "lr", "epoch", "step", "", "val_", "psnr psnr"])
NUMBER_TEXT = st.one_of(NUMBERISH, st.floats(-1e6, 1e6).map(lambda v: f"{v:.4f}"), st.floats(0, 1).map(str))


@st.composite
def keras_log(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            lines.append(f"Epoch {draw(NUMBERISH)}/{draw(NUMBERISH)}")
        pairs = draw(st.lists(st.tuples(METRIC_NAMES, NUMBER_TEXT), max_size=5))
        bar = draw(st.sampled_from(["[==============================]", "━━━━━━━━━━━━━━━━━━━━", "",
                                    "\x1b[1m━━\x1b[0m"]))
        redraw = draw(st.sampled_from(["", "\r", "\x08\x08", "\r\n"]))
        lines.append(f"{draw(NUMBERISH)}/{draw(NUMBERISH)} {bar} - 1s 10ms/step - "
                     + " - ".join(f"{n}: {v}" for n, v in pairs) + redraw)
    return "\n".join(lines) + draw(st.sampled_from(["\n", ""]))


@st.composite
def csv_log(draw: st.DrawFn) -> str:
    header = draw(st.lists(METRIC_NAMES, min_size=0, max_size=5))
    rows = draw(st.lists(st.lists(NUMBER_TEXT, min_size=0, max_size=6), max_size=4))
    quote = draw(st.sampled_from(["", '"']))
    return "\n".join(",".join(f"{quote}{c}{quote}" for c in row) for row in [header, *rows]) + "\n"


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**1100), 2**1100), st.floats(), st.text(max_size=5),
              NUMBER_TEXT),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=5), children, max_size=3)),
    max_leaves=8,
)
METRIC_OBJECTS = st.dictionaries(st.one_of(METRIC_NAMES, st.sampled_from(["split", "metrics", "global_step"])),
                                 JSON_VALUES, max_size=6)


def _json_text(value: Any) -> str:
    # Python writes NaN/Infinity and integers of any size, as json.dumps does for users' logs.
    return json.dumps(value)


@st.composite
def log_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, content) of a metrics log a user may hand to metrics-check."""
    kind = draw(st.sampled_from(["keras", "csv", "jsonl", "json", "bytes"]))
    if kind == "keras":
        text = draw(keras_log())
        suffix = draw(st.sampled_from([".log", ".txt", "", ".out"]))
    elif kind == "csv":
        text = draw(csv_log())
        suffix = ".csv"
    elif kind == "jsonl":
        text = "\n".join(_json_text(v) for v in draw(st.lists(st.one_of(METRIC_OBJECTS, JSON_VALUES), max_size=4)))
        suffix = draw(st.sampled_from([".jsonl", ".ndjson"]))
    elif kind == "json":
        text = _json_text(draw(st.one_of(METRIC_OBJECTS, JSON_VALUES)))
        suffix = ".json"
    else:
        return draw(st.sampled_from([".log", ".csv", ".jsonl", ".json", ".tfevents"])), draw(st.binary(max_size=120))
    return suffix, text.encode("utf-8", "surrogatepass")


RANGES = st.sampled_from(["auto", "1", "2", "255", "65535", "0", "-1", "256", "nan", "", "1.0"])


@FUZZ
@given(logs=st.lists(log_file(), min_size=1, max_size=2), range_=RANGES,
       extra=st.lists(st.sampled_from(["--json", "--github", "--junit"]), max_size=2, unique=True))
@example(logs=[(".jsonl", b'{"step": 1, "mse": 1' + b"0" * 400 + b', "mae": 0.1}')], range_="auto", extra=[])
@example(logs=[(".json", b'{"psnr": ' + b"[" * 5000 + b"]" * 5000 + b"}")], range_="auto", extra=[])
@example(logs=[(".csv", b"epoch,mse,mae\n1,1e400,0.1\n2,nan,inf\n")], range_="255", extra=["--junit"])
@example(logs=[(".log", b"1/1 - loss: 0.1 - mse: 0.0069 - mae: 0.0744\n")], range_="255", extra=["--github"])
def test_metrics_check_logs(scratch_root: Path, logs: list[tuple[str, bytes]], range_: str, extra: list[str]) -> None:
    with scratch(scratch_root) as folder:
        paths = []
        for i, (suffix, content) in enumerate(logs):
            path = folder / f"log{i}{suffix}"
            path.write_bytes(content)
            paths.append(str(path))
        options = [o for o in extra if o != "--junit"]
        if "--junit" in extra:
            options += ["--junit", str(folder / "junit.xml")]
        check(["metrics-check", *paths, "--range", range_, *options],
              "; ".join(f"{p} holds {c[:300]!r}" for p, (_, c) in zip(paths, logs)))


DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint64, np.float16,
                          np.float32, np.float64, np.bool_, np.complex64])
SHAPES = st.one_of(
    st.just(()),
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=12),
    st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12)),
    st.tuples(st.integers(1, 3), st.integers(1, 10), st.integers(1, 10), st.sampled_from([1, 2, 3, 4, 5])),
    hnp.array_shapes(min_dims=5, max_dims=6, min_side=1, max_side=3),
)


@st.composite
def array_file(draw: st.DrawFn, shape: tuple[int, ...] | None = None,
               dtype: Any = None) -> tuple[str, Any]:
    """(kind, payload) of an array file: an npy of a generated array, or one of the files a
    user names .npy by mistake."""
    kind = draw(st.sampled_from(["npy"] * 6 + ["object", "text", "empty", "truncated", "npz-two", "npz-one",
                                               "structured", "png"]))
    if kind in ("npy", "truncated", "npz-one", "png"):
        array = draw(hnp.arrays(dtype=dtype or DTYPES, shape=st.just(shape) if shape is not None else SHAPES))
        return kind, array
    return kind, None


def write_array_file(folder: Path, stem: str, kind: str, array: Any) -> Path:
    if kind == "npy":
        path = folder / f"{stem}.npy"
        np.save(path, array)
    elif kind == "object":
        path = folder / f"{stem}.npy"
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "text":
        path = folder / f"{stem}.npy"
        path.write_text("0.1 0.2\n0.3 0.4\n")
    elif kind == "empty":
        path = folder / f"{stem}.npy"
        path.write_bytes(b"")
    elif kind == "truncated":
        path = folder / f"{stem}.npy"
        buffer = io.BytesIO()
        np.save(buffer, array)
        path.write_bytes(buffer.getvalue()[: max(1, len(buffer.getvalue()) - 3)])
    elif kind == "npz-two":
        path = folder / f"{stem}.npz"
        np.savez(path, a=np.zeros((4, 4)), b=np.ones((4, 4)))
    elif kind == "npz-one":
        path = folder / f"{stem}.npz"
        np.savez(path, only=array)
    elif kind == "structured":
        path = folder / f"{stem}.npy"
        np.save(path, np.zeros((4, 4), dtype=[("a", "f4"), ("b", "i2")]))
    else:
        from PIL import Image

        path = folder / f"{stem}.png"
        try:
            Image.fromarray(array).save(path)
        except Exception:  # PIL cannot store this dtype or shape: give the raw array
            path = folder / f"{stem}.npy"
            np.save(path, array)
    return path


def describe(kind: str, array: Any) -> str:
    if array is None:
        return kind
    return f"{kind} of a {array.dtype} array of shape {array.shape}: {np.array2string(array.ravel()[:8])}"


@FUZZ
@given(data=st.data())
def test_metrics_check_images(scratch_root: Path, data: st.DataObject) -> None:
    pred_kind, pred = data.draw(array_file(), label="pred")
    if pred is not None and data.draw(st.booleans(), label="target like pred"):
        target_kind, target = pred_kind, data.draw(hnp.arrays(pred.dtype, pred.shape), label="target")
    else:
        target_kind, target = data.draw(array_file(), label="target")
    options = ["--range", data.draw(RANGES, label="range")]
    options += data.draw(st.lists(st.sampled_from(["--y-channel", "--json", "--ms-ssim"]), max_size=2, unique=True))
    if data.draw(st.booleans()):
        options += ["--crop-border", data.draw(st.sampled_from(["0", "1", "5", "1000", "-1", "abc", "2" * 30]))]
    if data.draw(st.booleans()):
        options += ["--ssim-preset", data.draw(st.sampled_from(["wang", "skimage", "nope"]))]
    reported = data.draw(st.one_of(st.none(), log_file()), label="reported")
    with scratch(scratch_root) as folder:
        as_dirs = data.draw(st.booleans(), label="directories")
        if as_dirs:
            (folder / "pred").mkdir()
            (folder / "target").mkdir()
        p = write_array_file(folder / "pred" if as_dirs else folder, "pred" if not as_dirs else "img", pred_kind, pred)
        t = write_array_file(folder / "target" if as_dirs else folder, "target" if not as_dirs else "img",
                             target_kind, target)
        if reported is not None:
            path = folder / f"reported{reported[0]}"
            path.write_bytes(reported[1])
            options += ["--reported", str(path)]
        args = ["metrics-check", "--pred", str(p.parent if as_dirs else p), "--target", str(t.parent if as_dirs else t),
                *options]
        check(args, f"pred: {describe(pred_kind, pred)}; target: {describe(target_kind, target)}"
                    + (f"; reported: {reported[1][:200]!r}" if reported else ""))


# --- mask ----------------------------------------------------------------------------------------

THRESHOLDS = st.one_of(st.sampled_from(["0", "1", "0.5", "0.49999997", "-0.1", "1.5", "nan", "inf", "abc", "1e-400",
                                        "5e-324", ""]),
                       st.floats(0, 1).map(repr))
SCALES = st.sampled_from(["auto", "1", "255", "logits", "100", ""])
RULES = st.sampled_from(["ge", "gt", "round-half-even", "round-half-up", "round", ""])
PROB_DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.uint8, np.uint16, np.int32, np.bool_,
                               np.int8, np.complex64])
PROB_SHAPES = st.one_of(
    st.just(()),
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=10),
    st.tuples(st.integers(1, 4), st.integers(1, 10), st.integers(1, 10)),
    st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 8), st.sampled_from([1, 3, 4])),
    hnp.array_shapes(min_dims=5, max_dims=5, min_side=1, max_side=2),
)


@FUZZ
@given(data=st.data())
def test_mask_threshold_and_audit(scratch_root: Path, data: st.DataObject) -> None:
    kind, array = data.draw(array_file(), label="input")
    if kind == "npy" and data.draw(st.booleans()):  # most often a probability map of some shape
        values = data.draw(hnp.arrays(np.float64, PROB_SHAPES,
                                      elements=st.floats(0, 1) | st.sampled_from([0.5, 255.0, -3.0, 0.49999997])),
                           label="probabilities")
        array = values.astype(data.draw(PROB_DTYPES, label="dtype"))
    options = []
    for option, values in (("--t", THRESHOLDS), ("--scale", SCALES), ("--rule", RULES)):
        if data.draw(st.booleans()):
            options += [option, data.draw(values)]
    with scratch(scratch_root) as folder:
        source = write_array_file(folder, "probs", kind, array)
        given_as = data.draw(st.sampled_from(["file", "dir", "npz-key", "npz-bad-key", "missing"]))
        spec = {"file": str(source), "dir": str(folder), "npz-key": f"{source}:only", "npz-bad-key": f"{source}:nope",
                "missing": str(folder / "missing.npy")}[given_as]
        ctx = f"{source}: {describe(kind, array)}"
        check(["mask", "audit", spec, *options, *data.draw(st.sampled_from([[], ["--json"]]))], ctx)
        output = data.draw(st.sampled_from(["mask.png", "mask.npy", "mask.tif", "masks", "", "probs.npy"]))
        args = ["mask", "threshold", spec, "-o", str(folder / output), *options]
        if data.draw(st.booleans()):
            args += ["--format", data.draw(st.sampled_from(["png", "npy", "tif", ""]))]
        args += data.draw(st.lists(st.sampled_from(["--force", "--json"]), max_size=2, unique=True))
        check(args, ctx)


@FUZZ
@given(data=st.data())
def test_mask_sweep(scratch_root: Path, data: st.DataObject) -> None:
    shape = data.draw(PROB_SHAPES, label="shape")
    probs = data.draw(hnp.arrays(PROB_DTYPES, shape), label="probs")
    truth_shape = shape if data.draw(st.booleans()) else data.draw(PROB_SHAPES, label="truth shape")
    truth = data.draw(hnp.arrays(np.int64, truth_shape, elements=st.sampled_from([0, 1, 255, 2, -1])),
                      label="truth").astype(data.draw(st.sampled_from([np.uint8, np.bool_, np.float32, np.int64])))
    options = []
    for option, values in (("--thresholds", NUMBERISH | st.sampled_from(["2", "3", "101", "100001", "100002"])),
                           ("--metric", st.sampled_from(["dice", "iou", "f1", ""])),
                           ("--reduction", st.sampled_from(["pooled", "per-image", "mean", ""])),
                           ("--rule", RULES), ("--scale", SCALES)):
        if data.draw(st.booleans()):
            options += [option, data.draw(values)]
    options += data.draw(st.lists(st.sampled_from(["--exact", "--json", "--plot"]), max_size=2, unique=True))
    with scratch(scratch_root) as folder:
        (folder / "probs").mkdir()
        (folder / "truth").mkdir()
        p = folder / "probs" / "case.npy"
        t = folder / "truth" / data.draw(st.sampled_from(["case.npy", "other.npy"]), label="truth name")
        np.save(p, probs)
        np.save(t, truth)
        layout = data.draw(st.sampled_from(["files", "dirs"]))
        sources = [str(p), str(t)] if layout == "files" else [str(p.parent), str(t.parent)]
        if "--plot" in options:
            at = options.index("--plot")
            options.insert(at + 1, str(folder / data.draw(st.sampled_from(["sweep.png", "sweep.svg", "probs"]))))
        check(["mask", "sweep", "--probs", sources[0], "--truth", sources[1], *options],
              f"probs {describe('npy', probs)}; truth {t.name} {describe('npy', truth)}")


# --- oom (parsing only: tiny models, or inputs refused before a model is built) ------------------

TINY_MODELS = '''
import torch


class Scale(torch.nn.Module):
    """One parameter, any input shape."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.w


def scale():
    return Scale()


def conv():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())


def linear():
    return torch.nn.Linear(8, 2)


def raising():
    raise RuntimeError("the factory fails")


def not_a_module():
    return {"layers": 3}


def none():
    return None


def needs_arguments(depth, width):
    return torch.nn.Linear(depth, width)


class ReturnsNone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 2)

    def forward(self, x):
        return None


def returns_none():
    return ReturnsNone()


class ReturnsDict(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 2)

    def forward(self, x):
        return {"out": self.lin(x)}


def returns_dict():
    return ReturnsDict()


class ForwardRaises(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 2)

    def forward(self, x):
        raise ValueError("bad input")


def forward_raises():
    return ForwardRaises()


not_callable = 3
'''


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fuzz-models")
    files = {
        "tiny": folder / "tiny_models.py",
        "syntax": folder / "syntax_error.py",
        "import-fails": folder / "import_fails.py",
        "exits": folder / "exits_at_import.py",
        "keras-garbage": folder / "garbage.keras",
        "h5-garbage": folder / "garbage.h5",
        "dir-py": folder / "package.py",
        "text": folder / "notes.txt",
    }
    files["tiny"].write_text(TINY_MODELS)
    files["syntax"].write_text("def build(:\n    return 1\n")
    files["import-fails"].write_text("import no_such_module_for_gpudoc\n\ndef build():\n    pass\n")
    files["exits"].write_text("raise SystemExit(0)\n\ndef build():\n    pass\n")
    files["keras-garbage"].write_bytes(b"PK\x03\x04 not a keras archive")
    files["h5-garbage"].write_bytes(b"\x89HDF\r\n\x1a\n broken")
    files["dir-py"].mkdir()
    files["text"].write_text("hello\n")
    return files


INPUT_SPECS = st.one_of(
    st.sampled_from(["3x64x64", "3x8x8", "8", "2x8", "224x224", "x", "0x0", "-1x3", "3x-224x224", "tokens:16",
                     "tokens:", "tokens:0", "tokens:1x2", "3.5x224", "", " ", "3,8,8", "3X8X8", "3x", "x3",
                     "3x99999999999x99999999999", "9" * 25, "tokens:" + "9" * 25, "3x٣x٣", "1e3", "3xx8",
                     "3x8x8x8x8x8x8x8x8", "nan", "3 x 8"]),
    st.text(alphabet="0123456789x,-: tokens", max_size=12),
)
# Specs parse_input must refuse before a model is built (so a built-in name stays cheap).
REFUSED_SPECS = st.sampled_from(["x", "0x0", "-1x3", "3x-224x224", "abc", "tokens:", "tokens:0", "tokens:1x2",
                                 "3.5x224", "nan", "3x0x224", "1e3", " ", "tokens:-5", "3x224xabc"])
GPUS = st.one_of(st.sampled_from(["A100-80GB", "a100", "H100", "T4", "V100-16GB", "TPU-v3-core", "local", "",
                                  "nosuch", "A100-80GB ", "rtx 4090", "cpu", "0", "local:0", "local:1", "local:7",
                                  "LOCAL:0", "local:", "local:-1", "local:0x1", "local:" + "9" * 30]),
                 st.text(max_size=8))
PRECISIONS = st.sampled_from(["fp32", "amp", "bf16", "fp16", "FP32", "", "int8"])
BATCHES = st.one_of(st.sampled_from(["1", "2", "0", "-1", "abc", "1.5", "", "10" + "0" * 20, str(2**63)]),
                    st.integers(1, 2**40).map(str))


@FEW
@given(model=st.sampled_from(["resnet18", "unet", "gpt2_small", "ResNet-18"]), spec=REFUSED_SPECS, batch=BATCHES,
       gpu=GPUS, precision=PRECISIONS, command=st.sampled_from(["estimate", "max-batch"]))
def test_oom_builtin_models_with_refused_inputs(model: str, spec: str, batch: str, gpu: str, precision: str,
                                                command: str) -> None:
    check(["oom", command, model, "--input", spec, "--batch", batch, "--gpu", gpu, "--precision", precision,
           "--no-remedies"] if command == "estimate" else
          ["oom", command, model, "--input", spec, "--batch", batch, "--gpu", gpu, "--precision", precision])


@FEW
@given(factory=st.sampled_from(["scale", "conv", "linear", "returns_none", "forward_raises"]),
       spec=INPUT_SPECS, batch=BATCHES, precision=PRECISIONS,
       accumulate=st.sampled_from(["1", "2", "3", "0", "-1", "x", "10" + "0" * 20]),
       visible=st.sampled_from([None, "", "-1", "7", "0,0", "GPU-", "GPU-947c", "x", "3,99"]))
@example(factory="linear", spec="8", batch="4", precision="fp32", accumulate="2", visible="GPU-947c")  # it starts
@example(factory="conv", spec="3x8x8", batch="2", precision="bf16", accumulate="1", visible="3,99")
def test_run_model_options(model_files: dict[str, Path], factory: str, spec: str, batch: str, precision: str,
                           accumulate: str, visible: str | None) -> None:
    """gpudoc run's pre-launch estimate: bad options and GPUs it cannot see are one line, and
    --require-fit starts the command only when the estimate says it fits."""
    before = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    try:
        result = check(["--simulate", "dgx", "run", "--require-fit", "--model", f"{model_files['tiny']}:{factory}",
                        "--input", spec, "--batch", batch, "--precision", precision, "--accumulate", accumulate,
                        "--", sys.executable, "-c", "print('started')"])
    finally:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        if before is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
    assert ("started" in result.stdout) == (result.code == 0), result
    assert (": fits (" in result.stderr or ": tight (" in result.stderr) == (result.code == 0), result


@FEW
@given(model=st.sampled_from(["tiny:scale", "tiny:conv", "tiny:nosuch", "syntax:build", "import-fails:build",
                              "exits:build", "keras-garbage", "dir-py:build", "text:build", "nosuch_model", ""]),
       refused=REFUSED_SPECS, good=st.booleans(), batch=BATCHES, accumulate=st.sampled_from(["1", "2", "0", "x"]),
       restarts=st.sampled_from(["0", "2", "-1", "x"]))
@example(model="syntax:build", refused="x", good=True, batch="8", accumulate="1", restarts="0")
def test_tui_model_options_that_are_bad_input_never_open_the_monitor(model_files: dict[str, Path], model: str,
                                                                     refused: str, good: bool, batch: str,
                                                                     accumulate: str, restarts: str) -> None:
    """gpudoc tui --model/--batch/--restarts: each case here is bad input (a spec --input
    refuses, or a good one with a model that does not load): one line, exit 2, before the
    monitor or the command starts."""
    from gpudoc.tui.app import GpudocApp

    loads = model in ("tiny:scale", "tiny:conv")
    spec = "8" if good and not loads else refused
    name, _, factory = model.partition(":")
    path = f"{model_files[name]}:{factory}" if name in model_files else model
    opened: list[bool] = []
    before = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(GpudocApp, "run", lambda self, **_: opened.append(True))
            result = check(["tui", "--demo", "dgx", "--restarts", restarts, "--model", path, "--input", spec,
                            "--batch", batch, "--accumulate", accumulate, "--", sys.executable, "-c", "pass"])
    finally:
        if before is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
    assert result.code == 2 and not opened, result


@FUZZ
@given(factory=st.sampled_from(["scale", "conv", "linear", "returns_none", "returns_dict", "forward_raises"]),
       spec=INPUT_SPECS, batch=BATCHES, gpu=GPUS, precision=PRECISIONS, data=st.data())
@example(factory="conv", spec="224x224", batch="2", gpu="A100-80GB", precision="fp32", data=None)
@example(factory="conv", spec="3x8x8", batch="10" + "0" * 20, gpu="A100-80GB", precision="fp32", data=None)
def test_oom_custom_model_options(model_files: dict[str, Path], factory: str, spec: str, batch: str, gpu: str,
                                  precision: str, data: st.DataObject | None) -> None:
    args = ["oom", "estimate", f"{model_files['tiny']}:{factory}", "--input", spec, "--batch", batch,
            "--gpu", gpu, "--precision", precision, "--no-remedies"]
    if data is not None:
        if data.draw(st.booleans()):
            args += ["--optimizer", data.draw(st.sampled_from(["sgd", "adam", "momentum", "nosuch", "torch.optim:SGD",
                                                              "os:getcwd", "a:b", ":", "torch.optim:NoSuch",
                                                              ".:Adam", "os.:x"]))]
        if data.draw(st.booleans()):
            args += ["--freeze", data.draw(NASTY_REGEX)]
        if data.draw(st.booleans()):
            args += ["--accumulate", data.draw(BATCHES)]
        if data.draw(st.booleans()):
            args += ["--cuda", data.draw(st.one_of(st.sampled_from(["11.2", "11.8", "12", "12.x", "12.4.1", "", "x",
                                                                   "1.0", "99", "12.y", "١٢"]),
                                                   st.text(alphabet="0123456789.x", max_size=6)))]
        if data.draw(st.booleans()):
            args += ["--zero-grad", data.draw(st.sampled_from(["none", "zeros", "None", ""]))]
        if data.draw(st.booleans()):
            args += ["--optimizer-impl", data.draw(st.sampled_from(["foreach", "for-loop", "fused", "loop", ""]))]
        if data.draw(st.booleans()):
            args += ["--torch", data.draw(st.one_of(st.sampled_from(["1.10", "2.3", "2.1.0+cu118", "1.13", "1.14",
                                                                    "1.5", "2.7", "0.4", "9.9", "2", "", "x", "2.x",
                                                                    "v2.0", "2.0rc1", "١.١٠"]),
                                                    st.text(alphabet="0123456789.+rcu", max_size=7)))]
        args += data.draw(st.lists(st.sampled_from(["--inference", "--checkpointing", "--json"]), max_size=2,
                                   unique=True))
        if data.draw(st.booleans()):
            args[1] = "max-batch"
            args.remove("--no-remedies")
    check(args)


@pytest.mark.parametrize("model", [
    "nosuch", "a:b", ":", "os:nosuch", "math:pi", "os:getcwd", "json:loads", "", "no_such_package.sub:build",
    "missing.py:build", "{dir-py}:build", "{text}:build", "{tiny}:", "{tiny}:nosuch", "{tiny}:not_callable",
    "{tiny}:raising", "{tiny}:not_a_module", "{tiny}:none", "{tiny}:needs_arguments", "{syntax}:build",
    "{import-fails}:build", "{exits}:build", "missing.keras", "{keras-garbage}", "{h5-garbage}",
    "hf:", "hf:no-such-checkpoint", "hf:{text}", "hf:{dir-py}", "hf:{tiny}", "hf:gpt2:NoSuch", "hf:gpt2:os",
])
def test_oom_model_specs(model_files: dict[str, Path], model: str) -> None:
    spec = model.format(**{k: str(v) for k, v in model_files.items()})
    check(["oom", "estimate", spec, "--input", "3x8x8", "--batch", "2", "--gpu", "A100-80GB", "--no-remedies"])


# --- reap (always a dry run), serve (never listening), doctor, --simulate -----------------------


class SignalAttempted(BaseException):
    """reap tried to signal a process in a test that never allows it."""


@contextlib.contextmanager
def no_signals() -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise SignalAttempted(f"a signal was about to be sent: {args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(signal, "pidfd_send_signal", refuse, raising=False)
        patch.setattr(os, "kill", refuse)
        patch.setattr(os, "killpg", refuse)
        patch.setattr("gpudoc.reap.service.end_targets", refuse)
        yield


USERS = st.one_of(st.sampled_from(["root", "nobody", "no-such-user-xyz", "0", "65534", "99999999999999999999", "",
                                   "-1", "ro ot", "4294967295", "4294967296"]), st.text(max_size=6))
WINDOWS = st.sampled_from(["0.05", "0.1", "0.01", "0", "-1", "nan", "abc", "", "1e-400"])


@FUZZ
@given(data=st.data())
def test_reap_options_dry_run(scratch_root: Path, data: st.DataObject) -> None:
    with scratch(scratch_root) as folder:
        dev = folder / "dev"
        dev.mkdir()
        for name in ("nvidiactl", "nvidia0", "nvidia-uvm"):
            (dev / name).write_bytes(b"")
        args = [*data.draw(st.sampled_from([[], ["--simulate", "dgx"], ["--simulate", "faults"],
                                            ["--simulate", "workstation"]])), "reap"]
        glob = data.draw(st.sampled_from([None, f"{dev}/nvidia*", f"{dev}/nothing*", f"{folder}/missing/*", "[",
                                          "", f"{dev}/[", "/dev/nvidia*"]))
        if glob is not None:
            args += ["--device-glob", glob]
        if data.draw(st.booleans()):
            args += ["--user", data.draw(USERS)]
        for _ in range(data.draw(st.integers(0, 2))):
            args += ["--gpu", data.draw(st.sampled_from(["0", "1", "7", "-1", "99", "abc", "", "1.5", "9" * 30]))]
        args += ["--window", data.draw(WINDOWS)]  # always: the default samples for half a second
        for option, values in (("--timeout", NUMBERISH),
                               ("--signal", st.sampled_from(["TERM", "term", "KILL", "INT", "HUP", "SIGTERM", "9",
                                                             ""])),
                               ("--protect", st.text(max_size=8))):
            if data.draw(st.booleans()):
                args += [option, data.draw(values)]
        args += data.draw(st.lists(st.sampled_from(["--all-users", "--include-active", "--json"]), max_size=3,
                                   unique=True))
        assert "--yes" not in args and "-y" not in args and "--slurm-epilog" not in args
        with no_signals():
            check(args)


@contextlib.contextmanager
def never_listening() -> Iterator[None]:
    """Fail the test instead of serving if ``serve`` could listen after all."""
    from gpudoc import exporter

    real = exporter.serve

    def guarded(*args: Any, **kwargs: Any) -> Any:
        server, _ = real(*args, **kwargs)
        server.shutdown()
        raise Escaped(f"serve started listening with {kwargs}: the fuzz only gives addresses it cannot use")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exporter, "serve", guarded)
        yield


@FUZZ
@given(port=st.one_of(st.sampled_from(["-1", "65536", "abc", "1e3", "", "80.5", "9" * 30, "busy"]),
                      st.integers(-(2**40), -1).map(str), st.integers(65536, 2**40).map(str)),
       address=st.one_of(st.sampled_from(["256.0.0.1", "1.2.3.4.5", "::1::", "[::1]", "-1", "127.0.0.1:80",
                                          "fe80::1%nosuch", "192.0.2.1", "8.8.8.8", "999999", "", "busy"])),
       simulate=st.booleans(), prometheus=st.booleans())
def test_serve_never_listens_on_bad_addresses(port: str, address: str, simulate: bool, prometheus: bool) -> None:
    with contextlib.ExitStack() as stack:
        if "busy" in (port, address):  # a port someone else listens on, at an address that works
            taken = stack.enter_context(socket.socket())
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port, address = str(taken.getsockname()[1]), "127.0.0.1"
        stack.enter_context(never_listening())
        args = (["--simulate", "dgx"] if simulate else []) + ["serve", "--port", port, "--address", address]
        check(args + (["--prometheus"] if prometheus else []))


FRAMEWORK_SKIPS = ["--skip", "torch", "--skip", "tensorflow"]  # their probes take seconds


@FEW
@given(skips=st.lists(st.one_of(st.sampled_from(["torch", "tensorflow", "numba", "jax", "", "TORCH", "numba "]),
                                st.text(max_size=6)), max_size=3),
       extra=st.lists(st.sampled_from(["--require-gpu", "--json"]), max_size=2, unique=True),
       simulate=st.sampled_from([None, "dgx", "faults", "workstation", "nope", ""]))
def test_doctor_skip_values(skips: list[str], extra: list[str], simulate: str | None) -> None:
    args = (["--simulate", simulate] if simulate is not None else []) + ["doctor", *FRAMEWORK_SKIPS]
    for value in skips:
        args += ["--skip", value]
    check(args + extra)


SCENARIO_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children,
                                                                               max_size=3)),
    max_leaves=10,
)
GPU_FIELDS = st.sampled_from(["name", "memory_total_mib", "reserved_mib", "power_limit_w", "uuid", "utilization",
                              "temperature", "fan", "clock_sm_mhz"])
SCENARIOS = st.fixed_dictionaries(
    {},
    optional={
        "name": SCENARIO_VALUES,
        "gpus": st.one_of(SCENARIO_VALUES, st.lists(st.one_of(
            st.dictionaries(GPU_FIELDS, st.one_of(SCENARIO_VALUES, st.lists(st.lists(SCENARIO_VALUES, max_size=2),
                                                                            max_size=2)), max_size=4),
            SCENARIO_VALUES), max_size=2)),
        "processes": st.one_of(SCENARIO_VALUES, st.lists(st.dictionaries(
            st.sampled_from(["pid", "gpu", "memory_mib", "type", "start_s", "end_s", "user", "command"]),
            SCENARIO_VALUES, max_size=4), max_size=2)),
        "faults": st.one_of(SCENARIO_VALUES, st.lists(st.dictionaries(
            st.sampled_from(["kind", "from_s", "until_s", "gpu", "error", "seconds", "pids"]),
            st.one_of(SCENARIO_VALUES, st.sampled_from(["init_failure", "gpu_lost", "hang", "driver_not_loaded"])),
            max_size=4), max_size=2)),
        "loop_s": SCENARIO_VALUES,
        "driver_version": SCENARIO_VALUES,
    },
)


@FUZZ
@given(suffix=st.sampled_from([".json", ".yaml", ".yml", ".txt", ""]),
       content=st.one_of(
           SCENARIOS.map(lambda v: ("json", v)), SCENARIOS.map(lambda v: ("yaml", v)),
           SCENARIO_VALUES.map(lambda v: ("json", v)),
           st.sampled_from(["{", "gpus: [", "- - -\n  :", "\t{a: b}", "gpus: !!python/object:os.system {}",
                            "*alias", "!!binary abc", "gpus: 2026-01-01", "{\"gpus\": NaN}", "[" * 3000 + "]" * 3000,
                            "{\"gpus\": [{\"name\": \"x\", \"memory_total_mib\": 1e400}]}"]).map(lambda t: ("text", t)),
           st.binary(max_size=60).map(lambda b: ("bytes", b))),
       command=st.sampled_from(["doctor", "reap"]))
def test_simulate_bad_scenario_files(scratch_root: Path, suffix: str, content: tuple[str, Any], command: str) -> None:
    kind, value = content
    with scratch(scratch_root) as folder:
        path = folder / f"scenario{suffix}"
        if kind == "json":
            path.write_text(json.dumps(value))
        elif kind == "yaml":
            path.write_text(yaml.safe_dump(value))
        elif kind == "text":
            path.write_text(value)
        else:
            path.write_bytes(value)
        dev = folder / "dev"
        dev.mkdir()
        (dev / "nvidia0").write_bytes(b"")
        args = ["--simulate", str(path), command]
        if command == "doctor":
            args += [*FRAMEWORK_SKIPS, "--skip", "numba"]
        else:
            args += ["--device-glob", f"{dev}/nvidia*", "--window", "0.05"]
        with no_signals():
            check(args, f"{path} holds {path.read_bytes()[:300]!r}")


# --- what the fuzz found, kept as fixed cases (each one a real input and command line) ----------

TBX = "<the tensorboardX file>"  # a file entry holding a copy of the real event file
CLEAN_SCENARIO = '{"gpus": [{"name": "x", "memory_total_mib": 8}]'
DOCTOR = ["doctor", *FRAMEWORK_SKIPS, "--skip", "numba"]
FOUND = [
    pytest.param({"run/events.out.tfevents.1.x": TBX},
                 ["events", "trim", "{d}/run", "--dry-run", "--exclude-tags", "a{4294967296}"], id="trim-huge-repeat"),
    pytest.param({"run/events.out.tfevents.1.x": TBX},
                 ["events", "trim", "{d}/run", "--dry-run", "--tags", "a{4294967296}"], id="trim-tags-huge-repeat"),
    pytest.param({"run/events.out.tfevents.1.x": TBX},
                 ["events", "replay", "{d}/run", "-o", "{d}/out", "--rate", "1e-300"], id="replay-rate-tiny"),
    pytest.param({"run/events.out.tfevents.1.x": TBX},
                 ["events", "replay", "{d}/run", "-o", "{d}/out", "--rate", "nan"], id="replay-rate-nan"),
    pytest.param({"m.py": TINY_MODELS.encode()},
                 ["oom", "estimate", "{d}/m.py:scale", "--input", "3x8x8", "--batch", "2", "--gpu", "A100-80GB",
                  "--no-remedies", "--freeze", "a{4294967296}"], id="oom-freeze-huge-repeat"),
    pytest.param({"m.py": TINY_MODELS.encode()},
                 ["oom", "estimate", "{d}/m.py:scale", "--input", "3x8x8", "--batch", "2", "--gpu", "A100-80GB",
                  "--no-remedies", "--optimizer", ":"], id="oom-optimizer-empty-module"),
    pytest.param({"m.py": TINY_MODELS.encode()},
                 ["oom", "estimate", "{d}/m.py:scale", "--input", "3x8x8", "--batch", "2", "--gpu", "A100-80GB",
                  "--no-remedies", "--optimizer", ".:Adam"], id="oom-optimizer-relative-module"),
    pytest.param({"big.jsonl": b'{"step": 1, "mse": 1' + b"0" * 400 + b', "mae": 0.1}\n'},
                 ["metrics-check", "{d}/big.jsonl"], id="jsonl-int-beyond-float"),
    pytest.param({"deep.json": b'{"psnr": ' + b"[" * 5000 + b"]" * 5000 + b"}"},
                 ["metrics-check", "{d}/deep.json"], id="json-nested-deeply"),
    pytest.param({"a.log": b"1/1 - mse: 0.0001 - psnr: 5000\n"}, ["metrics-check", "{d}/a.log"],
                 id="log-implied-range-overflow"),
    pytest.param({"a.log": b"1/1 - rmse: 1e200\n"}, ["metrics-check", "{d}/a.log"], id="log-rmse-squared-overflow"),
    pytest.param({"a.log": b"1/1 - mae: 1e200 - mse: 1\n"}, ["metrics-check", "{d}/a.log"],
                 id="log-mae-squared-overflow"),
    pytest.param({"a.log": b"1/1 - rmse: 1e200 - mse: 1\n"}, ["metrics-check", "{d}/a.log"],
                 id="log-rmse-mse-overflow"),
    pytest.param({"a.csv": b"epoch,mae,mse\n1,1e200,1\n"}, ["metrics-check", "{d}/a.csv", "--range", "255"],
                 id="csv-mae-squared-overflow"),
    pytest.param({"a.csv": b"step,mse\n-inf,1\n"}, ["metrics-check", "{d}/a.csv"], id="csv-step-infinite"),
    pytest.param({"a.csv": b"mse,psnr\n0.01,-885739\n"}, ["metrics-check", "{d}/a.csv", "--range", "255"],
                 id="csv-implied-range-zero"),
    pytest.param({"s.yaml": b"{\n"}, ["--simulate", "{d}/s.yaml", *DOCTOR], id="scenario-yaml-error-lines"),
    pytest.param({"s.yaml": b"gpus: !!binary abc\n"}, ["--simulate", "{d}/s.yaml", *DOCTOR],
                 id="scenario-yaml-bad-base64"),
    pytest.param({"s.json": b'{"faults": false}'}, ["--simulate", "{d}/s.json", *DOCTOR], id="scenario-faults-bool"),
    pytest.param({"s.json": b'{"processes": null}'}, ["--simulate", "{d}/s.json", *DOCTOR],
                 id="scenario-processes-null"),
    pytest.param({"s.json": b'{"faults": [{"kind": []}]}'}, ["--simulate", "{d}/s.json", *DOCTOR],
                 id="scenario-fault-kind-list"),
    pytest.param({"s.json": b'{"gpus": [{"name": "x", "memory_total_mib": 1e400}]}'},
                 ["--simulate", "{d}/s.json", *DOCTOR], id="scenario-memory-infinite"),
    pytest.param({"s.json": b'{"gpus": [{"name": "x", "memory_total_mib": NaN}]}'},
                 ["--simulate", "{d}/s.json", *DOCTOR], id="scenario-memory-nan"),
    pytest.param({"s.json": b'{"gpus": [{"name": "x", "memory_total_mib": 8, "temperature": NaN}]}'},
                 ["--simulate", "{d}/s.json", *DOCTOR], id="scenario-signal-nan"),
    pytest.param({"s.json": (CLEAN_SCENARIO + ', "faults": [{"kind": "hang", "gpu": 0, "seconds": 1e300}]}').encode()},
                 ["--simulate", "{d}/s.json", *DOCTOR], id="scenario-hang-forever"),
    pytest.param({"s.json": b"[" * 5000 + b"]" * 5000}, ["--simulate", "{d}/s.json", *DOCTOR],
                 id="scenario-json-nested-deeply"),
    pytest.param({"s.yaml": b"[" * 3000 + b"]" * 3000}, ["--simulate", "{d}/s.yaml", *DOCTOR],
                 id="scenario-yaml-nested-deeply"),
]


@pytest.mark.parametrize(("files", "args"), FOUND)
def test_found_by_the_fuzz(event_file: Path, tmp_path: Path, files: dict[str, bytes | str], args: list[str]) -> None:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(event_file.read_bytes() if content == TBX else content)
    with no_signals():
        check([a.replace("{d}", str(tmp_path)) for a in args],
              "; ".join(f"{n} holds {'a tensorboardX file' if c == TBX else c[:120]!r}" for n, c in files.items()))
