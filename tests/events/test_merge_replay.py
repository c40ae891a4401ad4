"""Merging a run with its resumption; replaying a run in real time."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from click.testing import CliRunner
from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from tensorboard.compat.proto import event_pb2, summary_pb2

from gpudoc.cli import cli
from gpudoc.events import ReadState, RecordReader, RecordWriter, discover
from gpudoc.events.merge import replay


def gpudoc(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["events", *args])
    return result.exit_code, result.stdout, result.stderr


def write_run(directory: Path, steps: range, value: float, wall0: float) -> None:
    directory.mkdir(parents=True)
    with open(directory / f"events.out.tfevents.{int(wall0)}.host", "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(event_pb2.Event(wall_time=wall0, file_version="brain.Event:2").SerializeToString())
        for step in steps:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=value)])
            writer.write(event_pb2.Event(wall_time=wall0 + step, step=step, summary=summary).SerializeToString())


def scalars(run: Path) -> list[tuple[int, float]]:
    accumulator = event_accumulator.EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(s.step, s.value) for s in accumulator.Scalars("loss")]


def test_merge_policies(tmp_path: Path) -> None:
    write_run(tmp_path / "first", range(0, 100), 1.0, 1000.0)
    write_run(tmp_path / "resumed", range(80, 150), 2.0, 5000.0)
    code, _, err = gpudoc("merge", str(tmp_path / "first"), str(tmp_path / "resumed"), "-o", str(tmp_path / "e"))
    assert code == 2 and "20 (tag, step) pair(s)" in err and not (tmp_path / "e").exists()
    code, out, _ = gpudoc("merge", str(tmp_path / "first"), str(tmp_path / "resumed"), "-o", str(tmp_path / "last"),
                          "--overlap", "keep-last", "--json")
    report = json.loads(out)
    assert code == 0 and report["repeated_run_level_dropped"] == 1
    assert report["overlaps_dropped"] == {str(tmp_path / "first"): 20, str(tmp_path / "resumed"): 0}
    merged = scalars(tmp_path / "last")
    assert [s for s, _ in merged] == list(range(0, 150))
    assert dict(merged)[79] == 1.0 and dict(merged)[80] == 2.0
    code, _, _ = gpudoc("merge", str(tmp_path / "first"), str(tmp_path / "resumed"), "-o", str(tmp_path / "firstw"),
                        "--overlap", "keep-first")
    assert code == 0 and dict(scalars(tmp_path / "firstw"))[99] == 1.0


def test_replay_is_byte_for_byte_and_paced(tmp_path: Path) -> None:
    write_run(tmp_path / "src", range(0, 20), 1.0, 1000.0)
    (run,) = discover(tmp_path / "src")[1]
    waits: list[float] = []
    assert replay([run], tmp_path / "live", speed=4.0, sleep=waits.append).records == 21
    (source,) = run.files
    assert (tmp_path / "live" / source.name).read_bytes() == source.read_bytes()
    assert waits == [0.25] * 19


def test_a_tailing_reader_sees_a_replay_exactly_once(tmp_path: Path) -> None:
    write_run(tmp_path / "src", range(0, 30), 1.0, 1000.0)
    (run,) = discover(tmp_path / "src")[1]
    live = tmp_path / "live" / run.files[0].name
    state = ReadState()
    seen: list[bytes] = []

    def tail_between_records(_: float) -> None:
        if live.exists():
            seen.extend(data for _, data, _ in RecordReader(live, state=state))

    replay([run], tmp_path / "live", rate=1000.0, first_step=5, last_step=24, sleep=tail_between_records)
    tail_between_records(0)
    expected = [data for _, data, _ in RecordReader(run.files[0])]
    assert seen == expected[:1] + expected[6:26]


def test_replay_command_with_rate(tmp_path: Path) -> None:
    write_run(tmp_path / "src", range(0, 5), 1.0, 1000.0)
    code, _, err = gpudoc("replay", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--rate", "500")
    assert code == 0 and "replayed 6 records from 1 run(s)" in err


def test_a_logdir_replays_mirrored_and_interleaved_by_wall_time(tmp_path: Path) -> None:
    write_run(tmp_path / "logs" / "a", range(0, 4), 1.0, 1000.0)
    write_run(tmp_path / "logs" / "b", range(0, 4), 2.0, 1000.5)
    order: list[str] = []
    waits: list[float] = []
    runs = discover(tmp_path / "logs")[1]
    live = tmp_path / "live"

    def note(wait: float) -> None:
        waits.append(wait)
        order.append(",".join(sorted(f"{p.parent.name}:{len(list(RecordReader(p)))}" for p in live.rglob("*tfev*"))))

    assert replay(runs, live, speed=1.0, sleep=note).records == 10
    for run in runs:
        (source,) = run.files
        assert (live / run.name / source.name).read_bytes() == source.read_bytes()
    # file_version and step 0 of a run share a wall time: no wait between them.
    assert waits == [0.5] * 7
    assert order[:3] == ["a:2", "a:2,b:2", "a:3,b:2"]
    code, out, _ = gpudoc("replay", str(tmp_path / "logs"), "-o", str(tmp_path / "again"), "--rate", "1000",
                          "--json")
    assert code == 0 and json.loads(out) == {"output": str(tmp_path / "again"), "runs": ["a", "b"], "records": 10,
                                        "copied": [], "not_copied": [], "damage": []}


def test_merge_refuses_a_logdir_of_several_runs_unless_they_are_named(tbx: Path, tmp_path: Path) -> None:
    code, _, err = gpudoc("merge", str(tbx), "-o", str(tmp_path / "m"))
    assert code == 2 and "3 runs" in err and "run1, run1/" in err and ", run2" in err and "--run" in err
    assert not (tmp_path / "m").exists()
    code, out, err = gpudoc("merge", str(tbx), "--run", "run1", "--run", "run2", "-o", str(tmp_path / "m"),
                            "--overlap", "keep-last", "--json")
    assert code == 0, err
    merged = json.loads(out)
    assert merged["records_in"] == sum(len(list(RecordReader(f))) for r in ("run1", "run2")
                                       for f in (tbx / r).glob("*tfevents*"))
    code, _, err = gpudoc("merge", str(tbx), "--run", "nope", "-o", str(tmp_path / "n"))
    assert code == 2 and "'nope'" in err and "run2" in err


def cut(directory: Path) -> tuple[Path, int]:
    """The run's (only) event file, its last record cut short by 5 bytes; and the file's new size."""
    (file,) = directory.glob("*tfevents*")
    file.write_bytes(file.read_bytes()[:-5])
    return file, file.stat().st_size


def test_a_cut_off_input_fails_merge_and_replay_unless_salvaged(tmp_path: Path) -> None:
    write_run(tmp_path / "first", range(0, 10), 1.0, 1000.0)
    write_run(tmp_path / "resumed", range(10, 20), 2.0, 2000.0)
    file, size = cut(tmp_path / "resumed")
    runs = (str(tmp_path / "first"), str(tmp_path / "resumed"))
    for dest, command in ((tmp_path / "m", ["merge", *runs]), (tmp_path / "r", ["replay", runs[1], "--rate", "1e5"])):
        code, _, err = gpudoc(*command, "-o", str(dest))
        assert code == 2 and f"{file}: ends in an incomplete record" in err and "--salvage" in err, err
        assert not dest.exists()
        code, out, err = gpudoc(*command, "-o", str(dest), "--salvage", "--json")
        (damage,) = json.loads(out)["damage"]
        assert code == 0 and damage["file"] == str(file) and damage["end"] == size
    assert [s for s, _ in scalars(tmp_path / "m")] == list(range(19))
    assert [s for s, _ in scalars(tmp_path / "r")] == list(range(10, 19))


def test_destinations_that_are_not_directories_are_usage_errors(tmp_path: Path) -> None:
    write_run(tmp_path / "src", range(0, 3), 1.0, 1000.0)
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x")
    for dest in (tmp_path / "file", tmp_path / "file" / "below", Path("/dev/null"), Path("-"), tmp_path / "dangling"):
        for command in (["merge", str(tmp_path / "src")], ["replay", str(tmp_path / "src"), "--rate", "1000"],
                        ["trim", str(tmp_path / "src")]):
            code, _, err = gpudoc(*command, "-o", str(dest))
            assert code == 2 and str(dest) in err, (command, dest, err)
    assert (tmp_path / "file").read_text() == "x"
    (tmp_path / "linked").mkdir()
    (tmp_path / "dir-link").symlink_to("linked")
    code, _, err = gpudoc("merge", str(tmp_path / "src"), "-o", str(tmp_path / "dir-link"))
    assert code == 0 and (tmp_path / "dir-link").is_symlink() and len(list((tmp_path / "linked").iterdir())) == 1


def test_replay_refuses_a_destination_inside_the_source_as_trim_and_merge_do(tmp_path: Path) -> None:
    """Inside a source run or logdir (also through a symlink), TensorBoard would mix the
    replay with the source: exit 2 before anything is written, as trim and merge refuse."""
    write_run(tmp_path / "logdir" / "a", range(0, 3), 1.0, 1000.0)
    write_run(tmp_path / "src2", range(0, 3), 1.0, 1000.0)
    (tmp_path / "sneaky2").symlink_to("src2")
    before = sorted(tmp_path.rglob("*"))
    for source, dest, why in ((tmp_path / "logdir", tmp_path / "logdir" / "r2", "inside the source logdir"),
                              (tmp_path / "logdir", tmp_path / "logdir", "the source itself"),
                              (tmp_path / "logdir", tmp_path / "logdir" / "a" / "r", "inside the source run"),
                              (tmp_path / "src2", tmp_path / "src2" / "r", "inside the source run"),
                              (tmp_path / "src2", tmp_path / "sneaky2" / "r", "inside the source run")):
        for command in (["replay", str(source), "--rate", "1000"], ["trim", str(source)]):
            code, _, err = gpudoc(*command, "-o", str(dest))
            assert code == 2 and f"gpudoc: error: {dest}: {why}" in err and len(err.splitlines()) == 1, (command, err)
    code, _, err = gpudoc("merge", str(tmp_path / "src2"), "-o", str(tmp_path / "sneaky2" / "m"))
    assert code == 2 and "inside the source run" in err
    assert sorted(tmp_path.rglob("*")) == before


def test_merge_force_replaces_the_event_file_of_an_earlier_merge(tmp_path: Path) -> None:
    """merge A -o DST, then merge B -o DST --force: TensorBoard reads every event file of
    DST, so the earlier merged file goes (once the new one is in place); other files stay."""
    write_run(tmp_path / "a", range(0, 5), 1.0, 1000.0)
    write_run(tmp_path / "b", range(0, 8), 2.0, 5000.0)
    for run, mtime in (("a", 1000), ("b", 5000)):
        for path in (tmp_path / run).iterdir():
            os.utime(path, (mtime, mtime))
    out = tmp_path / "mn"
    assert gpudoc("merge", str(tmp_path / "a"), "-o", str(out))[0] == 0
    (earlier,) = out.iterdir()
    (out / "notes.txt").write_text("mine")
    code, text, err = gpudoc("merge", str(tmp_path / "b"), "-o", str(out), "--force", "--json")
    assert code == 0 and json.loads(text)["removed"] == [str(earlier)], err
    assert sorted(p.name for p in out.iterdir()) == ["events.out.tfevents.5000.gpudoc-merge", "notes.txt"]
    assert scalars(out) == [(step, 2.0) for step in range(0, 8)]
    code, text, _ = gpudoc("info", str(out))
    assert code == 0 and "1 file," in text


def test_replay_with_a_step_range_keeps_run_level_summaries(written: dict[str, Path], tmp_path: Path) -> None:
    """Keras's model graph is a summary at step 0; TensorBoard shows it per run, not per step."""
    train = written["keras"] / "run0" / "train"
    code, _, err = gpudoc("replay", str(train), "-o", str(tmp_path / "live"), "--rate", "100000", "--steps", "2:")
    assert code == 0, err
    accumulator = plugin_event_accumulator.EventAccumulator(str(tmp_path / "live"))
    accumulator.Reload()
    assert set(accumulator.PluginTagToContent("graph_keras_model")) == {"keras"}
    assert [t.step for t in accumulator.Tensors("epoch_loss")] == [2, 3]


def test_merge_stages_under_a_name_tensorboard_does_not_read(tmp_path: Path) -> None:
    from gpudoc.events.merge import merge

    write_run(tmp_path / "first", range(0, 10), 1.0, 1000.0)
    write_run(tmp_path / "resumed", range(10, 20), 2.0, 2000.0)
    runs = [run for name in ("first", "resumed") for run in discover(tmp_path / name)[1]]
    seen: list[list[str]] = []
    merge(runs, tmp_path / "out" / "events.out.tfevents.1.merged", overlap="error",
          progress=lambda _: seen.append(sorted(p.name for p in (tmp_path / "out").iterdir())))
    assert len(seen) == 2 and all(len(names) == 1 and "tfevents" not in names[0] for names in seen)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["events.out.tfevents.1.merged"]


def test_option_values_that_are_not_numbers_or_kinds_are_usage_errors(tmp_path: Path) -> None:
    write_run(tmp_path / "src", range(0, 3), 1.0, 1000.0)
    src = str(tmp_path / "src")
    for args in (["replay", src, "-o", str(tmp_path / "r1"), "--rate", "nan"],
                 ["replay", src, "-o", str(tmp_path / "r2"), "--speed", "nan"],
                 ["trim", src, "-o", str(tmp_path / "t1"), "--start", "nan"],
                 ["trim", src, "-o", str(tmp_path / "t2"), "--end", "inf"],
                 ["trim", src, "-o", str(tmp_path / "t3"), "--kinds", ","],
                 ["export", src, "-o", str(tmp_path / "e.csv"), "--kinds", " , "]):
        code, _, err = gpudoc(*args)
        assert code == 2 and err.startswith("gpudoc: error: --"), (args, err)
    assert not any(tmp_path.glob("[rte]*"))


def test_impossible_windows_and_runs_given_twice_are_usage_errors(tmp_path: Path) -> None:
    write_run(tmp_path / "src", range(0, 3), 1.0, 1000.0)
    src = str(tmp_path / "src")
    for args in (["trim", src, "-o", str(tmp_path / "t"), "--start", "2000", "--end", "1000"],
                 ["replay", src, "-o", str(tmp_path / "r"), "--rate", "1e-300"],
                 ["replay", src, "-o", str(tmp_path / "r"), "--speed", "inf"],
                 ["trim", src, "--dry-run", "--tags", "a{4294967296}"],
                 ["merge", src, src, "-o", str(tmp_path / "m")]):
        code, _, err = gpudoc(*args)
        assert code == 2 and err.startswith("gpudoc: error: ") and err.count("\n") == 1, (args, err)
    assert not any(tmp_path.glob("[trm]"))


def _session_with_a_record_that_is_no_event(root: Path) -> tuple[Path, Path, int, int, list[Any]]:
    """A tensorboardX hparams session (metric hparam/acc at step 0) whose file holds, after
    its first record, a framed record whose CRCs check but whose bytes are no Event, naming
    ``_hparams_/`` and the metric's tag: the logdir, that file, the record's start and end,
    and TensorBoard's HParams table of the logdir before that record was added."""
    from tensorboardX import SummaryWriter

    from gpudoc.events import frame
    from gpudoc.events.records import read_records

    from .test_trim import hparams_table

    with SummaryWriter(str(root / "logs" / "run")) as writer:
        for step in range(5):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_hparams({"lr": 0.1}, {"hparam/acc": 0.9}, name="session")
    table = hparams_table(root / "logs")
    (source,) = (root / "logs" / "run" / "session").glob("*tfevents*")
    records, _ = read_records(source)
    garbage = frame(b"\xff\xff _hparams_/session_start_info hparam/acc")
    start = len(frame(records[0]))
    source.write_bytes(frame(records[0]) + garbage + b"".join(frame(r) for r in records[1:]))
    return root / "logs", source, start, start + len(garbage), table


def test_a_record_that_is_no_event_naming_an_hparams_session_is_damage_to_replay_and_info(tmp_path: Path) -> None:
    """Finding an hparams session's metrics parsed the records naming ``_hparams_/`` or a
    metric's tag unguarded: a CRC-valid record that is no Event failed ``replay --steps``
    even with --salvage, and made ``info`` forget every session metric of the logdir. Now
    salvage skips it as damage and the session's metric value is replayed with it; without
    --salvage it is one line, exit 2, nothing written."""
    from .test_trim import hparams_table

    logs, source, start, end, table = _session_with_a_record_that_is_no_event(tmp_path)
    assert [(name, [tag for _, tag, _ in values]) for name, values in table] == [("run/session", ["hparam/acc"])]
    reason = "record 1: not a TensorBoard Event (its CRCs check, its bytes do not parse); record skipped"
    code, out, err = gpudoc("replay", str(logs), "-o", str(tmp_path / "r"), "--rate", "1e6", "--steps", "1:",
                            "--salvage", "--json")
    assert code == 0, err
    assert json.loads(out)["damage"] == [{"file": str(source), "start": start, "end": end, "reason": reason}]
    assert hparams_table(tmp_path / "r") == table
    code, _, err = gpudoc("replay", str(logs), "-o", str(tmp_path / "strict"), "--rate", "1e6", "--steps", "1:")
    (line,) = err.splitlines()
    assert code == 2 and f"{source}: the record at byte {start} is not a TensorBoard Event" in line
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").rglob("*tfevents*"))
    code, out, _ = gpudoc("info", str(logs), "--json")
    shown = {(run["run"], t["tag"]): t["shown"] for run in json.loads(out) for t in run["tags"]}
    assert code == 1 and shown[("run/session", "hparam/acc")] == "per step; last value in the HParams table"


def test_trim_salvage_skips_a_record_that_is_no_event_naming_an_hparams_session(tmp_path: Path) -> None:
    """The same record fails ``trim --steps --salvage``: skipped as damage, the session's
    metric value kept with it (TensorBoard's HParams table unchanged); without --salvage one
    line, exit 2, nothing written. Dry run alike."""
    from .test_trim import hparams_table

    logs, source, start, end, table = _session_with_a_record_that_is_no_event(tmp_path)
    reason = "record 1: not a TensorBoard Event (its CRCs check, its bytes do not parse); record skipped"
    for dry in ([], ["--dry-run"]):
        out_dir = tmp_path / f"out{len(dry)}"
        code, out, err = gpudoc("trim", str(logs), "-o", str(out_dir), "--steps", "1:", "--salvage", "--json", *dry)
        assert code == 0, err
        assert json.loads(out)["damage"] == [{"file": str(source), "start": start, "end": end, "reason": reason}]
        if not dry:
            assert hparams_table(out_dir) == table
        code, _, err = gpudoc("trim", str(logs), "-o", str(tmp_path / "strict"), "--steps", "1:", *dry)
        (line,) = err.splitlines()
        assert code == 2 and f"{source}: the record at byte {start} is not a TensorBoard Event" in line
        assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").rglob("*tfevents*"))


def _text_run(directory: Path, steps: list[int], metadata: bool) -> None:
    """Text summaries written by TF's v1 FileWriter, which gives a tag's metadata to its
    first value only (``metadata`` False: to none, as a writer that already wrote it)."""
    import tensorflow as tf
    from tensorboard.plugins.text.summary_v2 import text_pb

    with tf.Graph().as_default():
        writer = tf.compat.v1.summary.FileWriter(str(directory))
        for step in steps:
            summary = text_pb("mytext", f"{directory.name} {step}")
            if not metadata:
                summary.value[0].ClearField("metadata")
            writer.add_summary(summary.SerializeToString(), step)
        writer.close()


def _texts(run: Path) -> tuple[set[str], dict[int, bytes]]:
    accumulator = plugin_event_accumulator.EventAccumulator(str(run))
    accumulator.Reload()
    shown = set(accumulator.PluginTagToContent("text"))
    values = {t.step: t.tensor_proto.string_val[0] for t in accumulator.Tensors("mytext")}
    return shown, values


@pytest.mark.parametrize("overlap", ["keep-last", "keep-first", "error"])
def test_merge_keeps_a_tag_on_its_dashboard_when_its_metadata_value_is_dropped(tmp_path: Path, overlap: str) -> None:
    _text_run(tmp_path / "a", list(range(6)), metadata=True)
    _text_run(tmp_path / "b", [6, 7] if overlap == "error" else [0, 6], metadata=False)
    assert _texts(tmp_path / "a")[0] == {"mytext"}
    code, _, err = gpudoc("merge", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "m"),
                            "--overlap", overlap)
    assert code == 0, err
    shown, values = _texts(tmp_path / "m")
    assert shown == {"mytext"}
    winner = {"keep-last": "b", "keep-first": "a", "error": "a"}[overlap]
    steps = [0, 1, 2, 3, 4, 5, 6, 7] if overlap == "error" else [0, 1, 2, 3, 4, 5, 6]
    assert sorted(values) == steps
    assert values[0] == f"{winner} 0".encode() and values[6] == b"b 6"
