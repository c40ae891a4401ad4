"""On a machine with an NVIDIA GPU: NvmlBackend and doctor against the real driver."""

from __future__ import annotations

import json
import subprocess
import sys

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
        assert (device.index, device.name) == (int(index), name)
        assert device.memory_total // (1024 * 1024) == int(total_mib)
        assert 0 <= device.utilization_gpu <= 100
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
