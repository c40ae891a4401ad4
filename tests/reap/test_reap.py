"""`gpudoc reap` end to end on real processes holding fake device files."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpudoc.cli import cli
from gpudoc.reap import HolderReport, Inspector, Outcome, Verdict, end_processes, scan
from gpudoc.reap.end import _survivor
from gpudoc.reap.slurm import run_epilog

from .conftest import Spawner, alive, trainer_script

SYS_EXIT = {"x86_64": 60, "aarch64": 93}


def nvml(dev: Path, **scenario: object) -> str:
    """A scenario file beside the fake device files: by default NVML answers for two GPUs
    and lists no process (every holder owns no CUDA context)."""
    path = dev / "scenario.json"
    path.write_text(json.dumps({"name": "reap", "gpus": [{"name": "Sim A100", "memory_total_mib": 40960}] * 2,
                                **scenario}))
    return str(path)


NO_NVML = {"faults": [{"kind": "init_failure", "error": "library_not_found"}]}


def reap(dev: Path, *args: str, simulate: str | None = None) -> tuple[int, dict[int, dict], str]:
    """Run ``gpudoc reap --json`` in-process (NVML simulated, by default listing no
    process); the holders by PID, and stderr."""
    base = ["--simulate", simulate or nvml(dev)]
    result = CliRunner().invoke(
        cli, [*base, "reap", "--device-glob", str(dev / "nvidia*"), "--window", "0.2", "--json", *args],
        env={"GPUDOC_SIMULATE": None},
    )
    rows = json.loads(result.stdout) if result.stdout.strip() else []
    return result.exit_code, {row["pid"]: row for row in rows}, result.stderr


def orphaned_worker(spawn: Spawner, dev: Path, **kwargs: object) -> int:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True, **kwargs))  # type: ignore[arg-type]
    trainer.wait()
    return worker


def test_worker_of_an_exited_trainer_is_an_orphan_and_is_ended(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev)
    code, rows, _ = reap(dev)
    row = rows[worker]
    assert code == 1 and row["verdict"] == "orphan"
    assert "process-group leader" in row["reason"] and "idle" in row["reason"]
    assert {Path(d).name for d in row["devices"]} == {"nvidia0", "nvidiactl"}
    assert row["gpus"] == [0] and row["fds"] == 2 and row["user"] == "root"
    assert row["outcome"] == "would-end" and alive(worker), "a dry run must not signal"

    code, rows, _ = reap(dev, "--yes")
    assert code == 0 and rows[worker]["outcome"] == "ended" and rows[worker]["freed_fds"] == 2
    assert not alive(worker)


def test_live_trainer_and_its_worker_are_active_and_left_alone(dev: Path, spawn: Spawner) -> None:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=False))
    code, rows, _ = reap(dev, "--yes")
    assert code == 0
    assert rows[trainer.pid]["verdict"] == rows[worker]["verdict"] == "active"
    assert rows[worker]["reason"].startswith(f"parent {trainer.pid} ")
    assert rows[trainer.pid]["outcome"] == rows[worker]["outcome"] == "none"
    assert alive(trainer.pid) and alive(worker)


def test_include_active_ends_a_live_trainer_and_worker(dev: Path, spawn: Spawner) -> None:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=False))
    code, rows, _ = reap(dev, "--yes", "--include-active")
    assert code == 0 and {rows[trainer.pid]["outcome"], rows[worker]["outcome"]} == {"ended"}
    assert not alive(worker)
    trainer.wait(5)
    assert not alive(trainer.pid)


def test_detached_job_that_is_working_is_not_an_orphan(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev, worker="while True: pass")
    code, rows, _ = reap(dev, "--yes")
    assert code == 0 and rows[worker]["verdict"] == "detached"
    assert "busy" in rows[worker]["reason"] and rows[worker]["cpu_percent"] >= 5
    assert alive(worker)


@pytest.mark.skipif(os.geteuid() != 0, reason="spawning a process as another user needs root")
def test_another_users_orphan_needs_all_users(dev: Path, spawn: Spawner) -> None:
    trainer, (worker,) = spawn.start(trainer_script(dev, exits=True), user="nobody")
    trainer.wait()
    code, rows, _ = reap(dev, "--yes")
    row = rows[worker]
    assert row["verdict"] == "orphan" and row["user"] == "nobody"
    assert row["outcome"] == "none" and "owned by nobody" in row["action"]
    assert code == 0 and alive(worker)

    code, rows, _ = reap(dev, "--yes", "--user", "nobody")
    assert code == 0 and rows[worker]["outcome"] == "ended" and not alive(worker)


def test_sigterm_ignored_escalates_to_sigkill(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev, setup="signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    code, rows, _ = reap(dev, "--yes", "--timeout", "0.3")
    assert code == 0 and "SIGKILL" in rows[worker]["action"] and rows[worker]["outcome"] == "ended"
    assert not alive(worker)


def test_mapping_only_orphan_is_found_and_ended(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev, files=(), setup=(
        "import ctypes; libc = ctypes.CDLL(None); libc.mmap.restype = ctypes.c_void_p; "
        "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, "
        "ctypes.c_int, ctypes.c_long]; "
        f"fd = os.open({str(dev / 'nvidia1')!r}, os.O_RDWR); libc.mmap(None, 4096, 1, 1, fd, 0); os.close(fd)"
    ))
    code, rows, _ = reap(dev, "--yes")
    assert rows[worker]["mapped_only"] and rows[worker]["gpus"] == [1]
    assert code == 0 and rows[worker]["outcome"] == "ended" and not alive(worker)


@pytest.mark.skipif(platform.machine() not in SYS_EXIT, reason="raw exit syscall number unknown here")
def test_zombie_leader_with_a_live_thread_is_ended(dev: Path, spawn: Spawner) -> None:
    holder, _ = spawn.start(f"""
        import ctypes, threading, time
        f = open({str(dev / 'nvidia0')!r}, 'rb')
        threading.Thread(target=time.sleep, args=(120,)).start()
        print('ready', flush=True)
        ctypes.CDLL(None).syscall({SYS_EXIT[platform.machine()]}, 0)
    """)
    for _ in range(1000):
        with open(f"/proc/{holder.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        os.sched_yield()
    code, rows, _ = reap(dev, "--yes")
    row = rows[holder.pid]
    assert row["thread_only"] and row["verdict"] == "orphan" and "zombie leader" in row["reason"]
    assert code == 0 and row["outcome"] == "ended"
    holder.wait(5)
    assert not alive(holder.pid)


def test_reused_pid_is_not_signalled(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev)
    report = Inspector(window=0.1).inspect(scan(str(dev / "nvidia*")), None)
    (target,) = [h for h in report.holders if h.pid == worker]
    older = dataclasses.replace(target, start_ticks=target.start_ticks - 1)
    actions = end_processes([older], timeout=0.2)
    assert actions[worker].outcome is Outcome.REUSED
    assert alive(worker)


def test_gpudoc_its_ancestors_and_pid_1_are_never_signalled() -> None:
    pids = [os.getpid(), os.getppid(), 1]
    targets = [HolderReport(pid=pid, verdict=Verdict.ORPHAN, reason="test", start_ticks=0) for pid in pids]
    actions = end_processes(targets, timeout=0.1)
    assert all(actions[pid].outcome is Outcome.NONE and "refused" in actions[pid].action for pid in pids)


def test_protected_names_are_never_ended(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev)
    name = Path(sys.executable).name
    code, rows, _ = reap(dev, "--yes", "--include-active", "--protect", name)
    assert rows[worker]["verdict"] == "protected" and name in rows[worker]["reason"]
    assert code == 0 and alive(worker)


def test_simulated_nvml_context_owner_garbage_and_vanished_pids(dev: Path, spawn: Spawner, tmp_path: Path) -> None:
    owner = orphaned_worker(spawn, dev)
    stranger, _ = spawn.start("import time; print('ready', flush=True); time.sleep(120)")
    vanished = _free_pid()
    scenario = {
        "name": "reap",
        "gpus": [{"name": "Sim A100", "memory_total_mib": 40960}],
        "processes": [
            {"pid": owner, "gpu": 0, "memory_mib": 1200},
            {"pid": stranger.pid, "gpu": 0, "memory_mib": 300},
        ],
        "faults": [
            {"kind": "garbage_pids", "gpu": 0, "pids": [0, 4294967295], "memory_mib": 5},
            {"kind": "vanished_pids", "gpu": 0, "pids": [vanished], "memory_mib": 77},
        ],
    }
    path = tmp_path / "reap.json"
    path.write_text(json.dumps(scenario))
    code, rows, _ = reap(dev, "--yes", simulate=str(path))
    assert code == 0
    assert rows[owner]["verdict"] == "detached" and "CUDA context" in rows[owner]["reason"]
    assert rows[owner]["gpu_memory"] == 1200 * 2**20 and rows[owner]["in_nvml"] is True
    assert rows[vanished]["verdict"] == "foreign" and "no such process on this host" in rows[vanished]["reason"]
    assert rows[stranger.pid]["verdict"] == "foreign" and "holding no GPU device" in rows[stranger.pid]["reason"]
    assert 0 not in rows and 4294967295 not in rows
    assert alive(owner) and alive(stranger.pid)


def _free_pid() -> int:
    taken = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    return next(p for p in range(300000, 400000) if p not in taken)


def test_text_output_and_console_script(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev)
    out = subprocess.run(
        [sys.executable, "-m", "gpudoc", "reap", "--device-glob", str(dev / "nvidia*"), "--window", "0.2"],
        capture_output=True, text=True, env={**os.environ, "GPUDOC_SIMULATE": nvml(dev)},
    )
    assert out.returncode == 1, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.split()[:1] == [str(worker)])
    assert "orphan" in line
    assert "would end: SIGTERM" in out.stdout and "rerun with --yes" in out.stdout
    assert alive(worker)


def test_yes_says_what_it_is_doing_not_would_end(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev)
    out = subprocess.run(
        [sys.executable, "-m", "gpudoc", "reap", "--device-glob", str(dev / "nvidia*"), "--window", "0.2", "--yes"],
        capture_output=True, text=True, env={**os.environ, "GPUDOC_SIMULATE": nvml(dev)},
    )
    assert out.returncode == 0, out.stderr
    assert "would end" not in out.stdout and "dry run" not in out.stdout
    assert "→ ending: SIGTERM, then SIGKILL if it survives" in out.stdout and "ended by SIGTERM" in out.stdout
    assert not alive(worker)


def test_without_nvml_an_orphan_is_unconfirmed_and_needs_without_nvml(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev)
    for args in ((), ("--yes",)):
        code, rows, err = reap(dev, *args, simulate=nvml(dev, **NO_NVML))
        row = rows[worker]
        assert row["verdict"] == "unconfirmed" and row["unchecked"] == ["cuda-context"] and row["in_nvml"] is None
        assert "CUDA context unknown (NVML unavailable" in row["reason"]
        assert row["outcome"] == "none" and "--without-nvml" in row["action"]
        assert code == 1 and "no holder is confirmed an orphan" in err
        assert alive(worker)
    code, rows, _ = reap(dev, "--yes", "--without-nvml", simulate=nvml(dev, **NO_NVML))
    assert code == 0 and rows[worker]["outcome"] == "ended" and not alive(worker)


def test_holder_of_a_lost_gpu_is_unconfirmed(dev: Path, spawn: Spawner) -> None:
    on_lost = orphaned_worker(spawn, dev, files=("nvidiactl", "nvidia1"))
    on_other = orphaned_worker(spawn, dev, files=("nvidiactl", "nvidia0"))
    code, rows, _ = reap(dev, "--yes", simulate=nvml(dev, faults=[{"kind": "gpu_lost", "gpu": 1}]))
    assert rows[on_lost]["verdict"] == "unconfirmed" and "GPU 1 could not be read" in rows[on_lost]["reason"]
    assert rows[on_other]["outcome"] == "ended" and not alive(on_other)
    assert code == 1 and alive(on_lost)


@pytest.mark.parametrize("error", ["not_supported", "no_permission"])
def test_holder_of_a_gpu_whose_process_list_nvml_will_not_give_is_unconfirmed(
    dev: Path, spawn: Spawner, error: str
) -> None:
    unlisted = orphaned_worker(spawn, dev, files=("nvidiactl", "nvidia1"))
    listed = orphaned_worker(spawn, dev, files=("nvidiactl", "nvidia0"))
    scenario = nvml(dev, faults=[{"kind": "process_list_unavailable", "gpu": 1, "error": error}])
    code, rows, _ = reap(dev, "--yes", simulate=scenario)
    row = rows[unlisted]
    assert row["verdict"] == "unconfirmed" and row["unchecked"] == ["cuda-context"] and row["in_nvml"] is None
    assert "CUDA context unknown (GPU 1: process list unavailable (" in row["reason"]
    assert "not in NVML's list" not in row["reason"] and row["outcome"] == "none"
    assert rows[listed]["outcome"] == "ended" and not alive(listed)
    assert code == 1 and alive(unlisted)
    code, rows, _ = reap(dev, "--yes", "--without-nvml", simulate=scenario)
    assert code == 0 and rows[unlisted]["outcome"] == "ended" and not alive(unlisted)


@pytest.mark.skipif(os.geteuid() != 0, reason="--user for another user needs root")
def test_user_lists_only_that_users_holders(dev: Path, spawn: Spawner) -> None:
    worker = orphaned_worker(spawn, dev)
    code, rows, _ = reap(dev, "--user", "nobody")
    assert worker not in rows and code == 0
    code, rows, _ = reap(dev, "--user", "root")
    assert rows[worker]["verdict"] == "orphan" and code == 1


def test_simulated_machine_scans_no_device_file_of_this_host() -> None:
    result = CliRunner().invoke(cli, ["--simulate", "dgx", "reap", "--json"], env={"GPUDOC_SIMULATE": None})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows and {row["verdict"] for row in rows} == {"foreign"}
    assert all(row["devices"] == [] and "simulated GPU process" in row["reason"] for row in rows)
    assert "driver is not loaded" not in result.stderr and "simulated GPUs (--simulate dgx)" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "root", "--all-users"], "exclude each other"),
        (["--user", "no-such-user-here"], "no such user"),
        (["--signal", "HUP"], "HUP"),
    ],
)
def test_bad_usage_exits_2(dev: Path, args: list[str], message: str) -> None:
    code, _, err = reap(dev, *args)
    assert code == 2 and message in err and err.startswith("gpudoc: error:")


def test_glob_matching_nothing(tmp_path: Path) -> None:
    code, _, err = reap(tmp_path)
    assert code == 2 and "no file matches" in err


def test_slurm_epilog_ends_the_jobs_leftovers_only(
    dev: Path, spawn: Spawner, capsys: pytest.CaptureFixture[str]
) -> None:
    left, _ = spawn.start(f"""
        import time
        f = open({str(dev / 'nvidia0')!r}, 'rb')
        print('ready', flush=True); time.sleep(120)
    """, env={"SLURM_JOB_ID": "4242"})
    other_job, _ = spawn.start(f"""
        import time
        f = open({str(dev / 'nvidia1')!r}, 'rb')
        print('ready', flush=True); time.sleep(120)
    """)
    code = run_epilog(
        None, device_glob=str(dev / "nvidia*"), timeout=1.0, window=0.1,
        environ={"SLURM_JOB_USER": "root", "SLURM_JOB_ID": "4242"},
    )
    err = capsys.readouterr().err
    assert code == 0
    assert f"{left.pid} " in err and "left over from ended Slurm job 4242" in err
    left.wait(5)
    assert not alive(left.pid) and alive(other_job.pid)


def test_slurm_epilog_without_nvml_leaves_unconfirmed_orphans_and_says_so(
    dev: Path, spawn: Spawner, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = orphaned_worker(spawn, dev)
    code = run_epilog(None, device_glob=str(dev / "nvidia*"), timeout=1.0, window=0.1,
                      environ={"SLURM_JOB_USER": "root", "SLURM_JOB_ID": "4243"})
    err = capsys.readouterr().err
    assert code == 0 and alive(worker)
    assert f"{worker} (" in err and "not confirmed an orphan" in err and "CUDA context unknown" in err


def test_slurm_epilog_never_fails(dev: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_epilog(None, device_glob=str(dev / "nvidia*"), timeout=1, window=0.1, environ={}) == 0
    assert "SLURM_JOB_USER is not set" in capsys.readouterr().err
    result = CliRunner().invoke(cli, ["reap", "--slurm-epilog", "--device-glob", "/nonexistent/*"],
                                env={"SLURM_JOB_USER": "root", "SLURM_JOB_ID": "7"})
    assert result.exit_code == 0 and "nothing to do" in result.stderr


def test_uninterruptible_survivor_is_reported_not_retried(tmp_path: Path) -> None:
    proc = tmp_path / "proc" / "4321"
    proc.mkdir(parents=True)
    proc.joinpath("stat").write_text("4321 (python) D 1 4000 4000 0 -1 4194560 0 0 0 0 7 3 0 0 20 0 1 0 999 0 0\n")
    action = _survivor(4321, str(tmp_path / "proc"))
    assert action.outcome is Outcome.STUCK and "GPU reset or a reboot" in action.action


def _run_on_tty(dev: Path, answer: bytes) -> str:
    """``gpudoc reap`` on a pseudo-terminal, answering its question with ``answer``."""
    main, child = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpudoc", "reap", "--device-glob", str(dev / "nvidia*"), "--window", "0.2"],
        stdin=child, stdout=child, stderr=child, env={**os.environ, "GPUDOC_SIMULATE": nvml(dev), "TERM": "dumb"},
    )
    os.close(child)
    seen = b""
    try:
        while b"[y/N]" not in seen:
            chunk = os.read(main, 4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        os.write(main, answer)
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        proc.wait(30)
        os.close(main)
    return seen.decode(errors="replace")


@pytest.mark.parametrize(("answer", "ends"), [(b"\n", False), (b"n\n", False), (b"y\n", True)])
def test_terminal_asks_first_and_defaults_to_no(dev: Path, spawn: Spawner, answer: bytes, ends: bool) -> None:
    worker = orphaned_worker(spawn, dev)
    output = _run_on_tty(dev, answer)
    assert "End 1 process(es)?" in output
    assert alive(worker) is not ends
    assert ("ended by SIGTERM" in output) is ends


@pytest.mark.skipif(os.geteuid() != 0, reason="spawning a process as another user needs root")
@pytest.mark.parametrize("scenario", [{}, NO_NVML])
def test_every_holder_left_alone_says_every_reason_on_one_action_line(
    dev: Path, spawn: Spawner, scenario: dict[str, object]
) -> None:
    trainer, (theirs,) = spawn.start(trainer_script(dev, exits=True), user="nobody")
    trainer.wait()
    live, (mine,) = spawn.start(trainer_script(dev, exits=False))
    out = subprocess.run(
        [sys.executable, "-m", "gpudoc", "reap", "--device-glob", str(dev / "nvidia*"), "--window", "0.2"],
        capture_output=True, text=True, env={**os.environ, "GPUDOC_SIMULATE": nvml(dev, **scenario)},
    )
    blocks: dict[int, list[str]] = {}
    for line in out.stdout.splitlines():
        if line.split()[:1] and line.split()[0].isdigit():
            blocks[int(line.split()[0])] = []
        elif blocks and line.startswith(" "):
            blocks[list(blocks)[-1]].append(line.strip())
    owner = "owned by nobody (only root with --all-users or --user ends it)"
    arrows = {pid: [line for line in lines if line.startswith("→")] for pid, lines in blocks.items()}
    if scenario:
        assert arrows[theirs] == ["→ none: unconfirmed: its CUDA context is unknown (add --without-nvml to end it "
                                  f"anyway); {owner}"]
    else:
        assert arrows[theirs] == [f"→ none: {owner}"]
    assert arrows[mine] == arrows[live.pid] == ["→ none: active (add --include-active to end it)"]
    assert alive(theirs) and alive(mine)
