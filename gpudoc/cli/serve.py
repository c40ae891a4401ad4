"""``gpudoc serve``: the monitor's figures as Prometheus metrics."""

from __future__ import annotations

import signal
import socket
import threading
from types import FrameType

import click

from gpudoc.cli.common import Settings, pass_settings
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB


@click.command()
@click.option("--prometheus", is_flag=True, default=True,
              help="Serve Prometheus metrics on /metrics (the default, and the only format).")
@click.option("--port", type=click.IntRange(0, 65535), default=9400, show_default=True,
              help="TCP port (9400 is dcgm-exporter's; pick another to run both).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes it to the network.")
@click.option("--device-glob", default=DEFAULT_DEVICE_GLOB, show_default=True, envvar="GPUDOC_DEVICE_GLOB",
              help="Device files whose holders are counted (under --simulate, this host's are not scanned "
              "unless this names files).")
@pass_settings
def serve(settings: Settings, prometheus: bool, port: int, address: str, device_glob: str) -> int:
    """Expose GPU, host and orphaned-holder figures for Prometheus to scrape on /metrics.

    Other paths answer 404; GET and HEAD are served. GPU readings use NVIDIA
    dcgm-exporter's metric names (DCGM_FI_DEV_GPU_UTIL, DCGM_FI_DEV_FB_USED, …) so existing
    dashboards work; gpudoc adds gpudoc_host_*, gpudoc_device_holders{verdict} and
    gpudoc_orphan_holders{user}. Runs until stopped: SIGTERM (systemd, Kubernetes) is a clean
    stop, exit 0 after one line "gpudoc: SIGTERM: stopped" on stderr; Ctrl-C (SIGINT) exits
    130 as every command does when interrupted.
    """
    from gpudoc.exporter import serve as start
    from gpudoc.monitor import Monitor

    monitor = Monitor(settings.gpu_backend(), device_glob=device_glob, holder_interval=30.0)
    try:
        server, _ = start(monitor, port=port, address=address)
    except OSError as exc:
        from gpudoc.errors import InputError

        monitor.close()
        fix = "check --address" if isinstance(exc, socket.gaierror) else "choose another --port or --address"
        raise InputError(f"cannot listen on {address}:{port}: {exc.strerror}", fix) from None
    host = f"[{address}]" if ":" in address else address
    stopped = threading.Event()

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        stopped.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    click.echo(f"serving metrics on http://{host}:{server.server_port}/metrics (Ctrl-C stops)", err=True)
    try:
        stopped.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
        monitor.close()
    click.echo("gpudoc: SIGTERM: stopped", err=True)
    return 0
