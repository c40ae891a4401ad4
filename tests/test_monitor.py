"""The monitor (shared by the TUI and serve) on simulated GPUs: what of this host it scans and
signals, with real processes holding fake device files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from reap.conftest import Spawner, alive, dev, spawn, subreaper, trainer_script  # noqa: F401

import gpudoc.monitor
import gpudoc.reap.service
from gpudoc.gpu import NA, ManualClock, SimulatedBackend
from gpudoc.monitor import Monitor
from gpudoc.reap.classify import Verdict
from gpudoc.reap.end import Outcome
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB


@pytest.fixture
def globs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every device-file pattern the monitor looks up or scans (the real calls are made)."""
    seen: list[str] = []
    files, scan = gpudoc.monitor.device_files, gpudoc.reap.service.scan

    def looked_up(pattern: str) -> tuple[str, ...]:
        seen.append(pattern)
        return files(pattern)

    def scanned(pattern: str, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(pattern)
        return scan(pattern, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gpudoc.monitor, "device_files", looked_up)
    monkeypatch.setattr(gpudoc.reap.service, "scan", scanned)
    return seen


@pytest.mark.usefixtures("subreaper")
def test_simulated_gpus_scan_no_device_file_of_this_host_unless_a_glob_names_files(
    dev: Path, spawn: Spawner, globs: list[str]  # noqa: F811
) -> None:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True))
    trainer.wait()
    demo = Monitor(SimulatedBackend("dgx", clock=ManualClock(5)), window=0.1)
    sample = demo.sample()
    assert globs == [], f"the default {DEFAULT_DEVICE_GLOB} was looked at under simulation"
    assert sample.holders is None and "not scanned" in (sample.holders_error or "")
    assert {r.pid for r in sample.processes} >= {p.pid for p in demo.backend.scenario.processes if p.alive(5)}
    assert demo.orphans(sample) == [] and demo.reap_orphans(sample.processes) is None and alive(worker)
    named = Monitor(SimulatedBackend("dgx", clock=ManualClock(5)), device_glob=str(dev / "nvidia*"), window=0.1)
    scanned = named.sample()
    rows = {r.pid: r for r in scanned.processes}
    assert globs and DEFAULT_DEVICE_GLOB not in globs
    assert rows[worker].verdict is Verdict.ORPHAN and named.orphans(scanned) == [rows[worker]]
    result = named.reap_orphans(named.orphans(scanned))
    assert result is not None and result.actions[worker].outcome is Outcome.ENDED and not alive(worker)


def test_a_simulated_pid_is_not_taken_for_the_host_process_with_that_number(spawn: Spawner) -> None:  # noqa: F811
    bystander, _ = spawn.start("print('ready', flush=True)\nimport time\ntime.sleep(120)")
    scenario = {
        "name": "clash", "gpus": [{"name": "Sim GPU", "memory_total_mib": 1024}],
        "processes": [{"pid": bystander.pid, "gpu": 0, "memory_mib": 100, "user": "sim", "command": "python sim.py"}],
    }
    monitor = Monitor(SimulatedBackend(scenario, clock=ManualClock(1)))
    (row,) = monitor.sample().processes
    assert (row.pid, row.user, row.command, row.start_ticks, row.rss) == (bystander.pid, "sim", "python sim.py", NA, NA)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        assert monitor.signal(row, sig).outcome is Outcome.GONE
    assert alive(bystander.pid)


@pytest.mark.usefixtures("subreaper")
def test_reaping_ends_only_the_orphans_confirmed_not_those_a_later_scan_found(
    dev: Path, spawn: Spawner  # noqa: F811
) -> None:
    first, (asked,) = spawn.start(trainer_script(dev, exits=True))
    first.wait()
    monitor = Monitor(SimulatedBackend("dgx", clock=ManualClock(5)), device_glob=str(dev / "nvidia*"),
                      holder_interval=0.0, window=0.1)
    shown = monitor.orphans(monitor.sample())  # what the user is asked about
    assert [r.pid for r in shown] == [asked]
    second, (unasked,) = spawn.start(trainer_script(dev, exits=True))
    second.wait()
    assert {r.pid for r in monitor.orphans(monitor.sample())} == {asked, unasked}  # a scan before the answer
    result = monitor.reap_orphans(shown)
    assert result is not None and set(result.actions) == {asked}
    assert not alive(asked) and alive(unasked)


@pytest.mark.skipif(os.geteuid() != 0, reason="an orphan of another user needs root to start")
@pytest.mark.usefixtures("subreaper")
def test_another_users_orphan_is_not_offered(dev: Path, spawn: Spawner) -> None:  # noqa: F811
    trainer, (theirs,) = spawn.start(trainer_script(dev, exits=True), user="nobody")
    trainer.wait()
    monitor = Monitor(SimulatedBackend("dgx", clock=ManualClock(5)), device_glob=str(dev / "nvidia*"), window=0.1)
    sample = monitor.sample()
    assert next(r for r in sample.processes if r.pid == theirs).verdict is Verdict.ORPHAN
    assert monitor.orphans(sample) == []


@pytest.mark.usefixtures("subreaper")
def test_holders_are_judged_again_by_each_samples_nvml_reading(dev: Path, spawn: Spawner) -> None:  # noqa: F811
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True, files=("nvidiactl", "nvidia1")))
    trainer.wait()
    clock = ManualClock(5)  # faults: NVML answers at 5 s; GPU 1 is off the bus from 10 s to 20 s
    monitor = Monitor(SimulatedBackend("faults", clock=clock), device_glob=str(dev / "nvidia*"),
                      holder_interval=3600, window=0.1)

    def verdict() -> tuple[Verdict, str, list[int]]:
        sample = monitor.sample()
        row = next(r for r in sample.processes if r.pid == worker)
        return row.verdict, str(row.reason), [r.pid for r in monitor.orphans(sample)]

    assert verdict() == (Verdict.ORPHAN, verdict()[1], [worker])
    clock.advance(7)  # the scan is kept; GPU 1 cannot be read now
    judged, reason, offered = verdict()
    assert judged is Verdict.UNCONFIRMED and offered == []
    assert "CUDA context unknown (GPU 1 could not be read" in reason and "not in NVML's list" not in reason
    assert monitor.reap_orphans([r for r in monitor.sample().processes if r.pid == worker]) is None
    assert alive(worker)
    clock.t = 1  # the loop's start: a driver/library mismatch, NVML cannot be asked at all
    judged, reason, offered = verdict()
    assert judged is Verdict.UNCONFIRMED and "CUDA context unknown (NVML unavailable)" in reason and offered == []


@pytest.mark.usefixtures("subreaper")
def test_an_orphan_nvml_lists_later_is_detached_before_the_next_scan(dev: Path, spawn: Spawner) -> None:  # noqa: F811
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True))
    trainer.wait()
    scenario = {
        "name": "context", "gpus": [{"name": "Sim GPU", "memory_total_mib": 1024}],
        "processes": [{"pid": worker, "gpu": 0, "memory_mib": 100, "start_s": 10}],
    }
    clock = ManualClock(5)
    monitor = Monitor(SimulatedBackend(scenario, clock=clock), device_glob=str(dev / "nvidia*"),
                      holder_interval=3600, window=0.1)
    assert [r.pid for r in monitor.orphans(monitor.sample())] == [worker]
    clock.t = 11  # NVML lists it now: it owns a CUDA context
    sample = monitor.sample()
    row = next(r for r in sample.processes if r.pid == worker)
    assert row.verdict is Verdict.DETACHED and "owns a CUDA context (GPU 0: 100.0 MiB)" in str(row.reason)
    assert monitor.orphans(sample) == [] and monitor.reap_orphans([row]) is None and alive(worker)
