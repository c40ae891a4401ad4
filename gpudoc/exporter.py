"""Prometheus metrics from a :class:`Monitor`: GPU readings under NVIDIA DCGM exporter's
names (so existing Grafana dashboards work), plus host and device-holder figures, served on
``/metrics`` only."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from gpudoc.monitor import Monitor, MonitorSample
from gpudoc.na import NotAvailable
from gpudoc.reap.classify import Verdict

MIB = 1024 * 1024
_GPU_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "pci_bus_id"]
# (metric name, help, reading → value); names and units follow dcgm-exporter's defaults.
_GPU_METRICS: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda d: d.utilization_gpu),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", lambda d: d.utilization_memory),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda d: _mib(d.memory_used)),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", lambda d: _mib(d.memory_free)),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda d: d.temperature),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda d: d.power_draw),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lambda d: d.clock_sm),
    ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", lambda d: d.clock_memory),
    ("gpudoc_gpu_power_limit_watts", "Enforced power limit (in W).", lambda d: d.power_limit),
    ("gpudoc_gpu_fan_speed_percent", "Fan speed (in %).", lambda d: d.fan_speed),
    ("gpudoc_gpu_pcie_tx_bytes_per_second", "PCIe transmit throughput.", lambda d: d.pcie_tx),
    ("gpudoc_gpu_pcie_rx_bytes_per_second", "PCIe receive throughput.", lambda d: d.pcie_rx),
]


def _mib(value: Any) -> Any:
    return value / MIB if isinstance(value, int) else value


def _number(value: Any) -> float | None:
    if isinstance(value, NotAvailable) or value is None or isinstance(value, bool):
        return None
    return float(value)


class MonitorCollector(Collector):
    """Samples the monitor on scrape, at most every ``min_interval`` seconds (several
    Prometheus servers scraping one machine share a sample).

    Every sample is taken on one thread of the collector's own (scrapes arrive on threads of
    their own), and the host probe is primed when the collector is made, so the first scrape's
    CPU covers the time since start. Call :meth:`close` when done.
    """

    def __init__(self, monitor: Monitor, *, min_interval: float = 1.0, host_name: str | None = None) -> None:
        self.monitor = monitor
        self.min_interval = min_interval
        self.host_name = host_name or socket.gethostname()
        self._lock = threading.Lock()
        self._sample: MonitorSample | None = None
        self._taken = 0.0
        self._sampler = ThreadPoolExecutor(1, thread_name_prefix="gpudoc-sampler")
        self._sampler.submit(monitor.host.sample).result()

    def _current(self) -> MonitorSample:
        with self._lock:
            now = time.monotonic()
            if self._sample is None or now - self._taken >= self.min_interval:
                self._sample, self._taken = self._sampler.submit(self.monitor.sample).result(), now
            return self._sample

    def close(self) -> None:
        """Stop the sampling thread."""
        self._sampler.shutdown(wait=False)

    def collect(self) -> Iterator[Metric]:
        sample = self._current()
        yield from self._gpu_metrics(sample)
        yield from self._host_metrics(sample)
        yield from self._holder_metrics(sample)

    def _gpu_metrics(self, sample: MonitorSample) -> Iterator[Metric]:
        up = GaugeMetricFamily("gpudoc_nvml_up", "1 when NVML answered the last sample.")
        up.add_metric([], 0.0 if sample.gpus.error else 1.0)
        yield up
        families = {name: GaugeMetricFamily(name, doc, labels=_GPU_LABELS) for name, doc, _ in _GPU_METRICS}
        gpu_up = GaugeMetricFamily("gpudoc_gpu_up", "1 when the GPU could be read.", labels=_GPU_LABELS)
        listed = GaugeMetricFamily(
            "gpudoc_gpu_processes_up", "1 when NVML listed the GPU's processes (0: its per-process figures are "
            "missing, and its device holders are not confirmed orphans).", labels=_GPU_LABELS,
        )
        memory = GaugeMetricFamily(
            "gpudoc_gpu_process_memory_bytes", "GPU memory NVML reports per process.", labels=["gpu", "pid", "user"]
        )
        users = {row.pid: row.user for row in sample.processes}
        for device in sample.gpus.devices:
            minor = device.minor_number if isinstance(device.minor_number, int) else device.index
            labels = [
                str(device.index), str(device.uuid), f"nvidia{minor}", str(device.name), self.host_name,
                str(device.pci_bus_id),
            ]
            gpu_up.add_metric(labels, 0.0 if device.error else 1.0)
            listed.add_metric(labels, 0.0 if device.error or device.processes_error else 1.0)
            for name, _, read in _GPU_METRICS:
                value = _number(read(device))
                if value is not None:
                    families[name].add_metric(labels, value)
            for process in device.processes:
                value = _number(process.used_memory)
                if value is not None:
                    memory.add_metric([str(device.index), str(process.pid), str(users.get(process.pid, ""))], value)
        yield gpu_up
        yield listed
        yield from families.values()
        yield memory

    def _host_metrics(self, sample: MonitorSample) -> Iterator[Metric]:
        host = sample.host
        readings = [
            ("gpudoc_host_cpu_percent", "Host CPU use over the last sample (in %).", host.cpu_percent),
            ("gpudoc_host_memory_total_bytes", "Host memory.", host.memory_total),
            ("gpudoc_host_memory_used_bytes", "Host memory in use.", host.memory_used),
            ("gpudoc_host_swap_used_bytes", "Swap in use.", host.swap_used),
            ("gpudoc_host_disk_read_bytes_per_second", "Disk reads.", host.disk_read_rate),
            ("gpudoc_host_disk_write_bytes_per_second", "Disk writes.", host.disk_write_rate),
            ("gpudoc_host_network_receive_bytes_per_second", "Network receive.", host.net_rx_rate),
            ("gpudoc_host_network_transmit_bytes_per_second", "Network transmit.", host.net_tx_rate),
        ]
        if not isinstance(host.load_average, NotAvailable):
            readings.append(("gpudoc_host_load1", "1-minute load average.", host.load_average[0]))
        for name, doc, value in readings:
            number = _number(value)
            if number is not None:
                family = GaugeMetricFamily(name, doc)
                family.add_metric([], number)
                yield family

    def _holder_metrics(self, sample: MonitorSample) -> Iterator[Metric]:
        holders = GaugeMetricFamily(
            "gpudoc_device_holders", "Processes holding GPU device files, by reap verdict.", labels=["verdict"]
        )
        orphans = GaugeMetricFamily(
            "gpudoc_orphan_holders", "Orphaned GPU device holders (what `gpudoc reap` would end), by user.",
            labels=["user"],
        )
        report = sample.holders
        counts = Counter(h.verdict.value for h in report.holders) if report else Counter()
        for verdict in Verdict:
            holders.add_metric([verdict.value], float(counts.get(verdict.value, 0)))
        per_user = Counter(
            str(h.user) for h in (report.holders if report else ()) if h.verdict is Verdict.ORPHAN
        )
        for user, count in sorted(per_user.items()):
            orphans.add_metric([user], float(count))
        yield holders
        yield orphans


class MetricsServer(ThreadingHTTPServer):
    """An HTTP server answering GET and HEAD on ``/metrics`` with the collector's metrics
    (text or OpenMetrics by the Accept header, gzip when accepted), 404 on any other path,
    405 to other methods."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], collector: MonitorCollector) -> None:
        self.collector = collector
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.address_family = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, _MetricsHandler)

    def server_close(self) -> None:
        super().server_close()
        self.collector.close()


class _MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    timeout = 30  # a client that stops sending does not hold its thread for ever

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _not_allowed(self) -> None:
        self._send(405, b"only GET and HEAD are served\n", "text/plain; charset=utf-8", [("Allow", "GET, HEAD")])

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _answer(self, send_body: bool) -> None:
        # The path as sent: http.server turns a leading "//" into "/" in self.path.
        sent = self.requestline.split(" ")[1] if self.requestline.count(" ") >= 2 else self.path
        if sent.startswith("//") or urllib.parse.urlsplit(sent).path != "/metrics":
            self._send(404, b"not found: gpudoc serves its metrics on /metrics\n", "text/plain; charset=utf-8",
                       send_body=send_body)
            return
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        output = encoder(self.server.registry)
        headers = []
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            output = gzip.compress(output)
            headers.append(("Content-Encoding", "gzip"))
        self._send(200, output, content_type, headers, send_body)

    def _send(
        self, code: int, body: bytes, content_type: str, headers: list[tuple[str, str]] | None = None,
        send_body: bool = True,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def serve(monitor: Monitor, *, port: int = 9400, address: str = "127.0.0.1") -> tuple[MetricsServer, threading.Thread]:
    """Serve ``/metrics`` on a background thread; returns the server (``.server_port``,
    ``.shutdown()``, ``.server_close()``) and its thread."""
    collector = MonitorCollector(monitor)
    try:
        server = MetricsServer((address, port), collector)
    except OSError:
        collector.close()
        raise
    thread = threading.Thread(target=server.serve_forever, name="gpudoc-metrics", daemon=True)
    thread.start()
    return server, thread
