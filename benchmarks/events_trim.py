"""`gpudoc events trim` next to TensorBoard's RawEventFileLoader and tbparse, in one run.

Generates a file of tiny scalars (default 2M events, ~100 MB) and an image-heavy file
(~100 MB), then times: `gpudoc events trim` (CRCs verified, output staged and re-verified)
keeping everything and keeping half the steps; TensorBoard's RawEventFileLoader reading every
record (read only; it uses TensorFlow's C++ record reader when TensorFlow is installed, a
pure-Python one otherwise); tbparse reading the scalars (read only); and, on the image file, the
least any Python trim with the same guarantees does (block read and CRC, write, re-read and CRC,
rename: no record framing at all). Wall time and peak RSS per command, each in its own process.

    python benchmarks/events_trim.py --events 2000000 --peer-python /tmp/peers/bin/python
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2

from gpudoc.events import RecordWriter

RAW = """
import sys
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
print(sum(1 for _ in RawEventFileLoader(sys.argv[1]).Load()))
"""
# The least a trim that keeps its guarantees can do in Python: read in 4 MiB blocks and CRC
# them, write them while keeping the output's CRC, re-read and CRC the output, rename.
FLOOR = """
import os, sys, google_crc32c
src, dst = sys.argv[1], sys.argv[2]
crc = 0
with open(src, "rb") as f, open(dst + ".tmp", "wb") as o:
    while block := f.read(4 << 20):
        google_crc32c.value(block)
        crc = google_crc32c.extend(crc, block)
        o.write(block)
check = 0
with open(dst + ".tmp", "rb") as f:
    while block := f.read(4 << 20):
        check = google_crc32c.extend(check, block)
assert check == crc
os.replace(dst + ".tmp", dst)
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


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command."""
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, int(out.stderr.strip().splitlines()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--image-mb", type=int, default=100)
    parser.add_argument("--peer-python", help="A Python with tbparse installed.")
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
        cases = [
            ("tiny scalars", args.events, tiny, "gpudoc events trim (all kept)",
             [gpudoc, "events", "trim", str(tiny.parent.parent), "-o", str(work / "o1")]),
            ("tiny scalars", args.events, tiny, "gpudoc events trim --steps (half kept)",
             [gpudoc, "events", "trim", str(tiny.parent.parent), "-o", str(work / "o2"),
              "--steps", f"{args.events // 4}:{3 * args.events // 4}"]),
            ("tiny scalars", args.events, tiny, "RawEventFileLoader (read only)",
             [sys.executable, "-c", RAW, str(tiny)]),
            ("images", image_count, heavy, "gpudoc events trim (all kept)",
             [gpudoc, "events", "trim", str(heavy.parent.parent), "-o", str(work / "o3")]),
            ("images", image_count, heavy, "RawEventFileLoader (read only)", [sys.executable, "-c", RAW, str(heavy)]),
            ("images", image_count, heavy, "pure-Python floor: block read + CRC, write, re-read + CRC",
             [sys.executable, "-c", FLOOR, str(heavy), str(work / "floor")]),
        ]
        if args.peer_python:
            cases.insert(3, ("tiny scalars", args.events, tiny, "tbparse .scalars (read only)",
                             [args.peer_python, "-c", TBPARSE, str(tiny.parent)]))
        print("| file | tool | seconds | events/s | MB/s | peak RSS MiB |")
        print("|---|---|---:|---:|---:|---:|")
        for name, count, path, tool, argv in cases:
            seconds, rss = timed(argv)
            size = path.stat().st_size / 1e6
            print(f"| {name} ({size:.0f} MB) | {tool} | {seconds:.2f} | {count / seconds:,.0f} | "
                  f"{size / seconds:.0f} | {rss:.0f} |")
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
