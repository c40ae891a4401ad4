"""The whole reap cycle for the CLI and the TUI: scan, ask NVML, classify, end, re-scan."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gpudoc.gpu.backend import GpuBackend
from gpudoc.gpu.model import GpuSnapshot
from gpudoc.reap.classify import HolderReport, Inspector, ReapReport, Verdict
from gpudoc.reap.end import Action, Outcome, end_processes
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB, DeviceScan, scan


def inspect_holders(
    backend: GpuBackend | None,
    *,
    device_glob: str | None = DEFAULT_DEVICE_GLOB,
    protect: Iterable[str] = (),
    window: float = 0.5,
    slurm_job: str | None = None,
    read_timeout: float = 1.0,
    snapshot: GpuSnapshot | None = None,
) -> ReapReport:
    """Every holder of ``device_glob`` with its verdict. ``snapshot`` is NVML's reading when
    the caller already has one; otherwise ``backend`` is asked while /proc is scanned (its
    initialisation can take longer than the scan). Neither (or a failed reading) means NVML's
    process list is unknown: the report says why, and no holder is confirmed an orphan.
    ``device_glob`` None scans no device file (a simulated machine has none of this host's)."""
    gpus: GpuSnapshot | None = None
    error: str | None = "no GPU backend"
    if snapshot is not None:
        found = _scan(device_glob, read_timeout)
        gpus, error = (None, snapshot.error) if snapshot.error else (snapshot, None)
    elif backend is None:
        found = _scan(device_glob, read_timeout)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="gpudoc-nvml") as pool:
            pending = pool.submit(backend.snapshot)
            found = _scan(device_glob, read_timeout)
            snapshot = pending.result()
        gpus, error = (None, snapshot.error) if snapshot.error else (snapshot, None)
    inspector = Inspector(protect=protect, window=window, slurm_job=slurm_job, read_timeout=read_timeout)
    report = inspector.inspect(found, gpus, error)
    if backend is None:
        return report
    return dataclasses.replace(report, holders=tuple(_described(h, backend) for h in report.holders))


def _scan(device_glob: str | None, read_timeout: float) -> DeviceScan:
    return scan(device_glob, read_timeout=read_timeout) if device_glob is not None else DeviceScan((), (), (), ())


def _described(holder: HolderReport, backend: GpuBackend) -> HolderReport:
    """A foreign holder with the user and command its backend knows (a simulated process)."""
    if holder.verdict is not Verdict.FOREIGN:
        return holder
    user, command = backend.process_info(holder.pid)
    return dataclasses.replace(holder, user=user or holder.user, command=command or holder.command)


@dataclass(frozen=True)
class ReapResult:
    """What ending the targets did: per-PID actions, descriptors freed (by the re-scan), and
    each GPU's used memory before and after (bytes, from NVML, where it answered)."""

    actions: dict[int, Action]
    freed_fds: dict[int, int]
    still_holding: tuple[int, ...]
    memory_before: dict[int, int] = field(default_factory=dict)
    memory_after: dict[int, int] = field(default_factory=dict)


def end_targets(
    report: ReapReport,
    targets: list[HolderReport],
    backend: GpuBackend | None,
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 5.0,
    device_glob: str = DEFAULT_DEVICE_GLOB,
    read_timeout: float = 1.0,
) -> ReapResult:
    """End ``targets`` (holders from ``report``), then re-scan to see what was freed."""
    actions = end_processes(targets, sig=sig, timeout=timeout)
    after = scan(device_glob, read_timeout=read_timeout)
    holding = {(h.pid, h.stat.start_ticks) for h in after.holders}
    freed: dict[int, int] = {}
    still: list[int] = []
    for target in targets:
        if (target.pid, target.start_ticks) in holding:
            still.append(target.pid)
        elif actions[target.pid].outcome is Outcome.ENDED:
            freed[target.pid] = target.fds
    memory_after: dict[int, int] = {}
    if backend is not None:
        snapshot = backend.snapshot()
        memory_after = {d.index: d.memory_used for d in snapshot.devices if isinstance(d.memory_used, int)}
    return ReapResult(actions, freed, tuple(still), dict(report.gpu_memory_used), memory_after)
