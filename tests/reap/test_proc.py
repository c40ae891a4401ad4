"""gpudoc.reap.proc's session scan against real processes."""

from __future__ import annotations

import subprocess
import sys

from gpudoc.reap.proc import read_stat, session_members

TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_session_members_are_the_processes_of_the_session_and_only_those() -> None:
    leader = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    outsider = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        found = session_members(leader.pid)
        assert sorted(stat.pid for stat in found) == sorted([leader.pid, child])
        by_pid = {stat.pid: stat for stat in found}
        assert by_pid[child].ppid == leader.pid and by_pid[child].sid == leader.pid  # parsed whole
        assert by_pid[leader.pid].start_ticks == read_stat(leader.pid).start_ticks
        assert outsider.pid not in {stat.pid for stat in found}
    finally:
        for process in (leader, outsider):
            process.kill()
            process.wait()
        subprocess.run(["pkill", "-KILL", "-s", str(leader.pid)], check=False)
