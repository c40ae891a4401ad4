"""Start-up cost of gpudoc's CLI next to nvitop and gpustat, and by kind of install, in one run.

Peers: each case runs every tool's command in turn (interleaved, so machine noise hits all
alike) and reports the median wall time and the ratio to gpudoc. Peers are found on PATH or in
``--peer-bin`` (e.g. a venv made with ``pip install nvitop gpustat``).

Installs: ``gpudoc --help``, ``gpudoc events trim --help`` and a trim of a small event file
(1000 scalars) from this checkout's editable install (``pip install -e .``, whose import
finder every start pays) and from a regular one: a wheel built from this checkout, installed
into a scratch venv (``--regular-venv``, made on first use with what these commands import:
click, google-crc32c; gpudoc's other dependencies are not imported by them), beside
``python -c pass`` and ``python -c 'import click'`` of each interpreter (click's objects frozen
as gpudoc's entry point freezes them) and ``cp`` of the file.

    python benchmarks/cli_startup.py --peer-bin /tmp/peers/bin --runs 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "--help": {
        "gpudoc": ["gpudoc", "--help"],
        "nvitop": ["nvitop", "--help"],
        "gpustat": ["gpustat", "--help"],
    },
    "full report, no GPU present": {
        "gpudoc": ["gpudoc", "doctor", "--json", "--skip", "torch", "--skip", "tensorflow"],
        "nvitop": ["nvitop", "--once"],
        "gpustat": ["gpustat", "--json"],
    },
}
# As installed for users: bytecode caches written (a warm-up run writes them).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def resolve(name: str, peer_bin: Path | None) -> str | None:
    if name == "gpudoc":
        return str(Path(sys.executable).with_name("gpudoc"))
    if peer_bin and (peer_bin / name).exists():
        return str(peer_bin / name)
    return shutil.which(name)


def medians(commands: dict[str, list[str]], runs: int, before: Callable[[], None] = lambda: None,
            cwd: Path | None = None, check: bool = False) -> dict[str, float]:
    """Median wall seconds of each command, run interleaved ``runs`` times after a warm-up;
    ``before`` runs ahead of each (untimed); ``check``: each must succeed."""
    timings: dict[str, list[float]] = {name: [] for name in commands}
    for run in range(runs + 1):
        for name, argv in commands.items():
            before()
            start = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                           env=ENV, cwd=cwd, check=check)
            if run:
                timings[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in timings.items()}


def peers(runs: int, peer_bin: Path | None) -> None:
    print("| case | tool | median ms | ratio to gpudoc |")
    print("|---|---|---:|---:|")
    for case, commands in CASES.items():
        exes = {tool: resolve(argv[0], peer_bin) for tool, argv in commands.items()}
        found = {tool: [exe, *commands[tool][1:]] for tool, exe in exes.items() if exe}
        times = medians(found, runs)
        for tool, median in times.items():
            print(f"| {case} | {tool} | {median * 1000:.0f} | {median / times['gpudoc']:.2f} |")
        for tool in sorted(set(exes) - set(found)):
            print(f"| {case} | {tool} | not installed | |")


def regular_install(venv: Path) -> Path:
    """``venv``'s Python, with a wheel of this checkout installed in it (the venv is made, with
    click and google-crc32c from the package index, when it does not exist)."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "click", "google-crc32c"], check=True)
    with tempfile.TemporaryDirectory() as wheels:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels,
                        str(ROOT)], check=True, stdout=subprocess.DEVNULL)
        (wheel,) = Path(wheels).glob("gpudoc-*.whl")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                       check=True)
    return python


def small_run(directory: Path) -> Path:
    """A logdir of one run: a file-version record and 1000 scalars (43 kB)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    from gpudoc.events import RecordWriter

    (directory / "run").mkdir(parents=True)
    with open(directory / "run" / "events.out.tfevents.1.host", "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        for step in range(999):
            value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
            event = event_pb2.Event(wall_time=1.7e9 + step, step=step, summary=summary_pb2.Summary(value=[value]))
            writer.write(event.SerializeToString())
    return directory


def installs(runs: int, venv: Path) -> None:
    interpreters = {"editable": Path(sys.executable), "regular": regular_install(venv)}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        logdir, out = small_run(work / "logs"), work / "out"
        commands = {"cp (the event file)": ["cp", str(next(logdir.glob("*/*tfevents*"))), str(work / "copy")]}
        for kind, python in interpreters.items():
            gpudoc = str(python.with_name("gpudoc"))
            commands |= {
                f"{kind}|python -c pass": [str(python), "-c", "pass"],
                # click alone, its objects frozen as gpudoc's entry point does (no exit-time GC pass)
                f"{kind}|python -c 'import click' (frozen)": [str(python), "-c", "import gc, click; gc.freeze()"],
                f"{kind}|gpudoc --help": [gpudoc, "--help"],
                f"{kind}|gpudoc events trim --help": [gpudoc, "events", "trim", "--help"],
                f"{kind}|gpudoc events trim (1000 scalars)": [gpudoc, "events", "trim", str(logdir), "-o", str(out)],
            }
        times = medians(commands, runs, before=lambda: shutil.rmtree(out, ignore_errors=True), cwd=work, check=True)
    print("| command | editable install ms | regular install ms |")
    print("|---|---:|---:|")
    for name, median in times.items():
        if "|" not in name:
            print(f"| {name} | {median * 1000:.1f} | |")
        elif name.startswith("editable|"):
            what = name.split("|", 1)[1]
            print(f"| {what} | {median * 1000:.1f} | {times['regular|' + what] * 1000:.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--peer-bin", type=Path)
    parser.add_argument("--regular-venv", type=Path, default=Path(tempfile.gettempdir()) / "gpudoc-regular-venv",
                        help="The scratch venv of the regular install (made when missing).")
    parser.add_argument("--only", choices=["peers", "installs"], help="Run one of the two tables.")
    args = parser.parse_args()
    if args.only != "installs":
        peers(args.runs, args.peer_bin)
        print()
    if args.only != "peers":
        installs(args.runs, args.regular_venv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
