"""Holder scan over real child processes holding fake device files."""

from __future__ import annotations

import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpudoc.reap.scan import device_files, scan

SYS_EXIT = {"x86_64": 60, "aarch64": 93}


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    """Fake nvidiactl, nvidia0, nvidia1 and nvidia-uvm files, and an nvidia-caps directory."""
    folder = tmp_path / "dev"
    folder.mkdir()
    for name in ("nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm"):
        (folder / name).write_bytes(b"\0" * 4096)
    (folder / "nvidia-caps").mkdir()
    return folder


class Holders:
    """Starts children that hold files, waits until each says it is ready, kills them after."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, code: str, user: str | None = None) -> subprocess.Popen[str]:
        kwargs = {}
        if user:
            entry = pwd.getpwnam(user)
            kwargs["user"], kwargs["group"] = entry.pw_uid, entry.pw_gid
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE, text=True, **kwargs,
        )
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def holders() -> Iterator[Holders]:
    started = Holders()
    yield started
    started.stop()


def by_pid(result) -> dict:
    return {h.pid: h for h in result.holders}


def test_device_files_leave_out_directories(dev: Path) -> None:
    assert [Path(p).name for p in device_files(str(dev / "nvidia*"))] == [
        "nvidia-uvm", "nvidia0", "nvidia1", "nvidiactl",
    ]


def test_open_descriptors_are_found(dev: Path, holders: Holders) -> None:
    holder = holders.start(f"""
        import time
        a = open({str(dev / 'nvidiactl')!r}, 'rb'); b = open({str(dev / 'nvidia0')!r}, 'rb')
        c = open({str(dev / 'nvidia0')!r}, 'rb')
        print('ready', flush=True); time.sleep(60)
    """)
    bystander = holders.start("import time\nprint('ready', flush=True); time.sleep(60)")
    found = by_pid(scan(str(dev / "nvidia*")))
    assert bystander.pid not in found
    h = found[holder.pid]
    assert h.devices == (str(dev / "nvidia0"), str(dev / "nvidiactl"))
    assert (h.fds, h.mapped_only, h.thread_only) == (3, False, False)


def test_mapping_only_holder_is_found_through_maps(dev: Path, holders: Holders) -> None:
    holder = holders.start(f"""
        import ctypes, os, time
        libc = ctypes.CDLL(None)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        fd = os.open({str(dev / 'nvidia1')!r}, os.O_RDWR)
        assert libc.mmap(None, 4096, 1, 1, fd, 0) not in (None, ctypes.c_void_p(-1).value)
        os.close(fd)
        print('ready', flush=True); time.sleep(60)
    """)
    h = by_pid(scan(str(dev / "nvidia*")))[holder.pid]
    assert h.devices == (str(dev / "nvidia1"),)
    assert (h.fds, h.mapped_only) == (0, True)


@pytest.mark.skipif(platform.machine() not in SYS_EXIT, reason="raw exit syscall number unknown here")
def test_zombie_leader_with_live_thread_is_found_through_task_fds(dev: Path, holders: Holders) -> None:
    holder = holders.start(f"""
        import ctypes, threading, time
        f = open({str(dev / 'nvidia0')!r}, 'rb')
        threading.Thread(target=time.sleep, args=(60,)).start()
        print('ready', flush=True)
        ctypes.CDLL(None).syscall({SYS_EXIT[platform.machine()]}, 0)
    """)
    for _ in range(200):
        with open(f"/proc/{holder.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        os.sched_yield()
    h = by_pid(scan(str(dev / "nvidia*")))[holder.pid]
    assert h.devices == (str(dev / "nvidia0"),)
    assert h.thread_only


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the scan as another user")
def test_other_users_processes_are_unreadable_not_fatal(holders: Holders) -> None:
    shared = Path(tempfile.mkdtemp(prefix="gpudoc-dev-"))
    try:
        shared.chmod(0o755)
        (shared / "nvidia0").write_bytes(b"")
        package = Path(__file__).resolve().parents[2] / "gpudoc"
        shutil.copytree(package, shared / "lib" / "gpudoc", ignore=shutil.ignore_patterns("__pycache__"))
        root_holder = holders.start(f"""
            import time
            f = open({str(shared / 'nvidia0')!r}, 'rb')
            print('ready', flush=True); time.sleep(60)
        """)
        code = (
            "import json; from gpudoc.reap.scan import scan; "
            f"r = scan({str(shared / 'nvidia*')!r}); "
            "print(json.dumps({'holders': [h.pid for h in r.holders], 'unreadable': list(r.unreadable)}))"
        )
        nobody = pwd.getpwnam("nobody")
        out = subprocess.run(
            ["/usr/bin/python3", "-c", code], capture_output=True, text=True, check=True,
            user=nobody.pw_uid, group=nobody.pw_gid, cwd="/",
            env={"PYTHONPATH": str(shared / "lib"), "PATH": "/usr/bin:/bin"},
        )
    finally:
        shutil.rmtree(shared)
    result = json.loads(out.stdout)
    assert root_holder.pid not in result["holders"]
    assert root_holder.pid in result["unreadable"]


def test_no_matching_devices_means_no_holders(tmp_path: Path) -> None:
    result = scan(str(tmp_path / "nvidia*"))
    assert result.devices == () and result.holders == ()


def test_a_read_that_never_returns_is_given_up_and_the_scan_goes_on(tmp_path: Path) -> None:
    """A fake /proc where one process's maps is a FIFO nobody writes: reading it blocks like
    a process stuck in D state. That PID is listed as stuck; the holder after it is found."""
    device = tmp_path / "nvidia0"
    device.write_bytes(b"")
    root = tmp_path / "proc"
    (root / "self" / "ns").mkdir(parents=True)
    (root / "self" / "ns" / "pid").symlink_to("pid:[1]")
    stuck = root / "100"
    (stuck / "fd").mkdir(parents=True)
    (stuck / "fd" / "0").symlink_to("/dev/null")
    os.mkfifo(stuck / "maps")
    holder = root / "200"
    (holder / "fd").mkdir(parents=True)
    (holder / "fd" / "3").symlink_to(device)
    (holder / "stat").write_text("200 (python) S 1 200 200 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 77 0 0\n")
    (holder / "cmdline").write_bytes(b"python\0train.py\0")
    try:
        result = scan(str(tmp_path / "nvidia*"), proc_root=root, read_timeout=0.3)
    finally:
        os.close(os.open(stuck / "maps", os.O_WRONLY | os.O_NONBLOCK))  # lets the abandoned reader finish
    assert result.stuck == (100,)
    (found,) = result.holders
    assert (found.pid, found.devices, found.cmdline) == (200, (str(device),), ("python", "train.py"))
