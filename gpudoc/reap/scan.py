"""Find every process holding a device file: open descriptors, per-thread descriptor tables
and memory mappings, as psmisc's fuser does, plus the threads fuser misses."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from gpudoc.bounded import BoundedCaller
from gpudoc.errors import EnvironmentMissing, GpudocError

DEFAULT_DEVICE_GLOB = "/dev/nvidia*"


class ProcReadTimeout(GpudocError):
    """A /proc read did not return in time (the process is likely stuck in D state)."""


@dataclass(frozen=True)
class Holder:
    """A process that holds at least one device file.

    ``fds`` counts descriptors on device files (in every thread's table, deduplicated per
    table); ``mapped`` is true when a device is mapped into memory; ``thread_only`` marks a
    holder whose descriptors are visible only under ``/proc/PID/task/TID/fd`` (a zombie
    thread-group leader with live threads: fuser and lsof miss it).
    """

    pid: int
    devices: tuple[str, ...]
    fds: int
    mapped: bool
    thread_only: bool


@dataclass(frozen=True)
class DeviceScan:
    """Holders of ``devices``; ``unreadable`` lists PIDs whose descriptors or maps could not be
    read (another user's process without root), ``stuck`` those whose maps read timed out."""

    devices: tuple[str, ...]
    holders: tuple[Holder, ...]
    unreadable: tuple[int, ...]
    stuck: tuple[int, ...]


def device_files(pattern: str = DEFAULT_DEVICE_GLOB) -> tuple[str, ...]:
    """The files ``pattern`` matches (directories such as /dev/nvidia-caps left out)."""
    return tuple(sorted(p for p in glob.glob(pattern) if not os.path.isdir(p)))


def _fd_targets(fd_dir: str, devices: frozenset[str]) -> tuple[list[str], bool]:
    """Device paths open in one descriptor table, and whether the table could be read."""
    try:
        names = os.listdir(fd_dir)
    except PermissionError:
        return [], False
    except OSError:
        return [], True
    found = []
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target in devices:
            found.append(target)
    return found, True


def _mapped(maps_file: str, devices: frozenset[str], prefix: bytes) -> set[str]:
    with open(maps_file, "rb") as handle:
        data = handle.read()
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


def scan(
    device_glob: str = DEFAULT_DEVICE_GLOB,
    *,
    proc_root: str | Path = "/proc",
    read_timeout: float = 1.0,
) -> DeviceScan:
    """Every process under ``proc_root`` holding a file ``device_glob`` matches.

    Descriptor links are read without touching the devices (no ``stat``, which can block);
    ``maps`` reads, which take the process's memory lock and can hang on a stuck process, are
    bounded by ``read_timeout`` seconds each.
    """
    listed = device_files(device_glob)
    devices = frozenset(listed) | frozenset(os.path.realpath(p) for p in listed)
    if not devices:
        return DeviceScan(listed, (), (), ())
    prefix = os.path.commonprefix(sorted(devices)).encode()  # noqa: RUF071 - a byte-prefix prefilter
    root = str(proc_root)
    try:
        entries = sorted(int(e) for e in os.listdir(root) if e.isdigit())
    except OSError as exc:
        raise EnvironmentMissing(f"cannot list {root}: {exc.strerror}", "mount procfs at /proc") from None
    caller = BoundedCaller(
        read_timeout, ProcReadTimeout, "the process is probably stuck in D state (uninterruptible)"
    )
    try:
        holders, unreadable, stuck = _scan_pids(entries, root, devices, prefix, caller)
    finally:
        caller.close()
    return DeviceScan(listed, holders, unreadable, stuck)


def _scan_pids(
    entries: list[int], root: str, devices: frozenset[str], prefix: bytes, caller: BoundedCaller
) -> tuple[tuple[Holder, ...], tuple[int, ...], tuple[int, ...]]:
    holders: list[Holder] = []
    unreadable: list[int] = []
    stuck: list[int] = []
    own = os.getpid()
    for pid in entries:
        if pid == own:
            continue
        base = f"{root}/{pid}"
        open_paths, readable = _fd_targets(f"{base}/fd", devices)
        thread_only = False
        if not open_paths:
            thread_paths: list[str] = []
            try:
                tids = [t for t in os.listdir(f"{base}/task") if t != str(pid)]
            except OSError:
                tids = []
            for tid in tids:
                found, task_readable = _fd_targets(f"{base}/task/{tid}/fd", devices)
                readable = readable or task_readable
                if found:
                    thread_paths = found
                    break
            if thread_paths:
                open_paths, thread_only = thread_paths, True
        try:
            mapped = caller.call(pid, f"/proc/{pid}/maps", _mapped, f"{base}/maps", devices, prefix)
        except ProcReadTimeout:
            stuck.append(pid)
            mapped = set()
        except PermissionError:
            readable = False
            mapped = set()
        except OSError:
            mapped = set()
        if not readable and not open_paths and not mapped:
            unreadable.append(pid)
            continue
        if open_paths or mapped:
            holders.append(
                Holder(
                    pid=pid,
                    devices=tuple(sorted(set(open_paths) | mapped)),
                    fds=len(open_paths),
                    mapped=bool(mapped),
                    thread_only=thread_only,
                )
            )
    return tuple(holders), tuple(unreadable), tuple(stuck)
