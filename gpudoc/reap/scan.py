"""Find every process holding a device file: open descriptors, per-thread descriptor tables
and memory mappings, as psmisc's fuser does, plus the threads fuser misses."""

from __future__ import annotations

import glob
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpudoc.errors import EnvironmentMissing, GpudocError
from gpudoc.na import NA, NotAvailable
from gpudoc.reap.proc import ProcStat, read_bytes, read_cgroup, read_cmdline, read_link, read_stat, read_uid

DEFAULT_DEVICE_GLOB = "/dev/nvidia*"
_MAX_LANES = 2


class ProcReadTimeout(GpudocError):
    """A /proc read did not return in time (the process is likely stuck in D state)."""


@dataclass(frozen=True)
class Holder:
    """A process that holds at least one device file, with the facts reap classifies it by.

    ``fds`` counts descriptors on device files (in every thread's table, deduplicated per
    table); ``mapped_only`` marks a holder found only through a memory mapping (its
    descriptors closed; ``maps`` is read only for processes with no device descriptor, as
    that read is the scan's most expensive); ``thread_only`` marks a
    holder whose descriptors are visible only under ``/proc/PID/task/TID/fd`` (a zombie
    thread-group leader with live threads: fuser and lsof miss it). ``pid_ns`` is the PID
    namespace link (``pid:[…]``); ``cgroup``, the cgroup path, is read only for a holder in
    another PID namespace than gpudoc's (a container), to name it.
    """

    pid: int
    devices: tuple[str, ...]
    fds: int
    mapped_only: bool
    thread_only: bool
    stat: ProcStat
    uid: int | NotAvailable
    cmdline: tuple[str, ...] | NotAvailable
    pid_ns: str | NotAvailable
    cgroup: str | NotAvailable


@dataclass(frozen=True)
class DeviceScan:
    """Holders of ``devices``; ``unreadable`` lists PIDs whose descriptors or maps could not be
    read (another user's process without root), ``stuck`` those whose reads timed out."""

    devices: tuple[str, ...]
    holders: tuple[Holder, ...]
    unreadable: tuple[int, ...]
    stuck: tuple[int, ...]


def device_files(pattern: str = DEFAULT_DEVICE_GLOB) -> tuple[str, ...]:
    """The files ``pattern`` matches (directories such as /dev/nvidia-caps left out)."""
    return tuple(sorted(p for p in glob.glob(pattern) if not os.path.isdir(p)))


def _fd_targets(fd_dir: str, devices: frozenset[str]) -> tuple[list[str], bool, bool]:
    """Device paths open in one descriptor table, whether it could be read, and whether
    it was empty."""
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        return [], False, True
    except OSError:
        return [], True, True
    found = []
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target in devices:
            found.append(target)
    return found, True, not names


def _mapped(maps_file: str, devices: frozenset[str], prefix: bytes) -> set[str]:
    data = read_bytes(maps_file)
    if prefix not in data:
        return set()
    found = set()
    for line in data.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            path = parts[5].decode(errors="replace")
            if path in devices:
                found.add(path)
    return found


_Result = tuple[str, int, Holder | None]


class _PidScanner:
    """What one PID's scan reads; every step is a plain blocking /proc read."""

    def __init__(self, root: str, devices: frozenset[str], prefix: bytes) -> None:
        self.root = root
        self.devices = devices
        self.prefix = prefix
        self.own_ns = read_link(f"{root}/self/ns/pid")

    def __call__(self, pid: int) -> _Result:
        base = f"{self.root}/{pid}"
        open_paths, readable, empty = _fd_targets(f"{base}/fd", self.devices)
        thread_only = False
        if empty:
            try:
                tids = [t for t in os.listdir(f"{base}/task") if t != str(pid)]
            except OSError:
                tids = []
            for tid in tids:
                found, task_readable, _ = _fd_targets(f"{base}/task/{tid}/fd", self.devices)
                readable = readable or task_readable
                if found:
                    open_paths, thread_only = found, True
                    break
        mapped: set[str] = set()
        if not open_paths:
            try:
                mapped = _mapped(f"{base}/maps", self.devices, self.prefix)
            except PermissionError:
                readable = False
            except OSError:
                pass
        if not open_paths and not mapped:
            return ("none" if readable else "unreadable", pid, None)
        stat = read_stat(pid, self.root)
        if stat is None:
            return ("none", pid, None)
        pid_ns = read_link(f"{base}/ns/pid")
        holder = Holder(
            pid=pid,
            devices=tuple(sorted(set(open_paths) | mapped)),
            fds=len(open_paths),
            mapped_only=bool(mapped),
            thread_only=thread_only,
            stat=stat,
            uid=read_uid(pid, self.root),
            cmdline=read_cmdline(pid, self.root),
            pid_ns=pid_ns,
            cgroup=read_cgroup(pid, self.root) if pid_ns != self.own_ns else NA,
        )
        return ("holder", pid, holder)


class _Lane(threading.Thread):
    """A daemon thread scanning PIDs from its own queue and saying which one it is on, so
    the watcher can abandon it on a read that never returns."""

    def __init__(self, pids: deque[int], work: Callable[[int], _Result]) -> None:
        super().__init__(name="gpudoc-scan", daemon=True)
        self.pids = pids
        self.work = work
        self.results: list[_Result] = []
        self.lock = threading.Lock()
        self.current: int | None = None
        self.since = 0.0
        self.abandoned = False
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            while True:
                with self.lock:
                    if self.abandoned or not self.pids:
                        return
                    self.current, self.since = self.pids.popleft(), time.monotonic()
                    pid = self.current
                try:
                    result = self.work(pid)
                except OSError:
                    result = ("none", pid, None)
                with self.lock:
                    if self.abandoned:
                        return
                    self.results.append(result)
                    self.current = None
        finally:
            self.finished.set()


def _run_lanes(
    pids: list[int], work: Callable[[int], _Result], timeout: float
) -> tuple[list[_Result], list[int]]:
    """Scan ``pids`` on a few threads; a PID whose reads take over ``timeout`` seconds is
    given up (its thread is left behind) and the rest of its lane continues on a new one."""
    count = max(1, min(_MAX_LANES, os.cpu_count() or 1, len(pids) // 64 + 1))
    active = [_Lane(deque(pids[i::count]), work) for i in range(count)]
    for lane in active:
        lane.start()
    results: list[_Result] = []
    stuck: list[int] = []
    while active:
        lane = active[0]
        with lane.lock:
            since, current = lane.since, lane.current
        wait = max(0.0, since + timeout - time.monotonic()) if current is not None else timeout
        if lane.finished.wait(wait):
            results.extend(lane.results)
            active.pop(0)
            continue
        with lane.lock:
            if lane.current != current or lane.since != since or current is None:
                continue
            lane.abandoned = True
            results.extend(lane.results)
            remaining = lane.pids
        stuck.append(current)
        replacement = _Lane(remaining, work)
        replacement.start()
        active[0] = replacement
    return results, stuck


def scan(
    device_glob: str = DEFAULT_DEVICE_GLOB,
    *,
    proc_root: str | Path = "/proc",
    read_timeout: float = 1.0,
) -> DeviceScan:
    """Every process under ``proc_root`` holding a file ``device_glob`` matches.

    Descriptor links are read without touching the devices (no ``stat``, which can block).
    Reads of ``maps`` and ``cmdline`` take the process's memory lock and can hang on a stuck
    process: a PID that does not answer within ``read_timeout`` seconds is listed as stuck.
    """
    listed = device_files(device_glob)
    devices = frozenset(listed) | frozenset(os.path.realpath(p) for p in listed)
    if not devices:
        return DeviceScan(listed, (), (), ())
    prefix = os.path.commonprefix(sorted(devices)).encode()  # noqa: RUF071 - a byte-prefix prefilter
    root = str(proc_root)
    try:
        own = os.getpid()
        entries = [int(e) for e in os.listdir(root) if e.isdigit() and int(e) != own]
    except OSError as exc:
        raise EnvironmentMissing(f"cannot list {root}: {exc.strerror}", "mount procfs at /proc") from None
    results, stuck = _run_lanes(entries, _PidScanner(root, devices, prefix), read_timeout)
    holders = sorted((h for kind, _, h in results if kind == "holder" and h is not None), key=lambda h: h.pid)
    unreadable = sorted(pid for kind, pid, _ in results if kind == "unreadable")
    return DeviceScan(listed, tuple(holders), tuple(unreadable), tuple(sorted(stuck)))
