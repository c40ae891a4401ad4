"""`gpudoc events info` and `events export --format csv` of the tiny-scalars file, side by side.

The file is events_trim.py's (default 2M tiny scalars, ~88 MB). Each command runs in its own
process (wall time, peak RSS) with the compiled core, with GPUDOC_EVENTS_CORE=python, and, with
`--before SRC`, as an earlier gpudoc runs it (SRC: its source tree, run with PYTHONPATH=SRC, e.g.
`git archive COMMIT gpudoc | tar -x -C SRC`); the exported CSVs and `info --json` outputs are
compared byte for byte (an earlier gpudoc may write an older format).

    python benchmarks/events_info_export.py --events 2000000 --before /tmp/before
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

from events_trim import scalars


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, bytes]:
    """Wall seconds, peak RSS (MiB) and stdout of one command, run in ``cwd`` (so that ``-m
    gpudoc`` imports the installed gpudoc, or PYTHONPATH's, not a checkout it was started in)."""
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, check=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    return elapsed, int(out.stderr.decode().strip().splitlines()[-1]) / 1024, out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--before", metavar="SRC", help="An earlier gpudoc's source tree, timed too.")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("GPUDOC_EVENTS_CORE", "PYTHONPATH")}
    variants = {"compiled core": base, "python core": {**base, "GPUDOC_EVENTS_CORE": "python"}}
    if args.before:
        variants["before"] = {**base, "PYTHONPATH": str(Path(args.before).resolve())}
    work = Path(tempfile.mkdtemp(prefix="gpudoc-bench-"))
    try:
        tiny = work / "tiny" / "run" / "events.out.tfevents.1.bench"
        tiny.parent.mkdir(parents=True)
        scalars(tiny, args.events)
        size = tiny.stat().st_size / 1e6
        logdir = str(tiny.parent.parent)
        gpudoc = [sys.executable, "-m", "gpudoc", "events"]
        seconds: dict[tuple[str, str], float] = {}
        outputs: dict[str, list[bytes]] = {"info": [], "export": []}
        print("| file | tool | seconds | events/s | MB/s | peak RSS MiB |")
        print("|---|---|---:|---:|---:|---:|")
        for command in ("info", "export"):
            for n, (label, env) in enumerate(variants.items()):
                if command == "info":
                    argv = [*gpudoc, "info", logdir, "--json"]
                else:
                    argv = [*gpudoc, "export", logdir, "-o", str(work / f"x{n}.csv")]
                took, rss, stdout = timed(argv, env, work)
                seconds[command, label] = took
                outputs[command].append(stdout if command == "info" else (work / f"x{n}.csv").read_bytes())
                tool = "events info --json" if command == "info" else "events export --format csv"
                print(f"| tiny scalars ({size:.0f} MB) | gpudoc {tool}, {label} | {took:.2f} | "
                      f"{args.events / took:,.0f} | {size / took:.0f} | {rss:.0f} |", flush=True)
        print()
        for command, found in outputs.items():
            same = [label for label, o in zip(variants, found) if o == found[0]]
            print(f"{command}: byte-identical to the compiled core's output: {', '.join(same[1:]) or 'none'}")
        for command in ("info", "export"):
            ratios = ", ".join(f"{seconds[command, b] / seconds[command, 'compiled core']:.1f}x {b}"
                               for b in list(variants)[1:])
            print(f"{command}: the compiled core is {ratios}")
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
