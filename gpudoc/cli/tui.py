"""``gpudoc tui``: the live GPU and host monitor (the only command that imports Textual)."""

from __future__ import annotations

import click

from gpudoc.cli.common import Settings, pass_settings
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB


@click.command()
@click.option("--demo", metavar="[SCENARIO]", is_flag=False, flag_value="workstation", default=None,
              help="Run on simulated GPUs: a built-in scenario (workstation, dgx, faults) or a scenario file; "
              "no GPU needed.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between samples.")
@click.option("--readonly", is_flag=True, help="No terminate, kill or reap actions.")
@click.option("--device-glob", default=DEFAULT_DEVICE_GLOB, show_default=True, envvar="GPUDOC_DEVICE_GLOB",
              help="Device files whose holders are shown with their reap verdict.")
@pass_settings
def tui(settings: Settings, demo: str | None, interval: float, readonly: bool, device_glob: str) -> int:
    """Watch the GPUs, their processes (orphaned device holders included) and the host.

    Keys: s sort, u/g filter by user/GPU, t terminate, k kill, r reap orphans, ? help, q quit.
    Every action asks first and follows `gpudoc reap`'s rules.
    """
    from gpudoc.monitor import Monitor
    from gpudoc.tui.app import GpudocApp

    if demo:
        settings.simulate = demo
    monitor = Monitor(settings.gpu_backend(), device_glob=device_glob)
    try:
        GpudocApp(monitor, interval=interval, readonly=readonly).run()
    finally:
        monitor.close()
    return 0
