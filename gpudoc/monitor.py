"""One sample of everything the monitor shows: GPUs, the host, and every process that uses
a GPU — those NVML lists and those that only hold device files — with its reap verdict.

Shared by the TUI and the Prometheus exporter; the caller decides how often to sample.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gpudoc.gpu.backend import GpuBackend
from gpudoc.gpu.model import GpuSnapshot
from gpudoc.host import HostProbe, HostProcess, HostSnapshot
from gpudoc.na import NA, NotAvailable
from gpudoc.reap.classify import HolderReport, ReapReport, Verdict, rejudge
from gpudoc.reap.end import Action, Outcome, Scope, end_processes, plan
from gpudoc.reap.proc import read_stat, user_name
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB, device_files
from gpudoc.reap.service import ReapResult, end_targets, inspect_holders


@dataclass(frozen=True)
class ProcessRow:
    """A process using the GPUs. ``verdict``/``reason`` come from the last holder scan (NA
    when the process holds no device file gpudoc can see); ``start_ticks`` identifies it
    for a later signal; ``sid`` is its session (a run gpudoc started is one session)."""

    pid: int
    user: str | NotAvailable
    gpus: tuple[int, ...]
    gpu_memory: int | NotAvailable
    cpu_percent: float | NotAvailable
    rss: int | NotAvailable
    age: float | NotAvailable
    command: str
    verdict: Verdict | NotAvailable
    reason: str | NotAvailable
    in_nvml: bool
    start_ticks: int | NotAvailable
    sid: int | NotAvailable


@dataclass(frozen=True)
class MonitorSample:
    """What one poll saw. ``holders_error`` says why holders could not be scanned."""

    gpus: GpuSnapshot
    host: HostSnapshot
    processes: tuple[ProcessRow, ...]
    holders: ReapReport | None
    holders_error: str | None = None


class Monitor:
    """Samples a GPU backend, the host and the device holders.

    The holder scan (a /proc walk plus a CPU-sampling window) runs at most every
    ``holder_interval`` seconds; samples in between reuse it, judged again by their own NVML
    reading (an orphan is not one while NVML or its GPU cannot be read). ``clock`` is a
    monotonic clock and ``host`` the host probe (a test passes its own).

    ``device_glob`` None scans no device file. Simulated GPUs are not this host's: with the
    default glob nothing is scanned (this host's holders would be judged by simulated NVML,
    and could be ended for it), and the PIDs the simulation lists are not looked up on this
    host (another process may have the number); a glob naming other files is scanned.
    """

    def __init__(
        self,
        backend: GpuBackend,
        *,
        device_glob: str | None = DEFAULT_DEVICE_GLOB,
        holder_interval: float = 5.0,
        window: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        host: HostProbe | None = None,
    ) -> None:
        self.backend = backend
        self.simulated = backend.name == "simulated"
        self.device_glob = None if self.simulated and device_glob == DEFAULT_DEVICE_GLOB else device_glob
        self.holder_interval = holder_interval
        self.window = window
        self.clock = clock
        self.host = host or HostProbe()
        self._holders: ReapReport | None = None  # the last scan, judged by the last sample's NVML reading
        self._scanned: ReapReport | None = None  # the last scan as judged when it ran
        self._holders_error: str | None = None
        self._holders_at: float | None = None

    def sample(self) -> MonitorSample:
        """Poll everything once; never raises for a GPU or /proc problem."""
        gpus = self.backend.snapshot()
        host = self.host.sample()
        self._refresh_holders(gpus)
        self._holders = rejudge(self._scanned, gpus) if self._scanned is not None else None
        listed: dict[int, list[tuple[int, int | NotAvailable]]] = {}
        for device in gpus.devices:
            for p in device.processes:
                listed.setdefault(p.pid, []).append((device.index, p.used_memory))
        report = self._holders.holders if self._holders else ()
        holders = {h.pid: h for h in report if h.verdict is not Verdict.FOREIGN}
        pids = set(listed) | set(holders)
        details = self.host.processes(set(holders) if self.simulated else pids)
        rows = [self._row(pid, listed.get(pid, []), holders.get(pid), details.get(pid)) for pid in sorted(pids)]
        return MonitorSample(gpus, host, tuple(rows), self._holders, self._holders_error)

    def rescan_holders(self) -> None:
        """Make the next sample scan the holders again (after an action changed them)."""
        self._holders_at = None

    def _refresh_holders(self, gpus: GpuSnapshot) -> None:
        now = self.clock()
        if self._holders_at is not None and now - self._holders_at < self.holder_interval:
            return
        self._holders_at = now
        if self.device_glob is None:
            self._scanned, self._holders_error = None, "simulated GPUs: this host's device files are not scanned"
            return
        if not device_files(self.device_glob):
            self._scanned, self._holders_error = None, f"no device file matches {self.device_glob}"
            return
        try:
            self._scanned = inspect_holders(None, device_glob=self.device_glob, window=self.window, snapshot=gpus)
            self._holders_error = None
        except OSError as exc:
            self._scanned, self._holders_error = None, f"cannot scan /proc: {exc}"

    def _row(
        self,
        pid: int,
        listed: list[tuple[int, int | NotAvailable]],
        holder: HolderReport | None,
        info: HostProcess | None,
    ) -> ProcessRow:
        memory = [m for _, m in listed if isinstance(m, int)]
        gpus = {g for g, _ in listed} | set(holder.gpus if holder else ())
        known_user, known_command = self.backend.process_info(pid)
        stat = read_stat(pid) if info is not None else None
        return ProcessRow(
            pid=pid,
            user=info.user if info else (known_user or NA),
            gpus=tuple(sorted(gpus)),
            gpu_memory=sum(memory) if memory else NA,
            cpu_percent=info.cpu_percent if info else NA,
            rss=info.rss if info else NA,
            age=max(0.0, time.time() - info.create_time) if info else NA,
            command=info.command if info else (known_command or "N/A"),
            verdict=holder.verdict if holder else NA,
            reason=holder.reason if holder else NA,
            in_nvml=bool(listed),
            start_ticks=stat.start_ticks if stat else NA,
            sid=stat.sid if stat else NA,
        )

    def signal(self, row: ProcessRow, sig: signal.Signals, timeout: float = 3.0) -> Action:
        """Send ``sig`` to one process, by the same rules as ``gpudoc reap``: only your own
        processes unless root, never gpudoc/its ancestors/PID 1, identity re-checked."""
        if not isinstance(row.start_ticks, int):
            return Action(row.pid, Outcome.GONE, "none: the process is not visible here")
        if os.geteuid() != 0 and row.user != user_name(os.getuid()):
            return Action(row.pid, Outcome.DENIED, f"none: owned by {row.user}; only root may signal it")
        target = HolderReport(pid=row.pid, verdict=Verdict.ACTIVE, reason="chosen in the monitor",
                              start_ticks=row.start_ticks)
        action = end_processes([target], sig=sig, timeout=timeout)[row.pid]
        self.rescan_holders()
        return action

    def orphans(self, sample: MonitorSample) -> list[ProcessRow]:
        """The rows of ``sample`` that :meth:`reap_orphans` may end: the invoking user's orphans."""
        me = user_name(os.getuid())
        return [r for r in sample.processes if r.verdict is Verdict.ORPHAN and r.user == me]

    def reap_orphans(self, confirmed: Iterable[ProcessRow], timeout: float = 5.0) -> ReapResult | None:
        """End the ``confirmed`` rows (from :meth:`orphans`) that the last holder scan still
        finds orphans of the invoking user — never one the user was not asked about, such as
        an orphan a later scan found (None: none to end)."""
        report = self._holders
        if report is None or self.device_glob is None:
            return None
        wanted = {(r.pid, r.start_ticks) for r in confirmed}
        actions = plan(report.holders, Scope(uid=os.getuid()), signal.SIGTERM)
        targets = [
            h for h in report.holders
            if actions[h.pid].outcome is Outcome.WOULD_END and (h.pid, h.start_ticks) in wanted
        ]
        if not targets:
            return None
        result = end_targets(report, targets, None, timeout=timeout, device_glob=self.device_glob)
        self.rescan_holders()
        return result

    def close(self) -> None:
        self.backend.close()
