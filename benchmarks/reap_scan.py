"""Holder scan of `gpudoc reap --json` next to psmisc's `fuser -v`, in one run.

Spawns N processes (half of them holding fake device files through inherited descriptors,
a tenth of those through a memory mapping only), then times both tools on the same files,
interleaved, and reports medians and the ratio to fuser. The holders' parent (this script)
stays alive, so reap classifies them as active and takes no CPU-sampling window. The
library's scan alone (no interpreter start-up, imports, NVML or classification) is timed
in-process as a third row.

    python benchmarks/reap_scan.py --processes 500 --runs 15
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpudoc.reap.scan import scan

MAP_ONLY = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
fd = os.open(sys.argv[1], os.O_RDONLY)
libc.mmap(None, 4096, 1, 1, fd, 0)
os.close(fd)
print("ready", flush=True)
time.sleep(3600)
"""


LIBRARY = "gpudoc.reap.scan() in-process"


def spawn(dev: Path, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` sleeping processes: half hold nvidiactl and nvidia0 open, a few map nvidia1."""
    procs = []
    with open(dev / "nvidiactl", "rb") as ctl, open(dev / "nvidia0", "rb") as gpu:
        for i in range(count):
            if i % 2:
                procs.append(subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL))
            elif i % 20 == 0:
                proc = subprocess.Popen([sys.executable, "-c", MAP_ONLY, str(dev / "nvidia1")], stdout=subprocess.PIPE)
                assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
                procs.append(proc)
            else:
                procs.append(subprocess.Popen(["sleep", "3600"], stdin=ctl, pass_fds=(gpu.fileno(),)))
    return procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=500)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    fuser = shutil.which("fuser")
    if fuser is None:
        print("fuser not found: install psmisc (apt-get install psmisc)", file=sys.stderr)
        return 3
    gpudoc = str(Path(sys.executable).with_name("gpudoc"))
    dev = Path(tempfile.mkdtemp(prefix="gpudoc-bench-"))
    for name in ("nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm"):
        (dev / name).write_bytes(b"\0" * 4096)
    files = sorted(str(p) for p in dev.iterdir())
    commands = {
        "gpudoc reap --json": [gpudoc, "reap", "--json", "--device-glob", str(dev / "nvidia*")],
        "fuser -v": [fuser, "-v", *files],
    }
    # As installed for users: bytecode caches written (the first run writes them).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    procs = spawn(dev, args.processes)
    try:
        found = subprocess.run(commands["gpudoc reap --json"], capture_output=True, text=True, check=False, env=env)
        holders = len(json.loads(found.stdout))
        timings: dict[str, list[float]] = {name: [] for name in [*commands, LIBRARY]}
        for _ in range(args.runs):
            for name, argv in commands.items():
                start = time.perf_counter()
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=env)
                timings[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            scan(str(dev / "nvidia*"))
            timings[LIBRARY].append(time.perf_counter() - start)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        shutil.rmtree(dev)
    total = len([p for p in os.listdir("/proc") if p.isdigit()])
    print(f"{args.processes} spawned ({holders} holders found by gpudoc), {total} processes on the machine after")
    print("| tool | median ms | ratio to fuser |")
    print("|---|---:|---:|")
    base = statistics.median(timings["fuser -v"])
    for name, samples in timings.items():
        median = statistics.median(samples)
        print(f"| {name} | {median * 1000:.0f} | {median / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
