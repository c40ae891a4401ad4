"""The Prometheus exporter scraped over loopback, on simulated GPUs and real orphans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from reap.conftest import Spawner, alive, dev, spawn, subreaper, trainer_script  # noqa: F401

from gpudoc.exporter import MetricsServer, MonitorCollector, serve
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A real exporter on 127.0.0.1 and an ephemeral port; its base URL."""
    monitor = Monitor(SimulatedBackend("workstation", clock=ManualClock(5)), device_glob=str(tmp_path / "nvidia*"))
    running, _ = serve(monitor, port=0)
    try:
        yield f"http://127.0.0.1:{running.server_port}"
    finally:
        running.shutdown()
        running.server_close()
        monitor.close()


def _status(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_only_metrics_is_served(server: str) -> None:
    code, body = _status(f"{server}/metrics?x=1")
    assert code == 200 and b"DCGM_FI_DEV_GPU_UTIL" in body
    for path in ("/", "/favicon.ico", "/metricsx", "/api/v1/metrics", "//metrics", "///metrics?x=1"):
        code, body = _status(server + path)
        assert code == 404 and b"/metrics" in body and b"DCGM" not in body, path


def test_head_is_allowed_and_other_methods_are_not(server: str) -> None:
    request = urllib.request.Request(f"{server}/metrics", method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.read() == b""
        assert response.headers["Content-Type"].startswith("text/plain") and int(response.headers["Content-Length"]) > 0
    code, _ = _status(f"{server}/metrics", "POST")
    assert code == 405


def _busy_ticks() -> int:
    """The host's non-idle CPU time, in ticks, from /proc/stat."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def test_first_scrape_reads_the_cpu_since_start(tmp_path: Path) -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        monitor = Monitor(SimulatedBackend("workstation", clock=ManualClock(5)), device_glob=str(tmp_path / "x*"))
        running, _ = serve(monitor, port=0)
        try:
            before = _busy_ticks()
            while _busy_ticks() < before + 5:  # the host has used CPU since the server started (a
                os.sched_yield()               # margin: /proc/stat's total and per-core lines are read apart)
            _, body = _status(f"http://127.0.0.1:{running.server_port}/metrics")
        finally:
            running.shutdown()
            running.server_close()
            monitor.close()
    finally:
        spinner.kill()
        spinner.wait()
    (cpu,) = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples
              if s.name == "gpudoc_host_cpu_percent"]
    assert cpu.value > 0


def test_serve_needs_no_prometheus_flag_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpudoc", "--simulate", "workstation", "serve", "--port", "0",
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


@pytest.mark.usefixtures("subreaper")
def test_a_gpu_without_a_process_list_says_so_and_its_holders_are_unconfirmed(
    dev: Path, spawn: Spawner  # noqa: F811
) -> None:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True, files=("nvidiactl", "nvidia1")))
    trainer.wait()
    # From 34 s the faults scenario's GPU 1 answers NO_PERMISSION for its process lists.
    monitor = Monitor(SimulatedBackend("faults", clock=ManualClock(35)), device_glob=str(dev / "nvidia*"),
                      window=0.1)
    running, _ = serve(monitor, port=0)
    try:
        _, body = _status(f"http://127.0.0.1:{running.server_port}/metrics")
    finally:
        running.shutdown()
        running.server_close()
        monitor.close()
    samples = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]
    assert {s.labels["gpu"]: s.value for s in samples if s.name == "gpudoc_gpu_processes_up"} == {"0": 1.0, "1": 0.0}
    assert {s.labels["gpu"]: s.value for s in samples if s.name == "gpudoc_gpu_up"} == {"0": 1.0, "1": 1.0}
    holders = {s.labels["verdict"]: s.value for s in samples if s.name == "gpudoc_device_holders"}
    assert holders["unconfirmed"] == 1.0 and holders["orphan"] == 0.0
    assert not [s for s in samples if s.name == "gpudoc_orphan_holders"]
    assert alive(worker)


def test_serve_stops_cleanly_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpudoc", "--simulate", "workstation", "serve", "--port", "0",
         "--device-glob", "/nonexistent/nvidia*"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "GPUDOC_SIMULATE": ""},
    )
    try:
        assert proc.stderr is not None
        assert "serving metrics on" in proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr.read() == "gpudoc: SIGTERM: stopped\n"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.usefixtures("subreaper")
def test_holder_verdicts_follow_the_nvml_reading_of_the_same_scrape(dev: Path, spawn: Spawner) -> None:  # noqa: F811
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True, files=("nvidiactl", "nvidia1")))
    trainer.wait()
    clock = ManualClock(5)
    monitor = Monitor(SimulatedBackend("faults", clock=clock), device_glob=str(dev / "nvidia*"),
                      holder_interval=30.0, window=0.1)  # serve's: one scan for every scrape here
    running = MetricsServer(("127.0.0.1", 0), MonitorCollector(monitor, min_interval=0.0))
    threading.Thread(target=running.serve_forever, daemon=True).start()

    def scrape() -> dict[str, dict[str, float]]:
        _, body = _status(f"http://127.0.0.1:{running.server_port}/metrics")
        found: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                key = sample.labels.get("verdict") or sample.labels.get("gpu") or sample.labels.get("user") or ""
                found.setdefault(sample.name, {})[key] = sample.value
        return found

    try:
        first = scrape()
        assert first["gpudoc_device_holders"]["orphan"] == 1.0 and first["gpudoc_orphan_holders"] == {"root": 1.0}
        clock.t = 12  # GPU 1, the one it holds, falls off the bus
        lost = scrape()
        assert lost["gpudoc_gpu_up"]["1"] == 0.0
        assert lost["gpudoc_device_holders"]["orphan"] == 0.0 and lost["gpudoc_device_holders"]["unconfirmed"] == 1.0
        assert "gpudoc_orphan_holders" not in lost
        clock.t = 1  # NVML cannot be asked at all
        down = scrape()
        assert down["gpudoc_nvml_up"][""] == 0.0
        assert down["gpudoc_device_holders"]["orphan"] == 0.0 and "gpudoc_orphan_holders" not in down
    finally:
        running.shutdown()
        running.server_close()
        monitor.close()
    assert alive(worker)
