"""Non-event files (the projector's config, tensors, metadata and sprite; anything else) in
trim, merge and replay; a trim into the source logdir; CSV's value_type; info's kinds."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gpudoc.cli import cli


def gpudoc(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["events", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def projected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logdir whose run has tensorboardX embeddings (projector_config.pbtxt, tensors.tsv,
    metadata.tsv, sprite.png in a sub-directory), a notes file and a sub-run."""
    import torch
    from tensorboardX import SummaryWriter

    logdir = tmp_path_factory.mktemp("projected") / "logs"
    rng = np.random.default_rng(0)
    writer = SummaryWriter(str(logdir / "run"))
    writer.add_embedding(rng.random((4, 3)), metadata=list("abcd"), label_img=torch.rand(4, 3, 4, 4), tag="emb")
    for step in range(6):
        writer.add_scalar("loss", 1 / (step + 1), step)
        writer.add_scalars("pair", {"a": step}, step)
    writer.close()
    (logdir / "run" / "notes.txt").write_bytes(b"\x00binary\xffnotes")
    return logdir


def _others(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "tfevents" not in p.name}


def test_trim_copies_the_other_files_byte_for_byte_and_lists_them(projected: Path, tmp_path: Path) -> None:
    expected = _others(projected)
    assert {"run/projector_config.pbtxt", "run/00000/emb/tensors.tsv", "run/00000/emb/sprite.png",
            "run/notes.txt"} <= expected.keys()
    code, out, _ = gpudoc("trim", str(projected), "-o", str(tmp_path / "out"), "--steps", "2:3")
    assert code == 0 and _others(tmp_path / "out") == expected
    config = Path("run") / "projector_config.pbtxt"
    assert f"copied {projected / config} → {tmp_path / 'out' / config}" in out
    code, out, _ = gpudoc("trim", str(projected), "-o", str(tmp_path / "json"), "--exclude-files", "*.png",
                          "--exclude-files", "notes.txt", "--json")
    report = json.loads(out)
    assert code == 0 and _others(tmp_path / "json") == {k: v for k, v in expected.items()
                                                        if not k.endswith((".png", "notes.txt"))}
    assert {Path(c["source"]).name for c in report["copied"]} == {"projector_config.pbtxt", "tensors.tsv",
                                                                   "metadata.tsv"}
    assert sorted(Path(n["path"]).name for n in report["not_copied"]) == ["notes.txt", "sprite.png"]
    assert all("--exclude-files" in n["reason"] for n in report["not_copied"])


def test_a_single_event_file_given_copies_nothing_else(projected: Path, tmp_path: Path) -> None:
    (event,) = (projected / "run").glob("*tfevents*")
    for command in (["trim", str(event)], ["merge", str(event)], ["replay", str(event), "--rate", "100000"]):
        code, out, _ = gpudoc(*command, "-o", str(tmp_path / command[0]), "--json")
        assert code == 0 and json.loads(out)["copied"] == [] and _others(tmp_path / command[0]) == {}


def test_trim_into_the_source_logdir_is_refused(projected: Path, tmp_path: Path) -> None:
    logs = Path(shutil.copytree(projected, tmp_path / "logs"))
    for inside in (logs / "trimmed", logs / "a" / "b"):
        code, _, err = gpudoc("trim", str(logs), "-o", str(inside), "--steps", "1:2")
        assert code == 2 and "inside the source logdir" in err and not inside.exists()


def test_merge_copies_a_runs_own_files_and_refuses_two_versions_of_one(projected: Path, tmp_path: Path) -> None:
    run = projected / "run"
    gpudoc("trim", str(projected), "-o", str(tmp_path / "a"), "--steps", ":2")
    gpudoc("trim", str(projected), "-o", str(tmp_path / "b"), "--steps", "3:")
    code, out, _ = gpudoc("merge", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--run", ".",
                          "-o", str(tmp_path / "merged"), "--json")
    assert code == 0, out
    # The run's own files once each; the sub-runs (pair/a) are not part of this run.
    assert _others(tmp_path / "merged") == _others(run)
    assert len(json.loads(out)["copied"]) == len(_others(run))
    (tmp_path / "b" / "run" / "notes.txt").write_text("another version")
    code, _, err = gpudoc("merge", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--run", ".",
                          "-o", str(tmp_path / "clash"))
    assert code == 2 and "notes.txt" in err and "--exclude-files" in err and not (tmp_path / "clash").exists()
    code, _, _ = gpudoc("merge", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--run", ".",
                        "-o", str(tmp_path / "chosen"), "--exclude-files", "notes.txt")
    assert code == 0 and not (tmp_path / "chosen" / "notes.txt").exists()


def test_replay_copies_the_other_files_first(projected: Path, tmp_path: Path) -> None:
    code, out, err = gpudoc("replay", str(projected), "-o", str(tmp_path / "live"), "--rate", "100000", "--json")
    assert code == 0 and _others(tmp_path / "live") == _others(projected)
    assert len(json.loads(out)["copied"]) == len(_others(projected))
    code, _, err = gpudoc("replay", str(projected), "-o", str(tmp_path / "live"), "--rate", "100000")
    assert code == 2 and "exists" in err


def test_csv_tells_a_string_from_a_json_list(tmp_path: Path) -> None:
    import tensorflow as tf

    with tf.summary.create_file_writer(str(tmp_path / "run")).as_default():
        tf.summary.text("said", "[1, 2]", step=0)
        tf.summary.write("vector", tf.constant([1, 2]), step=0)
        tf.summary.scalar("loss", 0.5, step=0)
    code, _, _ = gpudoc("export", str(tmp_path / "run"), "-o", str(tmp_path / "t.csv"),
                        "--kinds", "text,tensor,scalar")
    with open(tmp_path / "t.csv", newline="") as handle:
        rows = {r["tag"]: r for r in csv.DictReader(handle)}
    assert code == 0
    assert (rows["said"]["value"], rows["said"]["value_type"]) == ("[1, 2]", "string")
    assert (rows["vector"]["value"], rows["vector"]["value_type"]) == ("[1, 2]", "json")
    assert (rows["loss"]["value"], rows["loss"]["value_type"]) == ("0.5", "number")


def test_info_names_the_layout_and_what_tensorboard_shows_per_run(tmp_path: Path) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run"))
    writer.add_custom_scalars_multilinechart(["loss"], category="c", title="t")
    writer.add_scalar("loss", 1.0, 0)
    writer.add_hparams({"lr": 0.1}, {"hparam/acc": 0.5}, name="hp")
    writer.close()
    code, out, _ = gpudoc("info", str(tmp_path), "--json")
    tags = {(run["run"], t["tag"]): t for run in json.loads(out) for t in run["tags"]}
    assert code == 0
    assert (tags[("run", "custom_scalars__config__")]["kind"], tags[("run", "custom_scalars__config__")]["shown"]) \
        == ("custom_scalars", "per run")
    assert tags[("run", "loss")]["shown"] == "per step"
    assert tags[("run/hp", "hparam/acc")]["shown"] == "per step; last value in the HParams table"
    assert tags[("run/hp", "_hparams_/session_start_info")]["shown"] == "per run"


def test_a_fifo_named_like_an_event_file_is_listed_as_not_copied(tbx: Path, tmp_path: Path) -> None:
    import os

    fifo = tbx / "run1" / "events.out.tfevents.4.fifo"
    os.mkfifo(fifo)
    code, out, _ = gpudoc("trim", str(tbx / "run1"), "-o", str(tmp_path / "out"), "--json")
    (entry,) = [n for n in json.loads(out)["not_copied"] if n["path"] == str(fifo)]
    assert code == 0 and "FIFO" in entry["reason"] and "named like an event file" in entry["reason"]
    assert not (tmp_path / "out" / fifo.name).exists()


def _tb_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard's multiplexer shows of a logdir: each run's loss scalars."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return {run: [(t.step, float(t.tensor_proto.float_val[0])) for t in multiplexer.Tensors(run, "loss")]
            for run in multiplexer.Runs()}


def test_a_symlinked_run_directory_is_read_as_tensorboard_reads_it(tmp_path: Path) -> None:
    from tensorboardX import SummaryWriter

    for directory, scale in ((tmp_path / "lk" / "run1", 1.0), (tmp_path / "elsewhere" / "run2", 2.0)):
        writer = SummaryWriter(str(directory))
        for step in range(10):
            writer.add_scalar("loss", scale * step, step)
        writer.close()
    (tmp_path / "elsewhere" / "run2" / "notes.txt").write_text("linked notes")
    logdir = tmp_path / "lk"
    (logdir / "linkeddir").symlink_to(tmp_path / "elsewhere" / "run2")
    shown = _tb_scalars(logdir)
    assert set(shown) == {"run1", "linkeddir"}
    # A link back up (a cycle, which TensorBoard follows until the path is too long) is left out, with a word.
    (logdir / "run1" / "up").symlink_to(logdir)
    code, out, err = gpudoc("info", str(logdir), "--json")
    assert code == 0 and {r["run"] for r in json.loads(out)} == set(shown)
    assert "run1/up: a symbolic link to" in err and "(a cycle)" in err
    code, _, _ = gpudoc("export", str(logdir), "-o", str(tmp_path / "all.csv"))
    with open(tmp_path / "all.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["tag"] == "loss"]
    assert code == 0 and {r["run"] for r in rows} == set(shown)
    # trim makes the linked run a real directory of the copy: TensorBoard shows what it showed of the source.
    code, out, err = gpudoc("trim", str(logdir), "-o", str(tmp_path / "out"), "--steps", "2:7", "--json")
    assert code == 0, err
    copy = tmp_path / "out"
    assert (copy / "linkeddir").is_dir() and not (copy / "linkeddir").is_symlink()
    assert (copy / "linkeddir" / "notes.txt").read_text() == "linked notes"
    assert _tb_scalars(copy) == {run: [s for s in values if 2 <= s[0] <= 7] for run, values in shown.items()}
    assert any(r["path"].endswith("up") and "(a cycle)" in r["reason"] for r in json.loads(out)["not_copied"])
