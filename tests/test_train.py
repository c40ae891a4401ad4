"""The run supervisor on real child processes."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpudoc.errors import InputError
from gpudoc.train import Run, RunState


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_output_lines_progress_bars_colours_and_exit_code(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    run = Run(python(r"""
        import sys
        print("\x1b[32mepoch 1\x1b[0m\t\x1b]8;;https://example.org\x1b\\loss\x1b]8;;\x1b\\ 0.5")
        for i in range(0, 101, 25):
            sys.stdout.write(f"\r{i:3d}%|" + "#" * (i // 25))
        sys.stdout.write("\n")
        print("to stderr", file=sys.stderr)
        sys.stdout.write("no newline at the end")
        sys.exit(3)
    """), log=log)
    status = run.wait(20)
    assert status.state is RunState.FAILED and status.returncode == 3
    assert status.lines == ("epoch 1 loss 0.5", "100%|####", "to stderr", "no newline at the end")
    assert status.oom is None and status.elapsed > 0
    assert b"\x1b[32mepoch 1" in log.read_bytes() and log.read_bytes().endswith(b"at the end")


def test_an_escape_sequence_split_across_two_reads_is_still_removed() -> None:
    run = Run(python(r"""
        import sys, time
        sys.stdout.write("\x1b[3"); sys.stdout.flush(); time.sleep(0.3)
        sys.stdout.write("2mhello\x1b[0m\n")
    """))
    assert run.wait(20).lines == ("hello",)


def test_a_successful_run_and_the_last_lines_kept() -> None:
    run = Run(python("for i in range(500): print(i)"), keep_lines=10)
    status = run.wait(20)
    assert status.state is RunState.SUCCEEDED and status.returncode == 0
    assert status.lines == tuple(str(i) for i in range(490, 500))


def test_the_first_out_of_memory_message_is_kept() -> None:
    run = Run(python("""
        print("step 1")
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0)")
        print("RuntimeError: CUDA error: out of memory")
        raise SystemExit(1)
    """))
    status = run.wait(20)
    assert status.oom == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0)"
    assert status.state is RunState.FAILED


def test_stop_ends_every_process_of_the_run_and_only_those(tmp_path: Path) -> None:
    """A launcher with a worker that ignores SIGTERM, and a process that left the session."""
    pids = tmp_path / "pids"
    run = Run(python(f"""
        import os, signal, subprocess, sys, time
        worker = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(60)"])
        apart = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        open({str(pids)!r}, "w").write(f"{{worker.pid}} {{apart.pid}}")
        time.sleep(60)
    """))
    assert wait_for(lambda: pids.exists() and pids.read_text().count(" ") == 1)
    worker, apart = map(int, pids.read_text().split())
    try:
        assert wait_for(lambda: "ready" in run.status().lines)
        assert {s.pid for s in run.members()} == {run.pid, worker}
        actions = run.stop(grace=0.5)
        assert set(actions) == {run.pid, worker}
        assert "SIGKILL" in actions[worker].action
        assert not alive(run.pid) and not alive(worker) and alive(apart)
        status = run.status()
        assert status.state is RunState.STOPPED and not run.running
    finally:
        os.kill(apart, 9)


def test_stopping_a_finished_run_changes_nothing() -> None:
    run = Run(python("print('done')"))
    run.wait(20)
    assert run.stop(grace=0.5) == {}
    assert run.status().state is RunState.SUCCEEDED


def test_a_command_that_cannot_start_is_an_input_error() -> None:
    with pytest.raises(InputError, match="cannot run 'no-such-command-gpudoc'"):
        Run(["no-such-command-gpudoc", "--lr", "1"])


def test_a_session_whose_leader_pid_now_names_another_process_has_no_members() -> None:
    """Once the run's session has emptied its PID may be reused by someone else's session
    leader: members() must not count that session (stop() would end it)."""
    run = Run(python("import time; time.sleep(30)"))
    try:
        assert wait_for(lambda: [m.pid for m in run.members()] == [run.pid])
        run._leader_ticks -= 1  # the process with the leader's PID started at another time
        assert run.members() == []
        assert alive(run.pid)  # and nothing of it is stopped
        assert run.stop(grace=1) == {}
    finally:
        os.kill(run.pid, 9)
        run.wait(10)



def _stat_line(pid: int, sid: int, state: str = "S") -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice threads itrealvalue starttime ...
    return f"{pid} (py (x)) {state} 1 {sid} {sid} 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 {1000 + pid} 0 0\n"


def test_session_members_reads_an_entry_outside_the_session_once_until_it_is_listed_again(tmp_path: Path) -> None:
    from gpudoc.reap.proc import session_members

    def put(pid: int, sid: int) -> None:
        (tmp_path / str(pid)).mkdir(exist_ok=True)
        (tmp_path / str(pid) / "stat").write_text(_stat_line(pid, sid))

    put(100, 100)
    put(200, 1)
    (tmp_path / "self").mkdir()
    assert [m.pid for m in session_members(100, str(tmp_path))] == [100]
    others: set[str] = set()
    found = session_members(100, str(tmp_path), others)
    assert [(m.pid, m.comm, m.sid, m.cpu_ticks, m.start_ticks) for m in found] == [(100, "py (x)", 100, 7, 1100)]
    assert others == {"200"}
    put(200, 100)  # (a process cannot join a session: shows that 200 is not read again)
    assert [m.pid for m in session_members(100, str(tmp_path), others)] == [100]
    assert sorted(m.pid for m in session_members(100, str(tmp_path))) == [100, 200]  # without others: all read
    (tmp_path / "200" / "stat").unlink()
    (tmp_path / "200").rmdir()
    assert [m.pid for m in session_members(100, str(tmp_path), others)] == [100] and others == set()
    put(200, 100)  # the PID is listed again (reused): read again
    assert sorted(m.pid for m in session_members(100, str(tmp_path), others)) == [100, 200]


def test_members_between_full_scans_find_a_new_worker_and_what_the_leader_leaves(tmp_path: Path,
                                                                                  monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Between full scans only known members and new PIDs are read: a worker started after
    the first look is a member at the next, one that left the session is not, and once the
    leader exits the worker it left is still found."""
    from gpudoc import train

    monkeypatch.setattr(train, "FULL_SCAN_EVERY", 1e9)
    go, pids = tmp_path / "go", tmp_path / "pids"
    run = Run(python(f"""
        import os, subprocess, sys, time
        while not os.path.exists({str(go)!r}):
            time.sleep(0.02)
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        apart = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        open({str(pids)!r}, "w").write(f"{{worker.pid}} {{apart.pid}}")
        time.sleep(0.5)
    """))
    worker = apart = None
    try:
        assert [m.pid for m in run.members()] == [run.pid]
        scanned = run._full_scan_at
        go.touch()
        assert wait_for(lambda: pids.exists() and pids.read_text().count(" ") == 1)
        worker, apart = map(int, pids.read_text().split())
        assert {m.pid for m in run.members()} == {run.pid, worker}
        assert run._full_scan_at == scanned  # found without reading every /proc entry again
        run.wait(20)
        assert [m.pid for m in run.members()] == [worker]
        assert run._full_scan_at != scanned  # the first look after the leader exited reads them all
    finally:
        for pid in (worker, apart):
            if pid is not None:
                os.kill(pid, 9)
        run.stop(grace=0.5)
