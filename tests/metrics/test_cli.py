"""`gpudoc metrics-check` on logs and on image files."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gpudoc.cli import cli
from gpudoc.metrics.lint import PEAK_255_DB

from .test_logs import SEED_LOG, at_unit_scale


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["metrics-check", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, Path]:
    good, bad = tmp_path / "good.log", tmp_path / "bad.log"
    good.write_text(SEED_LOG)
    bad.write_text(at_unit_scale(SEED_LOG))
    return good, bad


def test_clean_and_flagged_logs(logs: tuple[Path, Path]) -> None:
    good, bad = logs
    code, out, _ = run(str(good), "--range", "255")
    assert code == 0 and out.strip() == "1 checked: 0 error(s), 0 warning(s)"
    code, out, _ = run(str(good), str(bad), "--range", "255")
    assert code == 1
    assert f"{bad}:2 (step 0, train): error [unit-scale] MSE 0.0069 < MAE 0.0744" in out
    assert "fix: convert prediction and target back to [0,255]" in out and "(3 steps)" in out


def test_json_junit_and_github(logs: tuple[Path, Path], tmp_path: Path) -> None:
    good, bad = logs
    report = tmp_path / "report.xml"
    code, out, _ = run(str(good), str(bad), "--range", "255", "--json", "--junit", str(report))
    data = json.loads(out)
    assert code == 1 and data["range"] == 255
    assert [f["file"] for f in data["files"]] == [str(good), str(bad)]
    assert {(f["rule"], f["severity"]) for f in data["findings"]} == {("unit-scale", "error")}
    assert all(set(f) >= {"rule", "severity", "where", "message"} for f in data["findings"])
    suite = ElementTree.parse(report).getroot()
    assert suite.get("failures") == "1" and int(suite.get("tests") or 0) == 2 * 7
    failed = [c for c in suite if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name", "").split(":")[0]) for c in failed] == [(str(bad), "unit-scale")]
    code, out, _ = run(str(bad), "--range", "255", "--github")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"::error file={bad},line=2,title=gpudoc unit-scale::MSE 0.0069 < MAE 0.0744")


def test_bad_usage_and_inputs(tmp_path: Path) -> None:
    assert run()[0] == 2
    assert run("--pred", "x")[0] == 2
    empty = tmp_path / "empty.log"
    empty.write_text("nothing to see\n")
    code, _, err = run(str(empty))
    assert code == 2 and err.startswith(f"gpudoc: error: {empty}: no metric values found")
    code, _, err = run(str(tmp_path / "missing.csv"))
    assert code == 2 and "no such file" in err and "Traceback" not in err


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(3)
    pred_dir, target_dir = tmp_path / "pred", tmp_path / "target"
    pred_dir.mkdir()
    target_dir.mkdir()
    preds, targets = [], []
    for i in range(3):
        target = rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)
        pred = np.clip(target + rng.normal(0, 12, target.shape), 0, 255).astype(np.uint8)
        Image.fromarray(target).save(target_dir / f"im{i}.png")
        Image.fromarray(pred).save(pred_dir / f"im{i}.png")
        preds.append(pred)
        targets.append(target)
    return pred_dir, target_dir, preds, targets


def test_compute_mode_matches_scikit_image(images: tuple[Path, Path, list[np.ndarray], list[np.ndarray]]) -> None:
    pred_dir, target_dir, preds, targets = images
    code, out, err = run("--pred", str(pred_dir), "--target", str(target_dir), "--range", "255", "--json")
    assert code == 0, err
    data = json.loads(out)
    psnr = np.mean([peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(preds, targets)])
    ssim = np.mean([structural_similarity(t, p, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False) for p, t in zip(preds, targets)])
    assert data["metrics"]["psnr"] == pytest.approx(psnr, abs=1e-6)
    assert data["metrics"]["ssim"] == pytest.approx(ssim, abs=1e-6)
    assert set(data["metrics"]) >= {"mae", "mse", "rmse", "psnr", "ssim"} and data["images"] == ["im0", "im1", "im2"]
    assert data["findings"] == [] and data["scale"]["scale"] == "[0,255]"


def test_reported_numbers_at_the_wrong_scale_are_named(
        images: tuple[Path, Path, list[np.ndarray], list[np.ndarray]], tmp_path: Path) -> None:
    pred_dir, target_dir, preds, targets = images
    unit = [(p / 255, t / 255) for p, t in zip(preds, targets)]
    wrong_psnr = np.mean([peak_signal_noise_ratio(t, p, data_range=255) for p, t in unit])
    wrong_ssim = np.mean([structural_similarity(t, p, data_range=255, channel_axis=-1, gaussian_weights=True,
                                                sigma=1.5, use_sample_covariance=False) for p, t in unit])
    reported = tmp_path / "eval.csv"
    reported.write_text(f"epoch,val_psnr,val_ssim\n9,{wrong_psnr:.4f},{wrong_ssim:.6f}\n")
    code, out, _ = run("--pred", str(pred_dir), "--target", str(target_dir), "--range", "255",
                       "--reported", str(reported), "--json")
    data = json.loads(out)
    assert code == 1
    by_metric = {f["message"].split()[1]: f for f in data["findings"]}
    assert f"reported PSNR is {PEAK_255_DB:.2f} dB above the 255-peak value: computed with peak 255 on [0,1] data" \
        in by_metric["psnr"]["cause"]
    assert "matches data_range 65025" in by_metric["ssim"]["cause"]
    right = tmp_path / "right.json"
    right.write_text(json.dumps({"psnr": data["metrics"]["psnr"], "ssim": data["metrics"]["ssim"]}))
    assert run("--pred", str(pred_dir), "--target", str(target_dir), "--range", "255", "--reported", str(right))[0] == 0


def test_compute_mode_bad_inputs(images: tuple[Path, Path, list[np.ndarray], list[np.ndarray]],
                                 tmp_path: Path) -> None:
    pred_dir, target_dir, _, _ = images
    (pred_dir / "extra.png").write_bytes((pred_dir / "im0.png").read_bytes())
    code, _, err = run("--pred", str(pred_dir), "--target", str(target_dir))
    assert code == 2 and "extra (prediction only)" in err
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, np.zeros((8, 8)))
    np.save(b, np.zeros((8, 9)))
    code, _, err = run("--pred", str(a), "--target", str(b), "--range", "1")
    assert code == 2 and "differ in shape" in err
    np.save(b, np.full((8, 8), np.nan))
    code, _, err = run("--pred", str(a), "--target", str(b), "--range", "1")
    assert code == 2 and "NaN" in err
    np.save(b, np.full((8, 8), 900.0))
    code, _, err = run("--pred", str(a), "--target", str(b))
    assert code == 2 and "cannot infer the data range" in err


@pytest.fixture
def unit_images(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(8)
    target = rng.random((4, 32, 32))
    np.save(tmp_path / "p.npy", np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1))
    np.save(tmp_path / "t.npy", target)
    return tmp_path / "p.npy", tmp_path / "t.npy"


def test_a_declared_range_the_images_contradict_is_an_error(unit_images: tuple[Path, Path], tmp_path: Path) -> None:
    # Issue 16 item 2: float images in [0,1] at --range 255 printed PSNR 82 dB, "0 error(s)", exit 0.
    p, t = unit_images
    code, out, _ = run("--pred", str(p), "--target", str(t), "--range", "255", "--json")
    data = json.loads(out)
    rules = {(f["rule"], f["severity"]) for f in data["findings"]}
    assert code == 1 and rules == {("data-range", "error"), ("unit-scale", "error"), ("psnr-implausible", "warning")}
    target_finding = next(f for f in data["findings"] if f["message"].startswith("target"))
    assert "are on [0,1], not the declared data_range 255" in target_finding["message"]
    assert "PSNR gains 48.13 dB" in target_finding["cause"] and "--range 1" in target_finding["fix"]
    assert run("--pred", str(p), "--target", str(t), "--range", "1")[0] == 0
    np.save(tmp_path / "p255.npy", np.load(p) * 255)
    np.save(tmp_path / "t255.npy", np.load(t) * 255)
    code, out, _ = run("--pred", str(tmp_path / "p255.npy"), "--target", str(tmp_path / "t255.npy"), "--range", "1")
    assert code == 1 and "error [data-range] target values in" in out and "go beyond [0,1]" in out
    assert "fix: use range 255 (--range 255) for [0,255] data" in out


def test_range_auto_says_what_it_inferred_and_flags_dtype_value_disagreement(
        unit_images: tuple[Path, Path], tmp_path: Path) -> None:
    p, t = unit_images
    code, out, err = run("--pred", str(p), "--target", str(t))
    assert code == 0 and "0 error(s), 0 warning(s)" in out
    assert err.startswith("gpudoc: note: --range auto: computing at 1, inferred from the target: its values in [")
    np.save(tmp_path / "p255.npy", np.load(p) * 255)
    np.save(tmp_path / "t255.npy", np.load(t) * 255)
    code, out, _ = run("--pred", str(tmp_path / "p255.npy"), "--target", str(tmp_path / "t255.npy"), "--json")
    data = json.loads(out)
    assert code == 0 and data["data_range"] == 255 and data["range_source"].startswith("inferred from the target")
    assert {(f["rule"], f["severity"]) for f in data["findings"]} == {("data-dtype", "warning")}
    assert "hold 8-bit values in a float dtype" in data["findings"][0]["message"]
    mask_p, mask_t = tmp_path / "mp.npy", tmp_path / "mt.npy"
    np.save(mask_p, (np.load(p) > 0.5).astype(np.uint8))
    np.save(mask_t, (np.load(t) > 0.5).astype(np.uint8))
    code, out, _ = run("--pred", str(mask_p), "--target", str(mask_t))
    assert code == 1 and "--range auto took 255 from the target's uint8 dtype" in out
    assert "error [data-range] target values in [0, 1] (uint8) are on [0,1]" in out


def test_a_declared_range_answers_the_float_8bit_warning(unit_images: tuple[Path, Path], tmp_path: Path) -> None:
    p, t = unit_images
    np.save(tmp_path / "p255.npy", np.load(p) * 255)
    np.save(tmp_path / "t255.npy", np.load(t) * 255)
    code, out, err = run("--pred", str(tmp_path / "p255.npy"), "--target", str(tmp_path / "t255.npy"), "--range", "255")
    assert code == 0 and err == "" and "0 error(s), 0 warning(s)" in out


def test_junit_to_stdout_moves_the_text_report_to_stderr(logs: tuple[Path, Path]) -> None:
    _, bad = logs
    code, out, err = run(str(bad), "--range", "255", "--junit", "-")
    suite = ElementTree.fromstring(out)
    assert code == 1 and suite.get("failures") == "1" and "error [unit-scale]" in err
    code, _, err = run(str(bad), "--junit", "-", "--json")
    assert code == 2 and "both write to stdout" in err
    code, _, err = run(str(bad), "--json", "--github")
    assert code == 2 and "both write to stdout" in err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                         st.lists(st.sampled_from(["Epoch 1/2", "2/2 [====] - loss: 0.5 - mae: nan", "epoch,mse",
                                                   "0,1e400", '{"step": 1, "psnr": 90}', "- val_ssim: 1.5e",
                                                   "\r\x1b[1m3/3\x1b[0m - mse: 0.1", "1,,", "[1, 2]"]),
                                  max_size=6).map(lambda lines: "\n".join(lines).encode())),
       suffix=st.sampled_from([".log", ".csv", ".jsonl", ".json", ".tfevents"]),
       range_=st.sampled_from(["auto", "1", "255"]))
def test_no_log_makes_an_internal_error(tmp_path: Path, content: bytes, suffix: str, range_: str) -> None:
    log = tmp_path / f"fuzz{suffix}"
    log.write_bytes(content)
    result = CliRunner().invoke(cli, ["metrics-check", str(log), "--range", range_, "--json"])
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["uint8", "uint16", "int16", "float16", "float32", "float64", "bool"]),
       shape=st.sampled_from([(8, 8), (2, 12, 12), (2, 12, 12, 3), (1, 4, 4, 2), (12, 12, 1), (2, 3, 12, 13),
                              (2, 1, 5, 5), (3,), (), (0, 4, 4)]),
       scale=st.sampled_from([1.0, 2.0, 255.0, 70000.0, 1e300, -1.0]), other_dtype=st.booleans(),
       range_=st.sampled_from(["auto", "1", "2", "255", "65535"]), seed=st.integers(0, 3))
def test_no_image_pair_makes_an_internal_error(tmp_path: Path, dtype: str, shape: tuple[int, ...], scale: float,
                                               other_dtype: bool, range_: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        target = (rng.random(shape) * scale).astype(dtype)
        pred = (rng.random(shape) * scale).astype("float32" if other_dtype else dtype)
    np.save(tmp_path / "p.npy", pred)
    np.save(tmp_path / "t.npy", target)
    result = CliRunner().invoke(cli, ["metrics-check", "--pred", str(tmp_path / "p.npy"), "--target",
                                      str(tmp_path / "t.npy"), "--range", range_, "--json"])
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr, result.exception)
    if result.exit_code in (0, 1):
        assert json.loads(result.stdout)["exit_code"] == result.exit_code


@pytest.mark.parametrize(("name", "content", "words"), [
    ("big.jsonl", '{"mse": 1' + "0" * 400 + ', "mae": 0.1}\n', "big.jsonl:1: mse is an integer of 401 digits"),
    ("long.json", '{"mse": 1' + "0" * 5000 + "}", "long.json: unreadable JSON (Exceeds the limit (4300 digits)"),
    ("deep.jsonl", '{"psnr": ' + "[" * 5000 + "]" * 5000 + "}\n", "deep.jsonl:1: unreadable JSON (nested too deeply)"),
])
def test_json_numbers_and_nesting_beyond_reach_are_bad_input(tmp_path: Path, name: str, content: str,
                                                              words: str) -> None:
    (tmp_path / name).write_text(content)
    code, _, err = run(str(tmp_path / name))
    assert code == 2 and err.startswith(f"gpudoc: error: {tmp_path}/") and words in err


def test_overflowing_numbers_are_checked_not_crashed(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("1/1 - mse: 0.0001 - psnr: 5000\n1/1 - rmse: 1e200 - mse: 1 - mae: 1e200\n1/1 - mse: 0e999\n")
    code, out, _ = run(str(log), "--range", "255", "--json")
    rules = {(f["rule"], f["line"]) for f in json.loads(out)["findings"]}
    assert code == 1 and {("implied-range", 1), ("rmse-mse-mismatch", 2), ("mse-below-mae-squared", 2)} <= rules
