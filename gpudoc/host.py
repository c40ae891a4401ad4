"""Host probe over psutil: CPU, memory, load, disk and network rates, and process details."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from gpudoc.na import NA, NotAvailable


@dataclass(frozen=True)
class HostSnapshot:
    """The host at one moment. Memory in bytes, rates in bytes/s, CPU in percent.

    Rates and CPU percentages cover the time since the probe's previous sample; on the first
    sample the rates are ``NA``.
    """

    timestamp: float
    cpu_percent: float
    cpu_per_core: tuple[float, ...]
    memory_total: int
    memory_used: int
    memory_available: int
    swap_total: int
    swap_used: int
    load_average: tuple[float, float, float] | NotAvailable
    disk_read_rate: float | NotAvailable
    disk_write_rate: float | NotAvailable
    net_rx_rate: float | NotAvailable
    net_tx_rate: float | NotAvailable


@dataclass(frozen=True)
class HostProcess:
    """One process as the host sees it; fields the user may not read are ``NA``.

    ``cpu_percent`` covers the time since the probe last saw this process (``NA`` the first
    time), and may exceed 100 on several cores.
    """

    pid: int
    ppid: int
    pgid: int | NotAvailable
    name: str
    user: str | NotAvailable
    cmdline: tuple[str, ...] | NotAvailable
    create_time: float
    state: str
    cpu_percent: float | NotAvailable
    rss: int | NotAvailable

    @property
    def command(self) -> str:
        """The command line, or the process name when it cannot be read or is empty."""
        if isinstance(self.cmdline, tuple) and self.cmdline:
            return " ".join(self.cmdline)
        return f"[{self.name}]"


_PROCESS_ATTRS = ["ppid", "name", "username", "cmdline", "create_time", "status", "memory_info"]


def _busy_percent(before: Any, after: Any) -> float:
    """How much of the time between two ``cpu_times`` readings of a core it was busy, in
    percent: idle and I/O wait count as idle, and guest time is already in user and nice
    (psutil's and htop's rule)."""

    def total(times: Any) -> float:
        return sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)

    def idle(times: Any) -> float:
        return times.idle + getattr(times, "iowait", 0.0)

    elapsed = total(after) - total(before)
    if elapsed <= 0:
        return 0.0
    return min(100.0, max(0.0, 100.0 * (elapsed - (idle(after) - idle(before))) / elapsed))


class HostProbe:
    """Samples the host; keep one instance alive so rates and CPU percentages have a base.

    The CPU base is the probe's own (the cores' times when it was made, then at each sample),
    not psutil's, which is kept per thread: a first sample taken on another thread than the
    one that made the probe would read 0 %.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_io: tuple[float, int, int, int, int] | None = None
        self._processes: dict[int, psutil.Process] = {}
        self._last_cpu: list[Any] = psutil.cpu_times(percpu=True)

    def sample(self) -> HostSnapshot:
        """CPU, memory, swap, load, and disk/network rates since the previous sample."""
        with self._lock:
            cpu = psutil.cpu_times(percpu=True)
            per_core = tuple(_busy_percent(old, new) for old, new in zip(self._last_cpu, cpu))
            self._last_cpu = cpu
            memory = psutil.virtual_memory()
            swap = psutil.swap_memory()
            try:
                load: tuple[float, float, float] | NotAvailable = tuple(os.getloadavg())  # type: ignore[assignment]
            except OSError:
                load = NA
            now = time.monotonic()
            disk = psutil.disk_io_counters()
            net = psutil.net_io_counters()
            io = (
                now,
                disk.read_bytes if disk else 0,
                disk.write_bytes if disk else 0,
                net.bytes_recv if net else 0,
                net.bytes_sent if net else 0,
            )
            rates: list[float | NotAvailable] = [NA, NA, NA, NA]
            if self._last_io is not None and now > self._last_io[0]:
                elapsed = now - self._last_io[0]
                rates = [max(0, new - old) / elapsed for new, old in zip(io[1:], self._last_io[1:])]
            self._last_io = io
        return HostSnapshot(
            timestamp=time.time(),
            cpu_percent=sum(per_core) / len(per_core) if per_core else 0.0,
            cpu_per_core=per_core,
            memory_total=memory.total,
            memory_used=memory.total - memory.available,
            memory_available=memory.available,
            swap_total=swap.total,
            swap_used=swap.used,
            load_average=load,
            disk_read_rate=rates[0],
            disk_write_rate=rates[1],
            net_rx_rate=rates[2],
            net_tx_rate=rates[3],
        )

    def processes(self, pids: Iterable[int]) -> dict[int, HostProcess]:
        """Details of the given PIDs; PIDs that do not exist (here) are left out."""
        found: dict[int, HostProcess] = {}
        with self._lock:
            for pid in pids:
                info = self._read(pid)
                if info is not None:
                    found[pid] = info
            for pid in [p for p in self._processes if p not in found]:
                if not self._processes[pid].is_running():
                    del self._processes[pid]
            return found

    def process(self, pid: int) -> HostProcess | None:
        """Details of one PID, or None when no such process exists."""
        return self.processes([pid]).get(pid)

    def _read(self, pid: int) -> HostProcess | None:
        cached = self._processes.get(pid)
        if cached is None and not psutil.pid_exists(pid):  # e.g. NVML's host PIDs in a container
            return None
        first_sight = cached is None or not cached.is_running()
        try:
            proc = psutil.Process(pid) if first_sight or cached is None else cached
            self._processes[pid] = proc
            with proc.oneshot():
                values = proc.as_dict(_PROCESS_ATTRS, ad_value=NA)
                try:
                    cpu: float | NotAvailable = proc.cpu_percent()
                except psutil.AccessDenied:
                    cpu = NA
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._processes.pop(pid, None)
            return None
        try:
            pgid: int | NotAvailable = os.getpgid(pid)
        except OSError:
            pgid = NA
        memory = values["memory_info"]
        cmdline = values["cmdline"]
        return HostProcess(
            pid=pid,
            ppid=values["ppid"],
            pgid=pgid,
            name=values["name"] if values["name"] is not NA else "?",
            user=values["username"],
            cmdline=tuple(cmdline) if cmdline is not NA else NA,
            create_time=values["create_time"],
            state=values["status"],
            cpu_percent=NA if first_sight else cpu,
            rss=memory.rss if memory is not NA else NA,
        )
