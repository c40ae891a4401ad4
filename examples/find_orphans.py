"""Make an orphaned "dataloader worker" on fake device files, then find and end it with
gpudoc's reap API — the situation `gpudoc reap` exists for, without a GPU.

    python examples/find_orphans.py
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from gpudoc.gpu import SimulatedBackend
from gpudoc.reap import Outcome, Scope, Verdict, end_targets, inspect_holders, plan


def make_orphan(dev: Path) -> int:
    """A trainer opens the devices, forks a worker that inherits them, and exits."""
    read, write = os.pipe()
    trainer = os.fork()
    if trainer == 0:
        os.setsid()
        held = [open(dev / name, "rb") for name in ("nvidiactl", "nvidia0")]  # noqa: SIM115
        worker = os.fork()
        if worker == 0:
            time.sleep(60)
            os._exit(0)
        os.write(write, f"{worker}\n".encode())
        del held
        os._exit(0)
    os.waitpid(trainer, 0)
    os.close(write)
    with os.fdopen(read) as pipe:
        return int(pipe.readline())


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        dev = Path(folder)
        for name in ("nvidiactl", "nvidia0", "nvidia-uvm"):
            (dev / name).write_bytes(b"")
        worker = make_orphan(dev)
        glob = str(dev / "nvidia*")
        # NVML simulated: one GPU listing no process, so the worker provably owns no CUDA
        # context (without NVML it would be "unconfirmed" and left alone).
        gpus = SimulatedBackend({"name": "example", "gpus": [{"name": "Sim GPU", "memory_total_mib": 16384}]})
        report = inspect_holders(gpus, device_glob=glob, window=0.2)
        for holder in report.holders:
            print(f"{holder.pid:>7}  {holder.verdict.value:<11} {holder.reason}")
        actions = plan(report.holders, Scope(uid=os.getuid()), signal.SIGTERM)
        targets = [h for h in report.holders if actions[h.pid].outcome is Outcome.WOULD_END]
        result = end_targets(report, targets, gpus, device_glob=glob, timeout=2)
        for pid, action in result.actions.items():
            print(f"{pid:>7}  {action.action}")
        found = {h.pid: h.verdict for h in report.holders}
        return 0 if found.get(worker) is Verdict.ORPHAN and worker in result.freed_fds else 1


if __name__ == "__main__":
    sys.exit(main())
