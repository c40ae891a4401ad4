"""``gpudoc reap``: find the processes holding GPU device files and end the orphaned ones."""

from __future__ import annotations

import dataclasses
import os
import pwd
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from gpudoc.cli.common import Settings, json_option, pass_settings
from gpudoc.errors import ExitCode, InputError
from gpudoc.output import emit_json, format_bytes, format_duration, to_jsonable
from gpudoc.reap.classify import HolderReport, ReapReport, Verdict
from gpudoc.reap.end import Action, Outcome, Scope, plan
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB, device_files

if TYPE_CHECKING:
    from rich.console import Console

    from gpudoc.gpu import GpuBackend
    from gpudoc.reap.service import ReapResult

_SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "KILL": signal.SIGKILL}
_VERDICT_STYLE = {
    Verdict.ORPHAN: "bold red",
    Verdict.UNCONFIRMED: "red",
    Verdict.DETACHED: "yellow",
    Verdict.ACTIVE: "green",
    Verdict.PROTECTED: "cyan",
    Verdict.FOREIGN: "magenta",
}


def _uid_of(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        if user.isdigit():
            return int(user)
        raise InputError(f"--user: no such user {user!r}", "give a login name or a numeric UID") from None


def _age(seconds: Any) -> str:
    return format_duration(seconds) if isinstance(seconds, float) else "N/A"


def _printable(text: str) -> str:
    """Control characters (a newline in a ``python -c`` script) shown escaped, one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _gpus(h: HolderReport) -> str:
    return ",".join(str(g) for g in h.gpus) or "-"


def render(report: ReapReport, actions: dict[int, Action], console: Console, acting: bool = False) -> None:
    """One block per holder: facts, then the reason and the action (or why none), indented (``acting``:
    the targets are being ended now, not in a dry run)."""
    from rich.markup import escape

    if not report.holders:
        console.print(f"no process holds {len(report.devices)} device file(s) matched")
        return
    header = f"{'PID':>8}  {'USER':<10} {'ST':<2} {'AGE':>7}  {'GPU':<5} {'GPU-MEM':>9}  {'VERDICT':<11}  COMMAND"
    console.print(f"[bold]{header}")
    for h in report.holders:
        memory = format_bytes(h.gpu_memory) if isinstance(h.gpu_memory, int) else "-"
        user = h.user if isinstance(h.user, str) else "N/A"
        state = h.state if isinstance(h.state, str) else "?"
        command = _printable(h.command) if isinstance(h.command, str) else "N/A"
        style = _VERDICT_STYLE[h.verdict]
        console.print(
            f"{h.pid:>8}  {escape(user[:10]):<10} {state:<2} {_age(h.age):>7}  {_gpus(h):<5} {memory:>9}  "
            f"[{style}]{h.verdict.value:<11}[/]  {escape(command)}",
            overflow="ellipsis",
            no_wrap=True,
        )
        extra = []
        if h.namespace:
            extra.append(h.namespace)
        if h.thread_only:
            extra.append("held by a thread (fuser/lsof miss it)")
        if h.mapped_only:
            extra.append("mapping only")
        tail = f" [dim]({'; '.join(extra)})[/]" if extra else ""
        console.print(f"{'':>10}[dim]why:[/] {escape(_printable(h.reason))}{tail}")
        action = actions.get(h.pid)
        if action is not None:  # every holder: what is done to it, or "none:" and every reason why not
            text = action.action.replace("would end:", "ending:", 1) if acting else action.action
            console.print(f"{'':>10}[dim]→[/] {escape(text)}")


def _summary(report: ReapReport, actions: dict[int, Action]) -> str:
    counts: dict[str, int] = {}
    for h in report.holders:
        counts[h.verdict.value] = counts.get(h.verdict.value, 0) + 1
    parts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    return f"{len(report.holders)} holder(s) of {len(report.devices)} device file(s): {parts or 'none'}"


def _notes(report: ReapReport, simulated: str | None) -> None:
    """What the report could not see, on stderr."""
    notes = []
    if simulated and not report.devices:
        notes.append(f"simulated GPUs (--simulate {simulated}): this host's device files are not scanned "
                     "(--device-glob names files to scan); simulated processes are never signalled")
    if report.nvml_error:
        notes.append(f"NVML not consulted ({report.nvml_error}): CUDA context owners unknown, so no holder is "
                     "confirmed an orphan (--without-nvml ends the unconfirmed ones)")
    if report.unreadable and os.geteuid() != 0:
        notes.append(
            f"{len(report.unreadable)} process(es) of other users could not be read; run as root to see every holder"
        )
    if report.stuck:
        shown = ", ".join(str(p) for p in report.stuck[:10])
        notes.append(f"no answer from {shown} within the read timeout (stuck in D state?)")
    for note in notes:
        click.echo(f"gpudoc: note: {note}", err=True)


def _json_rows(report: ReapReport, actions: dict[int, Action], result: ReapResult | None) -> list[dict[str, Any]]:
    rows = []
    for h in report.holders:
        row = to_jsonable(h)
        action = actions[h.pid]
        row["action"], row["outcome"] = action.action, action.outcome.value
        if result is not None and h.pid in result.actions:
            row["freed_fds"] = result.freed_fds.get(h.pid, 0)
            row["gpu_memory_used"] = {
                str(g): {"before": result.memory_before.get(g), "after": result.memory_after.get(g)} for g in h.gpus
            }
        rows.append(row)
    return rows


def _confirm(count: int) -> bool:
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    return interactive and click.confirm(f"End {count} process(es)?", default=False, err=True)


def _scope(user: str | None, all_users: bool, include_active: bool, without_nvml: bool) -> Scope:
    root = os.geteuid() == 0
    if user and all_users:
        raise click.UsageError("--user and --all-users exclude each other")
    if all_users and not root:
        raise click.UsageError("--all-users needs root: other users' processes cannot be signalled otherwise")
    uid: int | None = os.getuid()
    if user:
        uid = _uid_of(user)
        if uid != os.getuid() and not root:
            raise click.UsageError(f"only root may end {user}'s processes")
    elif all_users:
        uid = None
    return Scope(uid=uid, include_active=include_active, without_nvml=without_nvml)


def _backend(settings: Settings) -> GpuBackend | None:
    from gpudoc.errors import EnvironmentMissing

    try:
        return settings.gpu_backend()
    except EnvironmentMissing:
        return None


@click.command()
@click.option("--gpu", "gpus", type=click.IntRange(min=0), multiple=True, metavar="N",
              help="Only holders of this GPU (repeatable).")
@click.option("--user", metavar="USER", help="Only this user's holders (root for anyone but yourself).")
@click.option("--all-users", is_flag=True, help="Every user's holders (root only).")
@click.option("--device-glob", default=DEFAULT_DEVICE_GLOB, show_default=True, envvar="GPUDOC_DEVICE_GLOB",
              help="Device files to look for.")
@click.option("--include-active", is_flag=True,
              help="Also end holders that are not orphans (still never protected ones).")
@click.option("--without-nvml", is_flag=True,
              help="Also end unconfirmed orphans: holders whose CUDA context is unknown because NVML could "
              "not be asked (no driver library, a failed GPU, a GPU that will not list its processes).")
@click.option("--yes", "-y", is_flag=True, help="Act without asking; without it gpudoc only reports (dry run).")
@click.option("--signal", "signal_name", type=click.Choice(list(_SIGNALS), case_sensitive=False), default="TERM",
              show_default=True, help="First signal; survivors get SIGKILL after --timeout.")
@click.option("--timeout", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds to wait for the first signal to work.")
@click.option("--window", type=click.FloatRange(min=0.05), default=0.5, show_default=True,
              help="Seconds of CPU sampling that tell an idle orphan from a detached job still working.")
@click.option("--protect", multiple=True, metavar="NAME", help="Never end processes with this name (repeatable).")
@click.option("--slurm-epilog", is_flag=True,
              help="Slurm epilog mode: end the finished job's leftover holders (SLURM_JOB_USER, SLURM_JOB_ID), "
              "log to stderr, always exit 0.")
@json_option
@pass_settings
def reap(
    settings: Settings,
    gpus: tuple[int, ...],
    user: str | None,
    all_users: bool,
    device_glob: str,
    include_active: bool,
    without_nvml: bool,
    yes: bool,
    signal_name: str,
    timeout: float,
    window: float,
    protect: tuple[str, ...],
    slurm_epilog: bool,
    as_json: bool,
) -> int:
    """Find processes holding /dev/nvidia* and end the orphaned ones.

    Every holder is listed with a verdict and the reason: orphan (its original parent is
    gone, it is idle and owns no CUDA context), unconfirmed (an orphan but for what could
    not be checked: without NVML, whether it owns a CUDA context), detached (re-parented but
    still working), active, protected (gpudoc, its ancestors, PID 1, kernel threads, driver
    daemons, display servers) or foreign (an NVML PID from another namespace). Only orphans
    of the invoking user are ended, and only with --yes or a confirmation on a terminal;
    --user lists only that user's holders. Under --simulate this host's /dev/nvidia* is not
    scanned (give --device-glob to scan files).

    Exit 0 when nothing is left to do, 1 when orphans remain (dry run, declined, not
    ended, or unconfirmed), 2 on bad usage, 3 when /proc cannot be read.
    """
    if slurm_epilog:
        from gpudoc.reap.slurm import run_epilog

        return run_epilog(_backend(settings), device_glob=device_glob, timeout=timeout, window=window, protect=protect)
    from gpudoc.reap.service import inspect_holders

    sig = _SIGNALS[signal_name.upper()]
    scope = _scope(user, all_users, include_active, without_nvml)
    # A simulated machine has no device files: this host's would be judged by simulated NVML.
    scanned: str | None = None if settings.simulate and device_glob == DEFAULT_DEVICE_GLOB else device_glob
    if scanned is not None and not device_files(scanned):
        if device_glob != DEFAULT_DEVICE_GLOB:
            raise InputError(f"--device-glob: no file matches {device_glob!r}", "check the pattern")
        click.echo(f"gpudoc: note: no file matches {device_glob}: the NVIDIA driver is not loaded; nothing to reap",
                   err=True)
        if as_json:
            emit_json([])
        return ExitCode.OK
    backend = _backend(settings)
    out: Console | None = None
    try:
        report = inspect_holders(backend, device_glob=scanned, protect=protect, window=window)
        if gpus:
            wanted = set(gpus)
            report = dataclasses.replace(report, holders=tuple(h for h in report.holders if wanted & set(h.gpus)))
        if user:
            report = dataclasses.replace(report, holders=tuple(h for h in report.holders if h.uid == scope.uid))
        actions = plan(report.holders, scope, sig)
        targets = [h for h in report.holders if actions[h.pid].outcome is Outcome.WOULD_END]
        if not as_json:
            from rich.console import Console

            out = Console(file=sys.stdout, highlight=False, width=None if sys.stdout and sys.stdout.isatty() else 200)
            render(report, actions, out, acting=yes)
            out.print(_summary(report, actions))
        _notes(report, settings.simulate)
        act = bool(targets) and (yes or (not as_json and _confirm(len(targets))))
        result = _end(report, targets, backend, sig, timeout, device_glob) if act else None
        if result is not None:
            actions.update(result.actions)
    finally:
        if backend is not None:
            backend.close()
    if out is None:
        emit_json(_json_rows(report, actions, result))
    elif result is not None:
        _render_result(result, out)
    elif targets:
        out.print(f"dry run: {len(targets)} process(es) would be ended; rerun with --yes to end them")
    unconfirmed = _unconfirmed(report, actions, scope)
    if unconfirmed and out is not None:
        out.print(f"{len(unconfirmed)} unconfirmed orphan(s) left alone: "
                  + ("their CUDA context is unknown; check with nvidia-smi, then --without-nvml ends them"
                     if report.nvml_error else "see why: above"))
    if not targets:
        return ExitCode.FINDINGS if unconfirmed else ExitCode.OK
    done = result is not None and all(a.outcome in (Outcome.ENDED, Outcome.GONE) for a in result.actions.values())
    return ExitCode.OK if done and not unconfirmed else ExitCode.FINDINGS


def _unconfirmed(report: ReapReport, actions: dict[int, Action], scope: Scope) -> list[HolderReport]:
    """Unconfirmed orphans in scope (the user's own, or every user's) that are not being ended."""
    return [
        h for h in report.holders
        if h.verdict is Verdict.UNCONFIRMED and actions[h.pid].outcome is Outcome.NONE
        and (scope.uid is None or h.uid == scope.uid)
    ]


def _end(
    report: ReapReport,
    targets: list[HolderReport],
    backend: GpuBackend | None,
    sig: signal.Signals,
    timeout: float,
    device_glob: str,
) -> ReapResult:
    """End the targets, with a spinner while waiting on a terminal."""
    from gpudoc.reap.service import end_targets

    if not sys.stderr.isatty():
        return end_targets(report, targets, backend, sig=sig, timeout=timeout, device_glob=device_glob)
    from rich.console import Console

    with Console(stderr=True).status(f"ending {len(targets)} process(es)…"):
        return end_targets(report, targets, backend, sig=sig, timeout=timeout, device_glob=device_glob)


def _render_result(result: ReapResult, console: Console) -> None:
    from rich.markup import escape

    for pid, action in sorted(result.actions.items()):
        style = "green" if action.outcome in (Outcome.ENDED, Outcome.GONE) else "red"
        console.print(f"[{style}]{pid:>8}[/]  {escape(action.action)}")
    freed = sum(result.freed_fds.values())
    console.print(f"freed {freed} device descriptor(s) held by {len(result.freed_fds)} process(es)")
    for gpu in sorted(set(result.memory_before) | set(result.memory_after)):
        before, after = result.memory_before.get(gpu), result.memory_after.get(gpu)
        if before is not None and after is not None:
            console.print(f"GPU {gpu}: {format_bytes(before)} → {format_bytes(after)} used")
    if result.still_holding:
        console.print(f"[red]still holding devices: {', '.join(map(str, result.still_holding))}[/]")
