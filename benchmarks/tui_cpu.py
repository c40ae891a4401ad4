"""CPU cost and time to first frame of the live monitor, measured from outside, next to nvitop.

Each monitor runs on its own pseudo-terminal (120x40, output drained as a terminal would);
after a warm-up, the CPU time of its whole process tree is read over ``--seconds`` and
reported as percent of one core. Time to first frame is from spawn until the first GPU name
is drawn. gpudoc runs ``tui --demo dgx`` (8 simulated H100s, 1 s interval). nvitop reads a real
NVML where the machine has one; elsewhere (or with ``--peer-simulated``) it runs on the same
simulated GPUs through ``benchmarks/nvml_shim`` (a stand-in ``pynvml`` answering from gpudoc's
SimulatedNvml; the peer's environment needs pyyaml for it), so both monitors draw the same
scenario at the same size. nvitop is measured at gpudoc's 1 s interval and at its own default (2 s).
A last row calibrates the machine: ``textual_floor.py``, a Textual app that redraws one line a
second and does nothing else. ``--run`` adds gpudoc with a training run in it (``tui --demo dgx
-- python -c WRITER``: 4 scalars logged with tensorboardX at 20 steps/s, their curves on
screen); only the monitor's own session is counted, not the run's.

    python benchmarks/tui_cpu.py --seconds 60 --peer-bin /tmp/peers/bin [--run]
"""

from __future__ import annotations

import argparse
import ctypes.util
import fcntl
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import psutil


# A training loop's logging: 4 scalars a step, 20 steps a second, flushed every second.
WRITER = """
import os, sys, time, math
sys.modules['torch'] = None
from tensorboardX import SummaryWriter
log = SummaryWriter(os.environ['GPUDOC_LOGDIR'], flush_secs=1)
for step in range(100000):
    for i, tag in enumerate(('train/loss', 'val/mse', 'val/mae', 'val/psnr')):
        log.add_scalar(tag, 1 / (1 + step) + i + 0.01 * math.sin(step), step)
    time.sleep(0.05)
"""


class Drained:
    """A command on a pty whose output is read continuously."""

    def __init__(self, argv: list[str], extra_env: dict[str, str]) -> None:
        self.main, child = os.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.set_blocking(self.main, False)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(TERM="xterm-256color", COLORTERM="truecolor", COLUMNS="120", LINES="40", **extra_env)
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=env)
        os.close(child)
        self.seen = b""

    def pump(self, seconds: float, until: bytes | None = None) -> float | None:
        """Read output for ``seconds``; the time since spawn at which ``until`` appeared."""
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([self.main], [], [], 0.05)
            if ready:
                try:
                    self.seen += os.read(self.main, 1 << 16)[-4096:]
                except OSError:
                    return None
                if until and until in self.seen:
                    return time.perf_counter() - self.start
            if self.proc.poll() is not None:
                return None
        return None

    def cpu_seconds(self) -> float:
        """CPU seconds of the monitor's process tree, within its session (a run it started
        has a session of its own and is not counted)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
            session = os.getsid(root.pid)
        except (psutil.NoSuchProcess, ProcessLookupError):
            return 0.0
        total = 0.0
        for p in procs:
            try:
                if os.getsid(p.pid) != session:
                    continue
                t = p.cpu_times()
                total += t.user + t.system
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        return total

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.main)


def measure(argv: list[str], marker: bytes, seconds: float, env: dict[str, str]) -> tuple[float | None, float | None]:
    run = Drained(argv, env)
    try:
        first = run.pump(30, until=marker)
        if first is None:
            return None, None
        run.pump(3)
        before, t0 = run.cpu_seconds(), time.perf_counter()
        run.pump(seconds)
        used, elapsed = run.cpu_seconds() - before, time.perf_counter() - t0
        if run.proc.poll() is not None:
            return None, None
        return first, 100.0 * used / elapsed
    finally:
        run.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--peer-bin", type=Path)
    parser.add_argument("--peer-simulated", action="store_true",
                        help="run nvitop on the simulated GPUs even where a real NVML exists")
    parser.add_argument("--run", action="store_true", help="also measure gpudoc with a run logging 4 scalars")
    args = parser.parse_args()
    gpudoc = str(Path(sys.executable).with_name("gpudoc"))
    nvitop = str(args.peer_bin / "nvitop") if args.peer_bin else shutil.which("nvitop")
    cases = {"gpudoc tui --demo dgx": ([gpudoc, "tui", "--demo", "dgx"], b"H100", {})}
    if args.run:
        logdir = tempfile.mkdtemp(prefix="gpudoc-bench-")
        cases["gpudoc tui --demo dgx -- (a run logging 4 scalars at 20 steps/s, curves on screen)"] = (
            [gpudoc, "tui", "--demo", "dgx", "--logdir", logdir, "--", sys.executable, "-c", WRITER], b"steps/s", {})
    if nvitop:
        version = subprocess.run([nvitop, "--version"], capture_output=True, text=True, check=False).stdout.split()
        name = f"nvitop {version[-1] if version else ''}".strip()
        env: dict[str, str] = {}
        if args.peer_simulated or ctypes.util.find_library("nvidia-ml") is None:
            root = Path(__file__).resolve().parent
            env = {"PYTHONPATH": f"{root / 'nvml_shim'}{os.pathsep}{root.parent}", "GPUDOC_SHIM_SCENARIO": "dgx"}
            name += " (on the simulated dgx GPUs via benchmarks/nvml_shim)"
        cases[f"{name}, --interval 1 (gpudoc's interval)"] = ([nvitop, "--interval", "1"], b"Driver", env)
        cases[f"{name}, its default interval (2 s)"] = ([nvitop], b"Driver", env)
    floor = str(Path(__file__).resolve().with_name("textual_floor.py"))
    cases["Textual itself: an app redrawing one line a second (calibration)"] = ([sys.executable, floor], b"floor", {})
    print("| monitor | first frame s | CPU % of one core |")
    print("|---|---:|---:|")
    for name, (argv, marker, env) in cases.items():
        first, cpu = measure(argv, marker, args.seconds, env)
        if first is None or cpu is None:
            print(f"| {name} | not runnable here | |")
        else:
            print(f"| {name} | {first:.2f} | {cpu:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
