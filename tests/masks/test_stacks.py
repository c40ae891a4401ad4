"""`gpudoc mask` on stacks of images (N, H, W arrays, multi-page TIFFs), and where its outputs go:
stdout, symlinks, directories, permissions."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gpudoc.cli import cli
from gpudoc.masks import sweep, threshold


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["mask", *args])
    return result.exit_code, result.stdout, result.stderr


def run_bytes(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(cli, ["mask", *args])
    return result.exit_code, result.stdout_bytes, result.stderr


@pytest.fixture
def stack(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Four 32x32 probability maps of different quality and their truth: per-image Dice is not
    pooled Dice (image 3 is small and badly predicted)."""
    rng = np.random.default_rng(9)
    truth = np.zeros((4, 32, 32), bool)
    truth[0, 4:28, 4:28] = True
    truth[1, :16] = True
    truth[2, 10:20, 10:20] = True
    truth[3, 0:3, 0:3] = True
    noise = rng.random((4, 32, 32))
    probs = np.where(truth, 0.55 + 0.45 * noise, 0.45 * noise).astype(np.float32)
    probs[3] = rng.random((32, 32)).astype(np.float32)
    np.save(tmp_path / "probs.npy", probs)
    np.save(tmp_path / "labels.npy", truth.astype(np.uint8))
    return probs, truth


def test_threshold_a_stack_to_npy_to_a_directory_and_not_to_one_png(tmp_path: Path, stack) -> None:
    probs, _ = stack
    expected = threshold(probs, 0.5, "ge", scale=1)
    code, _, err = run("threshold", str(tmp_path / "probs.npy"), "-o", str(tmp_path / "out.png"), "--scale", "1")
    assert code == 2 and "a stack of 4 images (4×32×32)" in err and ".npy" in err and "directory" in err
    assert not (tmp_path / "out.png").exists()
    code, out, _ = run("threshold", str(tmp_path / "probs.npy"), "-o", str(tmp_path / "out.npy"), "--scale", "1")
    assert code == 0 and "in 4 images" in out
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)
    code, out, _ = run("threshold", str(tmp_path / "probs.npy"), "-o", str(tmp_path / "masks"), "--scale", "1",
                       "--json")
    rows = json.loads(out)
    assert code == 0 and [r["image"] for r in rows] == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"probs_{i}.png" for i in range(4)]
    for i in range(4):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / f"probs_{i}.png")), expected[i] * 255)


@pytest.mark.parametrize("layout", ["N,H,W,1", "N,1,H,W"])
def test_channel_axes_of_one_are_stacks_too(tmp_path: Path, stack, layout: str) -> None:
    probs, _ = stack
    values = probs[..., None] if layout == "N,H,W,1" else probs[:, None]
    np.save(tmp_path / "c.npy", values)
    code, _, _ = run("threshold", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c"), "--scale", "1")
    assert code == 0 and len(list((tmp_path / "c").iterdir())) == 4
    code, _, _ = run("threshold", str(tmp_path / "c.npy"), "-o", str(tmp_path / "c.npy.mask.npy"), "--scale", "1")
    assert code == 0 and np.load(tmp_path / "c.npy.mask.npy").shape == values.shape, "npy keeps the input's shape"


def test_a_multi_page_tiff_is_one_mask_per_page(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((3, 3), v, np.float32), mode="F") for v in (0.2, 0.7)]
    pages[0].save(tmp_path / "s.tif", save_all=True, append_images=pages[1:])
    code, _, _ = run("threshold", str(tmp_path / "s.tif"), "-o", str(tmp_path / "s.npy"), "--scale", "1")
    assert code == 0 and np.load(tmp_path / "s.npy")[:, 0, 0].tolist() == [0, 1]


def test_sweep_scores_each_image_of_a_stack_pairing_single_files_by_position(tmp_path: Path, stack) -> None:
    probs, truth = stack
    code, out, _ = run("sweep", "--probs", str(tmp_path / "probs.npy"), "--truth", str(tmp_path / "labels.npy"),
                       "--scale", "1", "--json", "--thresholds", "11")
    result = json.loads(out)
    reference = sweep(probs, truth, 11)
    assert code == 0 and result["images"] == 4
    for row, expected in zip(result["rows"], reference.rows):
        assert row["dice_per_image"] == pytest.approx(expected.dice_per_image)
        assert row["dice"] == pytest.approx(expected.dice)
    middle = result["rows"][5]
    assert abs(middle["dice_per_image"] - middle["dice"]) > 0.05, "per-image is not pooled"
    each = [sweep(probs[i], truth[i], [0.5]).rows[0].dice for i in range(4)]
    assert middle["dice_per_image"] == pytest.approx(np.mean(each))


def test_stacks_in_folders_pair_by_name(tmp_path: Path, stack) -> None:
    probs, truth = stack
    for side, values in (("p", probs), ("t", truth.astype(np.uint8))):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "b.npy", values[2:])
        np.save(tmp_path / side / "a.npy", values[:2])
    code, out, _ = run("sweep", "--probs", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--scale", "1",
                       "--json", "--thresholds", "11")
    result = json.loads(out)
    assert code == 0 and result["images"] == 4
    assert result["rows"][5]["dice_per_image"] == pytest.approx(sweep(probs, truth, 11).rows[5].dice_per_image)
    np.save(tmp_path / "t" / "extra.npy", truth[:1].astype(np.uint8))
    code, _, err = run("sweep", "--probs", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--scale", "1")
    assert code == 0 and "1 truth file(s) have no probability map" in err and "extra.npy" in err
    np.save(tmp_path / "t" / "a.npy", truth[:3].astype(np.uint8))
    code, _, err = run("sweep", "--probs", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--scale", "1")
    assert code == 2 and "a.npy: 2 image(s) but its truth" in err and "has 3" in err
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "t" / "a.png")
    code, _, err = run("sweep", "--probs", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--scale", "1")
    assert code == 2 and "same name" in err


def test_bad_images_in_a_stack_are_named_by_index(tmp_path: Path, stack) -> None:
    probs, truth = stack
    over = probs.copy()
    over[2, 5, 5] = 1.5
    np.save(tmp_path / "over.npy", over)
    code, _, err = run("threshold", str(tmp_path / "over.npy"), "-o", str(tmp_path / "o.npy"), "--scale", "1")
    assert code == 2 and "over.npy image 2: values span" in err and "outside the declared scale [0, 1]" in err
    nan = probs.copy()
    nan[3, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    code, _, err = run("audit", str(tmp_path / "nan.npy"))
    assert code == 2 and "nan.npy image 3: 1 NaN value(s)" in err
    odd = truth.astype(np.float32)
    odd[1, 0, 0] = 0.5
    np.save(tmp_path / "odd.npy", odd)
    code, _, err = run("sweep", "--probs", str(tmp_path / "probs.npy"), "--truth", str(tmp_path / "odd.npy"),
                       "--scale", "1")
    assert code == 2 and "odd.npy image 1: a mask holds 0/1 or 0/255 only" in err and "0.5" in err
    np.save(tmp_path / "small.npy", truth[:, :30].astype(np.uint8))
    code, _, err = run("sweep", "--probs", str(tmp_path / "probs.npy"), "--truth", str(tmp_path / "small.npy"),
                       "--scale", "1")
    assert code == 2 and "probs.npy image 0 is 32×32 but its truth" in err and "small.npy image 0 is 30×32" in err
    np.save(tmp_path / "flat.npy", np.zeros((2, 2, 2, 2, 2)))
    code, _, err = run("audit", str(tmp_path / "flat.npy"))
    assert code == 2 and "shape 2×2×2×2×2 is neither an image" in err
    for name, values, message in (("scalar.npy", np.float32(0.5), "a single number, not an image"),
                                   ("empty.npy", np.zeros((0, 3)), "shape 0×3 holds no values"),
                                   ("u16.npy", np.array([[0, 40000]], np.uint16), "uint16 values span [0, 40000]")):
        np.save(tmp_path / name, values)
        code, _, err = run("audit", str(tmp_path / name))
        assert code == 2 and f"{name}: {message}" in err, err


def test_audit_reports_a_stack_per_image(tmp_path: Path, stack) -> None:
    probs, _ = stack
    code, out, _ = run("audit", str(tmp_path / "probs.npy"), "--scale", "1", "--json")
    (report,) = json.loads(out)
    assert code == 0 and report["images"] == 4 and len(report["per_image"]) == 4
    assert [s["foreground"] for s in report["per_image"]] == [int((p >= 0.5).sum()) for p in probs]
    assert sum(s["values"] for s in report["per_image"]) == report["values"] == probs.size
    code, out, _ = run("audit", str(tmp_path / "probs.npy"), "--scale", "1")
    assert code == 0 and "in 4 images" in out and "image 3: range" in out


def test_an_inferred_scale_is_warned_about_once_per_command(tmp_path: Path) -> None:
    for i in range(3):
        np.save(tmp_path / f"p{i}.npy", np.full((2, 2), 0.25 * i, np.float32))
    Image.fromarray(np.array([[0, 200]], np.uint8)).save(tmp_path / "byte.png")
    code, _, err = run("audit", str(tmp_path / "p0.npy"), str(tmp_path / "p1.npy"), str(tmp_path / "p2.npy"))
    assert code == 0 and err.count("warning") == 1 and "inferred '1' for all 3 files" in err
    code, _, err = run("threshold", str(tmp_path), "-o", str(tmp_path / "masks"))
    assert code == 0 and err.count("warning") == 1
    assert "'255' for 1 file (" in err and "byte.png" in err and "'1' for 3 files (" in err


def test_threshold_to_stdout_reports_on_stderr(tmp_path: Path) -> None:
    values = np.array([[0.2, 0.5], [0.7, 0.1]], np.float32)
    np.save(tmp_path / "p.npy", values)
    code, out, err = run_bytes("threshold", str(tmp_path / "p.npy"), "-o", "-", "--scale", "1")
    assert code == 0 and "p.npy → -" in err
    assert np.asarray(Image.open(io.BytesIO(out))).tolist() == [[0, 255], [255, 0]]
    assert not (tmp_path / "-").exists() and not Path("-").exists()
    code, out, _ = run_bytes("threshold", str(tmp_path / "p.npy"), "-o", "-", "--format", "npy", "--scale", "1")
    assert code == 0 and np.load(io.BytesIO(out)).tolist() == [[0, 1], [1, 0]]
    code, _, err = run("threshold", str(tmp_path / "p.npy"), "-o", "-", "--json", "--scale", "1")
    assert code == 2 and "-o - and --json would both write to stdout" in err
    code, out, _ = run("threshold", str(tmp_path / "p.npy"), "-o", "/dev/null", "--scale", "1")
    assert code == 0 and "p.npy → /dev/null" in out, "a device is streamed to, not a directory"


def test_threshold_outputs_refused_before_any_work(tmp_path: Path) -> None:
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((2, 2), np.float32))
    code, _, err = run("threshold", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o", str(tmp_path / "m.png"))
    assert code == 2 and "is one file, but there are 2 inputs" in err and not (tmp_path / "m.png").exists()
    code, _, err = run("threshold", str(tmp_path / "a.npy"), "-o", str(tmp_path / "m.tif"))
    assert code == 2 and "written as .png or .npy" in err and not (tmp_path / "m.tif").exists()
    (tmp_path / "file").write_text("keep")
    code, _, err = run("threshold", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o", str(tmp_path / "file"))
    assert code == 2 and "exists and is not a directory" in err and (tmp_path / "file").read_text() == "keep"
    code, _, err = run("threshold", str(tmp_path / "a.npy"), "-o", str(tmp_path / "m.png"), "--format", "npy")
    assert code == 2 and "--format npy but -o" in err


def test_mask_outputs_write_through_symlinks_with_a_plain_create_mode(tmp_path: Path) -> None:
    np.save(tmp_path / "p.npy", np.array([[0.2, 0.9]], np.float32))
    (tmp_path / "real.png").write_bytes(b"old")
    (tmp_path / "link.png").symlink_to("real.png")
    code, _, err = run("threshold", str(tmp_path / "p.npy"), "-o", str(tmp_path / "link.png"), "--scale", "1")
    assert code == 2 and "exists" in err and (tmp_path / "real.png").read_bytes() == b"old"
    code, _, _ = run("threshold", str(tmp_path / "p.npy"), "-o", str(tmp_path / "link.png"), "--scale", "1", "--force")
    assert code == 0 and (tmp_path / "link.png").is_symlink()
    assert np.asarray(Image.open(tmp_path / "real.png")).tolist() == [[0, 255]]
    old = os.umask(0o027)
    try:
        code, _, _ = run("threshold", str(tmp_path / "p.npy"), "-o", str(tmp_path / "new.png"), "--scale", "1")
        assert code == 0
        np.save(tmp_path / "t.npy", np.array([[0, 1]], np.uint8))
        code, _, _ = run("sweep", "--probs", str(tmp_path / "p.npy"), "--truth", str(tmp_path / "t.npy"),
                         "--scale", "1", "--plot", str(tmp_path / "plot.png"))
        assert code == 0
    finally:
        os.umask(old)
    for name in ("new.png", "plot.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


def test_sweep_table_as_csv_to_a_file_or_stdout_and_its_outputs_not_overwritten(tmp_path: Path, stack) -> None:
    args = ["sweep", "--probs", str(tmp_path / "probs.npy"), "--truth", str(tmp_path / "labels.npy"), "--scale", "1",
            "--thresholds", "11"]
    code, out, err = run(*args, "--csv", "-")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 11 and "best dice" in err and "best dice" not in out
    assert float(rows[5]["threshold"]) == 0.5 and 0 < float(rows[5]["dice_per_image"]) < 1
    code, _, _ = run(*args, "--csv", str(tmp_path / "table.csv"), "--json")
    assert code == 0 and len((tmp_path / "table.csv").read_text().splitlines()) == 12
    (tmp_path / "plot.png").write_bytes(b"keep")
    code, _, err = run(*args, "--plot", str(tmp_path / "plot.png"))
    assert code == 2 and "exists" in err and (tmp_path / "plot.png").read_bytes() == b"keep"
    assert run(*args, "--plot", str(tmp_path / "plot.png"), "--force")[0] == 0
    assert Image.open(tmp_path / "plot.png").size == (720, 420)
    (tmp_path / "dir.csv").mkdir()
    code, _, err = run(*args, "--csv", str(tmp_path / "dir.csv"))
    assert code == 2 and "a directory" in err
    code, _, err = run(*args, "--plot", str(tmp_path / "plot.svg"))
    assert code == 2 and "PNG" in err and not (tmp_path / "plot.svg").exists()


def test_dev_stdout_in_a_real_process_gets_the_mask_alone(tmp_path: Path) -> None:
    import subprocess
    import sys

    np.save(tmp_path / "p.npy", np.array([[0.2, 0.9]], np.float32))
    done = subprocess.run([sys.executable, "-m", "gpudoc", "mask", "threshold", str(tmp_path / "p.npy"), "-o",
                           "/dev/stdout", "--scale", "1"], capture_output=True, check=False)
    assert done.returncode == 0 and "p.npy → /dev/stdout" in done.stderr.decode()
    assert np.asarray(Image.open(io.BytesIO(done.stdout))).tolist() == [[0, 255]]


def test_a_place_that_cannot_be_written_is_bad_input(tmp_path: Path, stack) -> None:
    """/proc takes no new files (even for root): every writer says so, exit 2, not exit 70."""
    code, _, err = run("threshold", str(tmp_path / "probs.npy"), "-o", "/proc/mask.npy", "--scale", "1")
    assert code == 2 and "/proc/mask.npy: cannot write it" in err
    for option, dest in (("--plot", "/proc/plot.png"), ("--csv", "/proc/table.csv")):
        code, _, err = run("sweep", "--probs", str(tmp_path / "probs.npy"), "--truth", str(tmp_path / "labels.npy"),
                           "--scale", "1", option, dest)
        assert code == 2 and f"{dest}: cannot write it" in err
