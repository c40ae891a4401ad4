"""The whole reap cycle for the CLI and the TUI: scan, ask NVML, classify, end, re-scan."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gpudoc.gpu.backend import GpuBackend
from gpudoc.gpu.model import GpuSnapshot
from gpudoc.reap.classify import HolderReport, Inspector, ReapReport
from gpudoc.reap.end import Action, Outcome, end_processes
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB, scan


def inspect_holders(
    backend: GpuBackend | None,
    *,
    device_glob: str = DEFAULT_DEVICE_GLOB,
    protect: Iterable[str] = (),
    window: float = 0.5,
    slurm_job: str | None = None,
    read_timeout: float = 1.0,
) -> ReapReport:
    """Every holder of ``device_glob`` with its verdict. ``backend`` None (or one that
    fails) means NVML's process list is unknown; the report says why. NVML is asked while
    /proc is scanned (its initialisation can take longer than the scan)."""
    gpus: GpuSnapshot | None = None
    error: str | None = "no GPU backend"
    if backend is None:
        found = scan(device_glob, read_timeout=read_timeout)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="gpudoc-nvml") as pool:
            pending = pool.submit(backend.snapshot)
            found = scan(device_glob, read_timeout=read_timeout)
            snapshot = pending.result()
        gpus, error = (None, snapshot.error) if snapshot.error else (snapshot, None)
    inspector = Inspector(protect=protect, window=window, slurm_job=slurm_job, read_timeout=read_timeout)
    return inspector.inspect(found, gpus, error)


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
