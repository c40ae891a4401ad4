"""What every command shares: global settings, the GPU backend choice, the --json option, and
the lazily loaded command groups."""

from __future__ import annotations

from gettext import gettext as _
from typing import TYPE_CHECKING, ClassVar

import click

if TYPE_CHECKING:
    from gpudoc.gpu import GpuBackend


class Settings:
    """Global options, filled in by the ``gpudoc`` group."""

    def __init__(self, debug: bool = False, simulate: str | None = None) -> None:
        self.debug = debug
        self.simulate = simulate

    def gpu_backend(self) -> GpuBackend:
        """NVML, or the simulated GPUs of ``--simulate SCENARIO``."""
        if self.simulate:
            from gpudoc.gpu import SimulatedBackend

            return SimulatedBackend(self.simulate)
        from gpudoc.gpu import NvmlBackend

        return NvmlBackend()


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs (or shows its
    help). ``lazy`` maps each name to ``"module:attribute"`` and the first sentence of the
    command's help, from which the group's ``--help`` lists it as click would from the command
    itself (tests/test_cli.py checks that they agree)."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return None
        module, attr = self.lazy[cmd_name][0].split(":")
        # The import statement's machinery (not importlib's), so `python -X importtime` shows it.
        command: click.Command = getattr(__import__(module, fromlist=[attr]), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(map(len, self.lazy))
        rows = [(name, click.Command(name, help=summary).get_short_help_str(limit))
                for name, (_target, summary) in sorted(self.lazy.items())]
        with formatter.section(_("Commands")):
            formatter.write_dl(rows)


pass_settings = click.make_pass_decorator(Settings, ensure=True)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON on stdout."
)
