"""The events and masks screens driven by Pilot: opened by key and from the command palette,
on event files tensorboardX wrote and .npy masks; their results the CLI's ``--json`` for the
same input; a trim and an export from the form (a dry run first, written on the second press,
the inputs untouched, the output the CLI's); bad input one line on the screen."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from textual.widgets import Checkbox, Input, Select

from gpudoc.cli import cli
from gpudoc.gpu import ManualClock
from gpudoc.output import to_jsonable
from gpudoc.runwatch import Checks, LogFinder, Watch
from gpudoc.tui.app import GpudocApp
from gpudoc.tui import events_screen
from gpudoc.tui.events_screen import EventsScreen, run_logdir
from gpudoc.tui.masks_screen import MasksScreen
from gpudoc.tui.screens import ConfirmScreen
from gpudoc.tui.tools import ToolScreen

from .test_app import SIZE, make_app
from .test_tools import open_from_palette, status

WALL = 1_700_000_000.0  # the writers' clock: the screens' text is the same on every run


def write_logdir(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A logdir tensorboardX wrote at a fixed wall time: run ``train`` (loss and acc at steps
    0..99, restarted with purge_step at 80) and run ``val`` (psnr every 10 steps)."""
    from tensorboardX import SummaryWriter

    logdir = root / "runs"
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: WALL)
        for name, suffix, steps, purge in (("train", "", range(100), None), ("train", ".restart", range(80, 120), 80),
                                           ("val", "", range(0, 100, 10), None)):
            writer = SummaryWriter(str(logdir / name), purge_step=purge, filename_suffix=suffix)
            for step in steps:
                tag = "psnr" if name == "val" else "loss"
                writer.add_scalar(tag, 30 + step / 10 if name == "val" else 1 / (step + 1), step, walltime=WALL + step)
                if name == "train" and not suffix:
                    writer.add_scalar("acc", step / 100, step, walltime=WALL + step)
            writer.close()
    for number, path in enumerate(sorted(logdir.rglob("*tfevents*"))):  # names without host or time
        path.rename(path.with_name(f"events.out.tfevents.{int(WALL)}.test{number}"))
    return logdir


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def tool_app(**kwargs: Any) -> GpudocApp:
    return make_app("workstation", ManualClock(0), simulated="workstation", **kwargs)


async def fill(pilot: Any, **values: str | bool) -> None:
    for name, value in values.items():
        widget = pilot.app.screen.query_one(f"#field-{name}")
        if isinstance(widget, Select):
            widget.value = value
        elif isinstance(widget, Checkbox):
            widget.value = bool(value)
        else:
            assert isinstance(widget, Input)
            widget.value = str(value)
    await pilot.pause()


async def press(pilot: Any, key: str) -> ToolScreen:
    """Press ``key`` with the first field focused and wait for the tool to finish."""
    screen = pilot.app.screen
    assert isinstance(screen, ToolScreen)
    screen.query(Input).first().focus()
    await pilot.press(key)
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    return screen


def shown(screen: ToolScreen) -> str:
    return str(screen.query_one("#tool-result").render())


def screen_text(app: GpudocApp) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")


async def test_events_info_by_key_from_the_palette_and_on_the_runs_logdir(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = write_logdir(tmp_path, monkeypatch)
    expected = cli_json("events", "info", str(logdir))
    watch = Watch(LogFinder(logdir, tmp_path, 0.0), Checks())
    app = tool_app(watch=watch)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, EventsScreen)
        assert app.screen.field("path") == str(logdir)  # the run's --logdir, filled in
        screen = await press(pilot, "enter")
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == expected
        text = shown(screen)
        assert "run train" in text and "run val" in text and "restart at step 80" in text
        assert "TensorBoard drops the 40 earlier point(s)" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ToolScreen)
        await open_from_palette(pilot, "gpudoc: events")
        assert isinstance(app.screen, EventsScreen)


def test_without_a_logdir_the_screen_starts_on_the_directory_of_the_runs_event_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = write_logdir(tmp_path, monkeypatch)
    watch = Watch(LogFinder(None, tmp_path, 0.0), Checks())
    assert run_logdir(SimpleNamespace(run_watch=watch)) == ""  # none found yet
    for path in logdir.rglob("*tfevents*"):  # as the watch follows the files the run holds open
        watch.tail.follow(path, path.parent.name)
    assert run_logdir(SimpleNamespace(run_watch=watch)) == os.path.realpath(logdir)
    assert run_logdir(SimpleNamespace(run_watch=None)) == ""


async def test_a_trim_from_the_form_is_a_dry_run_first_then_the_clis_trim(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = write_logdir(tmp_path, monkeypatch)
    before = digest(logdir)
    out, cli_out = tmp_path / "cut", tmp_path / "cli-cut"
    args = [str(logdir), "--steps", "10:50", "--tags", "loss"]
    dry = cli_json("events", "trim", *args, "-o", str(out), "--dry-run")
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        await fill(pilot, path=str(logdir), steps="10:50", tags="loss", output=str(logdir / "cut"))
        screen = await press(pilot, "ctrl+t")
        assert screen.outcome is None and "inside the source logdir" in status(screen)
        assert not (logdir / "cut").exists()
        await fill(pilot, output=str(out))
        screen = await press(pilot, "ctrl+t")
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == dry  # the counts: what is kept and dropped
        assert "dry run: nothing written" in shown(screen) and "values: 41 of 250 kept, 209 dropped" in shown(screen)
        assert not out.exists() and digest(logdir) == before
        await fill(pilot, steps="10:60")  # the form changed: a dry run again, not the write
        screen = await press(pilot, "ctrl+t")
        assert not out.exists() and "dry run" in status(screen)
        await fill(pilot, steps="10:50")
        await press(pilot, "ctrl+t")
        assert not out.exists()
        screen = await press(pilot, "ctrl+t")  # the same form again: written
        assert screen.outcome is not None and "written" in status(screen)
        wrote = to_jsonable(screen.outcome.json)
    assert digest(logdir) == before
    expected = cli_json("events", "trim", *args, "-o", str(cli_out))
    assert json.loads(json.dumps(wrote).replace(str(out), str(cli_out))) == expected
    assert digest(out) == digest(cli_out) and digest(out)


async def test_a_trim_cancelled_with_escape_leaves_nothing_behind(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = write_logdir(tmp_path, monkeypatch)
    before, out = digest(logdir), tmp_path / "cut"
    reached, release = threading.Event(), threading.Event()
    release.set()
    counted = events_screen._bytes

    def held(runs: Any, verb: str, progress: Any) -> Any:  # trim's progress, held after each file
        advance = counted(runs, verb, progress)

        def step(size: int) -> None:
            reached.set()
            release.wait(30)
            advance(size)
        return step

    monkeypatch.setattr(events_screen, "_bytes", held)
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        await fill(pilot, path=str(logdir), output=str(out))
        await press(pilot, "ctrl+t")  # the dry run
        release.clear()
        reached.clear()
        screen = app.screen
        await pilot.press("ctrl+t")  # the write: held after its first file
        while not reached.is_set():
            await pilot.pause(0.05)
        assert any(out.rglob("*"))  # the first file staged
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen and "cancelling" in status(screen)
        release.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(screen, EventsScreen) and screen.outcome is None and "cancelled" in status(screen)
    assert not out.exists() and digest(logdir) == before


async def test_an_export_from_the_form_counts_first_then_writes_the_clis_table(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = write_logdir(tmp_path, monkeypatch)
    before = digest(logdir)
    table, cli_table = tmp_path / "values.csv", tmp_path / "cli.csv"
    expected = cli_json("events", "export", str(logdir), "-o", str(cli_table), "--on-restart", "purge")
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        await fill(pilot, path=str(logdir), output=str(table), restart="purge")
        screen = await press(pilot, "ctrl+o")
        assert f"would write {expected['rows']} rows" in shown(screen) and not table.exists()
        screen = await press(pilot, "ctrl+o")
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == {**expected, "output": str(table)}
        await save(pilot, save=str(table))  # the JSON onto the table just exported: refused, not asked
        assert "and output" in status(screen) and "the same file" in status(screen)
        assert not isinstance(app.screen, ConfirmScreen)
        saved = tmp_path / "export.json"
        screen.query_one("#save-path", Input).value = str(saved)
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert table.read_bytes() == cli_table.read_bytes() and digest(logdir) == before
    assert json.loads(saved.read_text()) == {**expected, "output": str(table)}


def masks(root: Path) -> tuple[Path, Path]:
    """A stack of four 24x24 probability maps (values on a 1/64 grid, some exactly at 0.5)
    and their truth."""
    rng = np.random.default_rng(0)
    truth = rng.random((4, 24, 24)) < 0.4
    probs = np.clip(truth * 0.35 + rng.random((4, 24, 24)) * 0.65, 0, 1)
    probs = (np.round(probs * 64) / 64).astype(np.float32)
    np.save(root / "probs.npy", probs)
    np.save(root / "truth.npy", truth.astype(np.uint8))
    return root / "probs.npy", root / "truth.npy"


async def test_masks_sweep_and_audit_are_the_clis(tmp_path: Path) -> None:
    probs, truth = masks(tmp_path)
    sweep = cli_json("mask", "sweep", "--probs", str(probs), "--truth", str(truth), "--metric", "iou",
                     "--scale", "1")
    audit = cli_json("mask", "audit", str(probs), "--t", str(sweep["best_threshold"]), "--scale", "1")
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_from_palette(pilot, "gpudoc: mask sweep")
        assert isinstance(app.screen, MasksScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("M")
        await pilot.pause()
        assert isinstance(app.screen, MasksScreen)
        await pilot.press("M", "e", "o")  # typed into the focused field, not the monitor's keys
        assert isinstance(app.screen, MasksScreen) and app.screen.field("probs") == "Meo"
        saved, audit_saved = tmp_path / "sweep.json", tmp_path / "audit.json"
        await fill(pilot, probs=str(probs), truth=str(truth), metric="iou", scale="1", t="best",
                   audit_path=str(audit_saved))
        screen = await press(pilot, "enter")
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == sweep
        assert screen.audit_json == audit
        text = shown(screen)
        assert f"▲ best iou {sweep['best_score']:.4f} at t={sweep['best_threshold']:g}" in text
        assert "○ Otsu" in text and re.search("[\u2801-\u28ff]", text)  # the braille chart
        assert "image 3:" in text  # a stack: per image
        screen.query_one("#save-path", Input).value = str(saved)
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert json.loads(saved.read_text()) == sweep and json.loads(audit_saved.read_text()) == audit


async def test_masks_at_one_half_show_where_the_rules_and_idioms_disagree(tmp_path: Path) -> None:
    probs, truth = masks(tmp_path)
    expected = cli_json("mask", "audit", str(probs), "--t", "0.5", "--rule", "gt", "--scale", "1")
    assert expected[0]["rules_disagree"] > 0
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("M")
        await pilot.pause()
        await fill(pilot, probs=str(probs), truth=str(truth), rule="gt", scale="1")
        screen = await press(pilot, "enter")
        assert screen.audit_json == expected, status(screen)
        text = shown(screen)
        assert f"≥ and > disagree on {expected[0]['rules_disagree']}" in text
        assert "tf.where(x >= 0.5, 1, 0)" in text and "pixel(s) differ" in text


@pytest.mark.parametrize("case", ["a file", "an empty dir", "a truncated file", "bad steps", "bad regex"])
async def test_events_bad_input_is_one_line_on_the_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          case: str) -> None:
    logdir = write_logdir(tmp_path, monkeypatch)
    form: dict[str, str] = {"path": str(logdir), "output": str(tmp_path / "out")}
    key, said = "ctrl+t", ""
    if case == "a file":
        (tmp_path / "notes.txt").write_text("hello")
        form["path"], key, said = str(tmp_path / "notes.txt"), "enter", "not an event file"
    elif case == "an empty dir":
        (tmp_path / "empty").mkdir()
        form["path"], key, said = str(tmp_path / "empty"), "enter", "no event files"
    elif case == "a truncated file":
        victim = next((logdir / "val").iterdir())
        victim.write_bytes(victim.read_bytes()[:-7])
        said = "byte"
    elif case == "bad steps":
        form["steps"], said = "ten:20", "ten:20"
    else:
        form["tags"], said = "loss(", "bad regular expression"
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        await fill(pilot, **form)
        screen = await press(pilot, key)
        line = status(screen)
        assert screen.outcome is None and said in line and "\n" not in line and "Traceback" not in line
        assert screen.query_one("#tool-status").has_class("error")
        assert not (tmp_path / "out").exists()
        if case == "a truncated file":  # info reports it; salvage trims the rest
            screen = await press(pilot, "enter")
            assert "INCOMPLETE" in shown(screen) and "1 damaged or incomplete stretch" in shown(screen)
            await fill(pilot, salvage=True)
            await press(pilot, "ctrl+t")
            screen = await press(pilot, "ctrl+t")
            assert screen.outcome is not None and (tmp_path / "out" / "val").is_dir(), status(screen)


@pytest.mark.parametrize("case", ["shapes", "missing", "not a mask", "bad t"])
async def test_masks_bad_input_is_one_line_on_the_screen(tmp_path: Path, case: str) -> None:
    probs, truth = masks(tmp_path)
    form = {"probs": str(probs), "truth": str(truth)}
    if case == "shapes":
        np.save(tmp_path / "small.npy", np.zeros((4, 12, 12), np.uint8))
        form["truth"], said = str(tmp_path / "small.npy"), "24×24 but its truth"
    elif case == "missing":
        form["probs"], said = str(tmp_path / "nope.npy"), "nope.npy: no such file"
    elif case == "not a mask":
        form["truth"], said = str(probs), "a mask holds 0/1 or 0/255 only"
    else:
        form["t"], said = "1.5", "not a threshold in [0, 1]"
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("M")
        await pilot.pause()
        await fill(pilot, **form)
        screen = await press(pilot, "enter")
        line = status(screen)
        assert screen.outcome is None and said in line and "\n" not in line, line
        assert screen.query_one("#tool-status").has_class("error")


def test_snapshot_of_the_events_screen(snap_compare: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_logdir(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)

    async def run(pilot: Any) -> None:
        await pilot.press("e")
        await pilot.pause()
        await fill(pilot, path="runs", steps="10:50", tags="loss", output="cut")
        await press(pilot, "ctrl+t")

    assert snap_compare(tool_app(), terminal_size=SIZE, run_before=run)


def test_snapshot_of_the_masks_screen(snap_compare: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    masks(tmp_path)
    monkeypatch.chdir(tmp_path)

    async def run(pilot: Any) -> None:
        await pilot.press("M")
        await pilot.pause()
        await fill(pilot, probs="probs.npy", truth="truth.npy", scale="1")
        await press(pilot, "enter")

    assert snap_compare(tool_app(), terminal_size=SIZE, run_before=run)


# ---------------------------------------------------------------- what a new user tried (issue 20)

async def save(pilot: Any, **dests: str) -> ToolScreen:
    """ctrl+s with the save fields set (``save`` is the JSON's field)."""
    screen = pilot.app.screen
    assert isinstance(screen, ToolScreen)
    for name, dest in dests.items():
        screen.query_one("#save-path" if name == "save" else f"#field-{name}", Input).value = dest
    await pilot.press("ctrl+s")
    await pilot.pause()
    return screen


async def test_a_save_never_goes_over_an_event_file_the_screen_read(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = write_logdir(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)  # the logdir given relative, as a user types it
    before = digest(logdir)
    event = sorted((logdir / "train").iterdir())[0]
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        for path in ("runs", str(event.relative_to(tmp_path))):  # a logdir, and one event file
            await fill(pilot, path=path)
            screen = await press(pilot, "enter")
            assert screen.outcome is not None, status(screen)
            await save(pilot, save=str(event))
            assert "the same file as the input" in status(screen) and "nothing saved" in status(screen)
            assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("m")  # metrics-check on the run directory: its event files were read
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ToolScreen)
        await fill(pilot, logs=str(logdir / "train"))
        screen = await press(pilot, "enter")
        assert screen.outcome is not None, status(screen)
        await save(pilot, save=str(event))
        assert "the same file as the input" in status(screen)
    assert digest(logdir) == before


async def test_the_audit_json_never_goes_over_the_probabilities_nor_onto_the_sweeps_file(tmp_path: Path) -> None:
    probs, truth = masks(tmp_path)
    before = digest(tmp_path)
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("M")
        await pilot.pause()
        await fill(pilot, probs=str(probs), truth=str(truth), scale="1")
        screen = await press(pilot, "enter")
        assert screen.outcome is not None, status(screen)
        await save(pilot, save=str(tmp_path / "sweep.json"), audit_path=str(probs))
        assert "audit JSON to" in status(screen) and "the same file as the input" in status(screen)
        assert digest(tmp_path) == before  # the sweep's JSON not written either
        await save(pilot, save=str(tmp_path / "one.json"), audit_path=str(tmp_path / "." / "one.json"))
        assert "the same file" in status(screen) and "nothing saved" in status(screen)
        assert digest(tmp_path) == before
        await save(pilot, audit_path=str(tmp_path / "two.json"))
        assert json.loads((tmp_path / "one.json").read_text())["best_threshold"] == screen.outcome.json.best_threshold
        assert json.loads((tmp_path / "two.json").read_text()) == to_jsonable(screen.audit_json)


async def test_the_events_screens_errors_name_its_own_fields_not_the_clis_flags(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logdir = write_logdir(tmp_path, monkeypatch)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    (tmp_path / "adir").mkdir()
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        await fill(pilot, path=str(logdir))
        screen = await press(pilot, "ctrl+t")  # no output: refused before the dry run
        assert screen.outcome is None and "give the output directory" in status(screen)
        for output, key, said in ((str(full), "ctrl+t", "give a new or empty output directory"),
                                  (str(tmp_path / "out.txt"), "ctrl+o", "name the output .csv, .jsonl or .parquet"),
                                  (str(tmp_path / "adir"), "ctrl+o", "adir: a directory (name a file to write)")):
            await fill(pilot, output=output)
            screen = await press(pilot, key)
            line = status(screen)
            assert screen.outcome is None and said in line, line
            assert "--" not in line and "stdout" not in line, line


async def test_the_masks_screens_errors_name_its_scale_picker(tmp_path: Path) -> None:
    probs = tmp_path / "probs.npy"
    np.save(probs, np.linspace(0, 200, 64, dtype=np.float32).reshape(1, 8, 8))
    np.save(tmp_path / "truth.npy", np.ones((1, 8, 8), np.uint8))
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("M")
        await pilot.pause()
        await fill(pilot, probs=str(probs), truth=str(tmp_path / "truth.npy"), scale="1")
        screen = await press(pilot, "enter")
        line = status(screen)
        assert screen.outcome is None and "outside the declared scale" in line and "pick the scale" in line, line
        assert "--" not in line
        await fill(pilot, scale="auto")
        screen = await press(pilot, "enter")
        assert screen.outcome is not None, status(screen)
        text = shown(screen)
        assert "scale not declared" in text and "pick the scale to silence this" in text and "--scale" not in text
