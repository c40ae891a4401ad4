"""The Prometheus exporter scraped over loopback, on simulated GPUs and real orphans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from reap.conftest import Spawner, dev, spawn, subreaper, trainer_script  # noqa: F401

from gpudoc.exporter import serve
from gpudoc.gpu import ManualClock, SimulatedBackend
from gpudoc.monitor import Monitor


@pytest.fixture
def scrape(dev: Path, spawn: Spawner) -> Iterator[dict[str, list]]:  # noqa: F811
    trainer, _ = spawn.start(trainer_script(dev, exits=True))
    trainer.wait()
    monitor = Monitor(SimulatedBackend("faults", clock=ManualClock(12)), device_glob=str(dev / "nvidia*"),
                      window=0.1)
    server, _ = serve(monitor, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        monitor.close()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    yield samples


def test_gpu_metrics_use_dcgm_names_and_report_a_lost_gpu(scrape: dict[str, list]) -> None:
    util = {s.labels["gpu"]: s for s in scrape["DCGM_FI_DEV_GPU_UTIL"]}
    assert set(util) == {"0"}, "the lost GPU 1 has no readings"
    assert util["0"].labels["modelName"] == "NVIDIA A100-SXM4-40GB" and util["0"].labels["device"] == "nvidia0"
    assert 0 <= util["0"].value <= 100
    fb = scrape["DCGM_FI_DEV_FB_USED"][0].value + scrape["DCGM_FI_DEV_FB_FREE"][0].value
    assert fb == pytest.approx(40960, abs=1)
    up = {s.labels["gpu"]: s.value for s in scrape["gpudoc_gpu_up"]}
    assert up == {"0": 1.0, "1": 0.0} and scrape["gpudoc_nvml_up"][0].value == 1.0
    assert {s.labels["pid"] for s in scrape["gpudoc_gpu_process_memory_bytes"]} >= {"33012"}


def test_host_and_orphan_holder_metrics(scrape: dict[str, list]) -> None:
    assert scrape["gpudoc_host_memory_total_bytes"][0].value > 0
    holders = {s.labels["verdict"]: s.value for s in scrape["gpudoc_device_holders"]}
    assert holders["orphan"] == 1.0
    assert [(s.labels["user"], s.value) for s in scrape["gpudoc_orphan_holders"]] == [("root", 1.0)]


def test_serve_command_binds_loopback_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpudoc", "--simulate", "workstation", "serve", "--prometheus", "--port", "0",
         "--device-glob", "/nonexistent/nvidia*"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "GPUDOC_SIMULATE": ""},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/metrics", line)
        assert url, line
        with urllib.request.urlopen(url.group(0), timeout=10) as response:
            assert "DCGM_FI_DEV_GPU_UTIL" in response.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
