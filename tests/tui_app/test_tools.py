"""The tool screens (doctor, metrics-check on logs and on images, oom estimate and max-batch)
driven by Pilot: opened from the command palette and by key, their result the CLI's ``--json``
for the same input, a long estimate cancelled with Escape."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpudoc.gpu import ManualClock, SimulatedBackend
from gpudoc.output import to_jsonable
from gpudoc.tui.app import GpudocApp
from gpudoc.tui.screens import ConfirmScreen
from gpudoc.tui.tools import DoctorScreen, MaxBatchScreen, MetricsScreen, OomScreen, ToolScreen
from gpudoc.tui.widgets import ProcessTable
from textual.widgets import Checkbox, Input, Select

from .test_app import SIZE, make_app, refresh

SKIP_FRAMEWORKS = "torch tensorflow numba"
LOG = "epoch,loss,mse,mae,psnr\n0,0.02,0.01,0.08,68.13\n1,0.015,0.008,0.07,69.1\n"  # PSNR at peak 255, data on [0,1]
TINY = "import torch\n\n\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(8, 4))\n"
TWO = ("import torch\n\n\ndef make():\n"
       "    return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))\n")


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


async def fill(app: GpudocApp, pilot: Any, **values: str | bool) -> None:
    """Type into text fields, pick in pickers ("" clears one), tick checkboxes."""
    for name, value in values.items():
        widget = app.screen.query_one(f"#field-{name}")
        if isinstance(widget, Select) and value == "":
            widget.clear()
        else:
            assert isinstance(widget, Input | Select | Checkbox)
            widget.value = value
    await pilot.pause()


def screen_text(app: GpudocApp) -> str:
    """The SVG screenshot's text, row by row, each piece at its column (12.2 px a cell)."""
    rows: dict[float, dict[int, str]] = {}
    for x, y, text in re.findall(r'<text[^>]* x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', app.export_screenshot()):
        rows.setdefault(float(y), {})[round(float(x) / 12.2)] = html.unescape(text).replace("\xa0", " ")
    lines = []
    for _, row in sorted(rows.items()):
        line = ""
        for column, text in sorted(row.items()):
            line = line.ljust(column) + text
        lines.append(line.rstrip())
    return "\n".join(lines)


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


@pytest.mark.parametrize("key", ["o", "b"])
async def test_a_long_estimate_is_cancelled_with_escape(tmp_path: Path, key: str) -> None:
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
        await pilot.press(key)
        await pilot.pause()
        await fill(app, pilot, model=f"{model}:make", batch="2", input="8", gpu="A100-80GB", cuda="12.4")
        screen = app.screen
        assert isinstance(screen, MaxBatchScreen if key == "b" else OomScreen)
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
        assert "oom max-batch" in text and "pred/target images" in text


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


async def test_oom_estimate_with_every_option_on_a_local_gpu_is_the_clis(tmp_path: Path) -> None:
    model = tmp_path / "two.py"
    model.write_text(TWO)
    spec = f"{model}:make"
    options = {"precision": "amp", "optimizer": "momentum", "freeze": r"^0\.", "accumulate": "2",
               "zero-grad": "zeros", "optimizer-impl": "for-loop", "cuda": "11.2"}
    expected = cli_json("--simulate", "workstation", "oom", "estimate", spec, "--batch", "4", "--input", "8",
                        *(f"--{name}={value}" for name, value in options.items()), "--checkpointing",
                        "--gpu", "local:0")
    assert expected["config"]["checkpointing"] and expected["config"]["zero_grad"] == "zeros"
    with SimulatedBackend("workstation") as gpus:  # local:0 is checked against GPU 0's free memory, not all of it
        free = gpus.snapshot().devices[0].memory_free
    assert expected["total_bytes"] + expected["headroom_bytes"] == free < expected["capacity_bytes"]
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_from_palette(pilot, "gpudoc: oom estimate")
        screen = app.screen
        assert isinstance(screen, OomScreen)
        await app.workers.wait_for_complete()  # the device picker's look at this machine's GPUs
        await pilot.pause()
        assert screen.field("gpu") == "local:0"  # the local GPUs come first, the first one picked
        await fill(app, pilot, model=spec, batch="4", input="8", checkpointing=True, **options)
        await run_tool(app, pilot)
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == expected
        shown = str(screen.query_one("#tool-result").render())
        assert "momentum, checkpointing, accumulate 2, freeze ^0\\." in shown and "at the peak:" in shown
        await fill(app, pilot, precision="bf16", gpu="T4")  # the CLI's refusal, in one line
        await run_tool(app, pilot)
        assert screen.outcome is None and "T4 (compute capability 7.5) has no bf16 support" in status(screen)
        assert "\n" not in status(screen)


async def test_max_batch_by_key_and_from_the_palette_is_the_clis(tmp_path: Path) -> None:
    model = tmp_path / "two.py"
    model.write_text(TWO)
    spec = f"{model}:make"
    expected = cli_json("oom", "max-batch", spec, "--batch", "8", "--input", "8", "--gpu", "T4", "--cuda", "12.4",
                        "--optimizer", "sgd")
    assert expected["max_batch"] > 8
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await open_from_palette(pilot, "gpudoc: oom max-batch")
        assert isinstance(app.screen, MaxBatchScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.screen, MaxBatchScreen)
        await fill(app, pilot, model=spec, batch="8", input="8", gpu="T4", cuda="12.4", optimizer="sgd")
        screen = await run_tool(app, pilot)
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == expected
        assert f"max batch       {expected['max_batch']}  (leaves at least 10% of T4 free)" in screen_text(app)


def write_images(folder: Path) -> tuple[Path, Path]:
    """A prediction and its target: two 16x16 float images on [0,1]."""
    rng = np.random.default_rng(7)
    target = rng.random((2, 16, 16)).astype(np.float32)
    pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
    np.save(folder / "pred.npy", pred)
    np.save(folder / "target.npy", target)
    return folder / "pred.npy", folder / "target.npy"


async def test_metrics_compute_mode_on_npy_images_is_the_clis(tmp_path: Path) -> None:
    pred, target = write_images(tmp_path)
    at_255 = cli_json("metrics-check", "--pred", str(pred), "--target", str(target), "--range", "255")
    auto = cli_json("metrics-check", "--pred", str(pred), "--target", str(target))
    assert at_255["errors"] >= 1 and auto["errors"] == 0 and auto["data_range"] == 1.0
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        await pilot.pause()
        await fill(app, pilot, pred=str(pred), target=str(target), range="255")
        screen = await run_tool(app, pilot)
        assert screen.outcome is not None, status(screen)
        assert to_jsonable(screen.outcome.json) == at_255
        await fill(app, pilot, range="auto")
        await run_tool(app, pilot)
        assert screen.outcome is not None and to_jsonable(screen.outcome.json) == auto
        shown = str(screen.query_one("#tool-result").render())
        assert "note: --range auto: computing at 1, inferred from the target" in shown
        assert f"psnr     {auto['metrics']['psnr']:.6g}" in shown
        screen.query_one("#save-path", Input).value = str(pred)  # the JSON never replaces an input
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert np.load(pred).shape == (2, 16, 16)


@pytest.mark.parametrize(("fields", "said"), [
    ({"pred": "{d}/nope.npy", "target": "{d}/target.npy"}, "nope.npy: no such file or directory"),
    ({"pred": "{d}", "target": "{d}/target.npy"}, "names are not in both"),
    ({"pred": "{d}/pred.npy", "target": "{d}/half.npy"}, "differ in shape"),
    ({"pred": "{d}/pred.npy"}, "give both pred and target images"),
    ({"pred": "{d}/pred.npy", "target": "{d}/target.npy", "crop-border": "x"}, "crop-border 'x': not a whole number"),
])
async def test_metrics_compute_mode_on_bad_input_says_so_in_one_line(tmp_path: Path, fields: dict[str, str],
                                                                     said: str) -> None:
    pred, _ = write_images(tmp_path)
    np.save(tmp_path / "half.npy", np.load(pred)[:, :8])
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        await pilot.pause()
        await fill(app, pilot, **{name: value.format(d=tmp_path) for name, value in fields.items()})
        screen = await run_tool(app, pilot)
        assert screen.outcome is None and said in status(screen) and "\n" not in status(screen)
        assert screen.query_one("#tool-status").has_class("error")


async def test_oom_with_a_model_that_does_not_exist_says_so_in_one_line(tmp_path: Path) -> None:
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        await pilot.pause()
        await fill(app, pilot, model=str(tmp_path / "gone.py:make"), gpu="T4")
        screen = await run_tool(app, pilot)
        assert screen.outcome is None and "gone.py" in status(screen) and "\n" not in status(screen)
        assert "Error:" not in status(screen)  # a clear line, not an exception's name


async def test_snapshots_of_the_oom_max_batch_and_metrics_compute_screens(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("two.py").write_text(TWO)
    write_images(Path("."))
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await fill(app, pilot, model="two.py:make", batch="4", input="8", cuda="12.4", checkpointing=True)
        await run_tool(app, pilot)
        text = screen_text(app)
        assert "OOM: peak GPU memory of training, and whether it fits" in text
        assert re.search(r"\n gpu +GPU 0 · GeForce RTX 4090 · 22.8 GiB free of 24.0 GiB +▼", text), text
        assert re.search(r"\n checkpointing +▐X▌ +inference +▐X▌\n", text), text
        assert re.search(r"\n zero_grad +torch's default +▼ +optimizer impl +torch's default", text), text
        assert "two.py:make  batch 4  8  fp32, adam, checkpointing" in text
        assert "verdict         fits:" in text and "at the peak:" in text

        await pilot.press("escape", "b")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await fill(app, pilot, model="two.py:make", batch="8", input="8", cuda="12.4", gpu="T4")
        await run_tool(app, pilot)
        text = screen_text(app)
        assert "OOM: the largest batch that leaves 10% of the GPU free" in text
        assert re.search(r"\n 2nd batch +8 +input +8\n", text), text
        assert re.search(r"max batch       \d+  \(leaves at least 10% of T4 free\)", text), text

        await pilot.press("escape", "m")
        await pilot.pause()
        await fill(app, pilot, pred="pred.npy", target="target.npy")
        await run_tool(app, pilot)
        text = screen_text(app)
        assert re.search(r"\n or pred +pred.npy\n", text) and re.search(r"\n range +auto +▼ +ssim preset +wang", text)
        assert "note: --range auto: computing at 1, inferred from the target" in text
        assert "1 checked: 0 error(s), 0 warning(s)" in text


# ---------------------------------------------------------------- what a new user tried (issue 20)

async def test_saving_over_an_existing_file_asks_first(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('mine')\n")
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        await pilot.pause()
        await fill(app, pilot, skip=SKIP_FRAMEWORKS)
        screen = await run_tool(app, pilot)
        assert screen.outcome is not None, status(screen)
        screen.query_one("#save-path", Input).value = str(script)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and str(script) in str(app.screen.question)
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is screen and "nothing saved" in status(screen)
        assert script.read_text() == "print('mine')\n"
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert app.screen is screen and "saved" in status(screen)
        assert json.loads(script.read_text())["exit_code"] == screen.outcome.json["exit_code"]


@pytest.mark.parametrize("key", ["d", "m", "o", "b", "e", "M"])
async def test_q_on_a_tool_screen_closes_it_and_the_app_goes_on(key: str) -> None:
    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(key)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ToolScreen)
        first = screen.query(Input).first()
        first.focus()
        first.value = ""
        await pilot.press("q")  # in a text field: typed
        await pilot.pause()
        assert app.screen is screen and first.value == "q"
        pickers = screen.query(Select)
        if pickers:  # on a picker, as the user who tabbed there; else on no field (q in a text field is typed)
            pickers.first().focus()
        else:
            screen.set_focus(None)
        await pilot.pause()
        assert screen.active_bindings["q"].binding.action == "close"  # the footer says so
        assert "q Close" in screen_text(app) or "q  Close" in screen_text(app)
        await pilot.press("q")
        await pilot.pause()
        assert app.is_running and not isinstance(app.screen, ToolScreen)
        assert app.screen.active_bindings["q"].binding.action == "quit"


async def test_the_help_fits_80_columns_every_line_whole() -> None:
    from textual.content import Content

    from gpudoc.tui.screens import HELP

    app = tool_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        seen = screen_text(app)
        for _ in range(20):
            await pilot.press("down")
            await pilot.pause()
            seen += "\n" + screen_text(app)
        box = app.screen.query_one("#help").region
        assert box.x >= 0 and box.right <= 80 and box.bottom <= 24
    lines = [line.strip() for line in Content.from_markup(HELP).plain.splitlines() if line.strip()]
    missing = [line for line in lines if line not in seen]
    assert not missing, missing
    assert "q closes" in HELP


async def test_pickers_offer_one_default_and_reopened_forms_keep_their_values(tmp_path: Path) -> None:
    from gpudoc.oom.devices import local_torch_cuda

    app = tool_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("m")
        await pilot.pause()
        picker = app.screen.query_one("#field-range", Select)
        assert not picker._allow_blank and picker.value == "auto"  # no "default" beside "auto"
        await fill(app, pilot, logs="train.log", range="255", salvage=True)
        app.screen.query_one("#save-path", Input).value = str(tmp_path / "m.json")
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("m")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MetricsScreen)
        assert (screen.field("logs"), screen.field("range"), screen.field("salvage")) == ("train.log", "255", "yes")
        assert screen.query_one("#save-path", Input).value == str(tmp_path / "m.json")
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("o")
        await pilot.pause()
        cuda = str(app.screen.query_one("#field-cuda", Input).placeholder)
        await fill(app, pilot, torch="2.3")
        cuda_for_23 = str(app.screen.query_one("#field-cuda", Input).placeholder)
    assert ("default: 12.0" if local_torch_cuda() is None else f"default: {local_torch_cuda()}") in cuda
    assert "default: 12.1, torch 2.3's newest build" in cuda_for_23  # as the estimate takes it (--torch 2.3)
