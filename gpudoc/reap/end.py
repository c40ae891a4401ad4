"""Choose which holders to end and end them safely: identity re-checked through a pidfd,
TERM, a bounded wait, KILL for survivors, and a report of what each signal did."""

from __future__ import annotations

import contextlib
import enum
import os
import select
import signal
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from gpudoc.reap.classify import CPU_USE, CUDA_CONTEXT, HolderReport, Verdict
from gpudoc.reap.proc import STATE_NAMES, ancestors, read_stat, user_name

KILL_WAIT = 2.0
_UNCHECKED = {CUDA_CONTEXT: "its CUDA context", CPU_USE: "its CPU use"}


class Outcome(str, enum.Enum):
    """What happened (or would happen) to one holder."""

    NONE = "none"
    WOULD_END = "would-end"
    ENDED = "ended"
    GONE = "gone"
    REUSED = "pid-reused"
    DENIED = "denied"
    STUCK = "stuck"
    SURVIVED = "survived"


@dataclass(frozen=True)
class Action:
    """The plan or result for one holder: ``action`` in words, ``outcome`` as a keyword."""

    pid: int
    outcome: Outcome
    action: str


@dataclass(frozen=True)
class Scope:
    """Whose holders may be ended: ``uid`` None means every user's (root only);
    ``include_active`` adds detached, active and unconfirmed holders; ``without_nvml`` adds
    unconfirmed holders whose only unknown is their CUDA context (NVML could not be asked)."""

    uid: int | None
    include_active: bool = False
    without_nvml: bool = False


def plan(holders: Iterable[HolderReport], scope: Scope, sig: signal.Signals) -> dict[int, Action]:
    """For every holder: whether it is a target, or why not."""
    targets = {Verdict.ORPHAN}
    if scope.include_active:
        targets |= {Verdict.ACTIVE, Verdict.DETACHED, Verdict.UNCONFIRMED}
    actions = {}
    for h in holders:
        actions[h.pid] = _plan_one(h, scope, targets, sig)
    return actions


def _plan_one(h: HolderReport, scope: Scope, targets: set[Verdict], sig: signal.Signals) -> Action:
    """A target, or ``none:`` with every reason it is not one (its verdict, its owner)."""
    if h.verdict in (Verdict.PROTECTED, Verdict.FOREIGN):
        return Action(h.pid, Outcome.NONE, f"none: {h.verdict.value}")  # no option ends these
    reasons = []
    unconfirmed_target = h.verdict is Verdict.UNCONFIRMED and scope.without_nvml and h.unchecked == (CUDA_CONTEXT,)
    if h.verdict not in targets and not unconfirmed_target:
        if h.verdict in (Verdict.ACTIVE, Verdict.DETACHED):
            reasons.append(f"{h.verdict.value} (add --include-active to end it)")
        elif h.unchecked == (CUDA_CONTEXT,):
            reasons.append("unconfirmed: its CUDA context is unknown (add --without-nvml to end it anyway)")
        else:
            reasons.append(f"unconfirmed: {' and '.join(_UNCHECKED.get(u, u) for u in h.unchecked)} unknown")
    if scope.uid is not None and h.uid != scope.uid:
        owner = h.user if isinstance(h.user, str) else "another user"
        reasons.append(f"owned by {owner} (only root with --all-users or --user ends it)")
    if reasons:
        return Action(h.pid, Outcome.NONE, "none: " + "; ".join(reasons))
    escalation = "" if sig is signal.SIGKILL else ", then SIGKILL if it survives"
    return Action(h.pid, Outcome.WOULD_END, f"would end: {sig.name}{escalation}")


def _never(own_pid: int) -> frozenset[int]:
    return frozenset({own_pid, 0, 1}) | ancestors(own_pid)


def end_processes(
    targets: Collection[HolderReport],
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 5.0,
    proc_root: str = "/proc",
) -> dict[int, Action]:
    """Signal every target through a pidfd after checking it is still the process that was
    inspected (same start time), wait up to ``timeout`` seconds, SIGKILL survivors and wait
    again. A process in uninterruptible sleep keeps its SIGKILL pending: it is reported as
    stuck, not signalled again."""
    results: dict[int, Action] = {}
    pidfds: dict[int, int] = {}
    never = _never(os.getpid())
    try:
        for target in targets:
            if target.pid in never:
                results[target.pid] = Action(target.pid, Outcome.NONE, "none: refused (gpudoc, its ancestors or PID 1)")
                continue
            opened = _open_checked(target, proc_root)
            if isinstance(opened, Action):
                results[target.pid] = opened
                continue
            pidfds[target.pid] = opened
            sent = _send(target.pid, opened, sig)
            if sent is not None:
                results[target.pid] = sent
                os.close(pidfds.pop(target.pid))
        exited = _wait(pidfds, timeout)
        for pid in exited:
            results[pid] = Action(pid, Outcome.ENDED, f"ended by {sig.name}")
        survivors = {pid: fd for pid, fd in pidfds.items() if pid not in exited}
        if survivors and sig is not signal.SIGKILL:
            for pid, fd in list(survivors.items()):
                sent = _send(pid, fd, signal.SIGKILL)
                if sent is not None and sent.outcome is Outcome.GONE:
                    results[pid] = Action(pid, Outcome.ENDED, f"ended by {sig.name}")
                    del survivors[pid]
            killed = _wait(survivors, KILL_WAIT)
            for pid in killed:
                results[pid] = Action(pid, Outcome.ENDED, f"ended by SIGKILL ({sig.name} ignored for {timeout:g} s)")
            survivors = {pid: fd for pid, fd in survivors.items() if pid not in killed}
        for pid in survivors:
            results[pid] = _survivor(pid, proc_root)
    finally:
        for fd in pidfds.values():
            _reap_if_child(fd)
            os.close(fd)
    return results


def _open_checked(target: HolderReport, proc_root: str) -> int | Action:
    """A pidfd on the target, or why none was opened. The start time is compared *after*
    opening, so the pidfd cannot refer to a process that took over the PID later."""
    pid = target.pid
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return Action(pid, Outcome.GONE, "none: it exited before it was signalled")
    except OSError as exc:
        return Action(pid, Outcome.DENIED, f"failed: cannot open a pidfd ({exc.strerror})")
    current = read_stat(pid, proc_root)
    if current is None or (current.state in ("Z", "X") and not target.thread_only):
        os.close(fd)
        return Action(pid, Outcome.GONE, "none: it exited before it was signalled")
    if current.start_ticks != target.start_ticks:
        os.close(fd)
        return Action(pid, Outcome.REUSED, "none: the PID now belongs to a newer process (PID reused); not signalled")
    return fd


def _send(pid: int, fd: int, sig: signal.Signals) -> Action | None:
    """Send ``sig`` through the pidfd; an Action only when it could not be sent."""
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return Action(pid, Outcome.GONE, "none: it exited before it was signalled")
    except PermissionError:
        owner = _owner(pid)
        return Action(pid, Outcome.DENIED, f"failed: permission denied (owned by {owner}; needs root)")
    return None


def _owner(pid: int) -> str:
    try:
        return user_name(os.stat(f"/proc/{pid}").st_uid)
    except OSError:
        return "another user"


def _wait(pidfds: dict[int, int], timeout: float) -> set[int]:
    """PIDs among ``pidfds`` that exit within ``timeout`` seconds (a pidfd turns readable
    when its process has exited, whoever its parent is)."""
    poller = select.poll()
    by_fd = {}
    for pid, fd in pidfds.items():
        poller.register(fd, select.POLLIN)
        by_fd[fd] = pid
    exited: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(exited) < len(pidfds):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for fd, _ in poller.poll(remaining * 1000):
            exited.add(by_fd[fd])
            poller.unregister(fd)
    return exited


def _survivor(pid: int, proc_root: str) -> Action:
    stat = read_stat(pid, proc_root)
    if stat is not None and stat.state == "D":
        return Action(
            pid,
            Outcome.STUCK,
            "failed: still in uninterruptible sleep (D) after SIGKILL; the kill stays pending "
            "until the driver call returns: needs a GPU reset or a reboot",
        )
    state = STATE_NAMES.get(stat.state, stat.state) if stat else "unknown"
    return Action(pid, Outcome.SURVIVED, f"failed: still alive after SIGKILL ({state})")


def _reap_if_child(fd: int) -> None:
    """Collect the exit status when gpudoc is the parent (e.g. a subreaper), so no zombie
    is left behind; other processes' parents collect theirs."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
