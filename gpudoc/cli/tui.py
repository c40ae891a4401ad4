"""``gpudoc tui``: the live GPU and host monitor (the only command that imports Textual)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import click

from gpudoc.cli.common import Settings, pass_settings
from gpudoc.cli.run import check_output, checked_logdir, model_options, model_run, restarts_option
from gpudoc.errors import EnvironmentMissing, ExitCode, InputError
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--demo", metavar="[SCENARIO]", is_flag=False, flag_value="workstation", default=None,
              help="Run on simulated GPUs: a built-in scenario (workstation, dgx, faults) or a scenario file; "
              "no GPU needed.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between samples.")
@click.option("--readonly", is_flag=True, help="No terminate, kill or reap actions.")
@click.option("--device-glob", default=DEFAULT_DEVICE_GLOB, show_default=True, envvar="GPUDOC_DEVICE_GLOB",
              help="Device files whose holders are shown with their reap verdict (on simulated GPUs, this host's "
              "are not scanned unless this names files).")
@click.option("--log", type=click.Path(dir_okay=False, path_type=Path),
              help="Append the run's whole output to this file (with a COMMAND).")
@click.option("--logdir", type=click.Path(file_okay=False, path_type=Path),
              help="Follow the TensorBoard event files under this directory (given to a COMMAND as "
              "GPUDOC_LOGDIR); without a COMMAND, the runs already there. Default with a COMMAND: the event "
              "files its processes hold open, else those that appear under the working directory.")
@restarts_option
@model_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_settings
def tui(
    settings: Settings, demo: str | None, interval: float, readonly: bool, device_glob: str, log: Path | None,
    logdir: Path | None, restarts: int, model: str | None, batch: int | None, input_spec: str | None,
    precision: str, optimizer: str, freeze: str | None, checkpointing: bool, accumulate: int,
    command: tuple[str, ...],
) -> int:
    """Watch the GPUs, their processes (orphaned device holders included) and the host;
    with a COMMAND (after --), run it and watch it too.

    Keys: s sort, u/g filter by user/GPU, c clear the filters, t terminate, k kill, r reap
    orphans, x stop the run, ? help, q quit. Every action asks first and follows `gpudoc
    reap`'s rules. d, m, o and b open the doctor, metrics-check (logs or pred/target
    images), oom estimate and oom max-batch screens, e events (info, trim, export) and M mask
    sweep (also from the command palette, ctrl+p): Enter runs, Escape cancels, ctrl+s saves
    the --json.

    The run gets a session of its own: its panel shows its state, last output lines and any
    out-of-memory message, its processes are marked in the table, and stopping it (x, or
    quitting while it runs) ends every process of it — SIGTERM, then SIGKILL after 10 s;
    processes it leaves on a GPU after it ended are shown with their verdicts, and x stops
    them too. Its scalars (event files, else its output lines) are drawn as curves and
    checked as in `gpudoc run`: v shows the next scalar, a switches the x axis between step
    and relative time, [ and ] change TensorBoard's smoothing, l lists the checks that fired.
    With --logdir and no COMMAND, the runs there are followed the same way.
    --restarts N starts the command again after it failed (not after x), the attempt shown.

    --model SPEC --batch N (with oom estimate's options) estimates the run's GPU memory before
    it starts, as `gpudoc run --model` does: against the visible GPU (CUDA_VISIBLE_DEVICES,
    else all; --demo's) with the least memory free now. The verdict is shown beside the memory
    its processes use; when it predicts out of memory, you are asked whether to start it at
    all; after an out-of-memory end the panel shows max-batch's answer for the same spec.

    SIGTERM or SIGHUP (the terminal closed) stops the run as x does, without asking, and quits
    (under nohup SIGHUP stays ignored).

    Exit status: 0, or with a COMMAND 0 when it succeeded, 1 when it failed (also when x then
    stopped what it left; its own status is in the line on exit) or you chose not to start it,
    130 when you stopped it or on SIGTERM/SIGHUP; 70 when the monitor itself
    failed (every process of the run still alive is stopped then).
    """
    from gpudoc.monitor import Monitor
    from gpudoc.train import Attempts, RunState, describe
    from gpudoc.tui.app import GpudocApp

    if log is not None and not command:
        raise InputError("--log needs a command to run", "gpudoc tui --log run.log -- python train.py")
    if log is not None:  # (the run may start later, in the app, after the estimate's question)
        check_output("--log", log, append=True)
    spec = model_run(model, batch, input_spec, precision, optimizer, freeze, checkpointing, accumulate)
    if (spec is not None or restarts) and not command:
        raise InputError(f"{'--model' if spec is not None else '--restarts'} needs a command to run",
                         "gpudoc tui --model SPEC --batch N -- python train.py" if spec is not None
                         else "gpudoc tui --restarts 2 -- python train.py")
    env = dict(os.environ)
    if logdir is not None:
        logdir = checked_logdir(logdir, "give --logdir a directory with TensorBoard event files, or a COMMAND "
                                "after -- that writes them there", must_exist=not command)
        env["GPUDOC_LOGDIR"] = str(logdir)
    if demo:
        settings.simulate = demo
    backend = settings.gpu_backend()  # a bad --demo scenario fails here, before the run starts
    estimate = None
    note = None
    if spec is not None:  # as gpudoc run --model: bad options are one line, before anything starts
        from gpudoc.cli.oom import _status

        try:
            with _status(False) as stage:
                estimate = spec.estimate(settings.gpu_backend(), env.get("CUDA_VISIBLE_DEVICES"), stage)
        except EnvironmentMissing as exc:
            note = exc.message
    watch = None
    if command or logdir is not None:
        from gpudoc.runwatch import Checks, LogFinder, Watch

        # With a command, files under --logdir from before it started are an earlier run's.
        watch = Watch(LogFinder(logdir, Path.cwd(), time.time(), skip_earlier=bool(command)), Checks())
    attempts = Attempts(command, restarts, env=env, log=log, on_line=watch.take_line if watch else None) \
        if command else None
    if attempts is not None and (estimate is None or estimate[1].verdict != "oom"):
        attempts.start()  # at once (a command that cannot run is one line); else after asking, in the app
    failed = True  # until the app has returned by itself
    try:
        monitor = Monitor(backend, device_glob=device_glob)
        try:
            app = GpudocApp(monitor, interval=interval, readonly=readonly, watch=watch, simulated=settings.simulate,
                            attempts=attempts, estimate=estimate, estimate_note=note)
            app.run()
            failed = bool(app.return_code)  # Textual returns 1 after an exception in the app
        finally:
            monitor.close()
    finally:
        # After a failure nobody was asked about the processes the run left: stop them too.
        run = attempts.run if attempts is not None else None
        if run is not None and (run.running or (failed and run.members())):
            run.stop()
    status = run.wait(1.0) if run is not None else None
    if failed:
        ended = f"; the run {describe(status)}" if status is not None else ""
        print(f"gpudoc: error: the monitor failed (its traceback is above){ended}", file=sys.stderr)
        return ExitCode.INTERNAL
    if app.start_error is not None:
        raise app.start_error
    if attempts is not None and attempts.run is None:  # "don't start", or quit at the question
        assert estimate is not None
        print(f"gpudoc: the run was not started: {estimate[1].line()}", file=sys.stderr)
        return ExitCode.FINDINGS
    if app.signalled is not None:
        stopped = status is not None and status.state is RunState.STOPPED
        _tell(f"gpudoc: {app.signalled.name} received: {'the run was stopped' if stopped else 'quit'}")
    if status is None or attempts is None:
        return ExitCode.INTERRUPTED if app.signalled is not None else ExitCode.OK
    oom = f"; out of memory: {status.oom}" if status.oom else ""
    attempt = f" (attempt {attempts.number})" if attempts.number > 1 else ""
    _tell(f"gpudoc: the run {describe(status)}{attempt}{oom}")
    if app.max_batch is not None:
        _tell(f"gpudoc: {app.max_batch}")
    if app.signalled is not None:
        return ExitCode.INTERRUPTED
    if status.state is RunState.SUCCEEDED:
        return ExitCode.OK
    return ExitCode.INTERRUPTED if status.state is RunState.STOPPED else ExitCode.FINDINGS


def _tell(line: str) -> None:
    """``line`` on stderr, unless the terminal is gone (SIGHUP: the window closed): the exit
    status still says how the run ended."""
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr, flush=True)
