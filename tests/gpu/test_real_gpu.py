"""On a machine with an NVIDIA GPU: NvmlBackend and doctor against the real driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpudoc.gpu import NvmlBackend

pytestmark = pytest.mark.gpu


def test_real_snapshot_has_readings_and_matches_nvidia_smi() -> None:
    with NvmlBackend() as backend:
        snap = backend.snapshot()
    assert snap.error is None and snap.devices
    smi = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    )
    rows = [line.split(", ") for line in smi.stdout.strip().splitlines()]
    assert len(rows) == len(snap.devices)
    for device, (index, name, total_mib) in zip(snap.devices, rows):
        assert device.error is None
        assert device.processes_error is None, "NVML did not list every kind of process on a healthy GPU"
        assert (device.index, device.name) == (int(index), name)
        assert device.memory_total // (1024 * 1024) == int(total_mib)
        assert 0 <= device.utilization_gpu <= 100
        assert os.path.exists(f"/dev/nvidia{device.minor_number}")
    assert snap.driver.driver_version and snap.driver.cuda_version


def test_doctor_reports_the_gpus() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpudoc", "doctor", "--json"], capture_output=True, text=True
    )
    report = json.loads(out.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["NVIDIA driver"]["status"] == "ok"
    assert checks["GPU 0"]["status"] == "ok"
    assert out.returncode == report["exit_code"]


def test_reap_finds_and_ends_a_real_orphaned_device_holder() -> None:
    """A "trainer" opens the real devices through NVML, forks a worker and exits: the worker
    holds /dev/nvidiactl and a GPU's file, is not in NVML's list, and is ended."""
    script = textwrap.dedent("""
        import os, time, pynvml
        pynvml.nvmlInit()
        pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
        child = os.fork()
        if child == 0:
            time.sleep(120)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         start_new_session=True)
    worker = int(out.stdout)
    try:
        found = subprocess.run([sys.executable, "-m", "gpudoc", "reap", "--json", "--window", "0.3"],
                               capture_output=True, text=True)
        rows = {row["pid"]: row for row in json.loads(found.stdout)}
        assert rows[worker]["verdict"] == "orphan" and "/dev/nvidiactl" in rows[worker]["devices"]
        assert rows[worker]["in_nvml"] is False
        ended = subprocess.run([sys.executable, "-m", "gpudoc", "reap", "--json", "--yes", "--window", "0.3"],
                               capture_output=True, text=True)
        assert {row["pid"]: row for row in json.loads(ended.stdout)}[worker]["outcome"] == "ended"
        stat = Path(f"/proc/{worker}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        if os.path.exists(f"/proc/{worker}"):
            os.kill(worker, 9)
