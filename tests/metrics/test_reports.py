"""Every report of metrics-check — text, --json, --junit, --github, the exit code — tells the
same story, whatever the inputs: files, directories, several of them, images, reported numbers."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboardX import SummaryWriter

from .agreement import reports
from .test_logs import SEED_LOG, at_unit_scale

FORMATS = ("keras", "csv", "jsonl", "json", "events")


def write_events(run: Path, split: str, rows: list[dict[str, float]]) -> Path:
    writer = SummaryWriter(str(run))
    for step, row in enumerate(rows):
        for name, value in row.items():
            writer.add_scalar(f"{split}/{name}", value, step)
    writer.close()
    return next(run.glob("events.out.tfevents.*"))


def write_log(path: Path, fmt: str, split: str, rows: list[dict[str, float]]) -> Path:
    """``rows`` as the named log format writes them (Keras prints 4 decimals)."""
    prefix = "val_" if split == "val" else ""
    if fmt == "keras":
        lines = []
        for epoch, row in enumerate(rows, 1):
            pairs = " - ".join(f"{prefix}{k}: {v:.4f}" for k, v in row.items())
            lines += [f"Epoch {epoch}/{len(rows)}", f"1/2 [==>...] - ETA: 1s - {pairs}", f"2/2 [=====] - 1s - {pairs}"]
        path = path.with_suffix(".log")
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "csv":
        names = sorted({k for row in rows for k in row})
        path = path.with_suffix(".csv")
        body = [",".join([str(i), *(repr(row[n]) if n in row else "" for n in names)]) for i, row in enumerate(rows)]
        path.write_text("\n".join([",".join(["epoch", *(prefix + n for n in names)]), *body]) + "\n")
    elif fmt == "jsonl":
        path = path.with_suffix(".jsonl")
        path.write_text("".join(json.dumps({"step": i, "split": split, **row}) + "\n" for i, row in enumerate(rows)))
    elif fmt == "json":
        path = path.with_suffix(".json")
        path.write_text(json.dumps({"step": 0, "split": split, **rows[-1]}))
    else:
        path = write_events(path, split, rows)
    return path


@st.composite
def series(draw: st.DrawFn) -> tuple[str, str, list[dict[str, float]]]:
    """A log's rows at one scale, PSNR at one peak, with the metrics it logs, and now and then
    a NaN or an SSIM out of range: each rule finds something in some examples and not in others."""
    fmt = draw(st.sampled_from(FORMATS))
    split = draw(st.sampled_from(["train", "val"]))
    scale = draw(st.sampled_from([1.0, 255.0]))
    peak = draw(st.sampled_from([1.0, 255.0, scale]))
    names = draw(st.sets(st.sampled_from(["mae", "mse", "rmse", "psnr", "ssim", "loss"]), min_size=1))
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        mae = draw(st.floats(0.02, 0.3)) * scale
        rmse = mae * draw(st.sampled_from([1.0, 1.25, 1.6, 0.9]))  # 0.9: MSE below MAE²
        mse = rmse**2 * draw(st.sampled_from([1.0, 1.0, 1.2, 0.8]))  # RMSE² below (1.2) or above (0.8) MSE
        values = {"mae": mae, "mse": mse, "rmse": rmse, "psnr": 10 * math.log10(peak**2 / mse),
                  "ssim": draw(st.sampled_from([0.91, 0.91, 1.4])), "loss": mse}
        row = {k: values[k] for k in sorted(names)}
        if draw(st.integers(0, 5)) == 0:
            row[draw(st.sampled_from(sorted(row)))] = math.nan
        rows.append(row)
    return fmt, split, rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs=st.lists(series(), min_size=1, max_size=3), in_dir=st.booleans(),
       range_=st.sampled_from(["auto", "1", "255"]))
def test_reports_agree_on_generated_logs(logs: list[tuple[str, str, list[dict[str, float]]]], in_dir: bool,
                                         range_: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        args: list[str] = []
        logdir = root / "logdir"
        for i, (fmt, split, rows) in enumerate(logs):
            if fmt == "events" and in_dir:
                write_events(logdir / f"run{i}" / split, split, rows)  # the directory is the argument
                if str(logdir) not in args:
                    args.append(str(logdir))
            else:
                args.append(str(write_log(root / f"log{i}", fmt, split, rows)))
        result = reports([*args, "--range", range_], root / "report.xml")
        files = {f["file"] for f in result.data["files"]}
        assert {f["file"] for f in result.data["findings"]} <= files
        assert len(files) == len(logs), "each log, and each run in a directory, is one input"


def test_a_logdir_argument_reports_its_findings_as_failures(tmp_path: Path) -> None:
    # Issue 22: a TensorBoard logdir with a NaN loss and [0,1]-scale metrics: failures="0" before.
    rows = [{"loss": 0.004, "mse": 0.004, "mae": 0.05}, {"loss": math.nan, "mse": 0.003, "mae": 0.045}]
    event_file = write_events(tmp_path / "logs" / "train", "train", rows)
    result = reports([str(tmp_path / "logs"), "--range", "255"], tmp_path / "report.xml")
    assert result.code == 1
    assert result.errors == {(str(event_file), "non-finite"), (str(event_file), "unit-scale")}
    assert result.suite.get("failures") == "2"


def test_rules_a_log_cannot_exercise_are_skipped_not_passed(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text(SEED_LOG)  # MAE, MSE, RMSE, loss: no PSNR, no SSIM
    result = reports([str(log), "--range", "255"], tmp_path / "report.xml")
    cases = {c.get("name", "").split(":")[0]: c for c in result.suite.findall("testcase")}
    skipped = {rule: c.find("skipped").get("message") for rule, c in cases.items()  # type: ignore[union-attr]
               if c.find("skipped") is not None}
    assert skipped == {"implied-range": "no step logs PSNR with MSE or RMSE at a known range (declare --range)",
                       "psnr-implausible": "no finite PSNR logged", "ssim-out-of-range": "no SSIM or MS-SSIM logged"}
    assert result.code == 0 and result.suite.get("skipped") == "3" and result.suite.get("failures") == "0"
    assert result.data["files"][0]["not_applicable"].keys() == skipped.keys()


def test_warnings_are_visible_in_junit_and_do_not_fail(tmp_path: Path) -> None:
    log = tmp_path / "unit.log"
    log.write_text(at_unit_scale(SEED_LOG))  # without --range, MSE < MAE is a warning
    result = reports([str(log)], tmp_path / "report.xml")
    assert result.code == 0 and result.warnings == {(str(log), "unit-scale")} and not result.errors
    case = next(c for c in result.suite.findall("testcase") if c.get("name", "").startswith("unit-scale"))
    assert case.find("failure") is None
    assert "warning [unit-scale] MSE 0.0069 < MAE 0.0744" in (case.findtext("system-out") or "")
    props = {p.get("name"): p.get("value") for p in result.suite.iter("property")}
    assert props["warnings"] == "2" and props["range"] == "auto: none declared"


def test_several_files_and_a_file_given_twice(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.log", tmp_path / "bad.log"
    good.write_text(SEED_LOG)
    bad.write_text(at_unit_scale(SEED_LOG))
    result = reports([str(good), str(bad), str(bad), "--range", "255"], tmp_path / "report.xml")
    assert [f["file"] for f in result.data["files"]] == [str(good), str(bad)]
    assert result.errors == {(str(bad), "unit-scale")} and len(result.suite.findall("testcase")) == 14


def test_compute_mode_and_reported_numbers_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    target = rng.random((3, 24, 24))
    pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    np.save(tmp_path / "pred.npy", pred)
    np.save(tmp_path / "target.npy", target)
    mse = float(np.mean((pred - target) ** 2))
    reported = tmp_path / "eval.json"
    reported.write_text(json.dumps({"psnr": 10 * math.log10(255**2 / mse), "mse": mse}))
    images = ["--pred", str(tmp_path / "pred.npy"), "--target", str(tmp_path / "target.npy")]
    at_255 = reports([*images, "--range", "255", "--reported", str(reported)], tmp_path / "a.xml")
    assert (str(tmp_path / "pred.npy"), "data-range") in at_255.errors and at_255.code == 1
    at_1 = reports([*images, "--range", "1", "--reported", str(reported)], tmp_path / "b.xml")
    assert at_1.errors == {(str(reported), "reported-mismatch"), (str(reported), "implied-range")}
    assert at_1.warnings == {(str(reported), "psnr-implausible")}
    clean = reports(images, tmp_path / "c.xml")
    assert clean.code == 0 and not clean.errors and not clean.warnings


def test_a_cut_off_event_file_fails_as_input_or_is_salvaged_with_a_warning(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gpudoc.cli import cli

    event_file = write_events(tmp_path / "run", "val", [{"mse": 150.0, "mae": 9.5}, {"mse": 140.0, "mae": 9.2}])
    with event_file.open("r+b") as handle:
        handle.truncate(event_file.stat().st_size - 7)
    report = tmp_path / "report.xml"
    result = CliRunner().invoke(cli, ["metrics-check", str(tmp_path / "run"), "--junit", str(report)])
    assert result.exit_code == 2 and "incomplete record" in result.stderr and "--salvage" in result.stderr
    assert not report.exists()
    salvaged = reports([str(tmp_path / "run"), "--range", "255", "--salvage"], report)
    assert salvaged.code == 0 and salvaged.warnings == {(str(event_file), "log-damaged")}
    (finding,) = salvaged.data["findings"]
    assert "cut off: an incomplete last record" in finding["message"] and finding["file"] == str(event_file)


def test_a_reported_logdir_of_several_runs_is_one_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    target = rng.integers(0, 256, (2, 24, 24)).astype(np.uint8)
    np.save(tmp_path / "pred.npy", np.clip(target + rng.normal(0, 6, target.shape), 0, 255).astype(np.uint8))
    np.save(tmp_path / "target.npy", target)
    write_events(tmp_path / "eval" / "train", "train", [{"psnr": 90.0, "mse": 0.5}])
    event_file = write_events(tmp_path / "eval" / "validation", "val", [{"psnr": 80.0}, {"psnr": 81.0}])
    with event_file.open("r+b") as handle:
        handle.truncate(event_file.stat().st_size - 5)
    args = ["--pred", str(tmp_path / "pred.npy"), "--target", str(tmp_path / "target.npy"), "--range", "255",
            "--reported", str(tmp_path / "eval"), "--salvage"]
    result = reports(args, tmp_path / "report.xml")
    reported = str(tmp_path / "eval")
    assert [f["file"] for f in result.data["files"]] == [str(tmp_path / "pred.npy"), reported]
    assert {(reported, "reported-mismatch"), (reported, "log-damaged"), (reported, "psnr-implausible")} <= \
        result.warnings and result.data["reported"] == {"psnr": 80.0}  # step 1 was cut off
