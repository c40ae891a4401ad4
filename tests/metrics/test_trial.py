"""`gpudoc metrics-check` as a new user tried it: channels-first stacks, metrics that cannot be
computed or overflow, errors that name the file and the fix, counts of values and steps, 16-bit
data at the wrong range, outputs that are inputs, values printed as logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import structural_similarity

from gpudoc.cli import cli

from .agreement import reports


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["metrics-check", *args])
    return result.exit_code, result.stdout, result.stderr


def noisy(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 256, shape).astype(np.uint8)
    pred = np.clip(target + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
    return pred, target


def wang_ssim(preds: np.ndarray, targets: np.ndarray, channel_axis: int | None = None) -> float:
    return float(np.mean([structural_similarity(t, p, data_range=255, gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False, channel_axis=channel_axis)
                          for p, t in zip(preds, targets)]))


def save_pair(tmp_path: Path, pred: np.ndarray, target: np.ndarray, name: str = "") -> tuple[str, str]:
    p, t = tmp_path / f"out{name}.npy", tmp_path / f"gt{name}.npy"
    np.save(p, pred)
    np.save(t, target)
    return str(p), str(t)


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_first_stacks_are_images(tmp_path: Path, channels: int) -> None:
    # A 4x1x48x64 stack (as torch saves it) printed MAE/MSE/PSNR and silently no SSIM.
    pred, target = noisy((4, channels, 48, 64))
    code, out, err = run("--pred", (p := save_pair(tmp_path, pred, target))[0], "--target", p[1], "--range", "255",
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    last = np.moveaxis(pred, 1, -1), np.moveaxis(target, 1, -1)
    expected = wang_ssim(last[0][..., 0], last[1][..., 0]) if channels == 1 else wang_ssim(*last, channel_axis=-1)
    assert data["metrics"]["ssim"] == pytest.approx(expected, abs=1e-6)
    code, out, _ = run("--pred", (q := save_pair(tmp_path, *last, name="_last"))[0], "--target", q[1], "--range",
                       "255", "--json")
    assert json.loads(out)["metrics"] == pytest.approx(data["metrics"], rel=1e-12), "the same images, channels last"


def test_a_metric_that_cannot_be_computed_is_warned_about(tmp_path: Path) -> None:
    p, t = save_pair(tmp_path, *noisy((3, 5, 5)))
    code, out, err = run("--pred", p, "--target", t, "--range", "255")
    assert code == 0
    assert "gpudoc: warning: SSIM not computed: the images are 5×5, smaller than SSIM's 11×11 window" in err
    assert "ssim     not computed: the images are 5×5" in out
    code, out, _ = run("--pred", p, "--target", t, "--range", "255", "--json")
    data = json.loads(out)
    assert "ssim" not in data["metrics"] and "11×11 window" in data["not_computed"]["ssim"]
    assert data["files"][0]["not_applicable"]["ssim-out-of-range"].startswith("SSIM not computed: the images are 5×5")
    p, t = save_pair(tmp_path, *noisy((2, 9, 9)), name="9")
    _, _, err = run("--pred", p, "--target", t, "--range", "255")
    assert "or --ssim-preset skimage (7×7)" in err
    assert run("--pred", p, "--target", t, "--range", "255", "--ssim-preset", "skimage")[2] == ""


def test_ms_ssim_on_images_too_small_for_it_is_warned_about_not_an_error(tmp_path: Path) -> None:
    """--ms-ssim on 32x32 images threw every other metric away (exit 2); now, as SSIM on 5x5:
    a warning naming the size needed, the other metrics reported, the exit as without it."""
    p, t = save_pair(tmp_path, *noisy((3, 32, 32)))
    plain = run("--pred", p, "--target", t, "--range", "255")
    code, out, err = run("--pred", p, "--target", t, "--range", "255", "--ms-ssim")
    assert code == plain[0] == 0
    assert err == ("gpudoc: warning: MS-SSIM not computed: the images are 32×32, smaller than the 161×161 MS-SSIM "
                   "needs (5 scales of its 11×11 window); give images of 161×161 or more\n")
    note = ("ms_ssim  not computed: the images are 32×32, smaller than the 161×161 MS-SSIM needs (5 scales of its "
            "11×11 window)")
    assert out.splitlines() == [*plain[1].splitlines()[:-1], note, plain[1].splitlines()[-1]]
    without = reports(["--pred", p, "--target", t, "--range", "255"], tmp_path / "plain.xml")
    result = reports(["--pred", p, "--target", t, "--range", "255", "--ms-ssim"], tmp_path / "report.xml")
    assert result.code == without.code and result.data["metrics"] == without.data["metrics"]
    assert "161×161 or more" in result.data["not_computed"]["ms_ssim"] and "ms_ssim" not in result.data["metrics"]
    assert result.data["files"] == without.data["files"]  # SSIM was checked: the rule ran, on it
    props = {e.get("name"): e.get("value") for e in result.suite.iter("property")}
    assert props["not_computed"].startswith("MS-SSIM: the images are 32×32, smaller than the 161×161")
    assert "not_computed" not in {e.get("name") for e in without.suite.iter("property")}
    # Large enough for the 7x7 window's 97x97: the other preset is suggested, and computes it.
    p, t = save_pair(tmp_path, *noisy((2, 100, 100)), name="100")
    assert "(or --ssim-preset skimage: 97×97)" in run("--pred", p, "--target", t, "--range", "255", "--ms-ssim")[2]
    code, out, err = run("--pred", p, "--target", t, "--range", "255", "--ms-ssim", "--ssim-preset", "skimage",
                         "--json")
    assert code == 0 and err == "" and "ms_ssim" in json.loads(out)["metrics"]
    # Under SSIM's window too (5x5): both warned about, both named in JUnit's properties.
    p, t = save_pair(tmp_path, *noisy((2, 5, 5)), name="5")
    result = reports(["--pred", p, "--target", t, "--range", "255", "--ms-ssim"], tmp_path / "five.xml")
    assert set(result.data["not_computed"]) == {"ssim", "ms_ssim"} and result.code == 0
    assert {e.get("name"): e.get("value") for e in result.suite.iter("property")}["not_computed"].startswith(
        "SSIM: the images are 5×5, smaller than SSIM's 11×11 window (--ssim-preset wang); MS-SSIM: the images are 5×5")


def test_overflowing_metrics_are_errors_not_inf(tmp_path: Path) -> None:
    huge = np.full((2, 16, 16), 1e300)
    opposite = huge.copy()
    opposite[:, :8] = -1e300
    p, t = save_pair(tmp_path, huge, opposite)
    code, out, _ = run("--pred", p, "--target", t, "--range", "255")
    assert code == 1
    assert "error [non-finite] computed mse is inf, rmse is inf, psnr is -inf, ssim is nan (4 values)" in out
    assert "cause: the images' values overflow float64" in out
    assert "psnr     -inf (not finite" in out and "ssim     nan (not finite" in out and "ssim     inf" not in out
    data = json.loads(run("--pred", p, "--target", t, "--range", "255", "--json")[1])
    assert data["not_finite"] == {"mse": "inf", "rmse": "inf", "psnr": "-inf", "ssim": "nan"}
    assert data["files"][0]["rules"]["non-finite"] == "failed"
    # Identical images: PSNR is infinite by definition, not an error; SSIM's overflow is.
    p, t = save_pair(tmp_path, huge, huge, name="same")
    code, out, _ = run("--pred", p, "--target", t, "--range", "255")
    assert "psnr     inf (identical images)" in out and "[non-finite] computed ssim is nan\n" in out
    p, t = save_pair(tmp_path, *noisy((2, 16, 16)), name="8bit")
    code, out, _ = run("--pred", t, "--target", t, "--range", "255")
    assert code == 0 and "psnr     inf (identical images)" in out and "non-finite" not in out


def test_bad_images_are_named_with_a_fix(tmp_path: Path) -> None:
    pred, target = noisy((3, 32, 32))
    p, t = save_pair(tmp_path, pred, target)
    for shape, said in (((), "a single number, not an image"), ((5,), "1-D values (shape 5), not an image"),
                        ((1, 2, 3, 4, 5), "shape 1×2×3×4×5 has 5 axes"), ((0, 8, 8), "shape 0×8×8 holds no values")):
        np.save(tmp_path / "odd.npy", np.zeros(shape))
        code, _, err = run("--pred", str(tmp_path / "odd.npy"), "--target", str(tmp_path / "odd.npy"), "--range", "1")
        assert code == 2 and err.startswith(f"gpudoc: error: {tmp_path / 'odd.npy'}: {said}"), err
    code, _, err = run("--pred", p, "--target", t, "--range", "255", "--crop-border", "20")
    assert code == 2 and f"--crop-border 20: {p} holds 32×32 images" in err and "use --crop-border 15 or less" in err
    code, _, err = run("--pred", p, "--target", t, "--range", "255", "--y-channel")
    assert code == 2 and "1-channel images; the Y channel needs RGB" in err
    values = np.random.default_rng(1).random((3, 8, 8))
    values[1, 0, :3] = np.nan
    values[1, 2, 2] = np.inf
    np.save(tmp_path / "nan.npy", values)
    np.save(tmp_path / "ok.npy", np.zeros((3, 8, 8)))
    code, _, err = run("--pred", str(tmp_path / "nan.npy"), "--target", str(tmp_path / "ok.npy"), "--range", "1")
    assert code == 2
    assert f"{tmp_path / 'nan.npy'} image 1: 3 NaN value(s) and 1 infinite value(s): replace NaNs" in err


def test_a_step_with_several_non_finite_values_counts_once(tmp_path: Path) -> None:
    # A Keras epoch "loss: nan - mae: nan - mse: nan - psnr: inf" read "loss is nan (4 steps)", count 4.
    log = tmp_path / "keras.log"
    bar = "10/10 ━━━━━━━━━━━━━━━━━━━━ 1s 5ms/step - loss: {0} - mae: {0} - mse: {0} - psnr: {1}"
    log.write_text(f"Epoch 1/3\n{bar.format('0.0050', '30.0000')}\nEpoch 2/3\n{bar.format('nan', 'inf')}\n")
    code, out, _ = run(str(log))
    assert code == 1
    assert f"{log}:4 (step 1, train): error [non-finite] loss is nan, mae is nan, mse is nan, psnr is inf " \
        "(4 values)\n" in out
    findings = json.loads(run(str(log), "--json")[1])["findings"]
    assert [(f["step"], f["count"]) for f in findings if f["rule"] == "non-finite"] == [(1, 1)]
    log.write_text(log.read_text() + f"Epoch 3/3\n{bar.format('nan', 'inf')}\n")
    assert "psnr is inf (4 values) (2 steps)" in run(str(log))[1]
    findings = json.loads(run(str(log), "--json")[1])["findings"]
    assert [(f["step"], f["count"]) for f in findings if f["rule"] == "non-finite"] == [(1, 2)]


def test_sixteen_bit_images_at_range_255_name_the_16_bit_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for side in ("p", "t"):
        (tmp_path / side).mkdir()
    for i in range(2):
        target = rng.integers(0, 65536, (32, 32)).astype(np.uint16)
        pred = np.clip(target + rng.normal(0, 3000, target.shape), 0, 65535).astype(np.uint16)
        Image.fromarray(target).save(tmp_path / "t" / f"{i}.png")
        Image.fromarray(pred).save(tmp_path / "p" / f"{i}.png")
    code, out, _ = run("--pred", str(tmp_path / "p"), "--target", str(tmp_path / "t"), "--range", "255", "--json")
    data = json.loads(out)
    psnr = next(f for f in data["findings"] if f["rule"] == "psnr-implausible")
    assert code == 1 and "on [0,65535] data" in psnr["cause"] and "--range 65535" in psnr["fix"]
    assert "[0,255] data" not in psnr["cause"] and "8-bit" not in psnr["fix"]
    assert all("65535" in f["fix"] for f in data["findings"] if f["rule"] == "data-range")


def test_logged_values_are_printed_as_logged(tmp_path: Path) -> None:
    log = tmp_path / "keras.log"
    log.write_text("Epoch 1/1\n10/10 ━━━━━━━━━━━━━━━━━━━━ 1s 5ms/step - loss: 0.7160 - mae: 0.0700 - mse: 0.0690\n")
    code, out, _ = run(str(log), "--range", "255")
    assert code == 1 and "MSE 0.0690 < MAE 0.0700" in out
    csv = tmp_path / "eval.csv"
    csv.write_text("epoch,val_psnr\n0,76.4400\n")
    p, t = save_pair(tmp_path, *noisy((2, 16, 16)))
    _, out, _ = run("--pred", p, "--target", t, "--range", "255", "--reported", str(csv))
    assert "reported psnr 76.4400 but" in out


def test_an_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    text = "Epoch 1/1\n10/10 ━━━━━━━━━━━━━━━━━━━━ 1s 5ms/step - loss: 0.7160 - mae: 0.0700 - mse: 0.0690\n"
    log.write_text(text)
    (tmp_path / "link.xml").symlink_to(log)
    code, _, err = run(str(log), "--junit", str(tmp_path / "link.xml"))
    assert code == 2 and f"--junit {tmp_path / 'link.xml'}: the same file as the input {log}" in err
    p, t = save_pair(tmp_path, *noisy((2, 16, 16)))
    code, _, err = run("--pred", str(tmp_path), "--target", str(tmp_path), "--junit", p, "--range", "255")
    assert code == 2 and "the same file as the input" in err
    code, _, err = run("--pred", p, "--target", t, "--junit", t, "--range", "255")
    assert code == 2 and f"--junit {t}: the same file as the input {t}" in err
    assert log.read_text() == text and np.load(t).shape == (2, 16, 16)
    (tmp_path / "report.xml").write_text("an old report")
    code, _, err = run("--pred", str(tmp_path), "--target", str(tmp_path), "--junit", str(tmp_path / "report.xml"),
                       "--range", "255")
    assert code == 0 and err == "", "a report beside the images is no input"
    # --json appended to the log it reads (a shell's >>): refused before anything is written.
    with log.open("a") as out:
        result = subprocess.run([sys.executable, "-m", "gpudoc", "metrics-check", str(log), "--json"], stdout=out,
                                stderr=subprocess.PIPE, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 2 and "--json (stdout): the same file as the input" in result.stderr
    assert log.read_text() == text
    # A report written beside the logs it checks is no input.
    assert run(str(log), "--junit", str(tmp_path / "report.xml"), "--range", "255")[0] == 1
    assert (tmp_path / "report.xml").read_bytes().startswith(b"<?xml")
