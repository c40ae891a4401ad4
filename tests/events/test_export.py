"""Export against TensorBoard's accumulator, with both restart policies."""

from __future__ import annotations

import csv
import json
import os
import stat
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from click.testing import CliRunner
from tensorboard.backend.event_processing import event_accumulator

from gpudoc.cli import cli


def gpudoc(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["events", *args])
    return result.exit_code, result.stdout, result.stderr


def _drain(main: int) -> bytes:
    """Everything a pty's other side wrote, until it closes (the pty's main end is closed)."""
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    return seen


def test_purge_matches_tensorboards_view_and_keep_keeps_everything(tbx: Path, tmp_path: Path) -> None:
    code, out, _ = gpudoc("export", str(tbx / "run1"), "-o", str(tmp_path / "purged.jsonl"), "--on-restart", "purge",
                          "--json")
    # A run given directly is named by its directory (TensorBoard would call it ".").
    assert code == 0 and json.loads(out)["purged"]["run1"] > 0
    rows = [json.loads(line) for line in (tmp_path / "purged.jsonl").read_text().splitlines()]
    ours = [(r["step"], r["wall_time"], r["value"]) for r in rows if r["run"] == "run1" and r["tag"] == "loss"]
    accumulator = event_accumulator.EventAccumulator(str(tbx / "run1"), size_guidance={"scalars": 0})
    accumulator.Reload()
    theirs = [(s.step, s.wall_time, s.value) for s in accumulator.Scalars("loss")]
    assert [(s, w) for s, w, _ in ours] == [(s, w) for s, w, _ in theirs]
    assert all(abs(a - b) < 1e-6 for (_, _, a), (_, _, b) in zip(ours, theirs))
    assert len(ours) == 121

    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "all.csv"))
    with open(tmp_path / "all.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    loss = [r for r in table if r["run"] == "run1" and r["tag"] == "loss"]
    assert code == 0 and len(loss) == 142 and {r["kind"] for r in table} == {"scalar"}


def test_other_kinds_and_refusals(tbx: Path, tmp_path: Path) -> None:
    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "h.jsonl"), "--kinds", "histogram,text")
    rows = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert code == 0 and {r["kind"] for r in rows} == {"histogram", "text"}
    assert next(r for r in rows if r["kind"] == "text")["value"] == "step 0"
    assert next(r for r in rows if r["kind"] == "histogram")["value"]["num"] == 100
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "i.csv"), "--kinds", "image")
    assert code == 2 and "cannot be exported" in err and not (tmp_path / "i.csv").exists()
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "h.jsonl"))
    assert code == 2 and "exists" in err


@pytest.mark.parametrize(("command", "label"), [
    (["trim", "{src}", "-o", "{out}", "--steps", "1:5"], b"trimming"),
    (["merge", "{src}/run1", "--run", ".", "-o", "{out}", "--overlap", "keep-last"], b"merging"),
    (["replay", "{file}", "-o", "{out}", "--rate", "100000"], b"replaying"),
])
def test_progress_bar_on_a_terminal_only(tbx: Path, tmp_path: Path, command: list[str], label: bytes) -> None:
    def args(out: str) -> list[str]:
        file = sorted((tbx / "run1").glob("*tfevents*"))[0]
        return [sys.executable, "-m", "gpudoc", "events",
                *(a.format(src=tbx, file=file, out=tmp_path / out) for a in command)]

    main, child = os.openpty()
    proc = subprocess.Popen(args("out"), stdin=child, stdout=subprocess.DEVNULL, stderr=child,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(child)
    seen = _drain(main)
    proc.wait(60)
    assert proc.returncode == 0 and label in seen
    quiet = subprocess.run(args("out2"), capture_output=True, timeout=60)
    assert quiet.returncode == 0 and label not in quiet.stderr


def test_parquet_has_the_csv_rows_and_one_type_per_column(tbx: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    assert gpudoc("export", str(tbx), "-o", str(tmp_path / "s.csv"))[0] == 0
    assert gpudoc("export", str(tbx), "-o", str(tmp_path / "s.parquet"), "--format", "parquet")[0] == 0
    with open(tmp_path / "s.csv", newline="") as handle:
        expected = [(r["run"], r["tag"], int(r["step"]), float(r["value"])) for r in csv.DictReader(handle)]
    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [(r["run"], r["tag"], r["step"], r["value"]) for r in table] == expected
    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "m.parquet"), "--format", "parquet",
                        "--kinds", "scalar,histogram")
    mixed = pq.read_table(tmp_path / "m.parquet")
    assert code == 0 and str(mixed.schema.field("value").type) == "string"
    histogram = next(r for r in mixed.to_pylist() if r["kind"] == "histogram")
    assert json.loads(histogram["value"])["num"] == 100


def run_gpudoc(*args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """gpudoc in a child process, with a real stdout (a pipe) and optionally a umask."""
    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, "-m", "gpudoc", "events", *args], capture_output=True, text=True,
                          timeout=120, preexec_fn=set_umask)


@pytest.mark.parametrize("dest", ["-", "/dev/stdout"])
def test_export_streams_to_stdout_with_the_summary_on_stderr(tbx: Path, tmp_path: Path, dest: str) -> None:
    assert gpudoc("export", str(tbx), "-o", str(tmp_path / "file.csv"))[0] == 0
    result = run_gpudoc("export", str(tbx), "-o", dest)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (tmp_path / "file.csv").read_text()
    assert "rows → " in result.stderr
    result = run_gpudoc("export", str(tbx), "-o", dest, "--format", "jsonl", "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and len(rows) == json.loads(result.stderr)["rows"] > 300


@pytest.mark.parametrize(("dest", "fmt"), [("-", "jsonl"), ("-", "csv"), ("/dev/stdout", "jsonl")])
def test_a_table_on_stdout_is_not_drawn_into_the_bar_on_a_terminal_stderr(tbx: Path, tmp_path: Path, dest: str,
                                                                        fmt: str) -> None:
    """stderr a terminal (the bar shows), stdout a pipe (``| wc -l``): rich's Progress moved
    sys.stdout into its console, so the rows went to the terminal among the redraws and the
    pipe got nothing."""
    import threading

    assert gpudoc("export", str(tbx), "-o", str(tmp_path / f"file.{fmt}"))[0] == 0
    main, child = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gpudoc", "events", "export", str(tbx), "-o", dest, "--format", fmt],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=child,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(child)
    terminal: list[bytes] = []
    reader = threading.Thread(target=lambda: terminal.append(_drain(main)))
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(60)
    seen = b"".join(terminal)
    assert proc.returncode == 0 and out == (tmp_path / f"file.{fmt}").read_bytes()
    assert b"exporting" in seen and b"rows \xe2\x86\x92" in seen  # the bar and the summary: on the terminal
    assert b'"tag"' not in seen and b",loss," not in seen  # and no row
    assert b"exporting" not in out and b"\x1b" not in out


@pytest.mark.parametrize("dest", ["-", "{tty}"])
def test_a_table_streamed_to_stderrs_terminal_gets_no_bar_among_its_rows(tbx: Path, tmp_path: Path,
                                                                         dest: str) -> None:
    """stdout (or -o the terminal's device) and stderr one terminal: the bar's first draw was
    left on the first row's line, among the rows. The rows are the progress there: no bar."""
    assert gpudoc("export", str(tbx), "-o", str(tmp_path / "file.jsonl"))[0] == 0
    main, child = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gpudoc", "events", "export", str(tbx), "-o",
                             dest.format(tty=os.ttyname(child)), "--format", "jsonl"],
                            stdin=subprocess.DEVNULL, stdout=child, stderr=child,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(child)
    seen = _drain(main)
    proc.wait(60)
    rows = (tmp_path / "file.jsonl").read_bytes().replace(b"\n", b"\r\n")
    assert proc.returncode == 0 and seen.startswith(rows) and b"exporting" not in seen, seen[:300]


def test_a_symlinked_output_keeps_its_link(tbx: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "table.csv").symlink_to("data/real.csv")
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "table.csv"))
    assert code == 0, err
    assert (tmp_path / "table.csv").is_symlink() and (tmp_path / "data" / "real.csv").read_text().startswith("run,")
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "table.csv"))
    assert code == 2 and "--force" in err
    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "table.csv"), "--kinds", "histogram", "--force")
    assert code == 0 and (tmp_path / "table.csv").is_symlink()
    assert ",histogram," in (tmp_path / "data" / "real.csv").read_text()


def test_output_that_is_a_directory_or_has_an_unknown_suffix_is_refused(tbx: Path, tmp_path: Path) -> None:
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path), "--force")
    assert code == 2 and "a directory" in err
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "x.xlsx"))
    assert code == 2 and "'.xlsx'" in err and "--format" in err and not (tmp_path / "x.xlsx").exists()
    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "x.xlsx"), "--format", "csv")
    assert code == 0 and (tmp_path / "x.xlsx").read_text().startswith("run,tag,kind,step")
    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "plain"))
    assert code == 0 and (tmp_path / "plain").read_text().startswith("run,tag,kind,step")


def test_a_new_table_gets_the_umasks_mode_and_a_replaced_one_keeps_its_own(tbx: Path, tmp_path: Path) -> None:
    result = run_gpudoc("export", str(tbx), "-o", str(tmp_path / "new.csv"), umask=0o027)
    assert result.returncode == 0 and stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o640
    (tmp_path / "old.csv").write_text("x")
    os.chmod(tmp_path / "old.csv", 0o604)
    result = run_gpudoc("export", str(tbx), "-o", str(tmp_path / "old.csv"), "--force", umask=0o077)
    assert result.returncode == 0 and stat.S_IMODE((tmp_path / "old.csv").stat().st_mode) == 0o604
    assert (tmp_path / "old.csv").read_text().startswith("run,")


def test_a_cut_off_input_is_an_error_unless_salvaged(tbx: Path, tmp_path: Path) -> None:
    source = sorted((tbx / "run2").glob("*tfevents*"))[0]
    size = source.stat().st_size
    source.write_bytes(source.read_bytes()[:-7])
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "t.csv"))
    assert code == 2 and "incomplete record" in err and "at byte" in err and "--salvage" in err
    assert not (tmp_path / "t.csv").exists()
    result = run_gpudoc("export", str(tbx), "-o", "-")
    assert result.returncode == 2 and result.stdout == "" and "incomplete record" in result.stderr
    code, out, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "t.csv"), "--salvage", "--json")
    (damage,) = json.loads(out)["damage"]
    assert code == 0 and damage["end"] == size - 7 and damage["file"] == str(source)
    rows = list(csv.DictReader((tmp_path / "t.csv").open(newline="")))
    assert [int(r["step"]) for r in rows if r["run"] == "run2"] == list(range(99))


def test_runs_of_several_paths_are_named_apart_and_exported_once(tbx: Path, tfdir: Path, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tbx / "run2").rename(tmp_path / "a" / "run")
    code, _, err = gpudoc("export", str(tmp_path / "a"), str(tfdir), str(tfdir / "run"), "-o", str(tmp_path / "t.csv"))
    assert code == 0, err
    counts = Counter(r["run"] for r in csv.DictReader((tmp_path / "t.csv").open(newline="")))
    assert counts == {str(tmp_path / "a" / "run"): 100, str(tfdir / "run"): 60}


def test_an_output_that_is_one_of_the_inputs_is_refused_even_with_force(tmp_path: Path) -> None:
    """`export RUN/events… -o RUN/events… --force` replaced the event file with its own CSV."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path / "run")) as writer:
        writer.add_scalar("loss", 1.0, 0)
    source = next((tmp_path / "run").iterdir())
    before = source.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(source)
    for output in (source, link):
        result = CliRunner().invoke(cli, ["events", "export", str(source), "-o", str(output), "--force",
                                          "--format", "csv"])
        assert result.exit_code == 2 and f"the same file as the input {source}" in result.stderr
    assert source.read_bytes() == before


def _odd_scalars(logdir: Path) -> None:
    """tensorboardX writing scalars-plugin tensors that TensorBoard's make_ndarray refuses:
    two floats for shape (), no contents, 2 bytes for a float, uint64, unknown dtypes."""
    from tensorboardX import SummaryWriter
    from tensorboardX.proto.summary_pb2 import Summary

    writer = SummaryWriter(str(logdir))
    writer.add_scalar("good", 1.0, 0)
    fills = {"two": lambda t: (setattr(t, "dtype", 1), t.float_val.extend([1.0, 2.0])),
             "empty": lambda t: setattr(t, "dtype", 1),
             "short": lambda t: (setattr(t, "dtype", 1), setattr(t, "tensor_content", b"\0\0")),
             "u64": lambda t: (setattr(t, "dtype", 23), t.int64_val.append(5)),
             "dt0": lambda t: (setattr(t, "dtype", 0), t.float_val.append(1.0)),
             "dt113": lambda t: (setattr(t, "dtype", 113), t.float_val.append(1.0))}
    for step, (tag, fill) in enumerate(fills.items(), 1):
        summary = Summary()
        value = summary.value.add(tag=tag)
        value.metadata.plugin_data.plugin_name = "scalars"
        fill(value.tensor)
        writer.file_writer.add_summary(summary, step)
    writer.close()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_scalar_tensor_that_cannot_be_decoded_is_bad_input_or_salvaged(tmp_path: Path, fmt: str) -> None:
    _odd_scalars(tmp_path / "run")
    (source,) = (tmp_path / "run").iterdir()
    out = tmp_path / f"t.{fmt}"
    code, _, err = gpudoc("export", str(tmp_path / "run"), "-o", str(out))
    assert code == 2 and not out.exists()
    (line,) = err.strip().splitlines()
    assert str(source) in line and "offset " in line and "tag 'two'" in line and "cannot be decoded" in line
    code, stdout, _ = gpudoc("export", str(tmp_path / "run"), "-o", str(out), "--salvage", "--json")
    damage = json.loads(stdout)["damage"]
    assert code == 0 and json.loads(stdout)["rows"] == 1
    assert [d["reason"].split(":")[0] for d in damage] == ["tag 'two'", "tag 'empty'", "tag 'short'", "tag 'u64'",
                                                          "tag 'dt0'", "tag 'dt113'"]
    assert all(d["file"] == str(source) and d["end"] > d["start"] for d in damage)
    code, out, _ = gpudoc("info", str(tmp_path / "run"), "--json")
    flagged = [d for f in json.loads(out)[0]["files"] for d in f["damage"]]
    assert code == 1 and [d["reason"].split(":")[0] for d in flagged] == [d["reason"].split(":")[0] for d in damage]
    assert [(d["start"], d["end"]) for d in flagged] == [(d["start"], d["end"]) for d in damage]


def test_info_of_wall_times_no_date_can_hold(tmp_path: Path) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path / "run")) as writer:
        writer.add_scalar("far", 1.0, 0, walltime=-1e300)  # before any date: the run's start
        writer.add_scalar("far", 2.0, 1, walltime=float("nan"))
    code, out, err = gpudoc("info", str(tmp_path / "run"))
    assert code == 0 and err == "" and ", wall time -1e+300 s + 1e+300 s" in out.splitlines()[0]


def strict_json(text: str) -> object:
    """``json.loads`` as jq, JavaScript and Go parse: NaN, Infinity and -Infinity are no JSON."""
    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_strict_json_in_every_format(tmp_path: Path) -> None:
    """A NaN loss (and an infinite wall time, a histogram of an inf) made jsonl lines, CSV's
    JSON cells and Parquet's JSON text that strict parsers refuse; now each says which."""
    import numpy as np
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path / "run")) as writer:
        writer.add_scalar("loss", float("nan"), 0)
        writer.add_scalar("loss", float("inf"), 1, walltime=float("inf"))
        writer.add_scalar("loss", float("-inf"), 2)
        writer.add_scalar("loss", 1.5, 3)
        writer.add_histogram("h", np.array([1.0, 2.0, np.inf]), 4)
    source = ["export", str(tmp_path / "run"), "--kinds", "scalar,histogram"]
    code, out, err = gpudoc(*source, "-o", str(tmp_path / "t.jsonl"), "--json")
    assert code == 0, err
    assert strict_json(out)["rows"] == 5  # type: ignore[index]
    rows = [strict_json(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [(r["value"], r.get("not_finite")) for r in rows[:4]] == [  # type: ignore[index, union-attr]
        (None, {"value": "nan"}), (None, {"wall_time": "inf", "value": "inf"}), (None, {"value": "-inf"}), (1.5, None)]
    assert rows[1]["wall_time"] is None and rows[4]["value"]["max"] is None  # type: ignore[index]
    assert rows[4]["not_finite"] == {"value.max": "inf", "value.sum": "inf", "value.sum_squares": "inf"}  # type: ignore[index]

    assert gpudoc(*source, "-o", str(tmp_path / "t.csv"))[0] == 0
    table = list(csv.DictReader((tmp_path / "t.csv").open(newline="")))
    assert [(r["value"], r["value_type"]) for r in table[:4]] == [
        ("nan", "number"), ("inf", "number"), ("-inf", "number"), ("1.5", "number")]
    histogram = strict_json(table[4]["value"])
    assert table[4]["value_type"] == "json" and histogram["max"] == "inf" and histogram["min"] == 1.0  # type: ignore[index]

    pq = pytest.importorskip("pyarrow.parquet")
    assert gpudoc(*source, "-o", str(tmp_path / "t.parquet"))[0] == 0
    values = pq.read_table(tmp_path / "t.parquet").column("value").to_pylist()
    assert [strict_json(v) for v in values[:4]] == ["nan", "inf", "-inf", 1.5]
    assert strict_json(values[4])["sum"] == "inf"  # type: ignore[index]

    code, out, _ = gpudoc("info", str(tmp_path / "run"), "--json")
    assert code == 0 and strict_json(out)[0]["wall_end"] is None  # type: ignore[index]


def test_to_stdout_bad_input_writes_no_row_and_to_a_file_leaves_none(tmp_path: Path) -> None:
    """The table streamed the rows before an undecodable scalar tensor, then failed; every file
    is now read and decoded before the first row is written (a file is never half-written)."""
    _odd_scalars(tmp_path / "run")
    for fmt in ("csv", "jsonl"):
        result = run_gpudoc("export", str(tmp_path / "run"), "-o", "-", "--format", fmt)
        assert result.returncode == 2 and result.stdout == "", result.stdout
        (line,) = result.stderr.splitlines()
        assert "offset " in line and "tag 'two'" in line and "--salvage" in line and "rows were written" not in line
        out = tmp_path / "out" / f"t.{fmt}"
        out.parent.mkdir(exist_ok=True)
        code, _, _ = gpudoc("export", str(tmp_path / "run"), "-o", str(out))
        assert code == 2 and list(out.parent.iterdir()) == []
    result = run_gpudoc("export", str(tmp_path / "run"), "-o", "-", "--salvage")
    assert result.returncode == 0 and result.stdout.splitlines()[1:] == [
        line for line in result.stdout.splitlines()[1:] if ",good," in line] and ",good," in result.stdout


def test_a_stream_that_fails_after_its_check_says_how_many_rows_it_wrote(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A writer appending to the run while it is exported to stdout: the second file, checked
    whole, is cut off when it is read again. The rows already written cannot be taken back, so
    the error says how many there are."""
    from tensorboardX import SummaryWriter

    from gpudoc.events import CorruptRecord, discover
    from gpudoc.events.export import export
    from gpudoc.events.model import Kind

    for suffix, steps in ((".a", range(3)), (".b", range(3, 5))):
        with SummaryWriter(str(tmp_path / "run"), filename_suffix=suffix) as writer:
            for step in steps:
                writer.add_scalar("loss", float(step), step)
    _, (run,) = discover(str(tmp_path / "run"))
    later = run.files[1]

    def append_half_a_record(_: int) -> None:
        with open(later, "ab") as handle:
            handle.write(b"\x10\0\0\0")

    with pytest.raises(CorruptRecord) as caught:
        export([run], Path("-"), fmt="jsonl", kinds=frozenset({Kind.SCALAR}), purge=False,
               progress=append_half_a_record)
    written = capsys.readouterr().out.splitlines()
    assert len(written) == 5  # (the cut-off tail comes after the second file's rows)
    assert f"({len(written)} rows were written to - before this: the table there is incomplete)" in str(caught.value)
    assert f"{later}: ends in an incomplete record" in str(caught.value)


_FLOATS = st.floats(width=32) | st.sampled_from([0.0, -0.0, float("nan"), float("inf")])


@settings(max_examples=400, deadline=None)
@given(dtype=st.sampled_from([1, 2, 1, 2, 3, 7, 19]), dims=st.lists(st.integers(0, 2), max_size=2),
       content=st.one_of(st.just(b""), st.binary(max_size=9), _FLOATS.map(lambda f: struct.pack("=f", f)),
                         st.floats().map(lambda f: struct.pack("=d", f))),
       floats=st.lists(_FLOATS, max_size=2), doubles=st.lists(st.floats(), max_size=2))
def test_float_scalar_tensors_read_without_numpy_are_what_make_ndarray_reads(
        dtype: int, dims: list[int], content: bytes, floats: list[float], doubles: list[float]) -> None:
    """tf.summary and Keras write scalars as float tensors of shape []: export and info read
    them without numpy and TensorBoard's tensor_util (~100 ms of start-up). Whatever tensor
    that reads, make_ndarray gives the same one value, to the bit."""
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2

    from gpudoc.events.export import UndecodableValue, scalar_tensor_value, tensor_array

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    tensor = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=content, float_val=floats,
                                    double_val=doubles)
    value = scalar_tensor_value(tensor)
    try:
        array = tensor_array(tensor)
    except UndecodableValue:
        assert value is None
        return
    if value is not None:
        assert array.shape == () and struct.pack("=d", array.item()) == struct.pack("=d", value)
    else:
        assert array.shape != () or dtype not in (1, 2)


def test_a_run_directory_whose_name_is_not_utf8_is_named_with_its_bytes_escaped(tbx: Path, tmp_path: Path) -> None:
    """A run directory named by the bytes ``r\\xff\\xfe`` (TensorBoard cannot read it at all):
    export failed with exit 70 (UnicodeEncodeError) in every format, and info --json and trim
    --json wrote the raw bytes (no valid UTF-8 JSON). Now every output names the run
    ``r\\xff\\xfe``, with a strict UTF-8 stdout too; the directory trim writes has the bytes."""
    import shutil

    name = os.fsdecode(b"r\xff\xfe")
    (tmp_path / "logs" / name).mkdir(parents=True)
    shutil.copy(sorted((tbx / "run2").glob("*tfevents*"))[0], tmp_path / "logs" / name)
    shown = "r\\xff\\xfe"

    def run(*args: str) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-m", "gpudoc", "events", *args], capture_output=True, timeout=120,
                              env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
        return done.returncode, done.stdout.decode(), done.stderr.decode()  # (strict UTF-8)

    logs = str(tmp_path / "logs")
    for fmt in ("csv", "jsonl"):
        code, _, err = run("export", logs, "-o", str(tmp_path / f"t.{fmt}"))
        assert code == 0, err
    with open(tmp_path / "t.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    lines = (tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(table) == len(lines) == 100 and {r["run"] for r in table} == {json.loads(r)["run"] for r in lines} == {
        shown}
    code, out, _ = run("export", logs, "-o", "-", "--format", "jsonl")
    assert code == 0 and out.splitlines() == lines
    pq = pytest.importorskip("pyarrow.parquet")
    code, _, err = run("export", logs, "-o", str(tmp_path / "t.parquet"))
    assert code == 0 and set(pq.read_table(tmp_path / "t.parquet").column("run").to_pylist()) == {shown}, err

    code, out, _ = run("info", logs, "--json")
    (item,) = json.loads(out)
    assert code == 0 and item["run"] == shown and shown in item["files"][0]["path"]
    code, out, _ = run("info", logs)
    assert code == 0 and out.startswith(f"run {shown} ({logs}): 1 file")
    code, out, _ = run("trim", logs, "-o", str(tmp_path / "out"), "--steps", "0:9", "--json")
    assert code == 0 and f"{os.sep}{shown}{os.sep}" in json.loads(out)["files"][0]["output"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == [name]
