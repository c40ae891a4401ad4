"""`gpudoc events` on both record cores, next to TensorBoard's RawEventFileLoader, tbparse and cp.

Generates a file of tiny scalars (default 2M events, ~88 MB) and an image-heavy file (~100 MB),
then times, each command in its own process (wall time and peak RSS): `gpudoc events trim`
(CRCs verified, output staged and re-verified) keeping everything and keeping half the steps,
`events info` and `events export --format csv`, each with the compiled core and with
GPUDOC_EVENTS_CORE=python; TensorBoard's RawEventFileLoader reading every record (read only; it
uses TensorFlow's C++ record reader when TensorFlow is installed); tbparse reading the scalars
(read only, with --peer-python); and, on the image file, `cp`. Last, the CPU cost of tailing a
file that grows by 100 records a second (gpudoc.runwatch.EventTail, as `gpudoc run` and the
TUI's run view follow event files), per core, in this process.

    python benchmarks/events_trim.py --events 2000000 --peer-python /tmp/peers/bin/python
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2

from gpudoc.events import RecordWriter, discover, records
from gpudoc.runwatch import EventTail

RAW = """
import sys
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
print(sum(1 for _ in RawEventFileLoader(sys.argv[1]).Load()))
"""
TBPARSE = """
import sys
from tbparse import SummaryReader
print(len(SummaryReader(sys.argv[1], pivot=False).scalars))
"""


def scalars(path: Path, count: int) -> None:
    with open(path, "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        for step in range(count - 1):
            value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
            event = event_pb2.Event(wall_time=1.7e9 + step, step=step, summary=summary_pb2.Summary(value=[value]))
            writer.write(event.SerializeToString())


def images(path: Path, megabytes: int) -> int:
    payload = os.urandom(250_000)
    count = megabytes * 1_000_000 // len(payload)
    with open(path, "wb") as handle:
        writer = RecordWriter(handle)
        for step in range(count):
            image = summary_pb2.Summary.Image(height=256, width=256, colorspace=3, encoded_image_string=payload)
            value = summary_pb2.Summary.Value(tag="img", image=image)
            event = event_pb2.Event(wall_time=1.7e9 + step, step=step, summary=summary_pb2.Summary(value=[value]))
            writer.write(event.SerializeToString())
    return count


def timed(argv: list[str], python_core: bool = False) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command."""
    # Without PYTHONDONTWRITEBYTECODE (set on the development VM), so that gpudoc starts from
    # bytecode caches as it does for a user, not recompiling the modules edited since.
    env = {k: v for k, v in os.environ.items() if k not in ("GPUDOC_EVENTS_CORE", "PYTHONDONTWRITEBYTECODE")}
    if python_core:
        env["GPUDOC_EVENTS_CORE"] = "python"
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True, check=True, env=env)
    elapsed = time.perf_counter() - start
    return elapsed, int(out.stderr.strip().splitlines()[-1]) / 1024


def tailing(directory: Path, seconds: int, core: Any) -> float:
    """CPU seconds per second of following a file that grows by 100 scalar records a second
    (one poll a second, as the run view does), with ``core`` (None: pure Python)."""
    directory.mkdir(parents=True)
    path = directory / "events.out.tfevents.1.tail"
    records._core = core
    tail = EventTail()
    tail.follow(path, "run")
    used = 0.0
    with open(path, "wb") as handle:
        writer = RecordWriter(handle)
        for second in range(-1, seconds):  # the first poll (imports protobuf) is not counted
            for step in range((second + 1) * 100, (second + 2) * 100):
                value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
                writer.write(event_pb2.Event(wall_time=1.7e9 + step, step=step,
                                             summary=summary_pb2.Summary(value=[value])).SerializeToString())
            handle.flush()
            start = time.process_time()
            points, _ = tail.poll()
            if second >= 0:
                used += time.process_time() - start
            assert len(points) == 100
    return used / seconds


def image_rows(work: Path, heavy: Path, count: int, gpudoc: str, compiled: bool, repeat: int) -> None:
    """The image file: each trim interleaved with `cp` of the same file into a fresh directory
    (so both write new pages), ``repeat`` times; then where a trim's time goes, phase by phase."""
    size = heavy.stat().st_size / 1e6
    steps = f"0:{count // 2 - 1}"
    commands = {"cp": lambda out: ["cp", str(heavy), str(out / heavy.name)]}
    for python_core in ([False, True] if compiled else [True]):
        core = "python core" if python_core else "compiled core"
        commands[f"gpudoc events trim (all kept), {core}"] = (
            lambda out: [gpudoc, "events", "trim", str(heavy.parent.parent), "-o", str(out)])
        commands[f"gpudoc events trim --steps {steps} (half kept), {core}"] = (
            lambda out: [gpudoc, "events", "trim", str(heavy.parent.parent), "-o", str(out), "--steps", steps])
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, argv in commands.items():
            out = work / "image-out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            seconds[name].append(timed(argv(out), "python core" in name)[0])
    shutil.rmtree(work / "image-out", ignore_errors=True)
    cp = min(seconds["cp"])
    print(f"\n| images ({size:.0f} MB, {count} records), {repeat} runs each, interleaved | best s | median s "
          "| best / cp's best |")
    print("|---|---:|---:|---:|")
    for name, times in seconds.items():
        times.sort()
        print(f"| {name} | {times[0]:.3f} | {times[len(times) // 2]:.3f} | {times[0] / cp:.2f} |")
    if compiled:
        phases(work, heavy)


def phases(work: Path, heavy: Path) -> None:
    """Best of five of each phase of the compiled trim of the image file, each alone."""
    import mmap

    from gpudoc.events import _core

    block = bytearray(1 << 21)
    view = memoryview(block)
    copy = work / "phase-copy"
    marks = (b"_hparams_/", b"graph_", b"custom_scalars")

    def read(scan: bool, write: bool) -> None:
        with open(heavy, "rb", buffering=0) as handle, open(copy, "wb", buffering=0) as out:
            filled = 0
            while got := handle.readinto(view[filled:]):
                filled += got
                at = _core.trim_pass(view[:filled], 0, 0, 0, 0, 0, 0.0, 0.0, 0, True, False, marks, -1, 0,
                                     b"_hparams_/")[3] if scan else filled
                if write:
                    out.write(view[:at])
                block[: filled - at] = block[at:filled]
                filled -= at

    def verify() -> None:
        with open(copy, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            _core.extend(0, mapped)

    trim_module = importlib.import_module("gpudoc.events.trim")
    root, runs = discover(heavy.parent.parent)

    def fresh() -> None:
        shutil.rmtree(work / "phase-trim", ignore_errors=True)
        (work / "phase-trim").mkdir()

    def whole() -> None:
        trim_module.trim(root, runs, work / "phase-trim", trim_module.TrimSpec())

    def best(run: Any) -> float:
        times = []
        for _ in range(5):
            if run is whole:
                fresh()
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    rows = [
        ("interpreter start (`python -c pass`)",
         lambda: subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)),
        ("start + the imports `events trim` needs", lambda: subprocess.run(
            [sys.executable, "-c", "import gpudoc.cli, gpudoc.cli.events, gpudoc.events.trim"], check=True, env=env)),
        ("read (2 MiB blocks)", lambda: read(False, False)),
        ("read + core pass (CRCs, decisions, output CRC, marks)", lambda: read(True, False)),
        ("read + core pass + write the staged copy (one thread)", lambda: read(True, True)),
        ("verify the staged copy (mapped, CRC-32C, one thread)", verify),
        ("verify the staged copy as trim does (two threads, a half each)", lambda: trim_module._staged_crc(copy)),
        ("all of trim's data work: `trim()` in-process (the writes on a second thread, as the CLI's)", whole),
    ]
    print("\n| phase of a compiled trim of the image file (in this process, best of 5) | seconds |")
    print("|---|---:|")
    for name, run in rows:
        print(f"| {name} | {best(run):.4f} |")
    copy.unlink()
    shutil.rmtree(work / "phase-trim")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--image-mb", type=int, default=100)
    parser.add_argument("--peer-python", help="A Python with tbparse installed.")
    parser.add_argument("--tail-seconds", type=int, default=10, help="Polls of the tailing measurement.")
    parser.add_argument("--image-repeat", type=int, default=5,
                        help="Runs of each image-file command, interleaved with cp's (best and median shown).")
    args = parser.parse_args()
    gpudoc = str(Path(sys.executable).with_name("gpudoc"))
    work = Path(tempfile.mkdtemp(prefix="gpudoc-bench-"))
    try:
        tiny = work / "tiny" / "run" / "events.out.tfevents.1.bench"
        heavy = work / "heavy" / "run" / "events.out.tfevents.1.bench"
        tiny.parent.mkdir(parents=True)
        heavy.parent.mkdir(parents=True)
        scalars(tiny, args.events)
        image_count = images(heavy, args.image_mb)
        compiled = records.core_active()
        cases: list[tuple[str, int, Path, str, list[str], bool]] = []
        for python_core in ([False, True] if compiled else [True]):
            core = "python core" if python_core else "compiled core"
            cases += [
                ("tiny scalars", args.events, tiny, f"gpudoc events trim (all kept), {core}",
                 [gpudoc, "events", "trim", str(tiny.parent.parent), "-o", str(work / f"o1{python_core}")],
                 python_core),
                ("tiny scalars", args.events, tiny, f"gpudoc events trim --steps (half kept), {core}",
                 [gpudoc, "events", "trim", str(tiny.parent.parent), "-o", str(work / f"o2{python_core}"),
                  "--steps", f"{args.events // 4}:{3 * args.events // 4}"], python_core),
                ("tiny scalars", args.events, tiny, f"gpudoc events info, {core}",
                 [gpudoc, "events", "info", str(tiny.parent.parent)], python_core),
                ("tiny scalars", args.events, tiny, f"gpudoc events export --format csv, {core}",
                 [gpudoc, "events", "export", str(tiny.parent.parent), "-o", str(work / f"x{python_core}.csv")],
                 python_core),
            ]
        cases.append(("tiny scalars", args.events, tiny, "RawEventFileLoader (read only)",
                      [sys.executable, "-c", RAW, str(tiny)], False))
        if args.peer_python:
            cases.append(("tiny scalars", args.events, tiny, "tbparse .scalars (read only)",
                          [args.peer_python, "-c", TBPARSE, str(tiny.parent)], False))
        cases.append(("images", image_count, heavy, "RawEventFileLoader (read only)",
                      [sys.executable, "-c", RAW, str(heavy)], False))
        print("| file | tool | seconds | events/s | MB/s | peak RSS MiB |")
        print("|---|---|---:|---:|---:|---:|")
        for name, count, path, tool, argv, python_core in cases:
            seconds, rss = timed(argv, python_core)
            size = path.stat().st_size / 1e6
            print(f"| {name} ({size:.0f} MB) | {tool} | {seconds:.2f} | {count / seconds:,.0f} | "
                  f"{size / seconds:.0f} | {rss:.0f} |", flush=True)
        if compiled:
            same = all((work / f"{o}False" / "run" / tiny.name).read_bytes()
                       == (work / f"{o}True" / "run" / tiny.name).read_bytes() for o in ("o1", "o2"))
            print(f"\ncompiled and python cores' trims byte-identical: {same}")
        image_rows(work, heavy, image_count, gpudoc, compiled, args.image_repeat)
        print("\n| tailing 100 records/s, one poll a second | CPU % of one core |")
        print("|---|---:|")
        active = records._core
        for label, core_module in ([("compiled core", active)] if compiled else []) + [("python core", None)]:
            share = tailing(work / f"tail-{label.split()[0]}", args.tail_seconds, core_module)
            print(f"| {label} | {100 * share:.2f} |")
        records._core = active
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
