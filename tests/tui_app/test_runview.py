"""The run view: curves of a real toy run's scalars, TensorBoard's smoothing, live checks,
leftovers, and ``gpudoc tui --logdir`` without a command."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gpudoc.cli import cli
from gpudoc.gpu import ManualClock, SimulatedBackend
from gpudoc.monitor import Monitor
from gpudoc.output import format_bytes
from gpudoc.runwatch import Check, Checks, LogFinder, Point, Watch
from gpudoc.train import Run
from gpudoc.tui.app import GpudocApp
from gpudoc.tui.curves import KEEP, Curve, plot, smooth
from gpudoc.tui.runview import ChecksScreen, CurvesPanel, RunPanel
from gpudoc.tui.screens import ConfirmScreen

from reap.conftest import alive, dev, subreaper, trainer_script  # noqa: F401
from tui_app.test_app import SIZE, FixedHost, make_app, refresh, screen_text, start_run

TOY = str(Path(__file__).parents[2] / "examples" / "toy_train.py")


def tensorboard_smoothing(values: list[float], weight: float) -> list[float]:
    """TensorBoard's scalar dashboard (``resmoothDataset`` of its line chart), line by line:
    ``last = last * w + (1 - w) * v``, divided by ``1 - w ** numAccum``; non-finite values and
    constant series are shown unsmoothed."""
    last = 0.0 if values else math.nan
    num_accum = 0
    is_constant = all(v == values[0] for v in values)
    out = []
    for next_val in values:
        if is_constant or not math.isfinite(next_val):
            out.append(next_val)
        else:
            last = last * weight + (1 - weight) * next_val
            num_accum += 1
            debias_weight = 1.0
            if weight != 1:
                debias_weight = 1 - math.pow(weight, num_accum)
            out.append(last / debias_weight)
    return out


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


@pytest.mark.parametrize("weight", [0.0, 0.6, 0.9, 0.999])
def test_smoothing_gives_tensorboards_numbers(weight: float) -> None:
    noisy = [math.sin(i / 3) * 2 + (i % 5) * 0.37 for i in range(200)]
    for values in (noisy, [*noisy[:60], math.nan, math.inf, *noisy[60:]], [0.25] * 30, [0.25] * 30 + [1.0, 2.0]):
        expected = tensorboard_smoothing(values, weight)
        assert same(smooth(values, weight), expected)
        curve = Curve(".", "loss", weight)  # point by point, as the values arrive
        for step, value in enumerate(values):
            curve.add(Point(".", "loss", step, value), 0.0)
            assert same(curve.smoothed, tensorboard_smoothing(values[: step + 1], weight))


def test_a_long_series_keeps_a_sample_smoothed_as_tensorboard_smooths_it_and_exact_min_max() -> None:
    curve = Curve(".", "loss", 0.6)
    values = [1.0 / (1 + i) + (i % 7) * 1e-3 for i in range(3 * KEEP)]
    for step, value in enumerate(values):
        curve.add(Point(".", "loss", step, value), float(step))
    assert len(curve.values) <= KEEP and curve.steps[0] == 0 and curve.count == len(values)
    assert curve.values == [values[s] for s in curve.steps]
    assert same(curve.smoothed, tensorboard_smoothing(curve.values, 0.6))
    assert (curve.low, curve.high, curve.last) == (min(values), max(values), values[-1])


def test_the_plot_draws_the_smoothed_line_through_every_column_and_skips_non_finite_values() -> None:
    values = [float(i) for i in range(10)] + [math.nan]
    drawn = plot(list(range(11)), values, smooth(values, 0.0), 20, 3)
    assert drawn is not None and (drawn.low, drawn.high, drawn.x0, drawn.x1) == (0.0, 9.0, 0.0, 9.0)
    assert all(any(row[x] != "\u2800" for row in drawn.rows) for x in range(20))  # no gap in the line
    assert drawn.rows[2][0] != "\u2800" and drawn.rows[0][-1] != "\u2800"  # rising: bottom left to top right
    assert plot([0, 1], [math.nan, math.inf], [math.nan, math.inf], 10, 2) is None


def watched(args: list[str], logdir: Path | None) -> tuple[Run, Watch]:
    """The toy run with ARGS as `gpudoc tui -- python toy_train.py ARGS` starts it."""
    watch = Watch(LogFinder(logdir, Path.cwd(), time.time()), Checks())
    command = [sys.executable, TOY, *args] + (["--logdir", str(logdir)] if logdir else [])
    return Run(command, on_line=watch.take_line), watch


async def until(app: GpudocApp, pilot: Any, done: Callable[[], bool], timeout: float = 30) -> None:
    """Sample (and poll the watch) until ``done``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)
        await refresh(app, pilot)


def notes(app: GpudocApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_a_buggy_scale_toy_run_draws_its_logged_steps_smoothed_and_raises_the_scale_check(
    tmp_path: Path,
) -> None:
    run, watch = watched(["--epochs", "3", "--steps", "20", "--step-time", "0.005", "--buggy-scale"], tmp_path)
    try:
        app = make_app("dgx", ManualClock(30), run=run, watch=watch)
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one(CurvesPanel)
            series = panel.curves.series
            psnr = (".", "val/psnr")
            await until(app, pilot, lambda: not run.running and psnr in series and len(series[psnr].steps) == 3)
            await refresh(app, pilot)
            loss = series[(".", "train/loss")]
            assert loss.steps == list(range(1, 61)) and series[(".", "val/mse")].steps == [20, 40, 60]
            assert same(loss.smoothed, tensorboard_smoothing(loss.values, 0.6))
            implied = [c for c in panel.checks if c.rule == "implied-range"]
            assert len(implied) == 1 and implied[0].severity == "error"
            assert "PSNR used peak 255 on [0,1] data" in implied[0].message
            assert any(n.startswith("[implied-range] ") for n in notes(app))
            shown = screen_text(app)
            assert "CURVES 1 event file · step 60" in shown and "checks: " in shown
            assert "train/loss" in shown and "val/psnr" in shown and "step 1" in shown
            assert "last" not in panel.lines[2].plain  # the titles: name, last value, smoothed
            assert f"{loss.last:.4g} ~{loss.smoothed[-1]:.4g}" in panel.lines[2].plain

            await pilot.press("right_square_bracket")
            assert panel.curves.weight == 0.7 and same(loss.smoothed, tensorboard_smoothing(loss.values, 0.7))
            await pilot.press("left_square_bracket", "left_square_bracket")
            assert panel.curves.weight == 0.5 and "smoothing 0.5" in panel.lines[0].plain
            await pilot.press("a")
            assert panel.axis == "time" and "x time" in panel.lines[0].plain
            await pilot.press("v")
            assert panel.shown() == [loss] and "val/mse" not in "".join(line.plain for line in panel.lines)
            for _ in range(4):
                await pilot.press("v")
            assert panel.selected is None and len(panel.shown()) == 4

            await pilot.press("l")
            assert isinstance(app.screen, ChecksScreen)
            listed = app.screen.text().plain
            assert f"error [implied-range] (step {implied[0].step})" in listed and implied[0].fix in listed
            await pilot.press("escape")
            assert not isinstance(app.screen, ChecksScreen)
    finally:
        run.stop(grace=1)


async def test_a_nan_toy_run_raises_the_non_finite_check(tmp_path: Path) -> None:
    run, watch = watched(["--epochs", "2", "--steps", "20", "--step-time", "0.005", "--nan-at", "25"], tmp_path)
    try:
        app = make_app("workstation", ManualClock(5), run=run, watch=watch)
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one(CurvesPanel)
            await until(app, pilot, lambda: any(c.rule == "non-finite" for c in panel.checks))
            check = next(c for c in panel.checks if c.rule == "non-finite")
            assert check.severity == "error" and check.series == "train/loss" and check.step == 25
            assert "the training diverged" in check.message
            assert any(n.startswith("[non-finite] train/loss is nan at step 25") for n in notes(app))
            count = sum(1 for c in panel.checks if c.severity == "error")
            assert panel.lines[1].plain.startswith(f"checks: {len(panel.checks)} ({count} error")
            assert "latest [non-finite]" in panel.lines[1].plain
    finally:
        run.stop(grace=1)


async def test_values_from_the_output_feed_the_curves_without_event_files() -> None:
    watch = Watch(LogFinder(None, Path.cwd(), time.time()), Checks())
    code = "for s in range(1, 6): print(f'step {s} loss={1 / s:.3f}', flush=True)"
    run = Run([sys.executable, "-c", code], on_line=watch.take_line)
    app = make_app("workstation", ManualClock(5), run=run, watch=watch)
    async with app.run_test(size=SIZE) as pilot:
        panel = app.query_one(CurvesPanel)
        await until(app, pilot, lambda: len(panel.curves.series.get(("output", "loss"), Curve("", "")).steps) == 5)
        assert panel.curves.series[("output", "loss")].values == [1.0, 0.5, 0.333, 0.25, 0.2]
        assert panel.lines[0].plain.startswith("CURVES the run's output")


@pytest.mark.usefixtures("subreaper")
async def test_a_worker_that_outlives_the_leader_is_reported_with_its_verdict_and_ended_with_x(
    dev: Path,  # noqa: F811
) -> None:
    run = start_run(trainer_script(dev, exits=True))
    watch = Watch(LogFinder(None, Path.cwd(), time.time()), Checks())
    try:
        app = make_app("workstation", ManualClock(5), glob=str(dev / "nvidia*"), run=run, watch=watch)
        async with app.run_test(size=SIZE) as pilot:
            status = run.wait(20)
            (worker,) = [int(line.split()[1]) for line in status.lines if line.startswith("pid ")]
            panel = app.query_one(CurvesPanel)
            await until(app, pilot, lambda: any(c.rule == "leftover" for c in panel.checks))
            (check,) = [c for c in panel.checks if c.rule == "leftover"]
            assert check.message.startswith(f"PID {worker} (orphan, ") and "still holds GPU 0" in check.message
            assert any(n.startswith(f"[leftover] PID {worker} (orphan") for n in notes(app))
            assert f"1 process of it still holds GPU 0: {worker} orphan (x stops it)" in str(
                app.query_one("#run").render())
            await refresh(app, pilot)
            assert [c.rule for c in panel.checks].count("leftover") == 1  # said once
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen) and f"{worker} orphan" in app.screen.question
            await pilot.press("y")
            await app.workers.wait_for_complete()
            deadline = time.monotonic() + 15  # SIGTERM, then the exit (and SIGKILL after the grace)
            while alive(worker) and time.monotonic() < deadline:
                await refresh(app, pilot)
            assert not alive(worker)
    finally:
        run.stop(grace=1)


def _headless(monkeypatch: pytest.MonkeyPatch, drive: Callable[[Any], Any]) -> None:
    original = GpudocApp.run

    def run(self: GpudocApp, **_: object) -> object:
        return original(self, headless=True, size=SIZE, auto_pilot=drive)

    monkeypatch.setattr(GpudocApp, "run", run)


def test_logdir_without_a_command_follows_the_runs_there(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    for name in ("a", "b"):
        subprocess.run([sys.executable, TOY, "--epochs", "2", "--steps", "5", "--step-time", "0", "--buggy-scale",
                        "--logdir", str(logdir / name)], check=True, capture_output=True, timeout=60)
    seen: dict[str, Any] = {}

    async def drive(pilot: Any) -> None:
        app = pilot.app
        panel = app.query_one(CurvesPanel)
        deadline = time.monotonic() + 30
        while len(panel.curves.series) < 8 or [c.rule for c in panel.checks].count("implied-range") < 2:
            assert time.monotonic() < deadline, panel.lines[0].plain
            await pilot.pause(0.2)
        seen["steps"] = {key: curve.steps for key, curve in panel.curves.series.items()}
        seen["checks"] = [c.rule for c in panel.checks]
        seen["header"] = panel.lines[0].plain
        seen["run"] = bool(app.query("#run"))
        await pilot.press("q")

    _headless(monkeypatch, drive)
    result = CliRunner().invoke(cli, ["tui", "--demo", "dgx", "--device-glob", "/none/*", "--logdir", str(logdir)],
                                env={"GPUDOC_SIMULATE": None})
    assert result.exit_code == 0, result.output
    assert seen["steps"][("a", "train/loss")] == list(range(1, 11)) and seen["steps"][("b", "val/mae")] == [5, 10]
    assert seen["checks"].count("implied-range") == 2  # once per run
    assert seen["header"].startswith("CURVES 2 event files · step 10") and not seen["run"]


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_logdir_that_cannot_be_followed_is_bad_input(tmp_path: Path, kind: str) -> None:
    path = tmp_path / kind
    if kind == "file":
        path.write_text("x")
    result = CliRunner().invoke(cli, ["tui", "--demo", "--logdir", str(path)], env={"GPUDOC_SIMULATE": None})
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "gpudoc: error: " in result.stderr


def test_run_view_snapshot(snap_compare: Any, tmp_path: Path) -> None:
    """The curves panel on fixed values: four scalars of one run, smoothed, and two checks."""
    watch = Watch(LogFinder(tmp_path, tmp_path, 0.0), Checks())
    points = [Point(".", "train/loss", s, 2.0 / (1 + s) + 0.05 * ((s * 7) % 5), wall_time=1000.0 + s / 20)
              for s in range(1, 201)]
    for s in range(20, 201, 20):
        points += [Point(".", "val/mse", s, 0.02 / s, wall_time=1000.0 + s / 20),
                   Point(".", "val/mae", s, 0.5 / s, wall_time=1000.0 + s / 20),
                   Point(".", "val/psnr", s, 60 + s / 10, wall_time=1000.0 + s / 20)]
    checks = [Check("psnr-implausible", "warning", "PSNR 62 dB is implausibly high (step 20, val)", "", "val", 20),
              Check("implied-range", "error", "PSNR 62 dB with MSE 0.001 implies a peak of 255 (step 20, val)",
                    "compute PSNR with the data's range", "val", 20)]

    async def show(pilot: Any) -> None:
        panel = pilot.app.query_one(CurvesPanel)
        while not panel.source.startswith("no event file in"):  # the first look (and the only one) is done
            await pilot.pause(0.05)
        panel.take(points, checks, "1 event file", False)
        await pilot.pause()

    app = make_app("dgx", ManualClock(30), watch=watch)
    assert snap_compare(app, terminal_size=SIZE, run_before=show)


async def test_on_a_narrow_screen_the_curves_panel_gets_the_height_of_its_lines(tmp_path: Path) -> None:
    toy = [sys.executable, TOY, "--epochs", "2", "--steps", "5", "--step-time", "0", "--logdir", str(tmp_path)]
    subprocess.run(toy, check=True, capture_output=True, timeout=60)
    app = make_app("dgx", ManualClock(30), watch=Watch(LogFinder(tmp_path, tmp_path, 0.0), Checks()))
    async with app.run_test(size=(60, 40)) as pilot:
        panel = app.query_one(CurvesPanel)
        # The height follows the lines at the next layout: wait for both, not only the points.
        await until(app, pilot, lambda: len(panel.curves.series) == 4 and len(panel.lines) == 8
                    and panel.region.height == len(panel.lines) + 2)
        assert all(line.cell_length <= panel.size.width - 4 for line in panel.lines)
        assert "train/loss" in screen_text(app)


async def test_many_checks_at_once_are_notified_as_a_few_and_a_count(tmp_path: Path) -> None:
    toy = [sys.executable, TOY, "--epochs", "1", "--steps", "5", "--step-time", "0"]
    for first in (True, False):  # a restart into the same directory: every tag's steps go backwards
        subprocess.run([*toy, "--logdir", str(tmp_path)], check=True, capture_output=True, timeout=60)
        if first:
            time.sleep(1.1)  # tensorboardX names its file by the second: a new file, not the same name
    app = make_app("workstation", ManualClock(5), watch=Watch(LogFinder(tmp_path, tmp_path, 0.0), Checks()))
    async with app.run_test(size=SIZE) as pilot:
        panel = app.query_one(CurvesPanel)
        await until(app, pilot, lambda: len(panel.checks) >= 4)
        fired = [n for n in notes(app) if n.startswith("[")]
        assert len(fired) == 2 and f"{len(panel.checks) - 2} more checks fired (l lists them)" in notes(app)


async def test_a_hung_toy_run_raises_the_stall_check_while_its_process_lives(tmp_path: Path) -> None:
    watch = Watch(LogFinder(tmp_path, Path.cwd(), time.time()), Checks(stall_min=1.0))
    toy = [sys.executable, TOY, "--epochs", "50", "--steps", "5", "--step-time", "0.05", "--hang-at", "30"]
    run = Run([*toy, "--logdir", str(tmp_path)], on_line=watch.take_line)  # an epoch, and a flush, every 0.25 s
    try:
        app = make_app("workstation", ManualClock(5), run=run, watch=watch)
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one(CurvesPanel)
            await until(app, pilot, lambda: any(c.rule == "stall" for c in panel.checks))
            (stall,) = [c for c in panel.checks if c.rule == "stall"]
            assert stall.message.startswith("no new step for ") and "after step 29" in stall.message
            assert "1 process(es) of the run live" in stall.message and run.running
            assert any(n.startswith("[stall] no new step") for n in notes(app))
    finally:
        run.stop(grace=1)


def test_logdir_with_a_command_is_given_to_it_as_gpudoc_logdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def drive(pilot: Any) -> None:
        panel = pilot.app.query_one(CurvesPanel)
        deadline = time.monotonic() + 30
        loss = (".", "train/loss")
        while loss not in panel.curves.series or len(panel.curves.series[loss].steps) < 10:
            assert time.monotonic() < deadline, panel.lines[0].plain
            await pilot.pause(0.2)
        seen["steps"] = panel.curves.series[(".", "train/loss")].steps
        await pilot.press("q")

    _headless(monkeypatch, drive)
    toy = [sys.executable, TOY, "--epochs", "2", "--steps", "5", "--step-time", "0"]  # no --logdir of its own
    result = CliRunner().invoke(cli, ["tui", "--demo", "--device-glob", "/none/*", "--logdir", str(tmp_path / "new"),
                                      "--", *toy], env={"GPUDOC_SIMULATE": None, "GPUDOC_LOGDIR": None})
    assert result.exit_code == 0, result.output
    assert seen["steps"] == list(range(1, 11)) and list((tmp_path / "new").glob("*tfevents*"))


# ---------------------------------------------------------------- restarts, the estimate, 80x30


_APP_RUN = GpudocApp.run


def _headless_at(monkeypatch: pytest.MonkeyPatch, drive: Callable[[Any], Any], size: tuple[int, int]) -> None:
    """`gpudoc tui` runs its real app without a terminal, at ``size``, driven by ``drive``."""

    def run(self: GpudocApp, **_: object) -> object:
        return _APP_RUN(self, headless=True, size=size, auto_pilot=drive)

    monkeypatch.setattr(GpudocApp, "run", run)


def _tui(*args: str) -> Any:
    return CliRunner().invoke(cli, ["tui", "--device-glob", "/none/*", "--interval", "0.1", *args],
                              env={"GPUDOC_SIMULATE": None, "GPUDOC_DEVICE_GLOB": None, "CUDA_VISIBLE_DEVICES": None,
                                   "GPUDOC_LOGDIR": None})


async def _until(pilot: Any, done: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def _run_text(app: GpudocApp) -> str:
    return "\n".join(line.plain for line in app.query_one(RunPanel).lines)


def test_restarts_start_a_failed_command_again_with_the_attempt_shown_and_x_stops_for_good(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    flaky = textwrap.dedent(f"""
        import os, sys, time
        count = len(os.listdir({str(tmp_path)!r}))
        open(os.path.join({str(tmp_path)!r}, f"attempt{{count}}"), "w").close()
        print(f"attempt {{count}}", flush=True)
        time.sleep(0.5)  # long enough to be seen running
        sys.exit(0 if count == 2 else 4)
    """)
    seen: dict[str, Any] = {}

    async def drive(pilot: Any) -> None:
        app = pilot.app
        shown: list[str] = []

        def done() -> bool:
            shown.append(_run_text(app))
            run = app.training_run
            return app.attempts.number == 3 and run is not None and not run.running and "succeeded" in shown[-1]

        await _until(pilot, done, "the third attempt's end")
        seen["shown"], seen["notes"] = shown, notes(app)
        await pilot.pause(0.5)  # a success is not started again
        seen["number"] = app.attempts.number
        await pilot.press("q")

    _headless_at(monkeypatch, drive, SIZE)
    result = _tui("--demo", "--restarts", "3", "--", sys.executable, "-c", flaky)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attempt0", "attempt1", "attempt2"] and seen["number"] == 3
    assert any("RUN running" in text and "attempt 2 of 4" in text for text in seen["shown"])  # the attempt is shown
    assert "attempt 3 of 4" in seen["shown"][-1] and "attempt 2" in seen["shown"][-1]  # its output: the last lines
    assert "the run failed (exit 4): starting it again (attempt 2 of 4)" in seen["notes"]
    assert "the run failed (exit 4): starting it again (attempt 3 of 4)" in seen["notes"]
    assert "gpudoc: the run succeeded after " in result.stderr and "(attempt 3)" in result.stderr

    # A run stopped with x is not started again.
    stopped: dict[str, Any] = {}

    async def stop(pilot: Any) -> None:
        app = pilot.app
        await _until(pilot, lambda: app.training_run is not None and app.samples > 0, "the first sample")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await _until(pilot, lambda: "RUN stopped" in _run_text(app), "the stop")
        await pilot.pause(0.5)
        stopped["number"], stopped["text"] = app.attempts.number, _run_text(app)
        await pilot.press("q")

    _headless_at(monkeypatch, stop, SIZE)
    result = _tui("--demo", "--restarts", "2", "--", sys.executable, "-c", "import time; time.sleep(60)")
    assert result.exit_code == 130, result.output
    assert stopped["number"] == 1 and "attempt 1 of 3" in stopped["text"]
    assert "starting it again" not in result.stderr


MODELS = """
import torch.nn as nn


def small():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))


def big():
    return nn.Sequential(nn.Linear(16384, 16384), nn.ReLU(), nn.Linear(16384, 16384))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small`` fits any simulated GPU; ``big`` (10.6 GiB at batch 8 with Adam) fits an H100's
    capacity but not the 9.6 GiB the dgx scenario leaves free on GPU 0."""
    path = tmp_path_factory.mktemp("models") / "models.py"
    path.write_text(MODELS)
    return path


@pytest.mark.parametrize("answer", ["n", "ctrl+q", "y", "y-missing"])  # ctrl+q: quit at the question
def test_an_estimate_that_predicts_oom_asks_before_the_command_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, models: Path, answer: str,
) -> None:
    marker = tmp_path / "started"
    command = ["/no/such/command"] if answer == "y-missing" else [
        sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    answer = "y" if answer.startswith("y") else answer
    seen: dict[str, Any] = {}

    async def drive(pilot: Any) -> None:
        app = pilot.app
        await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        seen["question"], seen["panel"] = app.screen.question, _run_text(app)
        seen["started_before"] = marker.exists() or app.training_run is not None
        await pilot.press(answer)
        if answer == "y" and command != ["/no/such/command"]:
            await _until(pilot, lambda: app.training_run is not None and not app.training_run.running, "the run's end")
            seen["panel_after"] = _run_text(app)
            await pilot.press("q")

    _headless_at(monkeypatch, drive, SIZE)
    result = _tui("--demo", "dgx", "--model", f"{models}:big", "--batch", "8", "--input", "16384", "--", *command)
    assert not seen["started_before"]
    assert "The run is estimated not to fit the GPU memory free now:" in seen["question"]
    assert "needs 10." in seen["question"] and "with 9.6 GiB free of 79.6 GiB: oom (" in seen["question"]
    assert "best remedy: " in seen["question"] and "Start it anyway?" in seen["question"]
    assert "RUN not started: estimated out of memory" in seen["panel"] and ": oom in 9.6 GiB free on GPU 0" in seen[
        "panel"]
    if answer in ("n", "ctrl+q"):
        assert result.exit_code == 1, result.output
        assert not marker.exists()
        assert result.stderr.startswith("gpudoc: the run was not started: estimate: ") and ": oom (" in result.stderr
    elif command == ["/no/such/command"]:  # started anyway, and it cannot run: one line
        assert result.exit_code == 2, result.output
        assert result.stderr == ("gpudoc: error: cannot run '/no/such/command': No such file or directory: check "
                                 "the command after '--' (and that it is on PATH)\n")
    else:
        assert result.exit_code == 0, result.output
        assert marker.exists() and "RUN succeeded" in seen["panel_after"]
        assert "memory measured none seen · estimated before the start 10." in seen["panel_after"]


def test_after_an_out_of_memory_end_the_pane_shows_max_batchs_answer(
    monkeypatch: pytest.MonkeyPatch, models: Path,
) -> None:
    from gpudoc.gpu import SimulatedBackend
    from gpudoc.oom.plan import plan, prelaunch, read_visible

    seen: dict[str, Any] = {}

    async def drive(pilot: Any) -> None:
        app = pilot.app
        await _until(pilot, lambda: app.max_batch is not None and "estimating" not in app.max_batch,
                     "max-batch's answer", timeout=60)
        await pilot.pause()
        seen["panel"], seen["notes"] = _run_text(app), notes(app)
        await pilot.press("q")

    _headless_at(monkeypatch, drive, SIZE)
    oom = "print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'); exit(1)"
    result = _tui("--demo", "dgx", "--model", f"{models}:small", "--batch", "8", "--input", "64", "--",
                  sys.executable, "-c", oom)
    assert result.exit_code == 1, result.output
    made, _ = prelaunch(lambda device: plan(f"{models}:small", 8, device, "64"), read_visible(SimulatedBackend("dgx"),
                                                                                            None))
    best, _ = made.max_batch()
    # the model is small: max-batch's answer takes the batch that ran out, so the run contradicted it
    assert best >= 8
    line = f"the estimate put batch 8 within memory (max batch {best}) and the run ran out"
    assert "out of memory: torch.OutOfMemoryError: CUDA out of memory." in seen["panel"]
    assert ": fits in 9.6 GiB free on GPU 0" in seen["panel"] and line in seen["panel"]
    assert any(n.startswith(line) for n in seen["notes"])
    assert f"gpudoc: {line}" in result.stderr


async def test_the_runs_measured_gpu_memory_is_shown_beside_the_estimate(models: Path, tmp_path: Path) -> None:
    from gpudoc.gpu import SimulatedBackend
    from gpudoc.monitor import Monitor
    from gpudoc.runwatch import ModelRun

    from tui_app.test_app import FixedHost

    run = Run([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        scenario = {"name": "test", "gpus": [{"name": "Sim GPU", "memory_total_mib": 16384}] * 2,
                    "processes": [{"pid": run.pid, "gpu": 1, "memory_mib": 1536}]}
        estimate = ModelRun(f"{models}:small", 8, "64").estimate(SimulatedBackend(scenario), "1")
        monitor = Monitor(SimulatedBackend(scenario), device_glob="/none/*", host=FixedHost(), holder_interval=0.0,
                          window=0.1)
        watch = Watch(LogFinder(None, tmp_path, time.time()), Checks())
        app = GpudocApp(monitor, interval=3600, host_name="testhost", run=run, watch=watch, estimate=estimate)
        async with app.run_test(size=SIZE) as pilot:
            await until(app, pilot, lambda: "1.5 GiB now" in _run_text(app), timeout=5)
            text = _run_text(app)
            assert f"memory measured 1.5 GiB now, peak 1.5 GiB · estimated before the start " \
                   f"{format_bytes(estimate[1].total_bytes)}/GPU: fits in " in text and "free on GPU 1" in text
            assert "GPU 1 1.5 GiB" in text  # in the header too
    finally:
        run.stop(grace=1)


@pytest.mark.parametrize("size", [(80, 30), (120, 40)])
def test_the_monitor_and_the_run_view_fit_the_screen_snapshot(snap_compare: Any, tmp_path: Path,
                                                              size: tuple[int, int]) -> None:
    """A run (restarted once, with its estimate) and its curves beside the monitor of eight
    GPUs: at 80x30 the run view packs itself (the host's summary in the status line, one
    header line, no min/max line) and nothing scrolls; at 120x40 it is laid out in full."""
    from gpudoc.oom.plan import Fit
    from gpudoc.train import RunState, RunStatus

    run = Run([sys.executable, "-c", "pass"])  # ended before the app starts; its panel is shown fixed values
    run.wait(20)
    watch = Watch(LogFinder(tmp_path, tmp_path, 0.0), Checks())
    points = [Point(".", "train/loss", s, 2.0 / (1 + s) + 0.05 * ((s * 7) % 5), wall_time=1000.0 + s / 20)
              for s in range(1, 201)]
    points += [Point(".", "val/mae", s, 0.5 / s, wall_time=1000.0 + s / 20) for s in range(20, 201, 20)]
    checks = [Check("loss-spike", "warning", "train/loss jumped to 3.1 at step 120", "lower the learning rate",
                    "train/loss", 120)]
    status = RunStatus(("python", "train.py", "--epochs", "10", "--batch", "64"), 4242, RunState.RUNNING, None, 754.0,
                       tuple(f"epoch {e} | step {e * 20} | loss={2.0 / (1 + e * 20):.4f}" for e in range(1, 11)), None)
    fit = Fit("train.py:model", 64, [0, 1, 2, 3, 4, 5, 6, 7], 0, "NVIDIA H100 80GB HBM3", 85_520_809_984,
              10_307_921_510, 6_012_954_214, "fits", 4_294_967_296)

    async def show(pilot: Any) -> None:
        app = pilot.app
        panel = app.query_one(CurvesPanel)
        while not panel.source.startswith("no event file in") or app.samples < 1:  # the first look is done
            await pilot.pause(0.05)
        panel.take(points, checks, "1 event file", False)
        app.query_one(RunPanel).set_info(attempt="attempt 2 of 3", estimate=fit)
        app.query_one(RunPanel).show(status, ())
        app.clear_notifications()
        await pilot.pause()
        assert app.screen.max_scroll_y == 0
        assert app.query_one("#processes").region.height >= 4 and app.query_one("#curves").region.bottom < size[1]

    app = make_app("dgx", ManualClock(30), run=run, watch=watch)
    assert snap_compare(app, terminal_size=size, run_before=show)


@pytest.mark.parametrize("command", ["tui", "run"])
def test_a_bad_model_spec_is_one_line_even_with_no_gpu_to_estimate_against(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str,
) -> None:
    """No GPU to read makes the estimate a note (the run starts), but a bad --model is still
    bad input: one line, exit 2, nothing started."""
    marker = tmp_path / "started"

    async def quit_at_once(pilot: Any) -> None:  # (were the app started)
        await pilot.press("q")

    _headless_at(monkeypatch, quit_at_once, SIZE)
    result = CliRunner().invoke(cli, ["--simulate", "dgx", command, "--model", "nosuch_model", "--batch", "8", "--",
                                      sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
                                env={"GPUDOC_SIMULATE": None, "CUDA_VISIBLE_DEVICES": "-1"})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("gpudoc: error: MODEL 'nosuch_model': not a built-in model")
    assert result.stderr.count("\n") == 1 and not marker.exists()


@pytest.mark.usefixtures("subreaper")
async def test_x_on_what_a_failed_attempt_left_ends_the_restarts_too(
        dev: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A failed attempt whose worker still holds a GPU waits LEFTOVER_WAIT before it is
    started again; x on that worker is a stop: no next attempt."""
    from gpudoc.train import LEFTOVER_WAIT, Attempts

    # The wait is long enough here that the leftover is seen and x pressed within it even
    # under load (with the real 2 s the next attempt started first once, under the full suite).
    monkeypatch.setattr("gpudoc.tui.app.LEFTOVER_WAIT", 60.0)

    script = trainer_script(dev, exits=True)
    script = textwrap.dedent(script[: script.rindex("os._exit(0)")] + "os._exit(3)\n")  # the leader fails
    watch = Watch(LogFinder(None, Path.cwd(), time.time()), Checks())
    attempts = Attempts([sys.executable, "-c", script], 1, on_line=watch.take_line)
    run = attempts.start()
    worker = 0
    try:
        app = make_app("workstation", ManualClock(5), glob=str(dev / "nvidia*"), watch=watch, attempts=attempts)
        async with app.run_test(size=SIZE) as pilot:
            status = run.wait(20)
            (worker,) = [int(line.split()[1]) for line in status.lines if line.startswith("pid ")]
            await until(app, pilot, lambda: any(c.rule == "leftover" for c in app.query_one(CurvesPanel).checks))
            assert attempts.number == 1 and "attempt 1 of 2" in _run_text(app)
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen) and f"{worker} orphan" in app.screen.question
            await pilot.press("y")
            await app.workers.wait_for_complete()
            deadline = time.monotonic() + 15
            while alive(worker) and time.monotonic() < deadline:
                await refresh(app, pilot)
            assert not alive(worker)
            ended = time.monotonic()
            while time.monotonic() - ended < LEFTOVER_WAIT + 0.5:
                await refresh(app, pilot)
            assert attempts.number == 1 and app.training_run is run
    finally:
        run.stop(grace=1)
        if worker and alive(worker):
            os.kill(worker, signal.SIGKILL)


def _rows(app: GpudocApp) -> list[str]:
    """The screen's rows as plain text (from Textual's SVG screenshot, row by row)."""
    import html
    import re

    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', app.export_screenshot()):
        rows.setdefault(float(m[2]), []).append((float(m[1]), html.unescape(m[3]).replace("\xa0", " ")))
    return ["".join(text for _, text in sorted(row)) for _, row in sorted(rows.items())]


async def test_the_checks_list_wraps_within_an_80_column_screen() -> None:
    long = ("train/loss jumped from 0.4123 to 3.1877 at step 120 (7.7x the median of the last 50 steps), "
            "after the learning rate warm-up ended")
    checks = [Check("loss-spike", "warning", long, "lower the learning rate or clip the gradients (max norm 1.0) "
                    "and check the batch at that step", "train/loss", 120),
              Check("non-finite", "error", "val/mae is NaN from step 140 on: every value since is NaN or inf, "
                    "so the metric reads as no data", "check the loss for a division by zero", "val/mae", 140)]
    app = make_app("workstation", ManualClock(5))
    async with app.run_test(size=(80, 30)) as pilot:
        app.push_screen(ChecksScreen(checks))
        await pilot.pause()
        box = app.screen.query_one("#checks").region
        assert box.x >= 0 and box.right <= 80
        frames = str.maketrans(dict.fromkeys("│█▀▄╭╮╰╯", " "))
        text = " ".join(" ".join(row.translate(frames).split()) for row in _rows(app))
        for check in checks:
            assert check.message in text and check.fix in text


def test_curve_axis_labels_are_whole_numbers_that_agree_with_min_and_max() -> None:
    """Past KEEP points only a sample is kept: the extremes of odd counts are dropped from
    it, and the axis still spans (and is labelled with) every value's range; a label never
    loses its exponent; a NaN last value shows as nan."""
    panel = CurvesPanel()
    values = [1.123e-5 + 1e-7 * (s % 7) for s in range(2 * KEEP + 2)]
    values[1], values[3] = 2.49e-10, 7.256  # counts 2 and 4: not in the sample once it is halved
    panel.curves.add([Point(".", "train/loss", s, v, wall_time=float(s)) for s, v in enumerate(values)])
    curve = panel.curves.series[(".", "train/loss")]
    assert 7.256 not in curve.values and 2.49e-10 not in curve.values
    lines = [line.plain for line in panel._chart(curve, 40, 3, "$accent")]
    assert lines[1].split() == ["min", "2.49e-10", "max", "7.256"]
    labels = [line.split("┤")[0].strip() for line in lines[2:5]]
    assert labels == ["7.256", "", "2.49e-10"]
    panel.curves.add([Point(".", "train/loss", 2 * KEEP + 2, math.nan, wall_time=0.0)])
    assert panel._chart(curve, 40, 3, "$accent")[0].plain.split()[:2] == ["train/loss", "nan"]


def test_a_label_too_wide_for_its_place_gets_fewer_digits_not_a_cut() -> None:
    from gpudoc.tui.runview import fitted, number

    assert number(1.1234567e-9) == "1.123e-9" and number(math.nan) == "nan" and number(None) == "-"
    assert fitted(1.1234567e-9, 6) == "1.1e-9" and fitted(-1.2345e-10, 6) == "-1e-10"
    assert float(fitted(1.1234567e-9, 6)) == pytest.approx(1.1e-9)


async def test_at_80_columns_the_curves_header_keeps_the_smoothing_and_the_oom_pointer_wraps(tmp_path: Path) -> None:
    from gpudoc.train import RunState, RunStatus

    app = make_app("dgx", ManualClock(30), watch=Watch(LogFinder(tmp_path, tmp_path, 0.0), Checks()))
    async with app.run_test(size=(80, 30)) as pilot:
        curves = app.query_one(CurvesPanel)
        curves.take([Point(".", "train/loss", s, 1.0 / s, wall_time=float(s)) for s in range(1, 50)], [],
                    f"1 event file in {tmp_path}/runs/resnet50-lr0.1-batch64", False)
        panel = RunPanel(id="run-test")
        await app.screen.mount(panel, before=app.query_one(CurvesPanel))
        oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total)"
        panel.show(RunStatus(("python", "train.py"), 42, RunState.FAILED, 1, 2.0, ("epoch 1",), oom), ())
        await pilot.pause()
        header = curves.lines[0].plain
        assert "smoothing 0.6 ([ ])" in header and "x step (a)" in header and header.endswith("([ ])")
        text = " ".join(line.plain for line in panel.lines)
        assert oom in text and "(gpudoc oom max-batch finds a batch size that fits)" in text


def test_after_an_out_of_memory_end_at_120x40_the_run_panel_says_failed_and_nothing_overlaps(
    monkeypatch: pytest.MonkeyPatch, models: Path,
) -> None:
    """The toy's own out-of-memory end under --model, as a new user tried it: once max-batch
    answered, the run panel reads failed, has the height of its lines, and the panels below it
    moved down (none is drawn over another)."""
    seen: dict[str, Any] = {}

    async def drive(pilot: Any) -> None:
        app = pilot.app
        await _until(pilot, lambda: app.max_batch is not None and "estimating" not in app.max_batch,
                     "max-batch's answer", timeout=60)
        await pilot.pause()
        panel = app.query_one(RunPanel)
        seen["text"], seen["lines"], seen["answer"] = _run_text(app), len(panel.lines), app.max_batch
        seen["regions"] = [w.region for w in (panel, app.query_one(CurvesPanel), app.query_one("#processes-title"))]
        seen["rows"] = _rows(app)
        await pilot.press("q")

    _headless_at(monkeypatch, drive, (120, 40))
    result = _tui("--demo", "dgx", "--model", f"{models}:small", "--batch", "8", "--input", "64", "--",
                  sys.executable, TOY, "--epochs", "5", "--steps", "2", "--step-time", "0", "--oom-at", "2")
    assert result.exit_code == 1, result.output
    assert seen["text"].startswith("RUN failed (exit 1)") and "running" not in seen["text"]
    run, curves, title = seen["regions"]
    assert run.height == seen["lines"] + 2 and run.bottom <= curves.y and curves.bottom <= title.y
    assert sum("RUN failed (exit 1)" in row for row in seen["rows"]) == 1
    assert sum(row.startswith(" Processes") or row.startswith("Processes") for row in seen["rows"]) == 1


def test_tui_with_a_command_leaves_an_earlier_runs_files_in_the_logdir_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """As gpudoc run: an earlier buggy run's file under --logdir is no part of this run's curves
    or checks — a note says it was left out; without a command the TUI follows it."""
    earlier = tmp_path / "logs" / "before"
    subprocess.run([sys.executable, TOY, "--epochs", "1", "--steps", "5", "--step-time", "0", "--buggy-scale",
                    "--logdir", str(earlier)], check=True, capture_output=True, timeout=60)
    for f in earlier.iterdir():
        os.utime(f, (time.time() - 3600, time.time() - 3600))
    seen: dict[str, Any] = {}

    async def drive(pilot: Any) -> None:
        app = pilot.app
        await _until(pilot, lambda: app.training_run is not None and app.training_run.status().state.value
                     != "running" and any("earlier run" in n for n in notes(app)), "the run's end and the note")
        await pilot.pause(0.3)
        panel = app.query_one(CurvesPanel)
        seen["checks"], seen["notes"], seen["tags"] = list(panel.checks), notes(app), set(panel.curves.series)
        await pilot.press("q")

    _headless_at(monkeypatch, drive, SIZE)
    result = _tui("--demo", "dgx", "--logdir", str(tmp_path / "logs"), "--", sys.executable, "-c", "print('done')")
    assert result.exit_code == 0, result.output
    assert seen["checks"] == [] and seen["tags"] == set()  # the buggy-scale values were the earlier run's
    assert any("1 event file(s) under" in n and "left out" in n for n in seen["notes"])


FORK_AND_EXIT = """
import os, sys, time
while not os.path.exists(sys.argv[2]):  # the app's first sample (and holder scan) comes first
    time.sleep(0.02)
device = open(sys.argv[1], "rb")
child = os.fork()
if child == 0:
    time.sleep(40)
    os._exit(0)
print("child", child, flush=True)
os._exit(5)
"""


def _fork_and_exit(dev: Path, tmp_path: Path) -> tuple[Run, Path]:  # noqa: F811 (the fixture's folder)
    go = tmp_path / "go"
    return Run([sys.executable, "-c", FORK_AND_EXIT, str(dev / "nvidia0"), str(go)]), go


def _leader_forks_and_exits(run: Run, go: Path) -> int:
    """Let the leader fork its device-holding child and exit (status 5): the child's PID."""
    go.touch()
    status = run.wait(20)
    assert status.returncode == 5
    (child,) = [int(line.split()[1]) for line in status.lines if line.startswith("child ")]
    return child


def _slow_scans_app(dev: Path, run: Run) -> GpudocApp:  # noqa: F811
    """The monitor as gpudoc tui makes it (the holder scan at most every few seconds: here
    never again on its own), so only the run's end can make it scan."""
    monitor = Monitor(SimulatedBackend("dgx", clock=ManualClock(5)), device_glob=str(dev / "nvidia*"),
                      host=FixedHost(), holder_interval=3600.0, window=0.05)
    watch = Watch(LogFinder(None, Path.cwd(), time.time()), Checks())
    return GpudocApp(monitor, interval=3600, host_name="testhost", run=run, watch=watch)


@pytest.mark.usefixtures("subreaper")
async def test_a_child_forked_just_before_the_leader_exits_is_a_leftover_at_the_first_sample_after(
    dev: Path, tmp_path: Path,  # noqa: F811
) -> None:
    run, go = _fork_and_exit(dev, tmp_path)
    child = None
    try:
        app = _slow_scans_app(dev, run)
        async with app.run_test(size=(120, 40)) as pilot:
            await refresh(app, pilot)  # the holder scan: nothing holds the device yet
            child = _leader_forks_and_exits(run, go)
            await refresh(app, pilot)  # the first sample after the leader's exit
            text = str(app.query_one("#run").render())
            assert f"still holds GPU 0: {child} orphan (x stops it)" in text, text
            assert any(c.rule == "leftover" for c in app.query_one(CurvesPanel).checks)
    finally:
        run.stop(grace=1)
        if child is not None:
            assert not alive(child)


@pytest.mark.usefixtures("subreaper")
async def test_quitting_asks_about_a_leftover_no_sample_has_shown_yet_and_ends_it(
    dev: Path, tmp_path: Path,  # noqa: F811
) -> None:
    run, go = _fork_and_exit(dev, tmp_path)
    child = None
    try:
        app = _slow_scans_app(dev, run)
        async with app.run_test(size=(120, 40)) as pilot:
            await refresh(app, pilot)
            child = _leader_forks_and_exits(run, go)
            await pilot.press("q")  # before any sample saw the run end
            assert isinstance(app.screen, ConfirmScreen), "q quit without asking"
            assert f"{child} " in app.screen.question and "nvidia0" in app.screen.question
            await pilot.press("y")
            await app.workers.wait_for_complete()
        assert not alive(child)
    finally:
        run.stop(grace=1)
