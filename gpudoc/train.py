"""The run supervisor: a training command started by gpudoc, watched, and ended whole.

The command runs in a session of its own, so every process it starts (launcher, ranks,
dataloader workers) is found by session ID and ended together — none is left holding a GPU.
Its output (stdout and stderr merged) is read by one thread: the last lines are kept (a
progress bar redrawn with carriage returns counts as one line, terminal colours are
dropped), everything goes to an optional log file, and the first out-of-memory message is
remembered.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

from gpudoc.errors import InputError
from gpudoc.output import format_duration, strip_terminal_codes, write_all
from gpudoc.reap.classify import HolderReport, Verdict
from gpudoc.reap.end import Action, end_processes
from gpudoc.reap.proc import ProcStat, read_stat, session_members

KEEP_LINES = 200
# Run.members reads every /proc entry this often (PIDs reused meanwhile are then seen again),
# and at its first call after the leader exited; in between only the members known so far
# and the PIDs that appeared since.
FULL_SCAN_EVERY = 5.0
# Seconds from the leader's exit that the processes of its session get to exit with it
# (workers told to end as it ends), before those still there are reported as leftovers: long
# enough for them, short enough that the report comes at once.
LEFTOVER_WAIT = 1.0
_OOM = re.compile(
    r"out of memory|OutOfMemoryError|RESOURCE_EXHAUSTED|CUBLAS_STATUS_ALLOC_FAILED|cudaErrorMemoryAllocation",
    re.IGNORECASE,
)
# Errors that end GPU programs other than out-of-memory: cuBLAS/cuDNN status codes, NCCL's
# errors and timeouts, CUDA runtime errors (illegal address, device-side assert, ECC).
_GPU_ERROR = re.compile(
    r"CUBLAS_STATUS_(?!SUCCESS|ALLOC_FAILED)\w+|CUDNN_STATUS_(?!SUCCESS)\w+|NCCL error|nccl\w*Error|"
    r"NCCL (?:communicator|watchdog).*(?:timeout|timed out|abort)|CUDA error: |cudaError(?!MemoryAllocation)\w+|"
    r"an illegal memory access|device-side assert",
    re.IGNORECASE,
)


class RunState(Enum):
    """Running, or how it ended: by itself (exit status 0 or not), or stopped by gpudoc."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RunStatus:
    """The run at one moment. ``lines`` are its last output lines (the unfinished last one
    included), ``oom`` the first line that reported running out of memory, ``gpu_error`` the
    first that reported another GPU library error (cuBLAS, cuDNN, NCCL, CUDA)."""

    command: tuple[str, ...]
    pid: int
    state: RunState
    returncode: int | None
    elapsed: float
    lines: tuple[str, ...]
    oom: str | None
    gpu_error: str | None = None


class Run:
    """``command`` started at once in its own session (``cwd``, ``env`` as for Popen, with
    ``PYTHONUNBUFFERED=1`` so Python output arrives as it is printed); its output is also
    appended to ``log`` and copied as it comes to ``echo`` when given, and ``on_line`` is
    called (from the output thread) with each line as :class:`RunStatus` keeps it: each
    redraw of a progress bar once a carriage return ends it, each line once a newline ends
    it (unless that text was just given as a redraw), and the unfinished last line at the end."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        keep_lines: int = KEEP_LINES,
        echo: BinaryIO | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.command = tuple(command)
        self._lines: deque[str] = deque(maxlen=keep_lines)
        self._raw = ""  # the current line after its last carriage return
        self._shown = ""  # the current line's last finished redraw (a bar that ended with \r)
        self._oom: str | None = None
        self._gpu_error: str | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._exited = threading.Event()
        self._drained = threading.Event()
        self._ended: float | None = None
        self._echo = echo
        self.echo_mid_line = False  # the passed-through output ends inside a line (a progress bar)
        self._on_line = on_line
        try:
            log_file = open(log, "ab") if log else None  # noqa: SIM115 (the output thread closes it)
        except OSError as exc:
            raise InputError(f"{log}: cannot open the log: {exc.strerror or exc}",
                             "give --log a file in a directory you can write") from None
        try:
            self._proc = subprocess.Popen(
                self.command, cwd=cwd, env={**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as exc:
            if log_file:
                log_file.close()
            raise InputError(f"cannot run {self.command[0]!r}: {exc.strerror or exc}",
                             "check the command after '--' (and that it is on PATH)") from None
        self.pid = self._proc.pid
        # Our child until it is waited for, so the PID is still this process's here.
        leader = read_stat(self.pid)
        self._leader_ticks = leader.start_ticks if leader is not None else 0
        self._session_over = False
        self._started = time.monotonic()
        self._outside: set[str] = set()  # /proc entries known to be outside the session
        self._scan_lock = threading.Lock()
        self._full_scan_at = -FULL_SCAN_EVERY
        self._exit_scanned = False
        threading.Thread(target=self._read, args=(log_file,), name="gpudoc-run-output", daemon=True).start()
        threading.Thread(target=self._wait_exit, name="gpudoc-run-exit", daemon=True).start()

    def _read(self, log: BinaryIO | None) -> None:
        """Read the output until every process holding it has closed it."""
        stream = self._proc.stdout
        assert stream is not None
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        try:
            while chunk := os.read(stream.fileno(), 1 << 16):
                if log:
                    log.write(chunk)
                    log.flush()
                if self._echo is not None:
                    self._copy(chunk)
                self._take(decode(chunk))
        finally:
            stream.close()
            if log:
                log.close()
            with self._lock:
                tail = _clean(self._raw)
            if tail and self._on_line is not None:
                self._on_line(tail)
            self._drained.set()

    def _copy(self, chunk: bytes) -> None:
        """Pass output through; a closed reader (``| head``) only stops the copying."""
        assert self._echo is not None
        try:
            write_all(self._echo, chunk)
            self._echo.flush()
            self.echo_mid_line = not chunk.endswith(b"\n")
        except (OSError, ValueError):
            self._echo = None

    def _wait_exit(self) -> None:
        self._proc.wait()
        with self._lock:
            self._ended = time.monotonic()
        self._exited.set()

    def _take(self, text: str) -> None:
        """Split output into lines: a newline ends one, a carriage return redraws it. Codes are
        stripped from whole segments only: an escape sequence may straddle two reads."""
        *complete, rest = text.split("\n")
        heard: list[str] = []
        with self._lock:
            for piece in complete:
                *finished, last = (self._raw + piece).split("\r")
                redraws = [_clean(r) for r in finished if r]
                heard += redraws
                if last:
                    line = _clean(last)
                    heard.append(line)
                else:  # the line ended with \r\n: what shows is its last redraw, already heard
                    line = redraws[-1] if redraws else self._shown
                self._raw, self._shown = "", ""
                self._lines.append(line)
                if self._oom is None and _OOM.search(line):
                    self._oom = line.strip()
                elif self._gpu_error is None and _GPU_ERROR.search(line):
                    self._gpu_error = line.strip()
            *finished, self._raw = (self._raw + rest).split("\r")
            redraws = [_clean(r) for r in finished if r]
            heard += redraws
            if redraws:
                self._shown = redraws[-1]
        if self._on_line is not None:
            for line in heard:
                self._on_line(line)

    def status(self) -> RunStatus:
        with self._lock:
            partial = _clean(self._raw) if self._raw else self._shown
            lines = (*self._lines, partial) if partial else tuple(self._lines)
            ended = self._ended
            code = self._proc.returncode if ended is not None else None
            if ended is None:
                state = RunState.RUNNING
            elif self._stopped:
                state = RunState.STOPPED
            else:
                state = RunState.SUCCEEDED if code == 0 else RunState.FAILED
            elapsed = (ended if ended is not None else time.monotonic()) - self._started
            return RunStatus(self.command, self.pid, state, code, elapsed, lines, self._oom, self._gpu_error)

    @property
    def running(self) -> bool:
        return not self._exited.is_set()

    @property
    def ended_at(self) -> float | None:
        """When the leader exited (``time.monotonic()``), None while it runs."""
        with self._lock:
            return self._ended

    def wait_exit(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the leader to exit (True once it has), returning
        early when ``stop`` is set (checked every 0.1 s: a signal handler sets it)."""
        deadline = time.monotonic() + timeout
        while not self._exited.is_set() and not (stop is not None and stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._exited.wait(min(left, 0.1) if stop is not None else left)
        return self._exited.is_set()

    def wait(self, timeout: float | None = None) -> RunStatus:
        """The status once the command has exited (or at ``timeout``), with the output its
        processes wrote until then (up to a second more for them to close it)."""
        if self._exited.wait(timeout):
            self._drained.wait(1.0)
        return self.status()

    def members(self) -> list[ProcStat]:
        """Every live process in the run's session (the command and its descendants that did
        not start a session of their own).

        Linux keeps a PID from reuse while any process is in the session it names, so a
        process with the leader's PID that is not ours means the run's session is over.
        Processes found outside the session are not read again (none can join it) until the
        next full scan: every ``FULL_SCAN_EVERY`` seconds and at the first call after the
        leader exited (so what it left behind is exact then)."""
        if self._session_over:
            return []
        with self._scan_lock:
            now = time.monotonic()
            exited = not self.running and not self._exit_scanned
            if exited or now - self._full_scan_at >= FULL_SCAN_EVERY:
                self._outside.clear()
                self._full_scan_at = now
                self._exit_scanned = self._exit_scanned or exited
            found = session_members(self.pid, others=self._outside)
        # (a process with the leader's PID is in the session it names: it is read here)
        if any(stat.pid == self.pid and stat.start_ticks != self._leader_ticks for stat in found):
            self._session_over = True
            return []
        return [stat for stat in found if stat.state != "Z" and stat.start_ticks >= self._leader_ticks]

    def stop(self, grace: float = 10.0) -> dict[int, Action]:
        """End the whole run: SIGTERM to every process in its session, SIGKILL to those
        still alive after ``grace`` seconds (the identity checks of ``gpudoc reap``)."""
        with self._lock:
            self._stopped = self._ended is None
        targets = [
            HolderReport(pid=stat.pid, verdict=Verdict.ACTIVE, reason="part of the run", start_ticks=stat.start_ticks)
            for stat in self.members()
        ]
        actions = end_processes(targets, sig=signal.SIGTERM, timeout=grace)
        self.wait(grace)
        return actions


def describe(status: RunStatus) -> str:
    """``running 2m13s``, ``succeeded after 3h02m``, ``failed (exit 1) after 0m12s``, ``stopped after 1m05s``."""
    elapsed = format_duration(status.elapsed)
    if status.state is RunState.RUNNING:
        return f"running {elapsed}"
    if status.state is RunState.FAILED:
        return f"failed (exit {status.returncode}) after {elapsed}"
    return f"{status.state.value} after {elapsed}"


def _clean(text: str) -> str:
    """Output text as shown in the run's lines: no terminal codes, tabs expanded."""
    return strip_terminal_codes(text).expandtabs()


class Attempts:
    """``command`` run by :class:`Run` (``env``, ``log``, ``echo``, ``on_line`` as for Run),
    started again after it failed — not after a stop or a success — up to ``restarts`` times,
    as torchrun's ``--max-restarts``.
    :meth:`start` begins the next attempt; :meth:`again` says whether an ended one gets another."""

    def __init__(self, command: Sequence[str], restarts: int = 0, *, env: dict[str, str] | None = None,
                 log: Path | None = None, echo: BinaryIO | None = None,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.command = tuple(command)
        self.restarts = restarts
        self.env, self.log, self.echo, self.on_line = env, log, echo, on_line
        self.number = 0  # the attempt started last (1 for the first)
        self.run: Run | None = None

    def start(self) -> Run:
        """Start the next attempt (:class:`InputError` when the command cannot run)."""
        run = Run(self.command, env=self.env, log=self.log, echo=self.echo, on_line=self.on_line)
        self.number += 1
        self.run = run
        return run

    def again(self, status: RunStatus) -> bool:
        return status.state is RunState.FAILED and self.number <= self.restarts

    def label(self) -> str:
        """``attempt 2 of 4`` once a restart is possible, else ""."""
        return f"attempt {self.number} of {self.restarts + 1}" if self.restarts else ""

    def restarting(self, ended: str) -> str:
        """What is said as the next attempt starts after the run ``ended`` (``failed (exit 1)``)."""
        return f"the run {ended}: starting it again (attempt {self.number + 1} of {self.restarts + 1})"
