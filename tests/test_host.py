"""Host probe against the real machine and real child processes."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from gpudoc.host import HostProbe
from gpudoc.na import NA


def test_sample_matches_psutil_and_rates_need_a_base() -> None:
    probe = HostProbe()
    first = probe.sample()
    assert len(first.cpu_per_core) == psutil.cpu_count()
    assert first.memory_total == psutil.virtual_memory().total
    assert 0 < first.memory_used <= first.memory_total
    assert first.swap_total == psutil.swap_memory().total
    assert first.load_average is not NA and len(first.load_average) == 3
    assert first.disk_read_rate is NA and first.net_rx_rate is NA
    with open(os.devnull, "wb") as sink:
        sink.write(b"x" * 1000)
    second = probe.sample()
    for rate in (second.disk_read_rate, second.disk_write_rate, second.net_rx_rate, second.net_tx_rate):
        assert isinstance(rate, float) and rate >= 0
    assert all(0 <= c <= 100 for c in second.cpu_per_core)


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: pass"])
    yield proc
    proc.kill()
    proc.wait()


def test_process_details_of_a_real_child(child: subprocess.Popen) -> None:
    probe = HostProbe()
    info = probe.process(child.pid)
    assert info is not None
    assert info.ppid == os.getpid()
    assert info.pgid == os.getpgid(os.getpid())
    assert info.user == getpass.getuser()
    assert info.cmdline[0] == sys.executable and "while True" in info.command
    assert info.create_time == pytest.approx(psutil.Process(child.pid).create_time())
    assert info.rss > 0
    assert info.cpu_percent is NA
    time.sleep(0.3)
    again = probe.process(child.pid)
    assert again is not None and again.cpu_percent > 0


def test_vanished_and_reused_pids(child: subprocess.Popen) -> None:
    probe = HostProbe()
    assert probe.process(child.pid) is not None
    child.kill()
    child.wait()
    assert probe.process(child.pid) is None
    assert probe.processes([child.pid, os.getpid()]).keys() == {os.getpid()}


def _busy_ticks() -> int:
    """The host's non-idle CPU time, in ticks, from /proc/stat."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def test_the_first_cpu_reading_on_another_thread_covers_the_time_since_the_probe_was_made(
    child: subprocess.Popen,
) -> None:
    probe = HostProbe()  # made here, sampled on a sampler thread, as the TUI and serve do
    before = _busy_ticks()
    while _busy_ticks() < before + 5:  # the host has used CPU since the probe was made (a margin:
        os.sched_yield()               # /proc/stat's total and its per-core lines are read apart)
    taken = []
    sampler = threading.Thread(target=lambda: taken.append(probe.sample()))
    sampler.start()
    sampler.join()
    (first,) = taken
    assert first.cpu_percent > 0 and max(first.cpu_per_core) > 0
    assert all(0 <= c <= 100 for c in first.cpu_per_core)
