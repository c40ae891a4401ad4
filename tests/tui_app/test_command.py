"""`gpudoc tui --demo` as a user starts it: on a pseudo-terminal, quit with q."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time


def test_demo_starts_draws_and_quits() -> None:
    main, child = os.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", "GPUDOC_SIMULATE": ""}
    proc = subprocess.Popen([sys.executable, "-m", "gpudoc", "tui", "--demo", "dgx", "--device-glob", "/none/*"],
                            stdin=child, stdout=child, stderr=child, env=env)
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"H100" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                seen += os.read(main, 65536)
        assert b"H100" in seen, seen[-2000:].decode(errors="replace")
        os.write(main, b"q")
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:  # keep draining, or drawing blocks
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    os.read(main, 65536)
                except OSError:
                    break
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
