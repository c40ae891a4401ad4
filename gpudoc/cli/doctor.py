"""``gpudoc doctor``: the environment checklist."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from gpudoc.cli.common import Settings, json_option, pass_settings
from gpudoc.doctor import FRAMEWORKS, DoctorReport, Status, diagnose
from gpudoc.errors import ExitCode
from gpudoc.output import emit_json

if TYPE_CHECKING:
    from rich.console import Console

_MARKS = {
    Status.OK: "[green]✓[/]",
    Status.INFO: "[dim]–[/]",
    Status.WARN: "[yellow]![/]",
    Status.PROBLEM: "[red]✗[/]",
    Status.MISSING: "[red]✗[/]",
}


def render(report: DoctorReport, console: Console) -> None:
    """The checklist: one line per check, its fix indented below."""
    from rich.markup import escape

    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        console.print(f"{_MARKS[check.status]} {check.name:<{width}}  {escape(check.detail)}")
        if check.fix and check.status is not Status.OK:
            console.print(f"  {'':<{width}}  [dim]fix:[/] {escape(check.fix)}")
    problems = sum(c.status is Status.PROBLEM for c in report.checks)
    missing = sum(c.status is Status.MISSING for c in report.checks)
    if problems or missing:
        console.print(f"\n{missing} missing, {problems} problem(s)")
    else:
        console.print("\nno problems found")


@click.command()
@click.option("--require-gpu", is_flag=True, help="Treat a machine with no NVIDIA driver as an error (exit 3).")
@click.option(
    "--skip",
    "skipped",
    type=click.Choice(FRAMEWORKS),
    multiple=True,
    help="Do not probe this framework (repeatable); probing imports it in a subprocess.",
)
@json_option
@pass_settings
def doctor(settings: Settings, require_gpu: bool, skipped: tuple[str, ...], as_json: bool) -> int:
    """Check Python, the NVIDIA driver and GPUs, device files, torch, TensorFlow and numba.

    Prints a checklist with a fix for each failed check. The frameworks are imported in
    subprocesses, all at once, while the driver is checked: the slowest import (seconds for
    TensorFlow) is the floor; a terminal shows which is still running. Exit 0 when nothing is
    wrong with what is installed, 1 when a check found a problem, 3 when a required piece is
    missing.
    """
    from rich.console import Console

    frameworks = [f for f in FRAMEWORKS if f not in skipped]
    status_console = Console(stderr=True)
    with settings.gpu_backend() as backend:
        if status_console.is_terminal:
            with status_console.status("starting the framework probes…") as status:
                report = diagnose(backend, require_gpu=require_gpu, frameworks=frameworks,
                                  progress=lambda text: status.update(f"{text}…"), simulated=settings.simulate)
        else:
            report = diagnose(backend, require_gpu=require_gpu, frameworks=frameworks, simulated=settings.simulate)
    if as_json:
        emit_json({"checks": report.checks, "exit_code": report.exit_code})
    else:
        render(report, Console(file=sys.stdout, highlight=False, soft_wrap=True))
    return ExitCode(report.exit_code)
