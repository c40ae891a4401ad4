"""Start-up cost of gpudoc's CLI next to nvitop and gpustat, measured in one run.

Each case runs every tool's command in turn (interleaved, so machine noise hits all alike) and
reports the median wall time and the ratio to gpudoc. Peers are found on PATH or in
``--peer-bin`` (e.g. a venv made with ``pip install nvitop gpustat``).

    python benchmarks/cli_startup.py --peer-bin /tmp/peers/bin --runs 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def resolve(name: str, peer_bin: Path | None) -> str | None:
    if name == "gpudoc":
        return str(Path(sys.executable).with_name("gpudoc"))
    if peer_bin and (peer_bin / name).exists():
        return str(peer_bin / name)
    return shutil.which(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--peer-bin", type=Path)
    args = parser.parse_args()
    # As installed for users: bytecode caches written (a warm-up run writes them).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    print("| case | tool | median ms | ratio to gpudoc |")
    print("|---|---|---:|---:|")
    for case, commands in CASES.items():
        exes = {tool: resolve(argv[0], args.peer_bin) for tool, argv in commands.items()}
        timings: dict[str, list[float]] = {tool: [] for tool, exe in exes.items() if exe}
        for run in range(args.runs + 1):
            for tool in timings:
                argv = [exes[tool], *commands[tool][1:]]
                start = time.perf_counter()
                subprocess.run(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env
                )
                if run:
                    timings[tool].append(time.perf_counter() - start)
        base = statistics.median(timings["gpudoc"])
        for tool, samples in timings.items():
            median = statistics.median(samples)
            print(f"| {case} | {tool} | {median * 1000:.0f} | {median / base:.2f} |")
        for tool in sorted(set(exes) - set(timings)):
            print(f"| {case} | {tool} | not installed | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
