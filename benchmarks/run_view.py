"""What the run view costs: the monitor's CPU with a run's curves on screen against the
monitor alone, the latency from a flushed scalar to the screen, and the tail's cost per new
record.

CPU: ``gpudoc tui --demo dgx`` (1 s interval) alone, and with ``--logdir DIR -- python -c
WRITER`` (4 scalars logged with tensorboardX at 20 steps/s, flushed every second, their
curves on screen), each on its own 120x40 pseudo-terminal with its output drained, the two
interleaved ``--repeats`` times. The CPU time (user + system) of the monitor's own session is
read over ``--seconds`` (the run has a session of its own and is not counted): process CPU
time, not wall time, so other work on the machine slows it but is not counted in it.

Latency: every few seconds the writer jumps its steps to the next million (``n·10⁶``); this
script tails the event file itself every 5 ms and notes when a record of the new million is in
the file (written and flushed: readable by another process), and notes when the monitor's
screen output first shows ``step N`` with N in it (the curves' header).

Tail: ``EventTail`` on an event file that a tensorboardX writer appends to in batches: the
process CPU time of ``poll`` per new record, and the bytes its reads returned against the bytes
appended (the curves must not read a file again).

``--profile`` also runs the monitor-with-run case once with timers around the run view's
parts (inclusive thread CPU time of each, per second of the run).

    python benchmarks/run_view.py --seconds 25 --repeats 2 [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tui_cpu import Drained

MARK_EVERY = 3.0
# tui_cpu.py's writer, whose steps jump to the next million every MARK_EVERY seconds.
WRITER = f"""
import os, sys, time, math
sys.modules['torch'] = None
from tensorboardX import SummaryWriter
log = SummaryWriter(os.environ['GPUDOC_LOGDIR'], flush_secs=1)
base, k, mark = 0, 0, time.time() + {MARK_EVERY}
for n in range(10**9):
    if time.time() >= mark:
        base, k, mark = base + 10**6, 0, mark + {MARK_EVERY}
    for i, tag in enumerate(('train/loss', 'val/mse', 'val/mae', 'val/psnr')):
        log.add_scalar(tag, 1 / (1 + n) + i + 0.01 * math.sin(n), base + k)
    k += 1
    time.sleep(0.05)
"""
STEP = re.compile(rb"step (\d+)")

# What --profile times (module, qualified name).
PARTS = [
    ("gpudoc.runwatch", "Watch.poll"),
    ("gpudoc.runwatch", "LogFinder.find"),
    ("gpudoc.runwatch", "EventTail.poll"),
    ("gpudoc.runwatch", "Checks.feed"),
    ("gpudoc.runwatch", "Checks.settle"),
    ("gpudoc.runwatch", "Checks.tick"),
    ("gpudoc.train", "Run.members"),
    ("gpudoc.monitor", "Monitor.sample"),
    ("gpudoc.tui.runview", "CurvesPanel.take"),
    ("gpudoc.tui.runview", "CurvesPanel.build_lines"),
    ("gpudoc.tui.runview", "CurvesPanel._chart"),
    ("gpudoc.tui.curves", "plot"),
    ("gpudoc.tui.curves", "Curves.add"),
    ("gpudoc.tui.widgets", "LinePanel._update"),
    ("gpudoc.tui.widgets", "LinePanel.render_lines"),
    ("gpudoc.tui.app", "GpudocApp.on_watched"),
    ("gpudoc.tui.app", "GpudocApp.on_sampled"),
]


def profiled_monitor(out: str, argv: list[str]) -> None:
    """Run ``gpudoc ARGV`` with thread-CPU timers around PARTS, written to ``out`` each second."""
    import importlib

    totals: dict[str, list[float]] = {}
    local = threading.local()

    def timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        cell = totals.setdefault(name, [0.0, 0])

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(local, name, 0)
            setattr(local, name, depth + 1)
            start = time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                setattr(local, name, depth)
                if not depth:  # a recursive call is inside the outer one's time
                    cell[0] += time.thread_time() - start
                    cell[1] += 1

        return wrapper

    for module_name, qualname in PARTS:
        module = importlib.import_module(module_name)
        owner_name, _, attr = qualname.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        if hasattr(owner, attr):
            setattr(owner, attr, timed(qualname, getattr(owner, attr)))
    if hasattr(sys.modules["gpudoc.tui.curves"], "plot"):
        runview = importlib.import_module("gpudoc.tui.runview")
        runview.plot = sys.modules["gpudoc.tui.curves"].plot  # the name runview imported

    def dump() -> None:
        while True:
            time.sleep(1.0)
            data = {"process": time.process_time(), "parts": totals}
            Path(out + ".tmp").write_text(json.dumps(data))
            os.replace(out + ".tmp", out)

    threading.Thread(target=dump, daemon=True).start()
    if os.environ.get("RUN_VIEW_CPROFILE"):  # the UI thread's functions, between SIGUSR1 and SIGUSR2
        import cProfile
        import signal

        window: list[cProfile.Profile] = []

        def begin(*_: object) -> None:
            window.append(cProfile.Profile())
            window[-1].enable()

        def end(*_: object) -> None:
            window[-1].disable()
            window[-1].dump_stats(os.environ["RUN_VIEW_CPROFILE"])

        signal.signal(signal.SIGUSR1, begin)
        signal.signal(signal.SIGUSR2, end)
    from gpudoc.cli import cli

    sys.exit(cli.main(argv, prog_name="gpudoc", standalone_mode=False))


def stop(monitor: Drained) -> None:
    """End the monitor as a user would (SIGTERM: the TUI stops its run first, then exits),
    and the run's session if it is still there (a SIGKILLed monitor would leave the writer
    running and loading the machine)."""
    import psutil

    try:
        runs = [(child.pid, child.create_time()) for child in psutil.Process(monitor.proc.pid).children()]
    except psutil.Error:
        runs = []
    monitor.proc.terminate()
    deadline = time.monotonic() + 15
    while monitor.proc.poll() is None and time.monotonic() < deadline:
        monitor.pump(0.2)
    monitor.stop()
    for pid, created in runs:
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if psutil.Process(pid).create_time() == created:  # still that process, not a reused PID
                os.killpg(pid, signal.SIGKILL)  # the run is its own session and process group


class FileWatch:
    """Tails the run's event file every 5 ms; the time each new million of steps is readable."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from tensorboard.compat.proto import event_pb2

        from gpudoc.events.records import RecordReader

        reader = None
        while not self._stop.wait(0.005):
            if reader is None:
                files = sorted(self.logdir.glob("*tfevents*"))
                if not files:
                    continue
                reader = RecordReader(files[0], salvage=True)
            for _, data, _ in reader:
                million = event_pb2.Event.FromString(data).step // 10**6
                self.seen.setdefault(million, time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_case(argv: list[str], seconds: float, logdir: Path | None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """CPU % of one core of the monitor's session over ``seconds``, and (with a run) the
    latency of each new million of steps from the file to the screen."""
    monitor = Drained(argv, env or {})
    files = FileWatch(logdir) if logdir is not None else None
    shown: dict[int, float] = {}
    tail = b""

    def pump(for_seconds: float, until: bytes | None = None) -> bool:
        nonlocal tail
        deadline = time.perf_counter() + for_seconds
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([monitor.main], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(monitor.main, 1 << 16)
                except OSError:
                    return False
                now = time.time()
                text = tail + chunk
                for match in STEP.finditer(text):
                    shown.setdefault(int(match.group(1)) // 10**6, now)
                if until is not None and until in text:
                    return True
                tail = text[-64:]
            if monitor.proc.poll() is not None:
                return False
        return until is None

    try:
        if not pump(30, until=b"steps/s" if logdir is not None else b"H100"):
            return {"error": "did not start"}
        pump(3)
        before, t0 = monitor.cpu_seconds(), time.perf_counter()
        pump(seconds)
        used, elapsed = monitor.cpu_seconds() - before, time.perf_counter() - t0
        if monitor.proc.poll() is not None:
            return {"error": "exited"}
        result: dict[str, Any] = {"cpu": 100.0 * used / elapsed}
        if files is not None:
            result["latency"] = [shown[m] - files.seen[m] for m in sorted(files.seen) if m and m in shown]
            result["missed"] = sum(1 for m in files.seen if m and m not in shown and files.seen[m] < time.time() - 3)
        return result
    finally:
        stop(monitor)
        if files is not None:
            files.stop()


def tail_cost(records: int = 20_000, batch: int = 80) -> dict[str, float]:
    """``EventTail.poll`` after each batch of ``batch`` records appended (tensorboardX's
    record writer, flushed): its process CPU time per record, and the bytes its reads
    returned against the bytes appended."""
    import builtins

    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar

    from gpudoc.events import records as records_module
    from gpudoc.runwatch import EventTail

    read = [0]

    class Counted:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def __enter__(self) -> Counted:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def read(self, size: int = -1) -> bytes:
            data = self.handle.read(size)
            read[0] += len(data)
            return data

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

    records_module.open = lambda *a, **k: Counted(builtins.open(*a, **k))  # type: ignore[attr-defined]  # noqa: SIM115
    with tempfile.TemporaryDirectory() as tmp:
        writer = EventsWriter(os.path.join(tmp, "events"))
        writer.flush()
        path = next(Path(tmp).glob("*tfevents*"))
        tail = EventTail()
        tail.follow(path, ".")
        tail.poll()
        start_size, start_read, start_records = path.stat().st_size, read[0], tail.records
        cpu = 0.0
        polls = 0
        for step in range(records // 4):
            for i, tag in enumerate(("train/loss", "val/mse", "val/mae", "val/psnr")):
                writer.write_event(Event(wall_time=time.time(), step=step, summary=scalar(tag, 1 / (1 + step) + i)))
            if (step + 1) * 4 % batch == 0:
                writer.flush()
                t0 = time.process_time()
                tail.poll()
                cpu += time.process_time() - t0
                polls += 1
        writer.close()
        appended = path.stat().st_size - start_size
        got = tail.records - start_records
        return {"records": got, "us_per_record": 1e6 * cpu / max(got, 1),
                "bytes_appended": appended, "bytes_read": read[0] - start_read, "polls": polls}


def profile(case: str, seconds: float, cprofile: bool = True) -> bool | None:
    """The monitor (``case``: alone or with the run) with timers around PARTS and cProfile on
    its UI thread over ``seconds``; the stats are kept in the temporary directory."""
    import pstats

    with tempfile.TemporaryDirectory(prefix="gpudoc-bench-") as logdir:
        out = str(Path(logdir) / "profile.json")
        argv = [sys.executable, __file__, "--profiled-monitor", out, "tui", "--demo", "dgx"]
        if case == "run":
            argv += ["--logdir", str(Path(logdir) / "run"), "--", sys.executable, "-c", WRITER]
        stats = str(Path(tempfile.gettempdir()) / f"run_view_ui_{case}.prof")
        monitor = Drained(argv, {"RUN_VIEW_CPROFILE": stats} if cprofile else {})
        try:
            if monitor.pump(30, until=b"steps/s" if case == "run" else b"H100") is None:
                print("the profiled monitor did not start:", monitor.seen[-2000:].decode(errors="replace"))
                return None
            monitor.pump(3)
            start = json.loads(Path(out).read_text())
            if cprofile:
                monitor.proc.send_signal(signal.SIGUSR1)
            monitor.pump(seconds)
            if cprofile:
                monitor.proc.send_signal(signal.SIGUSR2)
            end = json.loads(Path(out).read_text())
            monitor.pump(1)
        finally:
            stop(monitor)
    print(f"\nprofile, monitor {case}, over {seconds:.0f} s: process "
          f"{100 * (end['process'] - start['process']) / seconds:.2f} % of one core (timers"
          f"{' and cProfile' if cprofile else ''} included)")
    print("| part | calls/s | ms CPU per second (inclusive) |")
    print("|---|---:|---:|")
    for name, (cpu, calls) in end["parts"].items():
        cpu0, calls0 = start["parts"].get(name, (0.0, 0))
        if calls > calls0:
            print(f"| {name} | {(calls - calls0) / seconds:.1f} | {1000 * (cpu - cpu0) / seconds:.2f} |")
    if cprofile and os.path.exists(stats):
        print(f"the UI thread by own time ({stats}):")
        pstats.Stats(stats).sort_stats("tottime").print_stats(12)
    return True


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--profiled-monitor":
        profiled_monitor(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also time the run view's parts (one more run)")
    parser.add_argument("--timers-only", action="store_true", help="with --profile: no cProfile on the UI thread")
    parser.add_argument("--no-tail", action="store_true", help="skip the tail's cost per record")
    parser.add_argument("--before", type=Path, help="a checkout (on PYTHONPATH) to measure with the run too")
    args = parser.parse_args()
    gpudoc = str(Path(sys.executable).with_name("gpudoc"))
    load = os.getloadavg()
    print(f"load average at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    trees = {"": {}} if args.before is None else {
        " (the code in --before)": {"PYTHONPATH": str(args.before)}, "": {}}
    cpu: dict[str, list[float]] = {"alone": [], **{f"run{name}": [] for name in trees}}
    latency: dict[str, list[float]] = {name: [] for name in trees}
    missed = 0
    for _ in range(args.repeats):
        result = run_case([gpudoc, "tui", "--demo", "dgx"], args.seconds, None)
        cpu["alone"].append(result.get("cpu", float("nan")))
        for name, env in trees.items():
            with tempfile.TemporaryDirectory(prefix="gpudoc-bench-") as logdir:
                argv = [gpudoc, "tui", "--demo", "dgx", "--logdir", logdir, "--", sys.executable, "-c", WRITER]
                result = run_case(argv, args.seconds, Path(logdir), env)
            cpu[f"run{name}"].append(result.get("cpu", float("nan")))
            latency[name] += result.get("latency", [])
            missed += result.get("missed", 0)
        print("  " + "  ".join(f"{key} {values[-1]:.2f} %" for key, values in cpu.items()), flush=True)
    print("| case | CPU % of one core (each run) | added to the monitor alone, points |")
    print("|---|---|---|")
    print(f"| gpudoc tui --demo dgx | {', '.join(f'{c:.2f}' for c in cpu['alone'])} | |")
    for name in trees:
        runs = cpu[f"run{name}"]
        added = ", ".join(f"{b - a:+.2f}" for a, b in zip(cpu["alone"], runs))
        print(f"| … with a run logging 4 scalars at 20 steps/s, curves on screen{name} | "
              f"{', '.join(f'{c:.2f}' for c in runs)} | {added} |")
    for name, values in latency.items():
        if values:
            print(f"latency flushed → on screen{name}: {len(values)} marks, median {statistics.median(values):.2f} s, "
                  f"min {min(values):.2f} s, max {max(values):.2f} s")
    print(f"marks not shown: {missed}; load average at the end {os.getloadavg()[0]:.2f}")
    if args.profile:
        for case in ("alone", "run"):
            if profile(case, args.seconds, not args.timers_only) is None:
                return 3
    if not args.no_tail:
        cost = tail_cost()
        print(f"tail: {cost['records']} records in {cost['polls']} polls of 80: {cost['us_per_record']:.1f} µs CPU "
              f"per record; bytes read {cost['bytes_read']} for {cost['bytes_appended']} appended")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
