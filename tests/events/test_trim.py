"""Trim, checked with TensorBoard's own loaders."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto import summary_pb2

from gpudoc.cli import cli


def gpudoc(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["events", *args])
    return result.exit_code, result.stdout, result.stderr


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if "tfevents" in p.name)


def events_of(path: Path) -> list:
    return list(EventFileLoader(str(path)).Load())


def test_full_range_trim_reproduces_every_byte(tbx: Path, tmp_path: Path) -> None:
    code, _, _ = gpudoc("trim", str(tbx), "-o", str(tmp_path / "out"))
    assert code == 0
    sources = files(tbx)
    assert len(sources) == 4
    for source in sources:
        assert (tmp_path / "out" / source.relative_to(tbx)).read_bytes() == source.read_bytes()


def test_step_trim_keeps_every_kind_and_tensorboard_reads_the_same_values(tbx: Path, tmp_path: Path) -> None:
    code, out, _ = gpudoc("trim", str(tbx), "-o", str(tmp_path / "out"), "--steps", "50:90", "--json")
    assert code == 0, out
    def run_level(value: summary_pb2.Summary.Value) -> bool:
        # TensorBoard's loader turns graph_def and tagged_run_metadata into graph plugin values;
        # hparam/acc is the hparams session's metric (the HParams table's metric column).
        plugin = value.metadata.plugin_data.plugin_name
        return value.tag.startswith("_hparams_/") or plugin.startswith("graph") or value.tag == "hparam/acc"

    for source in files(tbx):
        expected = [e for e in events_of(source)
                    if not e.HasField("summary") or 50 <= e.step <= 90 or any(map(run_level, e.summary.value))]
        expected = [e for e in expected if not e.HasField("session_log") or 50 <= e.step <= 90]
        got = events_of(tmp_path / "out" / source.relative_to(tbx))
        assert got == expected, source.name
    code, out, _ = gpudoc("trim", str(tbx), "-o", str(tmp_path / "dry"), "--steps", "50:90", "--json", "--dry-run")
    report = json.loads(out)
    kinds = {v["kind"] for v in report["values"] if v["after"]}
    assert {"scalar", "histogram", "image", "audio", "text", "pr_curve", "hparams"} <= kinds


def test_tf_summary_trim_by_step_and_tag_reads_back_identically(tfdir: Path, tmp_path: Path) -> None:
    code, _, _ = gpudoc("trim", str(tfdir), "-o", str(tmp_path / "out"), "--steps", "10:", "--tags", "^(loss|log)$")
    assert code == 0
    accumulator = plugin_event_accumulator.EventAccumulator(str(tmp_path / "out" / "run"), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert accumulator.PluginTagToContent("scalars").keys() == {"loss"}
    assert accumulator.PluginTagToContent("text").keys() == {"log"}
    steps = [t.step for t in accumulator.Tensors("loss")]
    assert steps == list(range(10, 60))
    source = plugin_event_accumulator.EventAccumulator(str(tfdir / "run"), size_guidance={"tensors": 0})
    source.Reload()
    original = {t.step: (t.wall_time, t.tensor_proto) for t in source.Tensors("loss")}
    assert all(original[t.step] == (t.wall_time, t.tensor_proto) for t in accumulator.Tensors("loss"))
    assert "w" not in accumulator.Tags()["tensors"]


def test_dry_run_writes_nothing_and_reports_before_and_after(tbx: Path, tmp_path: Path) -> None:
    code, out, _ = gpudoc("trim", str(tbx), "-o", str(tmp_path / "out"), "--steps", ":9", "--kinds", "scalar",
                          "--dry-run")
    assert code == 0 and not (tmp_path / "out").exists()
    loss = next(line for line in out.splitlines() if line.startswith("run1 ") and " loss " in line)
    assert loss.split()[-3:] == ["142", "→", "10"]


@pytest.mark.parametrize("where", ["", "-o", "--in-place"], ids=["no-destination", "-o", "--in-place"])
def test_a_dry_run_refuses_what_the_run_refuses(tbx: Path, tmp_path: Path, where: str) -> None:
    """The same message and exit 2, and nothing written, with --dry-run as without: no
    destination at all (a dry run would report "writing" onto SRC), a destination whose event
    file is a directory or lies below a file, a --backup inside SRC."""
    (tmp_path / "dst" / "run1").mkdir(parents=True)
    cases = {
        "": [[]],
        "-o": [["-o", str(tmp_path / "dst"), "--force"], ["-o", str(tmp_path / "below"), "--force"]],
        "--in-place": [["--in-place", "--backup", str(tbx / "bak")], ["--in-place"]],
    }[where]
    for name in (p.relative_to(tbx) for p in files(tbx) if p.parent.name == "run1"):
        (tmp_path / "dst" / name).mkdir(parents=True)
    (tmp_path / "below").mkdir()
    (tmp_path / "below" / "run1").write_text("a file where a run directory goes")
    def state() -> list[tuple[Path, int]]:
        return sorted((p, p.stat().st_mtime_ns) for p in (tmp_path, *tmp_path.rglob("*"), tbx, *tbx.rglob("*")))

    for args in cases:
        before = state()
        dry = gpudoc("trim", str(tbx), *args, "--steps", "1:2", "--dry-run")
        dry_json = gpudoc("trim", str(tbx), *args, "--steps", "1:2", "--dry-run", "--json")
        assert state() == before, args
        real = gpudoc("trim", str(tbx), *args, "--steps", "1:2")
        assert real[0] == 2 and real[2].startswith("gpudoc: error: "), (args, real)
        assert dry == real == dry_json, args


def test_destination_inside_a_source_run_or_not_empty_is_refused(tbx: Path, tmp_path: Path) -> None:
    code, _, err = gpudoc("trim", str(tbx), "-o", str(tbx / "run1" / "trimmed"), "--steps", "1:2")
    assert code == 2 and "TensorBoard would merge" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    code, _, err = gpudoc("trim", str(tbx), "-o", str(tmp_path / "busy"), "--steps", "1:2")
    assert code == 2 and "--force" in err


def test_in_place_needs_a_backup_outside_and_keeps_the_originals(tbx: Path, tmp_path: Path) -> None:
    original = {p.relative_to(tbx): p.read_bytes() for p in files(tbx)}
    code, _, err = gpudoc("trim", str(tbx), "--in-place", "--steps", "0:10")
    assert code == 2 and "--backup" in err
    # The dry run (and the run) say the files are rewritten in place, not "written to" SRC.
    code, out, _ = gpudoc("trim", str(tbx), "--in-place", "--backup", str(tmp_path / "bak"), "--steps", "0:10",
                          "--dry-run")
    lines = [line for line in out.splitlines() if " records → " in line]
    assert code == 0 and len(lines) == len(original) and not (tmp_path / "bak").exists()
    assert all(line.endswith(f" in place (the original kept in {tmp_path / 'bak'})") for line in lines), out
    code, out, _ = gpudoc("trim", str(tbx), "--in-place", "--backup", str(tmp_path / "bak"), "--steps", "0:10")
    assert code == 0 and f"in place (the original kept in {tmp_path / 'bak'})" in out
    assert {p.relative_to(tmp_path / "bak"): p.read_bytes() for p in files(tmp_path / "bak")} == original
    assert max(e.step for e in events_of(next(iter(files(tbx))))) <= 10


@pytest.mark.parametrize("single_file", [False, True], ids=["directory", "file"])
def test_a_second_in_place_trim_never_replaces_the_backup(tbx: Path, tmp_path: Path, single_file: bool) -> None:
    """The backup is the only copy of the original: a second in-place trim into the same
    --backup is refused (exit 2, one line naming the backup file), as a dry run and with
    --force too, leaving the backup and SRC as they were; another --backup works."""
    src = next(iter(files(tbx / "run2"))) if single_file else tbx
    root, backup = (src.parent if single_file else tbx), tmp_path / "bk"
    def contents(directory: Path, base: Path) -> dict[Path, bytes]:
        return {p.relative_to(base): p.read_bytes() for p in files(directory)}

    original = contents(src.parent if single_file else tbx, root)
    code, _, err = gpudoc("trim", str(src), "--in-place", "--backup", str(backup), "--steps", "2:")
    assert code == 0, err
    assert contents(backup, backup) == original
    trimmed = contents(tbx, tbx)
    for extra in ([], ["--dry-run"], ["--force"], ["--dry-run", "--json"]):
        code, out, err = gpudoc("trim", str(src), "--in-place", "--backup", str(backup), "--steps", "3:", *extra)
        assert code == 2 and out == "" and len(err.splitlines()) == 1, (extra, err)
        assert any(err.startswith(f"gpudoc: error: {backup / name}: a backup is already there") for name in original)
        assert "choose another --backup" in err, err
        assert contents(backup, backup) == original and contents(tbx, tbx) == trimmed
    code, _, err = gpudoc("trim", str(src), "--in-place", "--backup", str(tmp_path / "bk2"), "--steps", "3:")
    assert code == 0, err
    assert contents(tmp_path / "bk2", tmp_path / "bk2") == {name: trimmed[(root / name).relative_to(tbx)]
                                                            for name in original}
    assert contents(backup, backup) == original


def test_force_replaces_the_event_files_of_an_earlier_output(tbx: Path, tfdir: Path, tmp_path: Path) -> None:
    """trim A -o DST, then trim B -o DST --force: TensorBoard reads every event file of a run
    directory, so B's replace A's there (once B's are in place; a dry run lists them and
    removes nothing), while other files and other runs' directories are kept."""
    out = tmp_path / "tr1"
    assert gpudoc("trim", str(tbx / "run2"), "-o", str(out))[0] == 0
    (earlier,) = files(out)
    (out / "notes.txt").write_text("mine")
    other = Path(shutil.copytree(tbx / "run1", out / "other"))
    kept = files(other)
    code, out_text, err = gpudoc("trim", str(tfdir / "run"), "-o", str(out), "--force", "--steps", "10:", "--dry-run")
    assert code == 0 and f"would remove {earlier} " in out_text and earlier.exists(), err
    code, out_text, err = gpudoc("trim", str(tfdir / "run"), "-o", str(out), "--force", "--steps", "10:", "--json")
    assert code == 0 and json.loads(out_text)["removed"] == [str(earlier)], err
    (written,) = (p for p in files(out) if p.parent == out)
    assert written.name == next(iter(files(tfdir / "run"))).name and not earlier.exists()
    assert files(other) == kept and (out / "notes.txt").read_text() == "mine"
    accumulator = plugin_event_accumulator.EventAccumulator(str(out), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert "sound" not in accumulator.Tags()["tensors"]  # torch's audio, in run2's file only
    assert [t.step for t in accumulator.Tensors("loss")] == list(range(10, 60))


def test_bad_step_range_is_a_usage_error(tbx: Path, tmp_path: Path) -> None:
    code, _, err = gpudoc("trim", str(tbx), "-o", str(tmp_path / "o"), "--steps", "9:1")
    assert code == 2 and "after the last" in err


def test_metadata_on_a_dropped_first_value_is_re_attached(tmp_path: Path) -> None:
    """Writers that put a tag's SummaryMetadata on its first value only (TF1's, many custom
    ones): cutting that value must move the metadata, or TensorBoard loses the plugin."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.util import tensor_util

    from gpudoc.events import RecordWriter

    run = tmp_path / "src" / "run"
    run.mkdir(parents=True)
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
    with open(run / "events.out.tfevents.1.host", "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        for step in range(10):
            value = summary_pb2.Summary.Value(tag="notes", tensor=tensor_util.make_tensor_proto(f"at {step}"))
            if step == 0:
                value.metadata.CopyFrom(metadata)
            event = event_pb2.Event(wall_time=2.0 + step, step=step, summary=summary_pb2.Summary(value=[value]))
            writer.write(event.SerializeToString())
    code, out, _ = gpudoc("trim", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--steps", "5:")
    assert code == 0 and "1 event(s) re-encoded, 1 tag metadata re-attached" in out
    accumulator = plugin_event_accumulator.EventAccumulator(str(tmp_path / "out" / "run"), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert accumulator.PluginTagToContent("text").keys() == {"notes"}
    assert [t.step for t in accumulator.Tensors("notes")] == [5, 6, 7, 8, 9]
    assert [t.wall_time for t in accumulator.Tensors("notes")] == [7.0, 8.0, 9.0, 10.0, 11.0]


def hparams_table(logdir: Path) -> list[tuple[str, tuple[tuple[str, str, float], ...]]]:
    """TensorBoard's HParams table, as its plugin computes it: per session, (group, tag, value)
    of each metric."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(context.RequestContext(), backend_context.Context(tb), "", request).run()
    return sorted((s.name, tuple(sorted((m.name.group, m.name.tag, m.value) for m in s.metric_values)))
                  for g in groups.session_groups for s in g.sessions)


@pytest.mark.parametrize(("logdir", "steps", "metrics"), [
    ("tfhp", "2:3", 2),      # tf.summary + hparams API: the experiment names "accuracy"
    ("keras", "1:1", 1),     # Keras TensorBoard callback + hp.KerasCallback: every scalar is a metric
    ("torchhp", "2:3", 1),   # torch add_hparams: its metric is a scalar at step 0 of the session run
    ("tbx", "50:60", 1),     # tensorboardX add_hparams, likewise
])
def test_trim_keeps_the_hparams_tables_metric_values(written: dict[str, Path], tmp_path: Path, logdir: str,
                                                     steps: str, metrics: int) -> None:
    before = hparams_table(written[logdir])
    assert len(before) == metrics and all(values for _, values in before)
    code, _, err = gpudoc("trim", str(written[logdir]), "-o", str(tmp_path / "out"), "--steps", steps)
    assert code == 0, err
    assert hparams_table(tmp_path / "out") == before
    code, _, _ = gpudoc("trim", str(written[logdir]), "-o", str(tmp_path / "dropped"), "--steps", steps,
                        "--drop-run-level")
    assert code == 0 and not any(values for _, values in hparams_table(tmp_path / "dropped"))


def test_trim_keeps_kerass_model_graph(written: dict[str, Path], tmp_path: Path) -> None:
    train = written["keras"] / "run0" / "train"
    code, out, _ = gpudoc("trim", str(written["keras"]), "-o", str(tmp_path / "out"), "--steps", "2:", "--json")
    assert code == 0, out
    accumulator = plugin_event_accumulator.EventAccumulator(str(tmp_path / "out" / "run0" / "train"))
    accumulator.Reload()
    assert set(accumulator.PluginTagToContent("graph_keras_model")) == {"keras"}
    source = plugin_event_accumulator.EventAccumulator(str(train))
    source.Reload()
    assert accumulator.Tensors("keras") == source.Tensors("keras")
    code, out, _ = gpudoc("trim", str(written["keras"]), "-o", str(tmp_path / "dry"), "--steps", "2:", "--dry-run",
                          "--json")
    kept = {(v["run"], v["kind"], v["tag"]) for v in json.loads(out)["values"] if v["after"]}
    assert code == 0 and ("run0/train", "graph", "keras") in kept
    # Keras's per-epoch scalars outside the range go (but for each metric's last value, still in range here).
    assert [t.step for t in accumulator.Tensors("epoch_loss")] == [2, 3]


def test_dry_run_table_stays_aligned_with_long_run_names(tbx: Path, tmp_path: Path) -> None:
    (tbx / "run2").rename(tbx / ("a-run-name-much-longer-than-twenty-characters" * 2))
    code, out, _ = gpudoc("trim", str(tbx), "-o", str(tmp_path / "dry"), "--steps", ":9", "--dry-run")
    table = [line for line in out.splitlines() if "→" in line and "records" not in line]
    assert code == 0 and len(table) > 5
    # kind and tag start, and the arrow stands, at one position in every line.
    starts = [[m.start() for m in re.finditer(r"\S+", line)] for line in table]
    assert len({(at[1], at[2], line.index("→")) for at, line in zip(starts, table)}) == 1, out


def test_in_place_through_a_symlink_to_another_filesystem(tbx: Path, tmp_path: Path) -> None:
    """An event file that is a link to another filesystem (a rename cannot cross): trimmed in
    place, the link kept, its target replaced."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        assert Path(elsewhere).stat().st_dev != tbx.stat().st_dev
        (source,) = (tbx / "run2").glob("*tfevents*")
        moved = Path(elsewhere) / source.name
        moved.write_bytes(source.read_bytes())
        source.unlink()
        source.symlink_to(moved)
        code, _, err = gpudoc("trim", str(tbx / "run2"), "--in-place", "--backup", str(tmp_path / "bak"),
                              "--steps", "0:9")
        assert code == 0, err
        assert source.is_symlink() and max(e.step for e in events_of(moved)) == 9
        assert sorted(p.name for p in Path(elsewhere).iterdir()) == [source.name]


def test_trim_keeps_a_traced_graph(tfdir: Path, tmp_path: Path) -> None:
    """tf.summary.trace_export writes the graph as a summary at a step; the Graphs dashboard
    shows it per run."""
    code, _, err = gpudoc("trim", str(tfdir), "-o", str(tmp_path / "out"), "--steps", "10:")
    assert code == 0, err
    accumulator = plugin_event_accumulator.EventAccumulator(str(tmp_path / "out" / "run"))
    accumulator.Reload()
    assert set(accumulator.PluginTagToContent("graph_run_metadata_graph")) == {"double"}
    assert min(t.step for t in accumulator.Tensors("loss")) == 10


def _accumulated(run: Path) -> dict[int, float]:
    from tensorboard.util import tensor_util

    accumulator = plugin_event_accumulator.EventAccumulator(str(run), size_guidance={"tensors": 0})
    accumulator.Reload()
    return {t.step: float(tensor_util.make_ndarray(t.tensor_proto)) for t in accumulator.Tensors("train/loss")}


@pytest.mark.parametrize("writer", ["tensorboardX", "torch.utils.tensorboard"])
@pytest.mark.parametrize("args", [["--steps", "60:"], ["--steps", "55:65"], ["--steps", "60:", "--drop-run-level"],
                                  ["--steps", "0:40"]])
def test_a_step_trim_never_brings_back_what_a_restart_superseded(tmp_path: Path, args: list[str], writer: str) -> None:
    """A writer restarted with purge_step=50 marks it (torch: SessionLog.START at step 50): a
    trim from step 60 dropped that marker, and TensorBoard showed the superseded values again."""
    import importlib

    SummaryWriter = importlib.import_module(writer).SummaryWriter

    run = tmp_path / "logs" / "run"
    with SummaryWriter(str(run), filename_suffix=".a") as first:
        for step in range(100):
            first.add_scalar("train/loss", 1.0, step)
    with SummaryWriter(str(run), purge_step=50, filename_suffix=".b") as resumed:
        for step in range(50, 70):
            resumed.add_scalar("train/loss", 5.0, step)
    first_step, _, last = args[1].partition(":")
    wanted = {s: v for s, v in _accumulated(run).items() if s >= int(first_step) and (not last or s <= int(last))}
    code, _, err = gpudoc("trim", str(run), "-o", str(tmp_path / "out"), *args)
    assert code == 0, err
    assert _accumulated(tmp_path / "out") == wanted


@pytest.mark.parametrize("steps", ["0:10", "0:5"])
def test_a_step_trims_dry_run_decides_a_record_that_is_no_event_as_the_trim_does(tmp_path: Path, steps: str) -> None:
    """A step or time trim copies (or drops) a CRC-checked record whole by its step and wall
    time, never parsing it; its dry run must say the same (it used to parse it: an error)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboardX import SummaryWriter

    from gpudoc.events import RecordWriter

    writer = SummaryWriter(str(tmp_path / "src"))
    for step in range(10):
        writer.add_scalar("loss", step, step)
    writer.close()
    (source,) = files(tmp_path / "src")
    value = summary_pb2.Summary.Value(tag="AxxA", simple_value=1.0)
    data = event_pb2.Event(wall_time=2e9, step=10, summary=summary_pb2.Summary(value=[value])).SerializeToString()
    with open(source, "ab") as handle:  # a tag of invalid UTF-8: protobuf refuses to parse it
        RecordWriter(handle).write(data.replace(b"AxxA", b"A\xff\xfeA"))
    counts = []
    for dry in (["--dry-run"], []):
        code, out, err = gpudoc("trim", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--steps", steps,
                                "--json", *dry)
        assert code == 0, err
        report = json.loads(out)
        assert report["damage"] == []
        counts.append([(f["records_in"], f["records_out"]) for f in report["files"]])
    assert counts[0] == counts[1] == [(12, 12 if steps == "0:10" else 7)]
    (copy,) = files(tmp_path / "out")
    if steps == "0:10":  # the copy is the input, byte for byte: TensorBoard reads both alike
        assert copy.read_bytes() == source.read_bytes()
    else:  # the record dropped whole: TensorBoard reads the copy's scalars
        assert [e.step for e in events_of(copy) if e.summary.value] == list(range(6))
