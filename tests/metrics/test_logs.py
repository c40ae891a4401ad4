"""The log linter on the seed's Keras log and on logs written by real Keras and tensorboardX runs."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpudoc.errors import InputError
from gpudoc.metrics.lint import PEAK_255_DB, check_records
from gpudoc.metrics.logs import canonical, parse_number, read_log

DATA = Path(__file__).resolve().parent.parent / "data"

SEED_LOG = """\
Epoch 1: val_loss improved from inf to 229.27214, saving model to best_my_model_.../saved_weight
4/4 [==============================] - 714s 101s/step - loss: 449.7910 - mean_squared_error: 449.7810 \
- mean_absolute_error: 18.9748 - root_mean_squared_error: 21.2080 - val_loss: 229.2721 - val_mean_squared_error: \
229.2620 - val_mean_absolute_error: 14.2356 - val_root_mean_squared_error: 15.1414 - lr: 0.0010
Epoch 2/1000
4/4 [==============================] - ETA: 0s - loss: 269.9185 - mean_squared_error: 269.9084 - \
mean_absolute_error: 14.9394 - root_mean_squared_error: 16.4289
Epoch 156: val_loss did not improve from 55.49997
4/4 [==============================] - 4s 1s/step - loss: 39.4206 - mean_squared_error: 39.4083 - \
mean_absolute_error: 4.6351 - root_mean_squared_error: 6.2776 - val_loss: 80.0362 - val_mean_squared_error: 80.0239 \
- val_mean_absolute_error: 6.6511 - val_root_mean_squared_error: 8.9456 - lr: 1.0000e-09
"""


def at_unit_scale(log: str) -> str:
    """The seed log's numbers as Keras prints them had the targets been divided by 255."""
    def convert(match: re.Match[str]) -> str:
        name, value = match.group(1), float(match.group(2))
        base = name.removeprefix("val_")
        if base in ("loss", "mean_squared_error"):
            value /= 255**2
        elif base in ("mean_absolute_error", "root_mean_squared_error"):
            value /= 255
        else:
            return match.group(0)
        return f"- {name}: {value:.4f}"

    return re.sub(r"- (\w+): ([\d.e+-]+)", convert, log)


def test_names_splits_and_print_rounding() -> None:
    assert canonical("val_mean_squared_error") == ("val", "mse")
    assert canonical("validation/epoch_root_mean_squared_error") == ("val", "rmse")
    assert canonical("metrics/test_PSNR") == ("test", "psnr")
    assert canonical("val_PeakSignalNoiseRatio") == ("val", "psnr")
    assert canonical("lr") == ("train", None)
    assert parse_number("18.9748").rounding == pytest.approx(5e-5)
    assert parse_number("1.0000e-09").rounding == pytest.approx(5e-14)
    assert math.isnan(parse_number("nan").value)


def test_seed_log_is_read_and_clean_at_255(tmp_path: Path) -> None:
    log = tmp_path / "seed.log"
    log.write_text(SEED_LOG)
    records = read_log(log)
    assert [(r.split, r.step, r.line) for r in records] == [
        ("train", 0, 2), ("val", 0, 2), ("train", 1, 4), ("train", 155, 6), ("val", 155, 6)]
    assert records[1].values["mae"].value == 14.2356 and records[1].names["mae"] == "val_mean_absolute_error"
    assert "lr" not in records[0].values and records[0].values["loss"].value == 449.7910
    assert check_records(records, 255) == [] and check_records(records, None) == []


def test_seed_log_recomputed_at_unit_scale_is_flagged(tmp_path: Path) -> None:
    log = tmp_path / "unit.log"
    log.write_text(at_unit_scale(SEED_LOG))
    assert "mean_squared_error: 0.0069 " in log.read_text()
    declared = check_records(read_log(log), 255)
    assert {(f.rule, f.severity, f.split) for f in declared} == {("unit-scale", "error", "train"),
                                                                  ("unit-scale", "error", "val")}
    train = next(f for f in declared if f.split == "train")
    assert train.count == 3 and train.line == 2 and "MSE 0.0069 < MAE 0.0744" in train.message
    assert {f.severity for f in check_records(read_log(log), None)} == {"warning"}
    assert check_records(read_log(log), 1) == []


def records_of(tmp_path: Path, rows: list[dict[str, float]]) -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": i, **row}) + "\n" for i, row in enumerate(rows)))
    return path


@pytest.mark.parametrize(("row", "rule", "severity"), [
    ({"mse": 4.0, "mae": 3.0}, "mse-below-mae-squared", "error"),
    ({"mse": 100.0, "rmse": 12.0}, "rmse-mse-mismatch", "error"),
    ({"mse": 100.0, "rmse": 9.5}, "rmse-mse-mismatch", "warning"),
    ({"mse": 100.0, "psnr": 20.0}, "implied-range", "error"),
    ({"mse": 100.0, "psnr": 28.1308 - PEAK_255_DB}, "psnr-implausible", "error"),
    ({"val_ssim": 1.7}, "ssim-out-of-range", "error"),
    ({"psnr": float("nan")}, "non-finite", "error"),
    ({"mse": 0.0015379, "mae": 0.039216, "psnr": 28.1308}, "unit-scale", "error"),
])
def test_each_rule(tmp_path: Path, row: dict[str, float], rule: str, severity: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"step": 7, **row}) + "\n")
    findings = check_records(read_log(path), 255)
    assert (rule, severity) in {(f.rule, f.severity) for f in findings}, findings
    hit = next(f for f in findings if f.rule == rule)
    assert hit.step == 7 and hit.cause and hit.fix and str(path) in hit.where


def test_psnr_at_peak_255_on_unit_data_is_named() -> None:
    from gpudoc.metrics.lint import Record, Value

    # Reference 2 of shared/reference/metrics.md: MSE 0.0015379 and MAE 0.039216 at [0,1];
    # PSNR with peak 255 on that data is 28.1308 + 48.1308 dB.
    record = Record("log", "val", 3, values={"mse": Value(0.0015379), "mae": Value(0.039216),
                                             "psnr": Value(28.1308 + PEAK_255_DB)})
    record.names = {k: k for k in record.values}
    found = check_records([record], None)
    implied = next(f for f in found if f.rule == "implied-range")
    assert "peak 255 on [0,1] data" in implied.cause and "implies a peak of 255" in implied.message


def test_consistent_per_image_psnr_is_a_warning_not_an_error() -> None:
    from gpudoc.metrics.lint import Record, Value

    # Reference 3: per-image PSNRs 18.0618 and 40 dB average to 29.0309 dB; pooled MSE 0.0078625.
    record = Record("log", "val", 1, values={"mse": Value(0.0078625), "psnr": Value(29.0309)})
    record.names = {k: k for k in record.values}
    assert [(f.rule, f.severity) for f in check_records([record], 1)] == [("implied-range", "warning")]


@pytest.fixture(scope="module")
def keras_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    runs = {}
    for name, scale in (("k255", "255"), ("k1", "1")):
        out = tmp_path_factory.mktemp(name)
        with (out / "stdout.log").open("w") as stdout:
            subprocess.run([sys.executable, str(DATA / "keras_regression.py"), str(out), scale], stdout=stdout,
                           stderr=subprocess.DEVNULL, check=True, timeout=300)
        runs[name] = out
    return runs


@pytest.mark.parametrize("log", ["stdout.log", "training.csv", "tb"])
def test_real_keras_logs(keras_runs: dict[str, Path], log: str) -> None:
    good = read_log(keras_runs["k255"] / log)
    assert {r.split for r in good} == {"train", "val"}
    assert {"loss", "mse", "mae", "rmse"} <= set(good[-1].values)
    assert check_records(good, 255) == []
    bad = check_records(read_log(keras_runs["k1"] / log), 255)
    assert {(f.rule, f.split) for f in bad} == {("unit-scale", "train"), ("unit-scale", "val")}


def test_tensorboardx_scalars_with_the_peak_255_bug(tmp_path: Path) -> None:
    import numpy as np
    from tensorboardX import SummaryWriter

    rng = np.random.default_rng(0)
    writer = SummaryWriter(str(tmp_path / "run"))
    for step in range(5):
        target = rng.random((16, 16))
        pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
        mse = float(np.mean((pred - target) ** 2))
        writer.add_scalar("val/mse", mse, step)
        writer.add_scalar("val/mae", float(np.mean(np.abs(pred - target))), step)
        writer.add_scalar("val/psnr", 10 * math.log10(255**2 / mse), step)
    writer.close()
    findings = check_records(read_log(tmp_path / "run"), None)
    assert [(f.rule, f.severity, f.split, f.count) for f in findings] == [
        ("implied-range", "error", "val", 5), ("psnr-implausible", "warning", "val", 5)]
    assert "peak 255 on [0,1] data" in findings[0].cause


def test_bad_logs_fail_with_the_file_and_line(tmp_path: Path) -> None:
    bad_json = tmp_path / "m.jsonl"
    bad_json.write_text('{"step": 1, "mse": 2}\n{oops\n')
    with pytest.raises(InputError, match=r"m.jsonl:2: not JSON"):
        read_log(bad_json)
    bad_csv = tmp_path / "log.csv"
    bad_csv.write_text("epoch,mse\n0,1.5\n1,abc\n")
    with pytest.raises(InputError, match=r"log.csv:3: column 'mse' is not a number"):
        read_log(bad_csv)
    with pytest.raises(InputError, match="no such file"):
        read_log(tmp_path / "missing.log")


def test_keras_stdout_numbers_epochs_like_csvlogger_and_tensorboard(keras_runs: dict[str, Path]) -> None:
    run = keras_runs["k255"]
    logs = ("stdout.log", "training.csv", "tb")
    steps = {log: sorted((r.split, r.step) for r in read_log(run / log)) for log in logs}
    assert steps["stdout.log"] == steps["training.csv"] == steps["tb"] == [
        ("train", 0), ("train", 1), ("train", 2), ("val", 0), ("val", 1), ("val", 2)]
    printed = {(r.split, r.step): r.values["mse"] for r in read_log(run / "stdout.log")}
    logged = {(r.split, r.step): r.values["mse"].value for r in read_log(run / "training.csv")}
    assert all(abs(printed[k].value - logged[k]) <= printed[k].rounding for k in logged)


KERAS2_VERBOSE1 = """\
Epoch 1/2
1/4 [======>.......................] - ETA: 3s - loss: 0.0100 - mae: 0.0800
2/4 [==============>...............] - ETA: 1s - loss: 0.0090 - mae: 0.0750
4/4 [==============================] - ETA: 0s - loss: 0.0080 - mae: 0.0700
Epoch 1: val_loss improved from inf to 0.00700, saving model to best.keras
4/4 [==============================] - 2s 400ms/step - loss: 0.0080 - mae: 0.0700 - val_loss: 0.0070 - val_mae: 0.0650
Epoch 2/2
1/4 [======>.......................] - ETA: 0s - loss: 0.0060 - mae: 0.0600\
\r2/4 [==============>...............] - ETA: 0s - loss: 0.0055 - mae: 0.0580\
\r4/4 [==============================] - 0s 10ms/step - loss: 0.0050 - mae: 0.0560 - val_loss: 0.0045 - val_mae: 0.0500
1/1 [==============================] - 0s 5ms/step - loss: 0.0047 - mae: 0.0510
1/1 [==============================] - 0s 4ms/step - loss: 0.0046 - mae: 0.0490
"""


def test_progress_redraws_are_one_step(tmp_path: Path) -> None:
    log = tmp_path / "fit.log"
    log.write_text(KERAS2_VERBOSE1)
    records = read_log(log)
    assert [(r.split, r.step, r.line, r.values["mae"].value) for r in records] == [
        ("train", 0, 6, 0.07), ("val", 0, 6, 0.065), ("train", 1, 8, 0.056), ("val", 1, 8, 0.05),
        ("train", 1, 9, 0.051), ("train", 1, 10, 0.049)]  # the last two: two evaluate() bars


def test_unit_scale_says_what_mse_below_mae_implies() -> None:
    from gpudoc.metrics.lint import Record, Value

    errors = np.array([0.5, 0.5, 1.1])  # MSE 0.57 < MAE 0.7, yet one error is above 1
    record = Record("log", "val", 0, values={"mse": Value(float(np.mean(errors**2))),
                                             "mae": Value(float(np.mean(errors)))})
    record.names = {k: k for k in record.values}
    (finding,) = check_records([record], 255)
    assert finding.rule == "unit-scale" and "every error" not in finding.message
    assert "MSE 0.57 < MAE 0.7, so MAE < 1 (MAE² ≤ MSE < MAE): these metrics were most likely" in finding.message


def test_implied_range_without_a_declared_range_names_its_basis() -> None:
    from gpudoc.metrics.lint import Record, Value

    mse = 0.0015379
    record = Record("log", "val", 0, values={"mse": Value(mse), "mae": Value(0.039216),
                                             "psnr": Value(10 * math.log10(4 / mse))})
    record.names = {k: k for k in record.values}
    implied = next(f for f in check_records([record], None) if f.rule == "implied-range")
    assert "declared" not in implied.message and "not the range MSE < MAE points to 1" in implied.message
    assert "declared range 1" in next(f for f in check_records([record], 1) if f.rule == "implied-range").message


def test_rules_report_whether_they_had_numbers_to_check() -> None:
    from gpudoc.metrics.lint import NOT_APPLICABLE, RULES, Record, Value

    record = Record("log", "val", 0, values={"mse": Value(4.0), "psnr": Value(30.0)})
    record.names = {k: k for k in record.values}
    checked: set[str] = set()
    check_records([record], None, checked)
    assert checked == {"non-finite", "psnr-implausible"}  # no range declared or implied: implied-range idle
    check_records([record], 255, checked)
    assert checked == {"non-finite", "psnr-implausible", "implied-range"} and set(NOT_APPLICABLE) == set(RULES)
