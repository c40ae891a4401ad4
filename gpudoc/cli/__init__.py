"""The ``gpudoc`` command line: one group, lazily loaded subcommands, one error path."""

from __future__ import annotations

import importlib
import os
import shlex
import sys
import traceback
from typing import NoReturn

import click

from gpudoc import __version__
from gpudoc.cli.common import Settings
from gpudoc.errors import ExitCode, GpudocError
from gpudoc.output import print_error

# Subcommand name -> "module:attribute". Command modules keep heavy imports (torch,
# tensorflow, textual) inside their functions, so listing commands stays fast.
COMMANDS = {
    "doctor": "gpudoc.cli.doctor:doctor",
    "events": "gpudoc.cli.events:events",
    "mask": "gpudoc.cli.mask:mask",
    "metrics-check": "gpudoc.cli.metrics:metrics_check",
    "oom": "gpudoc.cli.oom:oom",
    "reap": "gpudoc.cli.reap:reap",
    "run": "gpudoc.cli.run:run",
    "serve": "gpudoc.cli.serve:serve",
    "tui": "gpudoc.cli.tui:tui",
}

# Module-level so the error path can honour --debug after the command has failed.
_settings = Settings()


class _ReaderGone(Exception):
    """The reader of stdout closed it (``gpudoc … | head``)."""


class GpudocGroup(click.Group):
    """The root group: imports a subcommand only when it is listed or run, and turns every
    failure into one ``gpudoc: error: …`` line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

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
            if _settings.debug:
                traceback.print_exc()
            print_error(str(exc))
            return exc.exit_code
        except Exception as exc:  # the one place that turns bugs into one line
            if _settings.debug:
                traceback.print_exc()
            print_error(
                f"internal error: {type(exc).__name__}: {exc} "
                "(rerun with --debug for the traceback, and please report it)"
            )
            return ExitCode.INTERNAL
        return int(result) if isinstance(result, int) else ExitCode.OK


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
    sys.exit(cli.main(prog_name="gpudoc", standalone_mode=False))
