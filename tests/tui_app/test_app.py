"""The monitor app driven by Pilot on simulated GPUs, with real processes for the actions."""

from __future__ import annotations

import asyncio
import html
import re
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from gpudoc.gpu import ManualClock, SimulatedBackend
from gpudoc.host import HostProbe, HostSnapshot
from gpudoc.monitor import Monitor, MonitorSample
from gpudoc.train import Run
from gpudoc.tui import app as tui_app
from gpudoc.tui.app import GpudocApp
from gpudoc.tui.screens import ConfirmScreen, HelpScreen
from gpudoc.tui.widgets import GpuPanel, HostPanel, ProcessTable
from textual.containers import VerticalScroll

from reap.conftest import Spawner, alive, dev, spawn, subreaper, trainer_script  # noqa: F401

SIZE = (130, 48)


class FixedHost(HostProbe):
    """A host that always reads the same, so screens are reproducible."""

    def sample(self) -> HostSnapshot:
        return HostSnapshot(
            timestamp=0.0, cpu_percent=37.5, cpu_per_core=(12.0, 63.0, 90.0, 0.0), memory_total=64 << 30,
            memory_used=20 << 30, memory_available=44 << 30, swap_total=8 << 30, swap_used=1 << 30,
            load_average=(1.5, 1.25, 0.75), disk_read_rate=10 << 20, disk_write_rate=2 << 20,
            net_rx_rate=5 << 20, net_tx_rate=1 << 20,
        )


def make_app(scenario: str, clock: ManualClock, glob: str = "/nonexistent/nvidia*", **kwargs: Any) -> GpudocApp:
    monitor = Monitor(SimulatedBackend(scenario, clock=clock), device_glob=glob, host=FixedHost(),
                      holder_interval=0.0, window=0.1)
    return GpudocApp(monitor, interval=3600, host_name="testhost", **kwargs)


async def refresh(app: GpudocApp, pilot: Any) -> None:
    """Take a sample now and let the UI show it."""
    app.poll()
    await app.workers.wait_for_complete()
    await pilot.pause()


def text_of(app: GpudocApp, selector: str) -> str:
    return str(app.query_one(selector).render())


async def test_panels_show_the_scenarios_readings() -> None:
    clock = ManualClock(5)
    app = make_app("workstation", clock)
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        gpu0 = text_of(app, "#gpu-0")
        assert "NVIDIA GeForce RTX 4090" in gpu0 and "/ 24.0 GiB" in gpu0 and "W" in gpu0
        assert "2 GPU(s) via simulated" in text_of(app, "#status")
        assert "load 1.50 1.25 0.75" in text_of(app, "#host") and "20.0 GiB / 64.0 GiB" in text_of(app, "#host")
        table = app.query_one(ProcessTable)
        assert set(table.rows_by_pid) == {48213, 1873, 2410}
        assert table.rows_by_pid[48213].user == "alice" and "train.py" in table.rows_by_pid[48213].command


async def test_a_process_appearing_and_vanishing_updates_the_table() -> None:
    clock = ManualClock(5)
    app = make_app("workstation", clock)
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        table = app.query_one(ProcessTable)
        assert 51007 not in table.rows_by_pid
        clock.advance(30)
        await refresh(app, pilot)
        assert 51007 in table.rows_by_pid
        clock.advance(50)
        await refresh(app, pilot)
        assert 51007 not in table.rows_by_pid


async def test_nvml_faults_show_on_the_panel_and_the_app_keeps_running() -> None:
    clock = ManualClock(1)
    app = make_app("faults", clock)
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        assert "No GPU shown" in text_of(app, "#status") and "mismatch" in text_of(app, "#status")
        clock.advance(11)
        await refresh(app, pilot)
        assert "lost" in text_of(app, "#gpu-1").lower()
        assert app.query_one("#gpu-1").has_class("failed")
        assert "A100" in text_of(app, "#gpu-0")
        clock.advance(10)
        await refresh(app, pilot)
        assert not app.query_one("#gpu-1").has_class("failed") and "A100" in text_of(app, "#gpu-1")
        assert app.is_running


async def test_sort_and_filters() -> None:
    app = make_app("workstation", ManualClock(40))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        table = app.query_one(ProcessTable)
        first = table.selected
        assert first is not None and first.pid == max(table.rows_by_pid.values(), key=lambda r: r.gpu_memory).pid
        await pilot.press("u")
        assert {r.user for r in table.rows_by_pid.values()} == {"alice"}
        await pilot.press("u", "g")
        assert all(0 in r.gpus for r in table.rows_by_pid.values())
        await pilot.press("s")
        assert table.sort_name == "cpu"


def title_of(app: GpudocApp) -> str:
    return text_of(app, "#processes-title")


def enabled_actions(app: GpudocApp) -> dict[str, bool]:
    return {active.binding.action: active.enabled for active in app.active_bindings.values()}


async def test_the_title_above_the_table_says_its_sort_filters_and_row_count() -> None:
    app = make_app("workstation", ManualClock(40))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        table = app.query_one(ProcessTable)
        assert title_of(app) == "Processes — sorted by GPU memory · 4 shown"
        assert "clear_filters" not in enabled_actions(app)
        await pilot.press("u")
        assert title_of(app) == "Processes — sorted by GPU memory · user alice · 3 of 4 shown  (c clears the filters)"
        assert enabled_actions(app)["clear_filters"] and "c Clear filters" in screen_text(app)
        await pilot.press("g", "s")
        assert {r.pid for r in table.rows_by_pid.values()} == {2410, 51007}
        assert title_of(app).startswith("Processes — sorted by CPU% · user alice · GPU 0 · 2 of 4 shown")
        assert title_of(app) in screen_text(app)
        await pilot.press("c")
        assert table.user_filter is None and table.gpu_filter is None and len(table.rows_by_pid) == 4
        assert title_of(app) == "Processes — sorted by CPU% · 4 shown"
        assert "clear_filters" not in enabled_actions(app) and "Clear filters" not in screen_text(app)


async def test_the_title_is_written_only_when_what_it_says_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app("workstation", ManualClock(40))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        table = app.query_one(ProcessTable)
        calls = []
        caption = table.caption
        monkeypatch.setattr(table, "caption", lambda: calls.append(1) or caption())
        await refresh(app, pilot)
        await refresh(app, pilot)
        assert calls == []
        await pilot.press("s")
        assert calls == [1]


async def test_a_filter_on_a_gpu_that_stops_answering_says_so_instead_of_an_empty_table() -> None:
    clock = ManualClock(8)
    app = make_app("faults", clock)
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        await pilot.press("g", "g")
        assert title_of(app).startswith("Processes — sorted by GPU memory · GPU 1 · 1 of 3 shown")
        clock.advance(4)  # GPU 1 falls off the bus: NVML lists no process on it
        await refresh(app, pilot)
        assert app.query_one(ProcessTable).row_count == 0
        assert title_of(app).startswith(
            "Processes — sorted by GPU memory · GPU 1 · 0 of 2 shown: none matches · "
            "GPU 1 not answering: processes on it may be missing"
        )
        status = text_of(app, "#status")
        assert "30.9 GiB in use (GPU 1 not answering, not counted)" in status
        await pilot.press("c")
        assert title_of(app) == (
            "Processes — sorted by GPU memory · 2 shown · GPU 1 not answering: processes on it may be missing"
        )
        clock.advance(10)  # back on the bus
        await refresh(app, pilot)
        assert title_of(app) == "Processes — sorted by GPU memory · 3 shown"
        assert "not answering" not in text_of(app, "#status")


async def test_without_nvml_the_empty_table_does_not_claim_no_process_uses_a_gpu() -> None:
    app = make_app("faults", ManualClock(1))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        assert title_of(app) == (
            "Processes — sorted by GPU memory · none listed · no GPU answering: "
            "only processes holding device files are listed"
        )
        await pilot.press("u")
        assert app.query_one(ProcessTable).user_filter is None
        assert any("no process to filter by user" in str(n.message) for n in app._notifications)


async def test_on_a_narrow_terminal_the_title_wraps_and_nothing_of_it_is_cut() -> None:
    app = make_app("workstation", ManualClock(40))
    async with app.run_test(size=(60, 30)) as pilot:
        await refresh(app, pilot)
        title = app.query_one("#processes-title")
        assert title.region.height == 1
        await pilot.press("u", "g")
        assert title.region.height == 2 and "2 of 4 shown" in screen_text(app)
        await pilot.press("c")
        assert title.region.height == 1 and title.region.bottom == app.query_one(ProcessTable).region.y


async def test_eight_gpus_fit_an_80x30_terminal_without_scrolling_the_screen() -> None:
    app = make_app("dgx", ManualClock(30))
    async with app.run_test(size=(80, 30)) as pilot:
        await refresh(app, pilot)
        assert app.screen.max_scroll_y == 0
        title, table = app.query_one("#processes-title"), app.query_one(ProcessTable)
        assert title.region.bottom == table.region.y and table.region.bottom <= 29 and table.region.height >= 4


async def test_help_screen_opens_and_closes() -> None:
    app = make_app("workstation", ManualClock(5))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def _select(app: GpudocApp, pilot: Any, pid: int) -> None:
    table = app.query_one(ProcessTable)
    table.move_cursor(row=table.get_row_index(str(pid)))
    await pilot.pause()
    assert table.selected is not None and table.selected.pid == pid


@pytest.mark.usefixtures("subreaper")
async def test_confirmed_kill_ends_a_real_orphan(dev: Path, spawn: Spawner) -> None:  # noqa: F811
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True))
    trainer.wait()
    app = make_app("workstation", ManualClock(5), glob=str(dev / "nvidia*"))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        row = app.query_one(ProcessTable).rows_by_pid[worker]
        assert row.verdict.value == "orphan" and not row.in_nvml
        await _select(app, pilot, worker)
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert alive(worker)
        await pilot.press("k")
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not alive(worker)
        await refresh(app, pilot)
        assert worker not in app.query_one(ProcessTable).rows_by_pid


@pytest.mark.usefixtures("subreaper")
async def test_reap_key_ends_orphans_and_spares_active_holders(dev: Path, spawn: Spawner) -> None:  # noqa: F811
    trainer, (orphan,) = spawn.start(trainer_script(dev, exits=True))
    trainer.wait()
    live, (live_worker,) = spawn.start(trainer_script(dev, exits=False))
    app = make_app("workstation", ManualClock(5), glob=str(dev / "nvidia*"))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not alive(orphan)
        assert alive(live.pid) and alive(live_worker)


@pytest.mark.usefixtures("subreaper")
async def test_readonly_offers_no_kill(dev: Path, spawn: Spawner) -> None:  # noqa: F811
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True))
    trainer.wait()
    app = make_app("workstation", ManualClock(5), glob=str(dev / "nvidia*"), readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        await _select(app, pilot, worker)
        await pilot.press("k", "t", "r")
        assert not isinstance(app.screen, ConfirmScreen)
        enabled = {active.binding.action: active.enabled for active in app.active_bindings.values()}
        assert enabled["quit"] and not any(enabled.get(a) for a in ("kill", "terminate", "reap"))
        assert alive(worker)


def test_main_screen_snapshot(snap_compare: Any) -> None:
    async def sample(pilot: Any) -> None:
        await refresh(pilot.app, pilot)

    assert snap_compare(make_app("dgx", ManualClock(30)), terminal_size=SIZE, run_before=sample)


def test_fault_screen_snapshot(snap_compare: Any) -> None:
    async def sample(pilot: Any) -> None:
        await refresh(pilot.app, pilot)

    assert snap_compare(make_app("faults", ManualClock(12)), terminal_size=SIZE, run_before=sample)


def test_help_screen_snapshot(snap_compare: Any) -> None:
    assert snap_compare(make_app("workstation", ManualClock(5)), terminal_size=SIZE, press=["question_mark"])


async def test_mouse_selects_a_row_and_a_resize_keeps_everything_on_screen() -> None:
    app = make_app("workstation", ManualClock(40))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        table = app.query_one(ProcessTable)
        assert table.row_count >= 3
        await pilot.click(ProcessTable, offset=(2, 3))
        await pilot.pause()
        assert table.cursor_row == 2 and table.selected is not None
        chosen = table.selected.pid
        await pilot.resize_terminal(80, 30)
        await refresh(app, pilot)
        assert app.size == (80, 30)
        assert table.region.bottom <= 30 and table.region.height >= 3
        assert table.selected is not None and table.selected.pid == chosen


async def test_host_panel_and_table_stay_in_view_with_eight_gpus() -> None:
    app = make_app("dgx", ManualClock(30))
    async with app.run_test(size=(120, 40)) as pilot:
        await refresh(app, pilot)
        gpus, host, table = app.query_one("#gpus"), app.query_one("#host", HostPanel), app.query_one(ProcessTable)
        assert gpus.max_scroll_y > 0
        assert gpus.region.bottom <= host.region.y and host.region.bottom <= table.region.y
        assert table.region.bottom <= 39 and table.region.height >= 5
        assert "load 1.50 1.25 0.75" in screen_text(app)


def screen_text(app: GpudocApp) -> str:
    """What the terminal shows, as plain text (from Textual's SVG screenshot)."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def test_panels_out_of_view_are_not_repainted_and_are_drawn_fresh_when_scrolled_to() -> None:
    clock = ManualClock(5)
    app = make_app("dgx", clock)
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        gpus = app.query_one("#gpus", VerticalScroll)
        first, last = app.query_one("#gpu-0", GpuPanel), app.query_one("#gpu-7", GpuPanel)
        gpus.scroll_end(animate=False)
        await pilot.pause()
        before = last.lines[2].plain
        assert before in screen_text(app)
        gpus.scroll_home(animate=False)
        await pilot.pause()
        clock.advance(7)
        await refresh(app, pilot)
        assert last.stale and not first.stale
        assert last.lines[2].plain == before and f"{last.device.clock_sm} MHz" not in before
        gpus.scroll_end(animate=False)
        await pilot.pause()
        after = last.lines[2].plain
        assert not last.stale and f"SM {last.device.clock_sm} MHz" in after
        shown = screen_text(app)
        assert after in shown and before not in shown


async def test_panel_lines_wrap_on_a_narrow_terminal() -> None:
    app = make_app("dgx", ManualClock(30))
    async with app.run_test(size=(60, 40)) as pilot:
        await refresh(app, pilot)
        panel = app.query_one("#gpu-0", GpuPanel)
        inside = panel.size.width - 4
        assert len(panel.lines) > 4 and all(line.cell_length <= inside for line in panel.lines)
        assert panel.size.height == len(panel.lines) + 2
        rows = [panel.render_line(y).text for y in range(panel.size.height)]
        assert rows[0].startswith("╭") and rows[-1].startswith("╰")
        assert all(len(row) == panel.size.width and row[0] == row[-1] == "│" for row in rows[1:-1])
        for width in (130, 121):
            await pilot.resize_terminal(width, 40)
            await refresh(app, pilot)
            assert len(panel.lines) == 4 and panel.size.height == 6
            rows = [panel.render_line(y).text for y in range(panel.size.height)]
            assert rows[0].endswith("╮") and rows[-1].endswith("╯")
            assert all(len(row) == panel.size.width and row[-1] == "│" for row in rows[1:-1])


async def test_a_theme_switch_redraws_the_panels_in_the_new_colours() -> None:
    app = make_app("workstation", ManualClock(5))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        panel = app.query_one("#gpu-0", GpuPanel)
        dark = {segment.style.bgcolor for segment in panel.render_line(0) if segment.style}
        app.theme = "textual-light"
        await pilot.pause()
        light = {segment.style.bgcolor for segment in panel.render_line(0) if segment.style}
        assert light and light.isdisjoint(dark)


async def test_panel_rows_are_drawn_as_content_render_draws_them() -> None:
    """The panels turn their lines into segments themselves; the result must be what
    Textual's own ``Content.render`` makes of them (in the panel's styles)."""
    app = make_app("faults", ManualClock(12))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        panels = [*app.query(GpuPanel), app.query_one("#host", HostPanel)]
        failed = [panel for panel in panels if panel.has_class("failed")]
        assert failed and len(failed) < len(panels)
        frame_colours = {p.has_class("failed"): next(iter(p.render_line(0))).style.color for p in app.query(GpuPanel)}
        assert frame_colours[True] != frame_colours[False]
        for panel in panels:
            for line in panel.lines:
                expected = [
                    (text, style.rich_style)
                    for text, style in line.render(panel.visual_style, end="", parse_style=panel._get_style)
                    if text
                ]
                assert [(s.text, s.style) for s in panel._segments(line)] == expected


class GatedMonitor(Monitor):
    """A monitor whose samples wait until the test opens the gate (a stalled driver)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def sample(self) -> MonitorSample:
        self.gate.wait(30)
        return super().sample()


async def test_the_screen_comes_up_while_the_first_sample_is_stalled() -> None:
    monitor = GatedMonitor(SimulatedBackend("workstation", clock=ManualClock(5)), device_glob="/nonexistent/nvidia*",
                           host=FixedHost(), holder_interval=0.0, window=0.1)
    app = GpudocApp(monitor, interval=3600, host_name="testhost")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.samples == 0 and not app.query(GpuPanel) and app.query_one(ProcessTable).is_mounted
        monitor.gate.set()
        await refresh(app, pilot)
        assert app.samples >= 1 and "RTX 4090" in text_of(app, "#gpu-0")


class FailingMonitor(Monitor):
    """A monitor whose samples raise while ``failing`` is set (a bug or an unexpected OS error)."""

    failing = False

    def sample(self) -> MonitorSample:
        if self.failing:
            raise PermissionError("[Errno 13] Permission denied: '/proc/stat'")
        return super().sample()


async def test_a_failed_sample_is_shown_as_an_error_and_the_panels_as_the_last_sample() -> None:
    monitor = FailingMonitor(SimulatedBackend("workstation", clock=ManualClock(5)), device_glob="/nonexistent/nvidia*",
                             host=FixedHost(), holder_interval=0.0, window=0.1)
    app = GpudocApp(monitor, interval=3600, host_name="testhost")
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        status = app.query_one("#status")
        assert not status.has_class("error")
        monitor.failing = True
        await refresh(app, pilot)
        assert text_of(app, "#status") == (
            "sampling failed: PermissionError: [Errno 13] Permission denied: '/proc/stat' "
            "(retrying; the panels show the last sample)"
        )
        assert status.has_class("error") and "RTX 4090" in text_of(app, "#gpu-0")
        monitor.failing = False
        await refresh(app, pilot)
        assert not status.has_class("error") and text_of(app, "#status").startswith("2 GPU(s) via simulated")


def start_run(code: str) -> Run:
    return Run([sys.executable, "-c", textwrap.dedent(code)])


async def wait_for_output(app: GpudocApp, pilot: Any, run: Run, text: str) -> None:
    for _ in range(200):
        if any(text in line for line in run.status().lines):
            break
        await asyncio.sleep(0.05)
    await refresh(app, pilot)


@pytest.mark.usefixtures("subreaper")
async def test_a_run_is_shown_marked_in_the_table_and_stopped_whole(dev: Path) -> None:  # noqa: F811
    run = start_run(f"print('epoch 1 loss 0.25', flush=True)\n{textwrap.dedent(trainer_script(dev, exits=False))}")
    try:
        app = make_app("workstation", ManualClock(5), glob=str(dev / "nvidia*"), run=run)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_output(app, pilot, run, "ready")
            shown = text_of(app, "#run")
            assert "RUN running" in shown and f"pid {run.pid}" in shown and "epoch 1 loss 0.25" in shown
            assert "  GPU 0  pid" in shown  # the run's processes hold nvidia0 (not in NVML: no memory figure)
            members = {s.pid for s in run.members()}
            table = app.query_one(ProcessTable)
            assert len(members) == 2 and members <= set(table.rows_by_pid)
            commands = {pid: str(table.get_cell(str(pid), table._column_keys[-1])) for pid in members}
            assert all(command.startswith("run ") for command in commands.values())
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await refresh(app, pilot)
            assert not any(alive(pid) for pid in members)
            assert "RUN stopped after" in text_of(app, "#run")
    finally:
        run.stop(grace=1)


async def test_while_a_run_is_being_stopped_it_says_so_and_x_is_not_offered_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tui_app, "STOP_GRACE", 3.0)
    run = start_run("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ends only with the SIGKILL after the grace
        print("working", flush=True)
        time.sleep(60)
    """)
    try:
        app = make_app("workstation", ManualClock(5), run=run)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_output(app, pilot, run, "working")
            await pilot.press("x", "y")
            await pilot.pause()
            assert "RUN stopping, running" in text_of(app, "#run") and run.running
            assert "stop_run" not in enabled_actions(app)
            await pilot.press("x")
            assert not isinstance(app.screen, ConfirmScreen)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert not run.running and "RUN stopped after" in text_of(app, "#run")
            assert "stopping" not in text_of(app, "#run") and "stop_run" not in enabled_actions(app)
    finally:
        run.stop(grace=1)


async def test_quitting_while_a_run_is_going_asks_and_stops_it() -> None:
    run = start_run("import time\nprint('working', flush=True)\ntime.sleep(60)")
    try:
        app = make_app("workstation", ManualClock(5), run=run)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_output(app, pilot, run, "working")
            await pilot.press("q")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            assert app.is_running and run.running
            await pilot.press("q", "y")
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert not run.running and not alive(run.pid)
    finally:
        run.stop(grace=1)


async def test_a_run_out_of_memory_says_so_and_the_end_is_notified() -> None:
    run = start_run("""
        print("step 1")
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 8.00 GiB")
        raise SystemExit(1)
    """)
    app = make_app("workstation", ManualClock(5), run=run)
    async with app.run_test(size=SIZE) as pilot:
        run.wait(20)
        await refresh(app, pilot)
        shown = text_of(app, "#run")
        assert "failed (exit 1) after" in shown and "  no GPU use seen  pid" in shown
        assert "out of memory: torch.OutOfMemoryError" in shown
        assert "oom max-batch" in shown
        assert any("the run failed (exit 1)" in str(n.message) for n in app._notifications)
        await pilot.press("q")
        assert not isinstance(app.screen, ConfirmScreen)


@pytest.mark.usefixtures("subreaper")
async def test_an_ended_run_says_which_gpu_it_used_and_is_no_longer_offered_to_stop(
    dev: Path, tmp_path: Path,  # noqa: F811
) -> None:
    go = tmp_path / "go"
    run = start_run(f"""
        import os, time
        held = open({str(dev / "nvidia0")!r}, "rb")
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.02)
    """)
    try:
        app = make_app("workstation", ManualClock(5), glob=str(dev / "nvidia*"), run=run)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_output(app, pilot, run, "ready")
            assert "RUN running" in text_of(app, "#run") and "  GPU 0  pid" in text_of(app, "#run")
            assert enabled_actions(app)["stop_run"] and "x Stop run" in screen_text(app)
            go.touch()
            run.wait(20)
            await refresh(app, pilot)
            shown = text_of(app, "#run")
            assert "RUN succeeded after" in shown and "  used GPU 0  pid" in shown and "no GPU" not in shown
            assert "stop_run" not in enabled_actions(app) and "Stop run" not in screen_text(app)
            await pilot.press("x")
            assert not isinstance(app.screen, ConfirmScreen)
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running
    finally:
        run.stop(grace=1)


@pytest.mark.usefixtures("subreaper")
async def test_a_worker_an_ended_run_left_on_a_gpu_is_shown_and_can_be_stopped(dev: Path) -> None:  # noqa: F811
    run = start_run(trainer_script(dev, exits=True))  # the launcher exits, its worker keeps nvidia0 open
    try:
        app = make_app("workstation", ManualClock(5), glob=str(dev / "nvidia*"), run=run)
        async with app.run_test(size=SIZE) as pilot:
            status = run.wait(20)
            (worker,) = [int(line.split()[1]) for line in status.lines if line.startswith("pid ")]
            await refresh(app, pilot)
            shown = text_of(app, "#run")
            assert "RUN succeeded after" in shown
            assert f"used GPU 0; 1 process of it still holds GPU 0: {worker} orphan (x stops it)" in shown
            assert enabled_actions(app)["stop_run"]
            await pilot.press("q")
            assert isinstance(app.screen, ConfirmScreen) and str(worker) in app.screen.question
            await pilot.press("n")
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen) and "still use the GPUs" in app.screen.question
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await refresh(app, pilot)
            assert not alive(worker)
            shown = text_of(app, "#run")
            assert "used GPU 0  pid" in shown and "still holds" not in shown
            assert "stop_run" not in enabled_actions(app)
            assert any("stopped 1 process(es) of the run" in str(n.message) for n in app._notifications)
    finally:
        run.stop(grace=1)


async def test_readonly_hides_stop_run_but_quitting_still_stops_the_run() -> None:
    run = start_run("import time\nprint('working', flush=True)\ntime.sleep(60)")
    try:
        app = make_app("workstation", ManualClock(5), run=run, readonly=True)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_output(app, pilot, run, "working")
            enabled = {active.binding.action: active.enabled for active in app.active_bindings.values()}
            assert not enabled.get("stop_run")
            await pilot.press("x")
            assert not isinstance(app.screen, ConfirmScreen) and run.running
            await pilot.press("q")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await pilot.pause()
        assert not run.running
    finally:
        run.stop(grace=1)


async def test_without_a_run_there_is_no_stop_key_and_quit_does_not_ask() -> None:
    app = make_app("workstation", ManualClock(5))
    async with app.run_test(size=SIZE) as pilot:
        await refresh(app, pilot)
        assert not app.query("#run")
        enabled = {active.binding.action: active.enabled for active in app.active_bindings.values()}
        assert enabled["quit"] and not enabled.get("stop_run")
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
