"""What every command shares: global settings, the GPU backend choice, the --json option."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from gpudoc.gpu import GpuBackend


@dataclass
class Settings:
    """Global options, filled in by the ``gpudoc`` group."""

    debug: bool = False
    simulate: str | None = None

    def gpu_backend(self) -> GpuBackend:
        """NVML, or the simulated GPUs of ``--simulate SCENARIO``."""
        if self.simulate:
            from gpudoc.gpu import SimulatedBackend

            return SimulatedBackend(self.simulate)
        from gpudoc.gpu import NvmlBackend

        return NvmlBackend()


pass_settings = click.make_pass_decorator(Settings, ensure=True)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON on stdout."
)
