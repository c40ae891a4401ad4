"""The examples run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gpudoc.train import Run, RunState

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_probe_gpus_on_a_simulated_workstation() -> None:
    out = run(str(EXAMPLES / "probe_gpus.py"), "--simulate", "workstation")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "driver 550.120, CUDA 12.4"
    assert sum(line.startswith("GPU ") and "RTX 4090" in line for line in lines) == 2
    assert any("pid    1873  graphics" in line for line in lines)
    assert lines[-1].startswith("host: ")


def test_probe_gpus_on_this_machine_reports_instead_of_crashing() -> None:
    out = run(str(EXAMPLES / "probe_gpus.py"))
    assert out.returncode in (0, 1), out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout.splitlines()[-1].startswith("host: ")


def test_find_orphans_makes_finds_and_ends_an_orphan() -> None:
    out = run(str(EXAMPLES / "find_orphans.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    verdict_line, action_line = out.stdout.splitlines()
    assert "orphan" in verdict_line and "process-group leader" in verdict_line
    assert verdict_line.split()[0] == action_line.split()[0] and "ended by SIGTERM" in action_line


def test_mask_rules_example_shows_where_rules_differ() -> None:
    out = run(str(EXAMPLES / "mask_rules.py"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split(None, 1) == ["ge", "[[0, 0, 1, 1], [1, 1, 0, 0]]"]
    assert lines[1].split(None, 1) == ["gt", "[[0, 0, 1, 1], [0, 1, 0, 0]]"]
    assert "tf.cast(x + 0.5, tf.int32)                   differs on 1" in out.stdout


def test_metric_scale_example_is_a_passing_pytest_file() -> None:
    out = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_metric_scale.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout


def test_toy_training_run_under_the_supervisor() -> None:
    status = Run([sys.executable, str(EXAMPLES / "toy_train.py"), "--epochs", "4", "--step-time", "0"]).wait(60)
    assert status.state is RunState.SUCCEEDED, status.lines
    assert len(status.lines) == 4 and all(line.startswith(f"epoch   {i} |####################| 50/50  loss")
                                          for i, line in enumerate(status.lines, 1))
    losses = [float(line.split("loss ")[1].split()[0]) for line in status.lines]
    assert losses[-1] < losses[0] / 10
    failed = Run([sys.executable, str(EXAMPLES / "toy_train.py"), "--oom-at", "2", "--step-time", "0"]).wait(60)
    assert failed.state is RunState.FAILED and failed.returncode == 1
    assert failed.oom is not None and failed.oom.startswith("torch.OutOfMemoryError: CUDA out of memory")


def test_toy_training_logs_event_files_that_metrics_check_reads(tmp_path: Path) -> None:
    def check(*toy_args: str) -> subprocess.CompletedProcess[str]:
        logdir = tmp_path / "_".join(toy_args or ("ok",))
        out = run(str(EXAMPLES / "toy_train.py"), "--epochs", "3", "--steps", "10", "--step-time", "0",
                  "--logdir", str(logdir), *toy_args)
        assert out.returncode == 0, out.stderr
        return run("-m", "gpudoc", "metrics-check", "--json", str(logdir))

    good = check()
    assert good.returncode == 0, good.stdout + good.stderr
    buggy = check("--buggy-scale")
    assert buggy.returncode == 1
    assert "implied-range" in buggy.stdout and "psnr-implausible" in buggy.stdout
