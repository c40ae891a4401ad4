"""`gpudoc tui` as a user starts it: on a pseudo-terminal, quit with q."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time


class Terminal:
    """``gpudoc ARGS`` on a pseudo-terminal whose output is read as a terminal would."""

    def __init__(self, *args: str) -> None:
        self.main, child = os.openpty()
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", "GPUDOC_SIMULATE": ""}
        self.proc = subprocess.Popen([sys.executable, "-m", "gpudoc", *args],
                                     stdin=child, stdout=child, stderr=child, env=env)
        os.close(child)
        self.seen = b""

    def read_until(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.main], [], [], 0.5)
            if ready:
                self.seen += os.read(self.main, 65536)
        assert text in self.seen, self.seen[-2000:].decode(errors="replace")

    def type(self, keys: bytes) -> None:
        os.write(self.main, keys)

    def exit_code(self, timeout: float = 20) -> int:
        """Wait for the exit, draining the output meanwhile (or drawing blocks)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.main], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.main, 65536)
                except OSError:
                    break
        return self.proc.wait(5)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.main)


def test_demo_starts_draws_and_quits() -> None:
    with Terminal("tui", "--demo", "dgx", "--device-glob", "/none/*") as term:
        term.read_until(b"H100")
        term.type(b"q")
        assert term.exit_code() == 0


def test_a_run_is_watched_and_quitting_stops_it() -> None:
    code = "import time; print('hello from the run', flush=True); time.sleep(60)"
    with Terminal("tui", "--demo", "workstation", "--device-glob", "/none/*", "--", sys.executable, "-c", code) as term:
        term.read_until(b"hello from the run")
        term.type(b"q")
        term.read_until(b"Stop it and quit?")
        term.type(b"y")
        assert term.exit_code() == 130
        assert b"gpudoc: the run stopped after" in term.seen


def test_the_exit_status_follows_a_run_that_failed_by_itself() -> None:
    code = "print('bye', flush=True); raise SystemExit(4)"
    with Terminal("tui", "--demo", "workstation", "--device-glob", "/none/*", "--", sys.executable, "-c", code) as term:
        term.read_until(b"failed (exit 4)")
        term.type(b"q")
        assert term.exit_code() == 1
        assert b"gpudoc: the run failed (exit 4) after" in term.seen
