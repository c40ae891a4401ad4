"""`gpudoc tui` as a user starts it: on a pseudo-terminal, quit with q."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from reap.conftest import Spawner, alive, dev, spawn, subreaper, trainer_script  # noqa: F401

import gpudoc.monitor
import gpudoc.reap.service
from gpudoc.cli import cli
from gpudoc.monitor import MonitorSample
from gpudoc.reap.classify import Verdict
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB
from gpudoc.tui.app import GpudocApp


class Terminal:
    """``gpudoc ARGS`` on a pseudo-terminal whose output is read as a terminal would."""

    def __init__(self, *args: str, hup_ignored: bool = False) -> None:
        """``hup_ignored``: started with SIGHUP ignored, as ``nohup`` starts it."""
        self.main, child = os.openpty()
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", "GPUDOC_SIMULATE": ""}
        self.proc = subprocess.Popen([sys.executable, "-m", "gpudoc", *args],
                                     stdin=child, stdout=child, stderr=child, env=env,
                                     preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
                                     if hup_ignored else None)
        os.close(child)
        self.seen = b""

    def read_until(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.main], [], [], 0.5)
            if ready:
                self.seen += os.read(self.main, 65536)
        assert text in self.seen, self.seen[-2000:].decode(errors="replace")

    def type(self, keys: bytes) -> None:
        os.write(self.main, keys)

    def exit_code(self, timeout: float = 20) -> int:
        """Wait for the exit, draining the output meanwhile (or drawing blocks)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.main], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.main, 65536)
                except OSError:
                    break
        return self.proc.wait(5)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.main)


def test_demo_starts_draws_and_quits() -> None:
    with Terminal("tui", "--demo", "dgx", "--device-glob", "/none/*") as term:
        term.read_until(b"H100")
        term.type(b"q")
        assert term.exit_code() == 0


def test_a_run_is_watched_and_quitting_stops_it() -> None:
    code = "import time; print('hello from the run', flush=True); time.sleep(60)"
    with Terminal("tui", "--demo", "workstation", "--device-glob", "/none/*", "--", sys.executable, "-c", code) as term:
        term.read_until(b"hello from the run")
        term.type(b"q")
        term.read_until(b"Stop it and quit?")
        term.type(b"y")
        assert term.exit_code() == 130
        assert b"gpudoc: the run stopped after" in term.seen


def test_the_exit_status_follows_a_run_that_failed_by_itself() -> None:
    code = "print('bye', flush=True); raise SystemExit(4)"
    with Terminal("tui", "--demo", "workstation", "--device-glob", "/none/*", "--", sys.executable, "-c", code) as term:
        term.read_until(b"failed (exit 4)")
        term.type(b"q")
        assert term.exit_code() == 1
        assert b"gpudoc: the run failed (exit 4) after" in term.seen


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "closed"])
def test_sigterm_or_sighup_stops_the_run_restores_the_terminal_and_exits_130(tmp_path: Path, how: str) -> None:
    pid_file = tmp_path / "pid"
    run = ["sh", "-c", f"echo $$ > {shlex.quote(str(pid_file))}.tmp && mv {shlex.quote(str(pid_file))}.tmp "
           f"{shlex.quote(str(pid_file))} && exec sleep 300"]
    with Terminal("tui", "--demo", "workstation", "--device-glob", "/none/*", "--", *run) as term:
        term.read_until(b"RUN")
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        sleeper = int(pid_file.read_text())
        assert alive(sleeper)
        if how == "closed":  # the terminal window went away: its reads and writes now fail
            os.close(term.main)
            term.main = os.open(os.devnull, os.O_RDONLY)
        term.proc.send_signal(signal.SIGHUP if how != "SIGTERM" else signal.SIGTERM)
        code = term.proc.wait(30) if how == "closed" else term.exit_code()
        assert code == 130, term.seen[-2000:]
        assert not alive(sleeper)
        if how != "closed":
            tail = term.seen.rsplit(b"\x1b[?1049l", 1)  # the alternate screen was left, then the lines
            assert len(tail) == 2, term.seen[-2000:]
            assert f"gpudoc: {how} received: the run was stopped".encode() in tail[1]
            assert b"gpudoc: the run stopped after" in tail[1]


def test_a_hangup_ignored_as_nohup_does_leaves_the_run_going() -> None:
    """Under nohup SIGHUP stays ignored, as in gpudoc run: the run and the monitor go on."""
    code = "import time; print('hello from the run', flush=True); time.sleep(60)"
    with Terminal("tui", "--demo", "workstation", "--device-glob", "/none/*", "--", sys.executable, "-c", code,
                  hup_ignored=True) as term:
        term.read_until(b"hello from the run")
        term.proc.send_signal(signal.SIGHUP)
        term.type(b"q")  # the monitor still answers, and the run still goes: quitting asks first
        term.read_until(b"Stop it and quit?")
        assert b"SIGHUP received" not in term.seen
        term.type(b"y")
        assert term.exit_code() == 130
        assert b"gpudoc: the run stopped after" in term.seen and b"SIGHUP" not in term.seen


def _headless(monkeypatch: pytest.MonkeyPatch, drive: Callable[[Any], Awaitable[None]]) -> None:
    """`gpudoc tui` runs its real app and monitor, without a terminal, driven by ``drive``."""
    original = GpudocApp.run

    def run(self: GpudocApp, **_: object) -> object:
        return original(self, headless=True, size=(130, 48), auto_pilot=drive)

    monkeypatch.setattr(GpudocApp, "run", run)


async def _first_sample(pilot: Any) -> MonitorSample:
    while pilot.app.sample is None:
        await pilot.pause(0.05)
    return pilot.app.sample


def _tui(*args: str) -> Result:
    return CliRunner().invoke(cli, ["tui", *args], env={"GPUDOC_SIMULATE": None, "GPUDOC_DEVICE_GLOB": None})


def test_a_logdir_that_is_a_dangling_symlink_is_refused_as_gpudoc_run_refuses_it(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    logdir.symlink_to(tmp_path / "gone")
    marker = tmp_path / "ran"
    result = _tui("--demo", "--logdir", str(logdir), "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert result.exit_code == 2, result.output
    assert f"{logdir}: no such directory (a symbolic link to {tmp_path / 'gone'}" in result.output
    assert not marker.exists()


@pytest.mark.usefixtures("subreaper")
def test_demo_scans_no_device_file_of_this_host_and_r_ends_nothing(
    monkeypatch: pytest.MonkeyPatch, dev: Path, spawn: Spawner  # noqa: F811
) -> None:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True))
    trainer.wait()
    globs: list[str] = []
    files, scan = gpudoc.monitor.device_files, gpudoc.reap.service.scan
    monkeypatch.setattr(gpudoc.monitor, "device_files", lambda pattern: globs.append(pattern) or files(pattern))
    monkeypatch.setattr(gpudoc.reap.service, "scan", lambda pattern, **kw: globs.append(pattern) or scan(pattern, **kw))
    seen: list[MonitorSample] = []
    notes: list[str] = []

    async def drive(pilot: Any) -> None:
        seen.append(await _first_sample(pilot))
        await pilot.press("r")
        await pilot.pause()
        notes.extend(str(n.message) for n in pilot.app._notifications)
        await pilot.press("q")

    _headless(monkeypatch, drive)
    result = _tui("--demo", "dgx")
    assert result.exit_code == 0, result.output
    assert globs == [], f"the host's {DEFAULT_DEVICE_GLOB} was scanned under --demo"
    (sample,) = seen
    assert sample.holders is None and "not scanned" in (sample.holders_error or "")
    assert "no orphaned GPU holder of yours in the last scan" in notes and alive(worker)


@pytest.mark.usefixtures("subreaper")
def test_demo_with_a_device_glob_scans_those_files_and_r_ends_the_orphan(
    monkeypatch: pytest.MonkeyPatch, dev: Path, spawn: Spawner  # noqa: F811
) -> None:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True))
    trainer.wait()
    verdicts: list[object] = []

    async def drive(pilot: Any) -> None:
        sample = await _first_sample(pilot)
        verdicts.extend(r.verdict for r in sample.processes if r.pid == worker)
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("y")
        await pilot.app.workers.wait_for_complete()
        await pilot.press("q")

    _headless(monkeypatch, drive)
    result = _tui("--demo", "dgx", "--device-glob", str(dev / "nvidia*"))
    assert result.exit_code == 0, result.output
    assert verdicts == [Verdict.ORPHAN] and not alive(worker)


@pytest.mark.usefixtures("subreaper")
def test_a_gpu_whose_process_list_nvml_will_not_give_shows_na_and_its_holders_are_not_reaped(
    monkeypatch: pytest.MonkeyPatch, dev: Path, spawn: Spawner, tmp_path: Path  # noqa: F811
) -> None:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True, files=("nvidiactl", "nvidia1")))
    trainer.wait()
    scenario = tmp_path / "mig.json"
    scenario.write_text(json.dumps({
        "name": "mig", "gpus": [{"name": "Sim A100", "memory_total_mib": 40960}] * 2,
        "processes": [{"pid": 4_000_001, "gpu": 0, "memory_mib": 900, "user": "eve", "command": "python a.py"}],
        "faults": [{"kind": "process_list_unavailable", "gpu": 1, "error": "no_permission"}],
    }))
    shown: dict[str, str] = {}
    notes: list[str] = []

    async def drive(pilot: Any) -> None:
        sample = await _first_sample(pilot)
        await pilot.pause()
        shown.update({name: str(pilot.app.query_one(f"#{name}").render()) for name in ("gpu-0", "gpu-1")})
        shown["title"] = str(pilot.app.query_one("#processes-title").render())
        shown["verdict"] = str(next(r.verdict.value for r in sample.processes if r.pid == worker))
        await pilot.press("r")
        await pilot.pause()
        notes.extend(str(n.message) for n in pilot.app._notifications)
        await pilot.press("q")

    _headless(monkeypatch, drive)
    result = _tui("--demo", str(scenario), "--device-glob", str(dev / "nvidia*"))
    assert result.exit_code == 0, result.output
    assert "1 process(es)" in shown["gpu-0"] and "processes N/A" in shown["gpu-1"]
    assert "GPU 1 process list N/A: processes on it may be missing" in shown["title"].replace("\n", " ")
    assert shown["verdict"] == "unconfirmed"
    assert "no orphaned GPU holder of yours in the last scan" in notes and alive(worker)


@pytest.mark.usefixtures("subreaper")
def test_when_the_monitor_fails_the_workers_an_ended_run_left_are_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = textwrap.dedent("""
        import os, time
        worker = os.fork()
        if worker == 0:
            time.sleep(120)  # a dataloader worker that outlives its launcher
            os._exit(0)
        print(f"worker {worker}", flush=True)
    """)
    workers: list[int] = []

    def boom() -> None:
        raise RuntimeError("a bug in the monitor")

    async def drive(pilot: Any) -> None:
        run = pilot.app.training_run
        while run.running or not any(line.startswith("worker ") for line in run.status().lines):
            await pilot.pause(0.05)
        workers.extend(int(line.split()[1]) for line in run.status().lines if line.startswith("worker "))
        assert alive(workers[0])
        pilot.app.call_later(boom)
        await pilot.pause()

    _headless(monkeypatch, drive)
    try:
        result = _tui("--demo", "workstation", "--device-glob", "/none/*", "--", sys.executable, "-c", launcher)
        assert workers and not alive(workers[0]), "the worker the run left was not stopped"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert result.exit_code == 70
    assert "RuntimeError: a bug in the monitor" in result.stderr
    assert "gpudoc: error: the monitor failed (its traceback is above); the run succeeded after" in result.stderr


@pytest.mark.usefixtures("subreaper")
def test_r_ends_the_orphans_it_asked_about_not_one_found_while_it_asked(
    monkeypatch: pytest.MonkeyPatch, dev: Path, spawn: Spawner  # noqa: F811
) -> None:
    first, (asked,) = spawn.start(trainer_script(dev, exits=True))
    first.wait()
    unasked: list[int] = []
    questions: list[str] = []

    async def drive(pilot: Any) -> None:
        app = pilot.app
        await _first_sample(pilot)
        await pilot.press("r")
        await pilot.pause()
        questions.append(app.screen.question)
        second, (late,) = spawn.start(trainer_script(dev, exits=True))
        second.wait()
        unasked.append(late)
        while late not in {r.pid for r in app.sample.processes}:  # the monitor scans again meanwhile
            app.poll()
            await app.workers.wait_for_complete()
            await pilot.pause(0.1)
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await pilot.press("q")

    _headless(monkeypatch, drive)
    result = _tui("--demo", "dgx", "--device-glob", str(dev / "nvidia*"))
    assert result.exit_code == 0, result.output
    assert questions[0].startswith("End 1 orphan(s) you own") and f"  {asked} " in questions[0]
    assert not alive(asked) and alive(unasked[0])


def test_the_readmes_first_command_shows_the_run_its_curves_and_a_check_firing(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    first = "python3 -m venv .venv && .venv/bin/pip install -e . && "
    line = next(line for line in readme.splitlines() if line.startswith(first))
    args = shlex.split(line.split("&& .venv/bin/gpudoc ", 1)[1].replace('"$(mktemp -d)"', str(tmp_path)))
    assert args[:4] == ["tui", "--demo", "dgx", "--"] and "--buggy-scale" in args
    args[4] = sys.executable  # the venv's python, wherever the suite runs
    with Terminal(*args[:3], "--device-glob", "/none/*", *args[3:]) as term:
        term.read_until(b"1 event file \xc2\xb7 step")  # the curves' header
        term.read_until(b"checks: 2 (1 error)")  # implied-range and psnr-implausible
        term.type(b"q")
        term.read_until(b"Stop it and quit?")
        term.type(b"y")
        assert term.exit_code() == 130


@pytest.mark.usefixtures("subreaper")
def test_a_failed_run_whose_leftovers_x_stopped_still_exits_1_as_a_failed_run(
    monkeypatch: pytest.MonkeyPatch, dev: Path,  # noqa: F811
) -> None:
    """x on what a failed run left does not make it a stopped run: exit 1, not 130, and
    the line on exit says how the command itself ended."""
    leader = textwrap.dedent(f"""
        import os, time
        held = open({str(dev / "nvidia0")!r}, "rb")
        worker = os.fork()
        if worker == 0:
            time.sleep(120)  # a dataloader worker that outlives its launcher, holding the GPU
            os._exit(0)
        print(f"worker {{worker}}", flush=True)
        os._exit(5)
    """)
    workers: list[int] = []

    async def drive(pilot: Any) -> None:
        app = pilot.app
        run = app.training_run
        while run.running or "x stops it" not in str(app.query_one("#run").render()):
            await pilot.pause(0.05)
        workers.extend(int(line.split()[1]) for line in run.status().lines if line.startswith("worker "))
        await pilot.press("x")
        await pilot.press("y")
        await app.workers.wait_for_complete()
        deadline = time.monotonic() + 15
        while workers and alive(workers[0]) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.press("q")

    _headless(monkeypatch, drive)
    try:
        result = _tui("--demo", "workstation", "--device-glob", str(dev / "nvidia*"), "--",
                      sys.executable, "-c", leader)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert workers and not alive(workers[0])
    assert "gpudoc: the run failed (exit 5) after" in result.stderr, result.stderr
    assert result.exit_code == 1, result.stderr
