"""Real processes holding fake device files, under a test process that is a child subreaper,
so orphans are re-parented to the test instead of init."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

PR_SET_CHILD_SUBREAPER = 36


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is dead; one that is our child is collected)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session", autouse=True)
def subreaper() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def dev() -> Iterator[Path]:
    """Fake nvidiactl, nvidia0, nvidia1 and nvidia-uvm files any user may open, and an
    nvidia-caps directory."""
    folder = Path(tempfile.mkdtemp(prefix="gpudoc-dev-"))
    folder.chmod(0o755)
    for name in ("nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm"):
        (folder / name).write_bytes(b"\0" * 4096)
        (folder / name).chmod(0o666)
    (folder / "nvidia-caps").mkdir()
    yield folder
    shutil.rmtree(folder)


class Spawner:
    """Starts Python scripts, reads the PIDs they report (``pid N`` lines, then ``ready``)
    and kills every one of them afterwards."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self, code: str, user: str | None = None, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[str], list[int]]:
        kwargs: dict[str, object] = {"env": {**os.environ, **(env or {})}}
        python = sys.executable
        if user:
            python = "/usr/bin/python3"  # the test's interpreter may sit in a directory only root may enter
            entry = pwd.getpwnam(user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], cwd="/")
        proc = subprocess.Popen(
            [python, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE, text=True, start_new_session=True, **kwargs,  # type: ignore[call-overload]
        )
        self.procs.append(proc)
        self.pids.append(proc.pid)
        reported = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("pid "):
                reported.append(int(line.split()[1]))
                self.pids.append(reported[-1])
            elif line.strip() == "ready":
                break
        else:
            raise AssertionError("the script exited before saying ready")
        return proc, reported

    def stop(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait()
        for pid in self.pids:
            alive(pid)


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    spawner = Spawner()
    yield spawner
    spawner.stop()


def trainer_script(
    dev: Path, *, exits: bool, worker: str = "time.sleep(120)", files: tuple[str, ...] = ("nvidiactl", "nvidia0"),
    setup: str = "pass",
) -> str:
    """A trainer that opens device files, forks one worker (which inherits them, runs
    ``setup``, tells the trainer, then runs ``worker``) and either exits (leaving the worker
    orphaned) or stays. "ready" is printed once the worker's setup is done."""
    opens = ", ".join(f"open({str(dev / f)!r}, 'rb')" for f in files)
    return f"""
        import os, signal, sys, time
        held = [{opens}]
        done_r, done_w = os.pipe()
        child = os.fork()
        if child == 0:
            {setup}
            os.write(done_w, b"1")
            {worker}
            os._exit(0)
        os.read(done_r, 1)
        print(f"pid {{child}}", flush=True)
        print("ready", flush=True)
        {"os._exit(0)" if exits else "time.sleep(120)"}
    """
