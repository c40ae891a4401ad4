"""The examples run as a user would run them."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


# ------------------------------------------------ the training examples under gpudoc run (torch, Keras)


def gpudoc_run(tmp_path: Path, name: str, example: str, *args: str, strict: bool = False) \
        -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``gpudoc run [--strict] --logdir DIR --json FILE -- python EXAMPLE ARGS`` and its summary."""
    summary = tmp_path / f"{name}.json"
    command = [sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", "--logdir", str(tmp_path / name),
               "--json", str(summary), *(["--strict"] if strict else []), "--",
               sys.executable, str(EXAMPLES / example), "--threads", "1", *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)})
    return out, json.loads(summary.read_text())


def scalars(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in summary["scalars"]}


def test_denoise_logs_8bit_metrics_and_buggy_scale_fails_strict(tmp_path: Path) -> None:
    tiny = ("--epochs", "2", "--size", "16", "--images", "64")
    good, data = gpudoc_run(tmp_path, "good", "train_denoise.py", *tiny, strict=True)
    assert good.returncode == 0, good.stderr
    assert good.stdout.count("epoch ") == 2 and data["state"] == "succeeded" and data["checks"] == []
    logged = scalars(data)
    assert set(logged) == {"train/loss", "val/mae", "val/mse", "val/psnr", "val/ssim"}
    assert logged["train/loss"]["count"] == 4 and logged["val/psnr"]["count"] == 2
    assert logged["val/mae"]["last"] > 1 and 5 < logged["val/psnr"]["last"] < 40 and 0 < logged["val/ssim"]["last"] < 1

    buggy, bad = gpudoc_run(tmp_path, "buggy", "train_denoise.py", *tiny, "--buggy-scale", strict=True)
    assert buggy.returncode == 1, buggy.stderr
    assert bad["state"] == "succeeded" and bad["exit_code"] == 1 and bad["errors"] >= 1
    assert "implied-range" in {c["rule"] for c in bad["checks"] if c["severity"] == "error"}
    assert "gpudoc: error: [implied-range] " in buggy.stderr
    wrong = scalars(bad)
    # The same training, only the metrics' scale differs: MSE 255² smaller, PSNR 20·log10(255) dB higher.
    assert wrong["val/mse"]["last"] * 255**2 == pytest.approx(logged["val/mse"]["last"], rel=1e-4)
    assert wrong["val/psnr"]["last"] - logged["val/psnr"]["last"] == pytest.approx(20 * math.log10(255), abs=1e-3)


def test_segment_reports_dice_iou_best_threshold_and_its_workers_leave_nothing(tmp_path: Path) -> None:
    out, data = gpudoc_run(tmp_path, "seg", "train_segment.py", "--epochs", "2", "--size", "16", "--images", "256",
                           "--batch", "16", "--workers", "2", strict=True)
    assert out.returncode == 0, out.stderr
    assert data["state"] == "succeeded" and data["checks"] == [] and data["leftovers"] == []
    workers = [int(line.rsplit("PID ", 1)[1]) for line in out.stdout.splitlines()
               if line.startswith("DataLoader worker ")]
    assert len(workers) == 2 and not any(Path(f"/proc/{pid}").exists() for pid in workers)
    logged = scalars(data)
    assert set(logged) == {"train/loss", "val/dice", "val/iou", "val/best_threshold", "val/best_dice"}
    assert all(logged[name]["count"] == 2 for name in ("val/dice", "val/iou", "val/best_threshold"))
    dice, iou = logged["val/dice"]["last"], logged["val/iou"]["last"]
    assert dice > 0.8 and iou == pytest.approx(dice / (2 - dice), rel=1e-6)  # IoU = D / (2 - D), pooled
    assert logged["val/best_dice"]["last"] >= dice and 0 <= logged["val/best_threshold"]["last"] <= 1


def test_keras_example_writes_tensorboard_and_csvlogger_files_gpudoc_run_follows(tmp_path: Path) -> None:
    out, data = gpudoc_run(tmp_path, "keras", "train_keras.py", "--epochs", "2", "--size", "256", strict=True)
    assert out.returncode == 0, out.stderr
    assert data["state"] == "succeeded" and data["source"] == "event files" and data["checks"] == []
    logged = scalars(data)
    for name in ("train/epoch_loss", "train/epoch_accuracy", "validation/epoch_loss", "validation/epoch_accuracy"):
        assert logged[name]["count"] == 2 and logged[name]["last_step"] == 1, name
    with open(tmp_path / "keras" / "training.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[-1]["val_loss"]) == pytest.approx(logged["validation/epoch_loss"]["last"], rel=1e-6)
    assert float(rows[-1]["accuracy"]) == pytest.approx(logged["train/epoch_accuracy"]["last"], rel=1e-6)
