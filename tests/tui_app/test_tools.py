"""The tool screens (doctor, metrics-check, oom estimate) driven by Pilot: opened from the command
palette and by key, their result the CLI's ``--json`` for the same input, a long estimate
cancelled with Escape."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gpudoc.gpu import ManualClock
from gpudoc.output import to_jsonable
from gpudoc.tui.app import GpudocApp
from gpudoc.tui.tools import DoctorScreen, MetricsScreen, OomScreen, ToolScreen
from gpudoc.tui.widgets import ProcessTable
from textual.widgets import Input

from .test_app import SIZE, make_app, refresh

SKIP_FRAMEWORKS = "torch tensorflow numba"
LOG = "epoch,loss,mse,mae,psnr\n0,0.02,0.01,0.08,68.13\n1,0.015,0.008,0.07,69.1\n"  # PSNR at peak 255, data on [0,1]
TINY = "import torch\n\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(8, 4))\n"


def cli_json(*args: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "gpudoc", *args, "--json"], capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def tool_app() -> GpudocApp:
    """The workstation scenario at its start, where the CLI's ``--simulate workstation`` reads it."""
    return make_app("workstation", ManualClock(0), simulated="workstation")


async def open_from_palette(pilot: Any, title: str) -> None:
    await pilot.press("ctrl+p")
    await pilot.pause()
    await pilot.press(*title)
    await pilot.pause(0.3)
    await pilot.press("enter")
    await pilot.pause()


async def fill(app: GpudocApp, pilot: Any, **values: str) -> None:
    for name, value in values.items():
        app.screen.query_one(f"#field-{name}", Input).value = value
    await pilot.pause()


async def run_tool(app: GpudocApp, pilot: Any) -> ToolScreen:
    screen = app.screen
    assert isinstance(screen, ToolScreen)
    screen.query_one(Input).focus()
    await pilot.press("enter")
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    return screen


def status(screen: ToolScreen) -> str:
    return str(screen.query_one("#tool-status").render())


async def test_doctor_by_key_and_from_the_palette_gives_the_clis_json() -> None:
    expected = cli_json("--simulate", "workstation", "doctor", *[f"--skip={f}" for f in SKIP_FRAMEWORKS.split()])
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, DoctorScreen)
        await fill(app, pilot, skip=SKIP_FRAMEWORKS)
        screen = await run_tool(app, pilot)
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == expected
        shown = str(screen.query_one("#tool-result").render())
        assert "✓ Python" in shown and "GPU 0" in shown
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ToolScreen)

        await open_from_palette(pilot, "gpudoc: doctor")
        assert isinstance(app.screen, DoctorScreen)
        await fill(app, pilot, skip="torch, tensorflow, numba")
        screen = await run_tool(app, pilot)
        assert screen.outcome is not None and to_jsonable(screen.outcome.json) == expected


async def test_metrics_check_finds_the_unit_scale_bug_and_saves_the_clis_json(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(LOG)
    expected = cli_json("metrics-check", str(log))
    assert expected["errors"] == 1
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_from_palette(pilot, "gpudoc: metrics-check")
        assert isinstance(app.screen, MetricsScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("m")
        await pilot.pause()
        assert isinstance(app.screen, MetricsScreen)
        await fill(app, pilot, logs=str(log))
        screen = await run_tool(app, pilot)
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == expected
        assert "implies a peak of 255" in str(screen.query_one("#tool-result").render())
        saved = tmp_path / "out" / "report.json"
        saved.parent.mkdir()
        screen.query_one("#save-path", Input).value = str(saved)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert json.loads(saved.read_text()) == expected
        assert [p.name for p in saved.parent.iterdir()] == ["report.json"]  # no temporary file left


async def test_metrics_check_on_a_missing_file_says_so_in_one_line(tmp_path: Path) -> None:
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        await pilot.pause()
        await fill(app, pilot, logs=str(tmp_path / "nope.csv"))
        screen = await run_tool(app, pilot)
        assert screen.outcome is None and "nope.csv" in status(screen) and "\n" not in status(screen)
        assert screen.query_one("#tool-status").has_class("error")


async def test_oom_estimate_of_a_small_model_file_is_the_clis(tmp_path: Path) -> None:
    model = tmp_path / "tiny.py"
    model.write_text(TINY)
    spec = f"{model}:make"
    expected = cli_json("oom", "estimate", spec, "--batch", "2", "--input", "8", "--gpu", "A100-80GB",
                        "--cuda", "12.4")
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, OomScreen)
        await pilot.press("escape")
        await pilot.pause()
        await open_from_palette(pilot, "gpudoc: oom estimate")
        assert isinstance(app.screen, OomScreen)
        await fill(app, pilot, model=spec, batch="2", input="8", gpu="A100-80GB", cuda="12.4")
        screen = await run_tool(app, pilot)
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == expected
        assert "verdict         fits" in str(screen.query_one("#tool-result").render())
        local = cli_json("--simulate", "workstation", "oom", "estimate", spec, "--batch", "2", "--input", "8",
                         "--cuda", "12.4")
        assert local["device"] != expected["device"]
        await fill(app, pilot, gpu="")  # the local GPU 0: the simulated one under --demo, as the CLI's
        screen = await run_tool(app, pilot)
        assert screen.outcome is not None and to_jsonable(screen.outcome.json) == local


async def test_a_long_estimate_is_cancelled_with_escape(tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    model = tmp_path / "slow.py"
    model.write_text(textwrap.dedent(f"""\
        import pathlib, time
        import torch


        def make():
            pathlib.Path({str(started)!r}).touch()
            for _ in range(1200):  # until the test lets it go (a minute at most)
                if pathlib.Path({str(release)!r}).exists():
                    break
                time.sleep(0.05)
            return torch.nn.Sequential(torch.nn.Linear(8, 4))
        """))
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        await pilot.pause()
        await fill(app, pilot, model=f"{model}:make", batch="2", input="8", gpu="A100-80GB", cuda="12.4")
        screen = app.screen
        assert isinstance(screen, OomScreen)
        screen.query_one(Input).focus()
        await pilot.press("enter")
        while not started.exists():
            await pilot.pause(0.05)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen and "cancelling" in status(screen)
        release.touch()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.outcome is None and "cancelled" in status(screen) and not screen.running
        await pilot.press("escape")  # nothing runs now: Escape closes
        await pilot.pause()
        assert not isinstance(app.screen, ToolScreen)


async def test_the_monitor_keeps_sampling_under_a_tool_screen_and_its_keys_stay_off() -> None:
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        await pilot.press("m")
        await pilot.pause()
        screen = app.screen
        screen.set_focus(None)
        sort = app.query_one(ProcessTable).caption().plain
        await pilot.press("k", "t", "s")  # no signal asked about, no sort of the hidden table
        await pilot.pause()
        assert app.screen is screen and app.query_one(ProcessTable).caption().plain == sort
        taken = app.samples
        await refresh(app, pilot)
        assert app.samples == taken + 1
        await pilot.press("escape")
        await pilot.pause()
        assert "2 GPU(s) via simulated" in str(app.query_one("#status").render())


async def test_the_help_lists_the_tool_keys() -> None:
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = str(app.screen.query_one("#help-text").render())
        assert "doctor" in text and "metrics-check" in text and "oom estimate" in text and "ctrl+p" in text


async def test_snapshot_of_the_metrics_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("log.csv").write_text(LOG)
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        await pilot.pause()
        await fill(app, pilot, logs="log.csv")
        await run_tool(app, pilot)
        svg = app.export_screenshot()
    text = html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")
    assert "Metrics: check logged metrics" in text
    assert "error [implied-range] PSNR 68.13 dB with MSE 0.01" in text
    assert "cause: PSNR used peak 255 on [0,1] data (+48.13 dB)" in text
    assert "1 checked: 1 error(s), 1 warning(s)" in text
    assert "Cancel / close" in text and "Save JSON" in text
