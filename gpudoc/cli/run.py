"""``gpudoc run -- CMD``: the supervised run without a screen (CI, Slurm, nohup)."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

import click

from gpudoc.cli.common import Settings, pass_settings
from gpudoc.errors import EnvironmentMissing, ExitCode, InputError
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB

if TYPE_CHECKING:
    from gpudoc.oom.plan import Fit, Plan
    from gpudoc.reap.proc import ProcStat
    from gpudoc.runwatch import ModelRun
    from gpudoc.train import Run

# metrics-check's --range choices (gpudoc.metrics.compute.RANGES; importing it here would load
# numpy at every gpudoc run start)
_RANGES = ["auto", "1", "2", "255", "65535"]
F = TypeVar("F", bound=Callable[..., Any])


def restarts_option(fn: F) -> F:
    """``--restarts N`` (gpudoc run and gpudoc tui)."""
    return click.option("--restarts", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
                        help="Start the command again after it failed (not after a stop), up to N times.")(fn)


def model_options(fn: F) -> F:
    """``--model SPEC --batch N`` and oom estimate's options, for the pre-launch estimate
    (gpudoc run and gpudoc tui); :func:`model_run` reads them."""
    options = [
        click.option("--model", metavar="SPEC", help="Estimate the run's GPU memory before it starts (as `gpudoc "
                     "oom estimate SPEC`) against the GPUs it will see (CUDA_VISIBLE_DEVICES, else all) and the "
                     "memory free on them now; needs --batch."),
        click.option("--batch", type=click.IntRange(1), help="The batch one GPU trains (per process), for --model."),
        click.option("--input", "input_spec", help="For --model: the input size without the batch (as in oom "
                     "estimate)."),
        click.option("--precision", type=click.Choice(["fp32", "amp", "bf16"]), default="fp32", show_default=True,
                     help="For --model, as in oom estimate."),
        click.option("--optimizer", default="adam", show_default=True, help="For --model, as in oom estimate."),
        click.option("--freeze", metavar="REGEX", help="For --model, as in oom estimate."),
        click.option("--checkpointing", is_flag=True, help="For --model, as in oom estimate."),
        click.option("--accumulate", type=click.IntRange(1), default=1, show_default=True,
                     help="For --model, as in oom estimate."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def model_run(model: str | None, batch: int | None, input_spec: str | None, precision: str, optimizer: str,
              freeze: str | None, checkpointing: bool, accumulate: int) -> ModelRun | None:
    """The run's model from :func:`model_options` (None without ``--model``/``--batch``)."""
    from gpudoc.runwatch import ModelRun

    if model is None and batch is None:
        return None
    if model is None or batch is None:
        raise click.UsageError("--model and --batch go together (the estimate needs both)")
    return ModelRun(model, batch, input_spec, precision, optimizer, freeze, checkpointing, accumulate)


def check_output(option: str, dest: str | Path, append: bool = False) -> None:
    """Refuse now, before the run starts, an output (``option``'s ``dest``) that could not be
    written when the run ends: a directory or socket, a missing parent directory, a place
    without write permission, a closed stdout. Nothing is created: the file is still written
    whole at the end (``append``: opened in place, so an existing file must be writable)."""
    from gpudoc.output import output_target, staging_file

    target = output_target(dest)  # a directory, socket or bad path: one line
    if target.fd == 1 and (sys.stdout is None or sys.stdout.closed):
        raise InputError(f"{option} {dest}: stdout is closed", f"give {option} a file, or run with stdout open")
    if target.stream:  # a device or FIFO is opened when written (a FIFO's open would wait for its reader)
        return
    parent = target.path.parent
    if not parent.is_dir():
        raise InputError(f"{option} {dest}: no such directory {parent}", "create it first, or write elsewhere")
    try:
        if append and target.path.exists():  # opened for appending, changing nothing
            os.close(os.open(target.path, os.O_WRONLY | os.O_APPEND))
        else:  # a new file, or the temporary file that replaces it, is made in the directory
            staging_file(target.path).unlink()
    except OSError as exc:
        raise InputError(f"{option} {dest}: cannot write it ({exc.strerror or exc})",
                         "choose a place you can write to") from None


def checked_logdir(logdir: Path, fix: str, must_exist: bool = False) -> Path:
    """``--logdir`` made absolute (gpudoc run and gpudoc tui): refused when it is not a
    directory, a symlink to nothing (the run could not create it there), or missing while
    ``must_exist`` (nothing would write it)."""
    logdir = logdir.absolute()
    if logdir.exists() and not logdir.is_dir():
        raise InputError(f"{logdir}: not a directory", fix)
    if not logdir.exists() and (must_exist or logdir.is_symlink()):
        link = f" (a symbolic link to {os.readlink(logdir)}, which does not exist)" if logdir.is_symlink() else ""
        raise InputError(f"{logdir}: no such directory{link}", fix)
    return logdir


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--logdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the run writes TensorBoard event files (given to it as GPUDOC_LOGDIR; files there "
              "last modified before the run started are an earlier run's and left out). Default: the "
              "event files its processes hold open, else those that appear under the working directory.")
@click.option("--log", type=click.Path(dir_okay=False, path_type=Path),
              help="Append the run's whole output to this file.")
@click.option("--json", "json_dest", metavar="FILE", help="Write the end summary as JSON to FILE (- for stdout; the "
              "run's output then goes to stderr).")
@click.option("--github", is_flag=True, help="Print the checks as GitHub Actions annotations.")
@click.option("--junit", "junit_dest", metavar="FILE", help="Write the checks as a JUnit XML report (one test case "
              "per rule, as metrics-check writes them; - for stdout).")
@click.option("--strict", is_flag=True, help="Exit 1 when a check raised an error (e.g. a metric-scale finding), "
              "even if the run succeeded.")
@click.option("--range", "range_", type=click.Choice(_RANGES), default="auto", show_default=True,
              help="The data range the logged image metrics should be at (as in metrics-check).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between looks at the event files and the output.")
@click.option("--stall-min", type=click.FloatRange(min=0.1), default=60.0, show_default=True, metavar="SECONDS",
              help="A stall is no new step for at least this long and for 10 times the recent interval "
              "between new steps or, if shorter, twice the time from the start to the last new step (so a hang "
              "early in the run is caught too).")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True, metavar="SECONDS",
              help="When stopping: seconds between SIGTERM and SIGKILL.")
@click.option("--device-glob", default=DEFAULT_DEVICE_GLOB, show_default=True, envvar="GPUDOC_DEVICE_GLOB",
              help="Device files that a process of the run may not hold once its leader has exited.")
@click.option("--reap-leftovers", is_flag=True, help="End the run's processes that still hold a device file after "
              "its leader exited (SIGTERM, SIGKILL after --grace, gpudoc reap's identity checks); one ended is a "
              "warning, not a --strict failure.")
@restarts_option
@model_options
@click.option("--require-fit", is_flag=True, help="With --model: do not start the run when the estimate "
              "predicts out of memory (exit 1, with the verdict and the best remedy).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_settings
def run(settings: Settings, logdir: Path | None, log: Path | None, json_dest: str | None, github: bool,
        junit_dest: str | None, strict: bool,
        range_: str, interval: float, stall_min: float, grace: float, device_glob: str, reap_leftovers: bool,
        restarts: int, model: str | None, batch: int | None, input_spec: str | None, precision: str,
        optimizer: str, freeze: str | None, checkpointing: bool, accumulate: int, require_fit: bool,
        command: tuple[str, ...]) -> int:
    """Run COMMAND (after --) in a session of its own and watch it: its output passes through
    (and to --log), its scalars are read from its event files (or its output lines) and
    checked as they arrive — non-finite values, loss spikes, steps going backwards or repeating,
    stalls and the metric-scale rules of metrics-check — each printed once as
    'gpudoc: error: …' or 'gpudoc: warning: …' on stderr; a scalar is named by its tag under its directory relative
    to --logdir (else the working directory). SIGINT, SIGTERM or SIGHUP (the terminal closed) to
    gpudoc stops the whole run (exit 130, as for any stop; under nohup SIGHUP stays ignored).
    When stdout's reader goes away (| head) the run goes on without passing its output through
    (said once on stderr; --log keeps it), and the exit status is still the run's. At the
    end one summary on stderr: how it ended, duration, steps, last and best of each scalar,
    the peak GPU memory of its processes (NVML, or --simulate), the checks raised, the leftovers.

    Processes of the run that still hold a GPU device file after its leader exited are
    reported at once (--reap-leftovers ends them); --restarts N starts a failed run again.

    --model SPEC --batch N estimates the run's peak GPU memory before it starts, against the
    visible GPU with the least memory free now, and prints the verdict (a warning when it
    predicts out of memory; --require-fit then refuses to start); the summary shows the
    estimate next to the measured peak, and after an out-of-memory end max-batch's answer.

    Exit status: the command's own when it failed (128+N when signal N killed it), 130 when
    stopped (a second signal SIGKILLs the run at once), 0 when it succeeded — 1 under
    --strict when a check raised an error, or when --require-fit refused to start it.
    """
    from gpudoc.output import atomic_file, emit_json, is_stdout, refuse_shared_outputs
    from gpudoc.metrics.report import junit_xml
    from gpudoc.cli.oom import _status
    from gpudoc.runwatch import (Check, Checks, Leftover, LogFinder, Watch, annotation, end_leftovers,
                                 find_leftovers, how_it_ended, jsonable_summary, leftover_check, one_line, plain,
                                 run_report, with_max_batch)
    from gpudoc.train import Attempts, RunState

    dests = [d for d in (json_dest, junit_dest) if d is not None]
    for option, dest in (("--log", log), ("--json", json_dest), ("--junit", junit_dest)):
        if dest is not None:  # what cannot be written at the end fails now, before the run
            check_output(option, dest, append=option == "--log")
    if len([d for d in dests if is_stdout(d)]) > 1:
        raise click.UsageError("--json and --junit cannot both write to stdout")
    refuse_shared_outputs([(name, dest) for name, dest in (("--log", log), ("--json", json_dest),
                                                         ("--junit", junit_dest)) if dest is not None])
    # The run's output goes where gpudoc's own stdout goes (nowhere when that is closed).
    out_stream = sys.stderr if any(is_stdout(d) for d in dests) else sys.stdout
    passthrough = Passthrough(out_stream.buffer, "stderr" if out_stream is sys.stderr else "stdout", log) \
        if out_stream is not None else None
    echo = cast("BinaryIO", passthrough)
    env = dict(os.environ)
    if logdir is not None:
        logdir = checked_logdir(logdir, "give --logdir the directory the run writes events to")
        env["GPUDOC_LOGDIR"] = str(logdir)
    fit: Fit | None = None
    made: Plan | None = None
    spec = model_run(model, batch, input_spec, precision, optimizer, freeze, checkpointing, accumulate)
    if spec is not None:
        try:
            with _status(False) as stage:
                made, fit = spec.estimate(settings.gpu_backend(), env.get("CUDA_VISIBLE_DEVICES"), stage)
        except EnvironmentMissing as exc:
            if require_fit:  # no estimate is no proof that it fits
                raise
            fix = f" (fix: {exc.fix})" if exc.fix else ""
            print(f"gpudoc: warning: no estimate before the start: {exc.message}{fix}", file=sys.stderr, flush=True)
    elif require_fit:
        raise click.UsageError("--require-fit needs --model and --batch")
    if fit is not None:
        print("gpudoc: " + fit.line(), file=sys.stderr, flush=True)
        remedy = fit.remedy_line()
        if fit.verdict == "oom":
            check = Check("predicted-oom", "warning", f"the run is estimated not to fit GPU {fit.gpu}'s free memory",
                          remedy or "")
            print(annotation(check) if github else plain(check), file=sys.stderr, flush=True)
            if require_fit:
                print("gpudoc: --require-fit: not starting the run", file=sys.stderr, flush=True)
                return int(ExitCode.FINDINGS)
        elif remedy:
            print(f"gpudoc: note: {remedy}", file=sys.stderr, flush=True)
    cwd = Path.cwd()
    watch = Watch(LogFinder(logdir, cwd, time.time(), skip_earlier=True),
                  Checks(None if range_ == "auto" else float(range_), stall_min=stall_min), settings.gpu_backend())

    stop = threading.Event()
    received: list[int] = []
    current: list[Run] = []  # the attempt running now
    killed: list[Run] = []  # attempts gpudoc sent SIGKILL (no OOM killer to blame)

    told: list[int] = []  # the first signal's notice was printed
    # The run's output and stderr may end up on one line (a terminal, a pipe a CI runner merges),
    # unless the output goes to a file of its own or to /dev/null.
    shared = _may_share_a_line(out_stream, sys.stderr)

    def mid_line(run: Run) -> bool:
        """Whether stderr's next line must start with a newline (and that it no longer must)."""
        inside = run.echo_mid_line and shared and passthrough is not None and not passthrough.gone
        run.echo_mid_line = False
        return inside

    def notice(signum: int) -> str:
        return (f"gpudoc: {signal.Signals(signum).name} received: stopping the run (SIGTERM to its session, "
                f"SIGKILL after {grace:g}s)")

    def tell(line: str, run: Run) -> None:
        """``line`` on stderr from a signal handler: written straight to the descriptor (print
        could be inside another print of the main thread), on a line of its own."""
        start = "\n" if mid_line(run) else ""
        with contextlib.suppress(OSError):
            os.write(2, (start + line + "\n").encode())

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        run = current[0] if current else None
        if stop.is_set() and run is not None:  # a second signal while stopping: no more grace
            tell(f"gpudoc: {signal.Signals(signum).name} again: SIGKILL to the run", run)
            killed.append(run)
            # From a thread: the main thread may hold the run's scan lock that members() takes.
            threading.Thread(target=_kill_all, args=(run,), name="gpudoc-sigkill", daemon=True).start()
        elif not stop.is_set() and run is not None and run.running:
            tell(notice(signum), run)  # now, before anything a second signal prints
            told.append(signum)
        stop.set()

    # A hangup that was ignored when gpudoc started (nohup) stays ignored.
    heard = [sig for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
             if sig is not signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, on_signal) for sig in heard}

    def say(line: str, run: Run) -> None:
        """``line`` on stderr, on a line of its own even when the run's output stops inside one
        (a progress bar): GitHub reads annotations only at the start of a line."""
        start = "\n" if mid_line(run) else ""
        print(start + line, file=sys.stderr, flush=True)

    def report(checks: list[Check], run: Run) -> None:
        for check in checks:
            say(annotation(check) if github else plain(check), run)

    began = time.monotonic()
    attempts = Attempts(command, restarts, env=env, log=log, echo=echo, on_line=watch.take_line)
    leftovers: list[Leftover] = []
    started: Run | None = None
    try:
        while True:
            started = attempts.start()
            current[:] = [started]
            while started.running and not stop.is_set():
                members = started.members()
                report(watch.poll([m.pid for m in members], started.running, len(members)), started)
                started.wait_exit(interval, stop)  # the leader's exit is acted on at once
            if stop.is_set() and started.members():
                if not told:  # the signal came after the leader exited, while its processes lived
                    say(notice(received[0]), started)
                started.stop(grace)
            remaining = [] if stop.is_set() else _remaining(started, stop)
            if remaining:
                found = find_leftovers(remaining, device_glob)
                holding = [left for left in found if left.devices]
                if reap_leftovers and holding:  # ended first: one gpudoc ended is a warning, not an error
                    holding = end_leftovers(holding, grace)
                report([leftover_check(left) for left in holding], started)
                for left in holding if reap_leftovers else []:
                    say(f"gpudoc: leftover PID {left.pid}: {left.action}", started)
                leftovers += holding + [left for left in found if not left.devices]
            status = started.wait(grace + 1)
            if not attempts.again(status) or stop.is_set():
                break
            say("gpudoc: " + attempts.restarting(how_it_ended(status)[0]), started)
    except BaseException:
        if started is not None and started.members():
            started.stop(grace)  # gpudoc failing leaves no run behind
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        watch.gpu.close()
    assert started is not None
    report(watch.finish(), started)
    if status.state is RunState.STOPPED or (stop.is_set() and status.state is not RunState.SUCCEEDED):
        code = int(ExitCode.INTERRUPTED)
    elif status.state is RunState.FAILED and status.returncode is not None:
        code = status.returncode if status.returncode > 0 else 128 - status.returncode
    else:
        code = int(ExitCode.OK)
    duration = (started.ended_at or time.monotonic()) - began  # to the leader's exit, not the leftovers' wait
    if fit is not None and made is not None and status.oom:
        with _status(False) as stage:
            fit = with_max_batch(made, fit, stage)
    summary = replace(watch.summary(status, code, attempts.number, leftovers, duration, killed=started in killed),
                      estimate=fit)
    checked = run_report(watch.checks, one_line(command, None), {"returncode": str(status.returncode)})
    if strict and code == 0 and checked.exit_code:
        code = int(ExitCode.FINDINGS)
        summary = replace(summary, exit_code=code)
    checked.properties["exit_code"] = str(code)  # gpudoc's, as the JSON's exit_code
    for line in summary.lines():
        say("gpudoc: " + line, started)
    if json_dest is not None:
        with atomic_file(json_dest, "w") as out:
            emit_json(jsonable_summary(summary), out)
    if junit_dest is not None:
        with atomic_file(junit_dest, "wb") as out:
            out.write(junit_xml(checked, "gpudoc run"))
    return code


def _remaining(run: Run, stop: threading.Event) -> list[ProcStat]:
    """The run's processes still alive a moment after its leader exited (workers that exit
    with their leader are given ``LEFTOVER_WAIT`` seconds to go)."""
    from gpudoc.train import LEFTOVER_WAIT

    deadline = (run.ended_at or time.monotonic()) + LEFTOVER_WAIT  # from the leader's exit
    members = run.members()
    while members and time.monotonic() < deadline and not stop.wait(0.05):
        members = run.members()
    return members


class Passthrough:
    """The run's output copied to gpudoc's stdout (``name``; stderr under ``--json -``). When
    that cannot take more — its reader went away (``| head``), a full disk — the run goes on:
    that is said once on stderr and every later write fails, so the run (and a restarted one)
    stops copying; ``--log`` still gets all of it."""

    def __init__(self, stream: BinaryIO, name: str, log: Path | None) -> None:
        self._stream, self._name, self._log = stream, name, log
        self.gone = False

    def write(self, data: bytes | memoryview) -> int:
        return self._do(lambda: self._stream.write(data) or 0)

    def flush(self) -> None:
        self._do(lambda: self._stream.flush() or 0)

    def _do(self, act: Callable[[], int]) -> int:
        if self.gone:
            raise ValueError(f"{self._name} is gone")
        try:
            return act()
        except (OSError, ValueError) as exc:
            self.gone = True
            why = "its reader went away" if isinstance(exc, BrokenPipeError) else \
                (getattr(exc, "strerror", None) or str(exc))
            kept = f"{self._log} gets all of it" if self._log is not None else "--log FILE would keep it"
            with contextlib.suppress(OSError, ValueError):
                print(f"gpudoc: warning: the run's output no longer goes to {self._name} ({why}); the run goes "
                      f"on, supervised as before ({kept})", file=sys.stderr, flush=True)
            raise


def _kill_all(run: Run) -> None:
    """SIGKILL to every process of ``run`` (a second signal: no more grace)."""
    for member in run.members():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member.pid, signal.SIGKILL)


def _may_share_a_line(out: IO[str] | None, err: IO[str]) -> bool:
    """Whether text written to ``out`` may end up on the same line as ``err``'s: unless ``out``
    is a regular file or /dev/null that ``err`` is not."""
    if out is None:
        return False
    try:
        info, other = os.fstat(out.fileno()), os.fstat(err.fileno())
    except (OSError, ValueError, AttributeError):
        return True
    if (info.st_dev, info.st_ino) == (other.st_dev, other.st_ino):
        return True
    return not (stat.S_ISREG(info.st_mode) or (stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3)))
