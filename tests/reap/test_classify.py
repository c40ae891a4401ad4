"""Verdicts over a fake /proc tree: the process-tree shapes that real children cannot take
in a test (PID 1 as parent, a tini subreaper, D state, daemons, containers)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from gpudoc.gpu.model import GpuDevice, GpuProcess, GpuSnapshot, ProcessType
from gpudoc.reap import Inspector, Verdict
from gpudoc.reap.proc import parse_stat
from gpudoc.reap.scan import DeviceScan, Holder

DEV = ("/dev/nvidia0", "/dev/nvidiactl")


class FakeProc:
    """A /proc with stat and cmdline files for chosen processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        (root / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
        (root / "self" / "ns").mkdir(parents=True)
        (root / "self" / "ns" / "pid").symlink_to("pid:[4026531836]")
        self.add(1, "systemd", "S", ppid=0, pgid=1, sid=1, cmd="/sbin/init")

    def add(self, pid: int, comm: str, state: str = "S", *, ppid: int, pgid: int, sid: int,
            cpu: int = 0, cmd: str = "", ns: str = "pid:[4026531836]") -> Holder:
        folder = self.root / str(pid)
        (folder / "ns").mkdir(parents=True)
        line = f"{pid} ({comm}) {state} {ppid} {pgid} {sid} 0 -1 4194560 0 0 0 0 {cpu} 0 0 0 20 0 1 0 5000 0 0\n"
        (folder / "stat").write_text(line)
        (folder / "cmdline").write_bytes(cmd.replace(" ", "\0").encode() + b"\0")
        (folder / "ns" / "pid").symlink_to(ns)
        (folder / "cgroup").write_text("0::/system.slice/docker-0123abcd.scope\n")
        return Holder(pid=pid, devices=DEV, fds=2, mapped_only=False, thread_only=False,
                      stat=parse_stat(pid, line), uid=0, cmdline=tuple(cmd.split()), pid_ns=ns,
                      cgroup="/system.slice/docker-0123abcd.scope" if ns != "pid:[4026531836]" else "")


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


# NVML answered: one GPU, listing none of the holders.
NVML_LISTS_NONE = GpuSnapshot(backend="test", timestamp=0.0, devices=(GpuDevice(index=0, minor_number=0),))


def verdicts(
    proc: FakeProc, holders: list[Holder], gpus: GpuSnapshot | None = NVML_LISTS_NONE,
    sleep: Callable[[float], None] = lambda s: None,
) -> dict[int, tuple[Verdict, str]]:
    inspector = Inspector(window=0.01, proc_root=str(proc.root), sleep=sleep)
    report = inspector.inspect(DeviceScan(DEV, tuple(holders), (), ()), gpus, None if gpus else "no libnvidia-ml")
    return {h.pid: (h.verdict, h.reason) for h in report.holders}


def test_worker_re_parented_to_pid_1_is_an_orphan(proc: FakeProc) -> None:
    proc.add(900, "bash", ppid=1, pgid=900, sid=900)
    worker = proc.add(1001, "python", ppid=1, pgid=900, sid=900, cmd="python train.py")
    verdict, reason = verdicts(proc, [worker])[1001]
    assert verdict is Verdict.ORPHAN
    assert reason.startswith("parent exited (re-parented to PID 1)")
    assert "not in NVML's list (no CUDA context)" in reason and "holds nvidia0,nvidiactl" in reason


def test_without_nvml_an_orphan_is_unconfirmed_and_so_are_its_children(proc: FakeProc) -> None:
    parent = proc.add(1011, "python", ppid=1, pgid=901, sid=901, cmd="python train.py")
    child = proc.add(1012, "python", ppid=1011, pgid=901, sid=901)
    found = verdicts(proc, [parent, child], gpus=None)
    assert found[1011][0] is Verdict.UNCONFIRMED
    assert "CUDA context unknown (NVML unavailable)" in found[1011][1]
    assert found[1012][0] is Verdict.UNCONFIRMED and "its parent 1011 is an unconfirmed orphan" in found[1012][1]


def test_holder_of_a_gpu_nvml_could_not_read_is_unconfirmed(proc: FakeProc) -> None:
    lost = GpuSnapshot(backend="test", timestamp=0.0, devices=(
        GpuDevice(index=0, minor_number=0, error="GPU 0 is lost (fell off the bus)"),
        GpuDevice(index=1, minor_number=1),
    ))
    on_lost = proc.add(1013, "python", ppid=1, pgid=902, sid=902)
    on_other = dataclasses.replace(proc.add(1014, "python", ppid=1, pgid=903, sid=903),
                                   devices=("/dev/nvidia1", "/dev/nvidiactl"))
    found = verdicts(proc, [on_lost, on_other], gpus=lost)
    assert found[1013][0] is Verdict.UNCONFIRMED and "GPU 0 could not be read: GPU 0 is lost" in found[1013][1]
    assert found[1014][0] is Verdict.ORPHAN


def test_orphan_whose_cpu_could_not_be_sampled_is_unconfirmed(proc: FakeProc) -> None:
    worker = proc.add(1015, "python", ppid=1, pgid=904, sid=904)
    stat = proc.root / "1015" / "stat"

    def restarted(seconds: float) -> None:  # the PID now belongs to a newer process
        stat.write_text(stat.read_text().replace(" 5000 0 0", " 6000 0 0"))

    verdict, reason = verdicts(proc, [worker], sleep=restarted)[1015]
    assert verdict is Verdict.UNCONFIRMED and "CPU use unknown" in reason


def test_child_of_a_tini_subreaper_whose_group_leader_died(proc: FakeProc) -> None:
    proc.add(7, "tini", ppid=1, pgid=7, sid=7, cmd="tini --")
    worker = proc.add(1002, "python", ppid=7, pgid=950, sid=7)
    verdict, reason = verdicts(proc, [worker])[1002]
    assert verdict is Verdict.ORPHAN
    assert "process-group leader 950 has exited (now a child of subreaper 7 (tini))" in reason


def test_uninterruptible_orphan_says_it_may_need_a_reset(proc: FakeProc) -> None:
    worker = proc.add(1003, "python", "D", ppid=1, pgid=960, sid=960)
    verdict, reason = verdicts(proc, [worker])[1003]
    assert verdict is Verdict.ORPHAN and "uninterruptible (D): needs GPU reset or reboot" in reason


def test_daemon_started_by_pid_1_is_active(proc: FakeProc) -> None:
    daemon = proc.add(1004, "exporter", ppid=1, pgid=1004, sid=1004, cmd="/usr/bin/gpu-exporter")
    verdict, reason = verdicts(proc, [daemon])[1004]
    assert verdict is Verdict.ACTIVE and "a daemon or service" in reason


def test_children_of_an_orphan_are_orphans_too(proc: FakeProc) -> None:
    parent = proc.add(1005, "python", ppid=1, pgid=970, sid=970)
    child = proc.add(1006, "python", ppid=1005, pgid=970, sid=970)
    found = verdicts(proc, [parent, child])
    assert found[1005][0] is Verdict.ORPHAN
    assert found[1006][0] is Verdict.ORPHAN and "its parent 1005 is an orphan" in found[1006][1]


def test_nvml_context_owner_is_detached_and_its_worker_active(proc: FakeProc) -> None:
    trainer = proc.add(1007, "python", ppid=1, pgid=1007, sid=980, cmd="python train.py")
    worker = proc.add(1008, "python", ppid=1007, pgid=1007, sid=980)
    gpus = GpuSnapshot(backend="test", timestamp=0.0, devices=(
        GpuDevice(index=0, minor_number=0, memory_used=5 << 30,
                  processes=(GpuProcess(1007, 0, ProcessType.COMPUTE, 3 << 30),)),
    ))
    found = verdicts(proc, [trainer, worker], gpus)
    assert found[1007][0] is Verdict.DETACHED and "owns a CUDA context (GPU 0: 3.0 GiB)" in found[1007][1]
    assert found[1008][0] is Verdict.ACTIVE and found[1008][1].startswith("parent 1007 (python train.py) alive")


def test_allow_listed_driver_daemon_is_protected(proc: FakeProc) -> None:
    daemon = proc.add(1009, "nvidia-persiste", ppid=1, pgid=1009, sid=1009, cmd="/usr/bin/nvidia-persistenced")
    verdict, reason = verdicts(proc, [daemon])[1009]
    assert verdict is Verdict.PROTECTED and "nvidia-persistenced" in reason


def test_holder_in_a_container_is_named(proc: FakeProc) -> None:
    worker = proc.add(1010, "python", ppid=1, pgid=990, sid=990, ns="pid:[4026532999]")
    inspector = Inspector(window=0.01, proc_root=str(proc.root), sleep=lambda s: None)
    (report,) = inspector.inspect(DeviceScan(DEV, (worker,), (), ()), None).holders
    assert report.namespace == "docker container"
    assert report.start_time == 1700000000 + 5000 / 100
