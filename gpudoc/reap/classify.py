"""Decide, with reasons, which device holders are orphans: join the /proc scan with NVML's
process list and the process tree, and sample CPU time to tell a stranded worker from a
detached job that is still working."""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gpudoc.bounded import BoundedCaller
from gpudoc.gpu.model import GpuProcess, GpuSnapshot
from gpudoc.na import NA, NotAvailable
from gpudoc.output import format_bytes
from gpudoc.reap.proc import (
    CLOCK_TICKS,
    STATE_NAMES,
    ProcStat,
    ancestors,
    boot_time,
    container_hint,
    read_cgroup,
    read_cmdline,
    read_environ_var,
    read_link,
    read_stat,
    read_uid,
    user_name,
)
from gpudoc.reap.scan import DeviceScan, Holder, ProcReadTimeout

# Processes that hold the devices by design: the driver's daemons, DCGM, display servers.
DEFAULT_PROTECTED = (
    "nvidia-persistenced",
    "nvidia-powerd",
    "nvidia-fabricmanager",
    "nv-fabricmanager",
    "nv-hostengine",
    "dcgm-exporter",
    "Xorg",
    "X",
    "Xwayland",
    "gnome-shell",
    "kwin_x11",
    "kwin_wayland",
)
# Parents that adopt orphans: a child of one of these lost its original parent.
SUBREAPERS = (
    "systemd",
    "tini",
    "dumb-init",
    "docker-init",
    "catatonit",
    "containerd-shim",
    "conmon",
    "s6-svscan",
    "runsvdir",
)
# CPU use over the sampling window at or above which a holder counts as working.
BUSY_PERCENT = 5.0
_COMM_LEN = 15
_GPU_DEVICE = re.compile(r"nvidia(\d+)$")
CUDA_CONTEXT = "cuda-context"
CPU_USE = "cpu"
_NOT_LISTED = "not in NVML's list (no CUDA context)"


class Verdict(str, enum.Enum):
    """What a holder is. Only orphans are ended by default; an unconfirmed holder is an
    orphan by the process tree, but something that would make it detached could not be
    checked (NVML's process list, its CPU use)."""

    ORPHAN = "orphan"
    UNCONFIRMED = "unconfirmed"
    DETACHED = "detached"
    ACTIVE = "active"
    PROTECTED = "protected"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class HolderReport:
    """One device holder (or NVML-listed PID) with its facts, verdict and reason.

    ``start_time`` is seconds since the epoch, ``age`` seconds; ``gpu_memory`` is the sum
    NVML reports over its GPUs in bytes; ``in_nvml`` is NA when NVML could not be asked, or
    could not list the processes of a GPU it holds, and it is not listed elsewhere;
    ``cpu_percent`` covers the sampling window (NA when the holder was not sampled);
    ``start_ticks`` identifies the process across PID reuse; ``unchecked`` names what an
    unconfirmed holder's verdict could not check (``cuda-context``, ``cpu``).
    """

    pid: int
    verdict: Verdict
    reason: str
    user: str | NotAvailable = NA
    uid: int | NotAvailable = NA
    state: str | NotAvailable = NA
    ppid: int | NotAvailable = NA
    parent: str | NotAvailable = NA
    pgid: int | NotAvailable = NA
    start_time: float | NotAvailable = NA
    age: float | NotAvailable = NA
    command: str | NotAvailable = NA
    devices: tuple[str, ...] = ()
    gpus: tuple[int, ...] = ()
    fds: int = 0
    mapped_only: bool = False
    thread_only: bool = False
    gpu_memory: int | NotAvailable = NA
    in_nvml: bool | NotAvailable = NA
    cpu_percent: float | NotAvailable = NA
    namespace: str | None = None
    start_ticks: int | NotAvailable = NA
    unchecked: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReapReport:
    """Everything one inspection found. ``nvml_error`` says why NVML was not consulted."""

    devices: tuple[str, ...]
    holders: tuple[HolderReport, ...]
    unreadable: tuple[int, ...] = ()
    stuck: tuple[int, ...] = ()
    nvml_error: str | None = None
    gpu_memory_used: dict[int, int] = field(default_factory=dict)


def _command(stat: ProcStat, cmdline: tuple[str, ...] | NotAvailable) -> str:
    if isinstance(cmdline, tuple) and cmdline:
        return " ".join(cmdline)
    return f"[{stat.comm}]"


def _short(command: str, limit: int = 40) -> str:
    return command if len(command) <= limit else command[: limit - 1] + "…"


def _names(stat: ProcStat, cmdline: tuple[str, ...] | NotAvailable) -> set[str]:
    names = {stat.comm}
    if isinstance(cmdline, tuple) and cmdline:
        names.add(os.path.basename(cmdline[0]))
    return names


def _matches(names: set[str], wanted: Iterable[str]) -> str | None:
    """The first of ``wanted`` naming this process (the kernel truncates comm to 15 chars)."""
    for name in wanted:
        if name in names or (len(name) > _COMM_LEN and name[:_COMM_LEN] in names):
            return name
    return None


def _device_label(path: str) -> str:
    return os.path.basename(path)


def _gpu_of(path: str, by_minor: dict[int, int]) -> int | None:
    found = _GPU_DEVICE.search(os.path.basename(path))
    if found is None:
        return None
    minor = int(found.group(1))
    return by_minor.get(minor, minor)


@dataclass
class _Facts:
    """A holder's facts while it is being classified."""

    holder: Holder
    parent: ProcStat | None
    listed: list[GpuProcess]
    gone_reason: str | None = None
    cpu_percent: float | NotAvailable = NA
    verdict: Verdict | None = None
    reason: str = ""
    unchecked: tuple[str, ...] = ()

    @property
    def stat(self) -> ProcStat:
        return self.holder.stat


class Inspector:
    """Classifies holders. ``protect`` adds process names to the allow-list; ``window`` is
    the CPU sampling time in seconds; ``slurm_job`` marks every holder started by that
    (ended) Slurm job as left over. Reads that take a process's memory lock (command
    lines, environments) give up after ``read_timeout`` seconds."""

    def __init__(
        self,
        *,
        protect: Iterable[str] = (),
        window: float = 0.5,
        proc_root: str = "/proc",
        slurm_job: str | None = None,
        read_timeout: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.protected_names = (*DEFAULT_PROTECTED, *protect)
        self.window = window
        self.root = proc_root
        self.slurm_job = slurm_job
        self.sleep = sleep
        self.own_pid = os.getpid()
        self.own_ns = read_link(f"{proc_root}/self/ns/pid")
        self._caller = BoundedCaller(read_timeout, ProcReadTimeout, "the process is probably stuck in D state")
        self._cmdlines: dict[int, tuple[str, ...] | NotAvailable] = {}
        self._stats: dict[int, ProcStat | None] = {}
        self._by_minor: dict[int, int] = {}
        self._unlisted: dict[int, str] = {}
        self._no_nvml: str | None = None

    def _stat(self, pid: int) -> ProcStat | None:
        """A parent's or group leader's stat, read once (many holders share them)."""
        if pid <= 0:
            return None
        if pid not in self._stats:
            self._stats[pid] = read_stat(pid, self.root)
        return self._stats[pid]

    def _cmdline(self, pid: int) -> tuple[str, ...] | NotAvailable:
        """A command line read under the deadline, cached (many holders share a parent)."""
        if pid not in self._cmdlines:
            try:
                self._cmdlines[pid] = self._caller.call(pid, f"/proc/{pid}/cmdline", read_cmdline, pid, self.root)
            except ProcReadTimeout:
                self._cmdlines[pid] = NA
        return self._cmdlines[pid]

    def inspect(self, scan: DeviceScan, gpus: GpuSnapshot | None, nvml_error: str | None = None) -> ReapReport:
        """Classify every holder in ``scan``, joined with ``gpus`` (None: NVML unavailable)."""
        try:
            return self._inspect(scan, gpus, nvml_error)
        finally:
            self._caller.close()

    def _inspect(self, scan: DeviceScan, gpus: GpuSnapshot | None, nvml_error: str | None) -> ReapReport:
        by_minor: dict[int, int] = {}
        memory_used: dict[int, int] = {}
        listed, unlisted = _listed(gpus) if gpus is not None else ({}, {})
        for device in gpus.devices if gpus is not None else ():
            if isinstance(device.minor_number, int):
                by_minor[device.minor_number] = device.index
            if isinstance(device.memory_used, int):
                memory_used[device.index] = device.memory_used
        holders = {h.pid: h for h in scan.holders}
        simulated = gpus is not None and gpus.backend == "simulated"
        foreign: list[HolderReport] = []
        unreadable = set(scan.unreadable)
        for pid, processes in listed.items():
            if pid in holders:
                continue
            stand_in = self._stand_in(pid) if pid in unreadable else None
            if stand_in is not None:
                holders[pid] = stand_in
            else:
                exists = read_stat(pid, self.root) is not None
                foreign.append(self._foreign(pid, processes, exists, simulated=simulated))
        facts = {pid: _Facts(h, self._stat(h.stat.ppid), listed.get(pid, [])) for pid, h in holders.items()}
        self._by_minor = by_minor
        self._unlisted = unlisted
        # The error itself (often with a long fix) is the report's nvml_error, said once.
        self._no_nvml = None if gpus is not None else ("NVML unavailable" if nvml_error else "NVML was not asked")
        self._classify(facts)
        reports = [self._report(f, by_minor, gpus is not None) for f in facts.values()]
        return ReapReport(
            devices=scan.devices,
            holders=tuple(sorted(reports + foreign, key=lambda r: r.pid)),
            unreadable=tuple(sorted(unreadable - set(holders))),
            stuck=scan.stuck,
            nvml_error=nvml_error,
            gpu_memory_used=memory_used,
        )

    def _stand_in(self, pid: int) -> Holder | None:
        """A holder for a process NVML lists whose descriptors we may not read."""
        stat = read_stat(pid, self.root)
        if stat is None:
            return None
        return Holder(
            pid=pid, devices=(), fds=0, mapped_only=False, thread_only=False, stat=stat,
            uid=read_uid(pid, self.root), cmdline=self._cmdline(pid),
            pid_ns=read_link(f"{self.root}/{pid}/ns/pid"), cgroup=NA,
        )

    def _foreign(self, pid: int, processes: list[GpuProcess], exists: bool, simulated: bool) -> HolderReport:
        if simulated:
            reason = "a simulated GPU process (--simulate): " + (
                f"this host's PID {pid} is another process, holding no GPU device" if exists
                else "no such process on this host"
            )
        elif exists:
            reason = (
                "NVML lists this PID but the local process with it holds no GPU device: "
                "a PID from another namespace (gpudoc runs in a container?)"
            )
        else:
            reason = "NVML PID not in /proc: another PID namespace (a container), or it just exited"
        return HolderReport(
            pid=pid,
            verdict=Verdict.FOREIGN,
            reason=reason,
            gpus=tuple(sorted({p.gpu_index for p in processes})),
            gpu_memory=_memory(processes),
            in_nvml=True,
        )

    def _classify(self, facts: dict[int, _Facts]) -> None:
        keep = {self.own_pid, 1} | ancestors(self.own_pid, self.root)
        for f in facts.values():
            protected = self._protected(f, keep)
            if protected:
                f.verdict, f.reason = Verdict.PROTECTED, f"protected: {protected}"
            elif self.slurm_job is not None and self._in_job(f.holder):
                f.verdict, f.reason = Verdict.ORPHAN, f"left over from ended Slurm job {self.slurm_job}"
            else:
                f.gone_reason = self._parent_gone(f)
        candidates = [f for f in facts.values() if f.verdict is None and self._needs_sample(f, facts)]
        self._sample(candidates)
        for f in sorted(facts.values(), key=lambda f: f.stat.start_ticks):
            if f.verdict is None:
                self._decide(f, facts)

    def _protected(self, f: _Facts, keep: set[int]) -> str | None:
        stat = f.stat
        if stat.pid == self.own_pid:
            return "gpudoc itself"
        if stat.pid == 1:
            return "PID 1 (init)"
        if stat.pid in keep:
            return "an ancestor of gpudoc"
        if stat.kernel_thread:
            return "kernel thread"
        name = _matches(_names(stat, f.holder.cmdline), self.protected_names)
        return f"allow-listed ({name})" if name else None

    def _in_job(self, holder: Holder) -> bool:
        cgroup = holder.cgroup if isinstance(holder.cgroup, str) else read_cgroup(holder.pid, self.root)
        if isinstance(cgroup, str) and f"job_{self.slurm_job}/" in f"{cgroup}/":
            return True
        try:
            job = self._caller.call(
                holder.pid, f"/proc/{holder.pid}/environ", read_environ_var, holder.pid, "SLURM_JOB_ID", self.root
            )
        except ProcReadTimeout:
            return False
        return job == self.slurm_job

    def _parent_gone(self, f: _Facts) -> str | None:
        """Why the holder's original parent is gone, or None when it is still there."""
        stat, parent = f.stat, f.parent
        if stat.state == "Z" and f.holder.thread_only:
            return "zombie leader with live thread (its main thread exited)"
        if parent is None:
            return None
        adopted_by = None
        if stat.ppid == 1:
            adopted_by = "PID 1"
        else:
            reaper = _matches({parent.comm}, SUBREAPERS)
            if reaper:
                adopted_by = f"subreaper {parent.pid} ({reaper})"
        if stat.pgid != stat.pid and parent.pgid != stat.pgid and not self._group_leader_alive(stat.pgid):
            where = f" (now a child of {adopted_by})" if adopted_by else ""
            return f"its process-group leader {stat.pgid} has exited{where}"
        if adopted_by is None:
            return None
        if stat.sid == stat.pid:
            return None
        return f"parent exited (re-parented to {adopted_by})"

    def _group_leader_alive(self, pgid: int) -> bool:
        leader = self._stat(pgid)
        return leader is not None and leader.pgid == pgid and leader.state not in ("Z", "X")

    def _needs_sample(self, f: _Facts, facts: dict[int, _Facts]) -> bool:
        """Whether the verdict depends on CPU use: the holder, or a holder up its parent
        chain, lost its original parent, and it owns no CUDA context."""
        if f.listed:
            return False
        seen: set[int] = set()
        current: _Facts | None = f
        while current is not None and current.stat.pid not in seen:
            if current.gone_reason:
                return True
            seen.add(current.stat.pid)
            current = facts.get(current.stat.ppid)
        return False

    def _sample(self, candidates: list[_Facts]) -> None:
        if not candidates:
            return
        before = {f.stat.pid: read_stat(f.stat.pid, self.root) for f in candidates}
        start = time.monotonic()
        self.sleep(self.window)
        elapsed = max(time.monotonic() - start, 1e-3)
        for f in candidates:
            first, second = before[f.stat.pid], read_stat(f.stat.pid, self.root)
            if first is None or second is None or second.start_ticks != first.start_ticks:
                continue
            f.cpu_percent = 100.0 * (second.cpu_ticks - first.cpu_ticks) / CLOCK_TICKS / elapsed

    def _busy(self, f: _Facts) -> str | None:
        if isinstance(f.cpu_percent, float) and f.cpu_percent >= BUSY_PERCENT:
            return f"busy ({f.cpu_percent:.0f}% CPU over {self.window:g} s)"
        return None

    def _decide(self, f: _Facts, facts: dict[int, _Facts]) -> None:
        stat = f.stat
        parent_facts = facts.get(stat.ppid)
        inherited: tuple[str, ...] = ()
        if f.gone_reason is None:
            parent_orphan = parent_facts is not None and parent_facts.verdict in (Verdict.ORPHAN, Verdict.UNCONFIRMED)
            if not parent_orphan or f.listed or self._busy(f):
                f.verdict, f.reason = Verdict.ACTIVE, self._alive_reason(f)
                return
            assert parent_facts is not None and parent_facts.verdict is not None
            kind = "an" if parent_facts.verdict is Verdict.ORPHAN else "an unconfirmed"
            gone = f"its parent {stat.ppid} is {kind} orphan"
            inherited = parent_facts.unchecked
        else:
            gone = f.gone_reason
        if f.listed:
            f.verdict = Verdict.DETACHED
            f.reason = f"{gone}, but it owns a CUDA context ({_context(f.listed)}): detached, still running"
            return
        busy = self._busy(f)
        if busy:
            f.verdict, f.reason = Verdict.DETACHED, f"{gone}, but {busy}: detached, still running"
            return
        reasons = [gone]
        unchecked = set(inherited)
        if stat.state == "D":
            reasons.append("uninterruptible (D): needs GPU reset or reboot if it does not die")
        elif stat.state in ("T", "t"):
            reasons.append("stopped")
        elif isinstance(f.cpu_percent, float):
            reasons.append(f"idle ({f.cpu_percent:.0f}% CPU over {self.window:g} s)")
        else:
            reasons.append("CPU use unknown (it could not be sampled)")
            unchecked.add(CPU_USE)
        context_unknown = self._context_unknown(f)
        if context_unknown:
            reasons.append(f"CUDA context unknown ({context_unknown})")
            unchecked.add(CUDA_CONTEXT)
        else:
            reasons.append(_NOT_LISTED)
        devices = ",".join(_device_label(d) for d in f.holder.devices)
        if devices:
            reasons.append(f"holds {devices}")
        f.unchecked = tuple(sorted(unchecked))
        f.verdict = Verdict.UNCONFIRMED if unchecked else Verdict.ORPHAN
        f.reason = "; ".join(reasons)

    def _context_unknown(self, f: _Facts) -> str | None:
        """Why NVML's list cannot tell whether this holder owns a CUDA context, or None: NVML
        was not asked, or a GPU it holds (or, holding no GPU's own file, any GPU) could not
        be read or would not list its processes."""
        if self._no_nvml is not None:
            return self._no_nvml
        if not self._unlisted:
            return None
        gpus = {g for d in f.holder.devices if (g := _gpu_of(d, self._by_minor)) is not None}
        unread = sorted(set(self._unlisted) & gpus) if gpus else sorted(self._unlisted)
        if not unread:
            return None
        return "; ".join(self._unlisted[g] for g in unread)

    def _alive_reason(self, f: _Facts) -> str:
        stat, parent = f.stat, f.parent
        if parent is not None and stat.sid == stat.pid and (
            stat.ppid == 1 or _matches({parent.comm}, SUBREAPERS)
        ):
            return f"session leader started by {parent.pid} ({parent.comm}): a daemon or service"
        if parent is None:
            return "its parent is outside gpudoc's PID namespace"
        command = _short(_command(parent, self._cmdline(parent.pid)))
        return f"parent {parent.pid} ({command}) alive"

    def _report(self, f: _Facts, by_minor: dict[int, int], nvml: bool) -> HolderReport:
        holder, stat = f.holder, f.stat
        gpus = {g for d in holder.devices if (g := _gpu_of(d, by_minor)) is not None}
        gpus |= {p.gpu_index for p in f.listed}
        try:
            started: float | NotAvailable = boot_time(self.root) + stat.start_ticks / CLOCK_TICKS
        except OSError:
            started = NA
        assert f.verdict is not None
        return HolderReport(
            pid=stat.pid,
            verdict=f.verdict,
            reason=f.reason,
            user=user_name(holder.uid) if isinstance(holder.uid, int) else NA,
            uid=holder.uid,
            state=stat.state,
            ppid=stat.ppid,
            parent=_command(f.parent, self._cmdline(f.parent.pid)) if f.parent else NA,
            pgid=stat.pgid,
            start_time=started,
            age=max(0.0, time.time() - started) if isinstance(started, float) else NA,
            command=_command(stat, holder.cmdline),
            devices=holder.devices,
            gpus=tuple(sorted(gpus)),
            fds=holder.fds,
            mapped_only=holder.mapped_only,
            thread_only=holder.thread_only,
            gpu_memory=_memory(f.listed),
            in_nvml=True if f.listed else NA if not nvml or self._context_unknown(f) else False,
            cpu_percent=f.cpu_percent,
            namespace=self._namespace(holder),
            start_ticks=stat.start_ticks,
            unchecked=f.unchecked,
        )

    def _namespace(self, holder: Holder) -> str | None:
        if not isinstance(holder.pid_ns, str) or holder.pid_ns == self.own_ns:
            return None
        kind = container_hint(holder.cgroup) if isinstance(holder.cgroup, str) else None
        return f"{kind} container" if kind else "another PID namespace"


def _memory(processes: list[GpuProcess]) -> int | NotAvailable:
    known = [p.used_memory for p in processes if isinstance(p.used_memory, int)]
    return sum(known) if known else NA


def _context(processes: list[GpuProcess]) -> str:
    parts = []
    for p in sorted(processes, key=lambda p: p.gpu_index):
        size = format_bytes(p.used_memory) if isinstance(p.used_memory, int) else "memory N/A"
        parts.append(f"GPU {p.gpu_index}: {size}")
    return ", ".join(parts)


def state_name(state: str | NotAvailable) -> str:
    """``S (sleeping)`` for a state letter."""
    if not isinstance(state, str):
        return "N/A"
    return f"{state} ({STATE_NAMES.get(state, 'unknown')})"




def _listed(gpus: GpuSnapshot) -> tuple[dict[int, list[GpuProcess]], dict[int, str]]:
    """NVML's processes by PID, and why each GPU whose list could not be read has none."""
    listed: dict[int, list[GpuProcess]] = {}
    unlisted: dict[int, str] = {}
    for device in gpus.devices:
        if device.error:
            unlisted[device.index] = f"GPU {device.index} could not be read: {device.error}"
        elif device.processes_error:
            unlisted[device.index] = f"GPU {device.index}: {device.processes_error}"
        for process in device.processes:
            listed.setdefault(process.pid, []).append(process)
    return listed, unlisted


def rejudge(report: ReapReport, gpus: GpuSnapshot) -> ReapReport:
    """``report``'s orphans judged again by a later NVML reading ``gpus`` (the device scan
    and the CPU samples kept): one NVML lists now owns a CUDA context (detached); one whose
    context that reading cannot tell (NVML failed, a GPU it holds could not be read or would
    not list its processes), or whose parent became unconfirmed, is unconfirmed. Nothing is
    confirmed here: an unconfirmed holder waits for a new scan."""
    listed, unlisted = _listed(gpus)
    judged = {h.pid: h for h in report.holders}
    changed = True
    while changed:  # an orphan's children follow it
        changed = False
        for holder in judged.values():
            if holder.verdict not in (Verdict.ORPHAN, Verdict.UNCONFIRMED):
                continue
            new = _rejudged(holder, listed, unlisted, gpus.error, judged.get(holder.ppid)
                            if isinstance(holder.ppid, int) else None)
            if new is not holder:
                judged[holder.pid] = new
                changed = True
                break
    return dataclasses.replace(report, holders=tuple(judged[h.pid] for h in report.holders),
                               nvml_error=gpus.error or report.nvml_error)


def _rejudged(holder: HolderReport, listed: dict[int, list[GpuProcess]], unlisted: dict[int, str],
              error: str | None, parent: HolderReport | None) -> HolderReport:
    gone = holder.reason.split("; ", 1)[0]
    if holder.pid in listed and not error:
        processes = listed[holder.pid]
        return dataclasses.replace(
            holder, verdict=Verdict.DETACHED, in_nvml=True, gpu_memory=_memory(processes), unchecked=(),
            reason=f"{gone}, but it owns a CUDA context ({_context(processes)}): detached, still running")
    if holder.verdict is not Verdict.ORPHAN:
        return holder
    if error:
        why: str | None = "NVML unavailable"
    else:
        unread = sorted(set(unlisted) & set(holder.gpus)) if holder.gpus else sorted(unlisted)
        why = "; ".join(unlisted[g] for g in unread) or None
    unchecked = set(holder.unchecked)
    reason = holder.reason
    if why is not None:
        unchecked.add(CUDA_CONTEXT)
        reason = reason.replace(_NOT_LISTED, f"CUDA context unknown ({why})")
    if parent is not None and parent.verdict is Verdict.UNCONFIRMED and gone.startswith(f"its parent {parent.pid} "):
        unchecked |= set(parent.unchecked)
        was = f"its parent {parent.pid} is an orphan"
        reason = reason.replace(was, f"its parent {parent.pid} is an unconfirmed orphan")
    if not unchecked:
        return holder
    return dataclasses.replace(holder, verdict=Verdict.UNCONFIRMED, reason=reason, in_nvml=NA,
                               unchecked=tuple(sorted(unchecked)))
