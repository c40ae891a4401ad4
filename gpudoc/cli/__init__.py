"""The ``gpudoc`` command line: one group, lazily loaded subcommands, one error path."""

from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn

import click

from gpudoc import __version__
from gpudoc.cli.common import LazyGroup, Settings
from gpudoc.errors import ExitCode, GpudocError
from gpudoc.output import print_error

# Subcommand name -> ("module:attribute", the first sentence of its help). Only the command
# that runs is imported (`gpudoc --help` imports none), and command modules keep heavy imports
# (torch, tensorflow, textual) inside their functions.
COMMANDS = {
    "doctor": ("gpudoc.cli.doctor:doctor",
               "Check Python, the NVIDIA driver and GPUs, device files, torch, TensorFlow and numba."),
    "events": ("gpudoc.cli.events:events",
               "Inspect, trim and export TensorBoard event files without losing anything."),
    "mask": ("gpudoc.cli.mask:mask",
             "Threshold masks with an explicit rule, audit a threshold, sweep for the best one."),
    "metrics-check": ("gpudoc.cli.metrics:metrics_check", "Check that image/regression metrics use the right scale."),
    "oom": ("gpudoc.cli.oom:oom",
            "Predict peak GPU memory of training and the largest batch that fits, without a GPU."),
    "reap": ("gpudoc.cli.reap:reap", "Find processes holding /dev/nvidia* and end the orphaned ones."),
    "run": ("gpudoc.cli.run:run",
            "Run COMMAND (after --) in a session of its own and watch it: its output passes through (and to "
            "--log), its scalars are read from its event files (or its output lines) and checked as they arrive "
            "— non-finite values, loss spikes, steps going backwards or repeating, stalls and the metric-scale "
            "rules of metrics-check — each printed once as 'gpudoc: error: …' or 'gpudoc: warning: …' on "
            "stderr; a scalar is named by its tag under its directory relative to --logdir (else the working "
            "directory)."),
    "serve": ("gpudoc.cli.serve:serve",
              "Expose GPU, host and orphaned-holder figures for Prometheus to scrape on /metrics."),
    "tui": ("gpudoc.cli.tui:tui",
            "Watch the GPUs, their processes (orphaned device holders included) and the host; with a COMMAND "
            "(after --), run it and watch it too."),
}

# Module-level so the error path can honour --debug after the command has failed.
_settings = Settings()


class _ReaderGone(Exception):
    """The reader of stdout closed it (``gpudoc … | head``)."""


class GpudocGroup(LazyGroup):
    """The root group: imports a subcommand only when it is run, and turns every failure into
    one ``gpudoc: error: …`` line and an exit code."""

    lazy = COMMANDS

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _ReaderGone from None  # click would turn EPIPE into exit 1 ("problems found")

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: object,
    ) -> int:
        code = self._run(args, prog_name or "gpudoc", complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self,
        args: list[str] | None,
        prog_name: str,
        complete_var: str | None,
        extra: dict[str, object],
    ) -> int:
        _occupy_closed_descriptors()
        _settings.debug = bool(os.environ.get("GPUDOC_DEBUG"))
        _settings.simulate = None
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            if isinstance(exc, click.NoSuchOption) and exc.option_name in _GLOBAL_OPTIONS:
                import shlex

                moved = _global_first(sys.argv[1:] if args is None else list(args), exc.option_name)
                hint = f" ({exc.option_name} is a global option: {shlex.join([prog_name, *moved])})"
            print_error(f"{exc.format_message()}{hint}")
            return ExitCode.USAGE
        except click.ClickException as exc:
            print_error(exc.format_message())
            return ExitCode.USAGE
        except (KeyboardInterrupt, click.Abort):
            print_error("interrupted")
            return ExitCode.INTERRUPTED
        except _ReaderGone:  # the reader went away (| head): quietly, as SIGPIPE would end a tool
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return ExitCode.BROKEN_PIPE
        except GpudocError as exc:
            _traceback_if_debug()
            print_error(str(exc))
            return exc.exit_code
        except Exception as exc:  # the one place that turns bugs into one line
            _traceback_if_debug()
            print_error(
                f"internal error: {type(exc).__name__}: {exc} "
                "(rerun with --debug for the traceback, and please report it)"
            )
            return ExitCode.INTERNAL
        return int(result) if isinstance(result, int) else ExitCode.OK


def _traceback_if_debug() -> None:
    """The traceback of the exception being handled, on stderr, with --debug."""
    if _settings.debug:
        import traceback  # only here: it costs every start ~1 ms

        traceback.print_exc()


# The group's options (with whether each takes a value): given after a subcommand, they are
# shown where they go.
_GLOBAL_OPTIONS = {"--simulate": True, "--debug": False}


def _global_first(args: list[str], option: str) -> list[str]:
    """``args`` with ``option`` (its last use, and its value) moved before the subcommand."""
    rest = list(args)
    for i in reversed(range(len(rest))):
        arg = rest[i]
        if arg == option:
            taken = rest[i:i + 1 + _GLOBAL_OPTIONS[option]]
            del rest[i:i + len(taken)]
            return [*taken, *rest]
        if arg.startswith(option + "="):
            del rest[i]
            return [arg, *rest]
    return rest


def _occupy_closed_descriptors() -> None:
    """Started with stdin, stdout or stderr closed (``>&-``), a file gpudoc opens would get that
    descriptor and receive what is printed: /dev/null takes the place (``sys.stdout`` stays
    None, so writing data to stdout is refused with a clear error)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)


@click.group(
    cls=GpudocGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="gpudoc", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, envvar="GPUDOC_DEBUG", help="Show the traceback of an error.")
@click.option(
    "--simulate",
    metavar="SCENARIO",
    envvar="GPUDOC_SIMULATE",
    help="Use simulated GPUs instead of NVML: a built-in scenario (workstation, dgx, faults) "
    "or a JSON/YAML scenario file.",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, simulate: str | None) -> None:
    """Diagnostics and ops for deep-learning GPU boxes.

    Exit codes: 0 ok, 1 problems found, 2 bad usage or input, 3 environment missing,
    70 internal error, 130 interrupted.
    """
    _settings.debug = debug
    _settings.simulate = simulate
    ctx.obj = _settings


def main() -> NoReturn:
    """Console-script entry point."""
    # What is loaded by now (click, the group) lives as long as the process: the cyclic garbage
    # collector leaves it out of every pass from here on, the one at exit included (~6 ms of a
    # short command's 50).
    gc.freeze()
    sys.exit(cli.main(prog_name="gpudoc", standalone_mode=False))
