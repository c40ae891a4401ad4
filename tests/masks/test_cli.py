"""`gpudoc mask threshold|audit|sweep` on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gpudoc.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["mask", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    (tmp_path / "probs").mkdir()
    (tmp_path / "truth").mkdir()
    for i in range(3):
        p = rng.random((32, 32)).astype(np.float32)
        p[0, 0] = 0.5
        np.save(tmp_path / "probs" / f"case{i}.npy", p)
        Image.fromarray(((rng.random((32, 32)) < p) * 255).astype(np.uint8)).save(tmp_path / "truth" / f"case{i}.png")
    np.save(tmp_path / "seed.npy", np.array([[0.1, 0.2, 0.6, 0.7], [0.5, 0.7, 0.3, 0.4]], np.float32))
    Image.fromarray(np.array([[0, 127, 128, 255]], np.uint8)).save(tmp_path / "byte.png")
    return tmp_path


def test_threshold_writes_npy_and_png_masks(data: Path) -> None:
    code, out, _ = run("threshold", str(data / "seed.npy"), "-o", str(data / "m.npy"), "--scale", "1", "--rule", "gt")
    assert code == 0 and "3 of 8 pixels" in out
    assert np.load(data / "m.npy").tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]
    code, _, err = run("threshold", str(data / "byte.png"), "-o", str(data / "m.png"))
    assert code == 0 and "inferred '255'" in err
    assert np.asarray(Image.open(data / "m.png")).tolist() == [[0, 0, 255, 255]]


def test_threshold_refuses_to_overwrite_without_force(data: Path) -> None:
    dest = data / "m.npy"
    dest.write_bytes(b"keep")
    code, _, err = run("threshold", str(data / "seed.npy"), "-o", str(dest), "--scale", "1")
    assert code == 2 and "exists" in err and dest.read_bytes() == b"keep"
    assert run("threshold", str(data / "seed.npy"), "-o", str(dest), "--scale", "1", "--force")[0] == 0
    assert np.load(dest).shape == (2, 4)


def test_threshold_a_directory_into_a_directory_as_json(data: Path) -> None:
    code, out, _ = run("threshold", str(data / "probs"), "-o", str(data / "masks"), "--format", "npy",
                       "--scale", "1", "--json")
    rows = json.loads(out)
    assert code == 0 and [Path(r["output"]).name for r in rows] == ["case0.npy", "case1.npy", "case2.npy"]
    assert all(set(np.unique(np.load(r["output"]))) <= {0, 1} for r in rows)


def test_bad_inputs_exit_2_naming_the_file(data: Path) -> None:
    (data / "broken.png").write_bytes(b"\x89PNG not really")
    Image.new("RGB", (4, 4)).save(data / "rgb.png")
    np.save(data / "big.npy", np.array([0.2, 3.0]))
    cases = [("broken.png", "damaged or cut off"), ("rgb.png", "one channel"), ("big.npy", "outside the declared")]
    for name, message in cases:
        code, _, err = run("threshold", str(data / name), "-o", str(data / "x.npy"), "--scale", "1")
        assert code == 2 and name in err and message in err and "Traceback" not in err
        assert not (data / "x.npy").exists()


def test_audit_json(data: Path) -> None:
    code, out, _ = run("audit", str(data / "seed.npy"), "--scale", "1", "--json")
    (report,) = json.loads(out)
    assert code == 0 and report["at_threshold"] == 1 and report["rules_disagree"] == 1
    differs = {i["idiom"]: i["differs"] for i in report["idioms"]}
    assert differs["tf.where(x > 0.5, 1, 0)"] == 1 and differs["tf.where(x >= 0.5, 1, 0)"] == 0


def test_sweep_json_text_and_plot(data: Path) -> None:
    code, out, _ = run("sweep", "--probs", str(data / "probs"), "--truth", str(data / "truth"), "--scale", "1",
                       "--json", "--exact", "--plot", str(data / "plot.png"))
    result = json.loads(out)
    assert code == 0 and result["metric"] == "dice" and 0 <= result["best_threshold"] <= 1
    assert result["best_score"] == max(r["dice"] for r in result["rows"])
    assert result["exact_best_score"] >= result["best_score"] - 1e-12
    assert Image.open(data / "plot.png").size == (720, 420)
    code, out, _ = run("sweep", "--probs", str(data / "probs"), "--truth", str(data / "truth"), "--scale", "1",
                       "--metric", "iou")
    assert code == 0 and "← best" in out and "Otsu's threshold" in out


def test_sweep_mismatches_exit_2(data: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "truth" / "case0.png")
    code, _, err = run("sweep", "--probs", str(data / "probs"), "--truth", str(data / "truth"), "--scale", "1")
    assert code == 2 and "case0.npy is 32×32 but its truth" in err and "case0.png is 8×8" in err
    code, _, err = run("sweep", "--probs", str(data / "seed.npy"), "--truth", str(data / "truth"), "--scale", "1")
    assert code == 2 and "no truth mask" in err


def test_float_tif_and_npz_inputs(data: Path) -> None:
    values = np.array([[0.2, 0.5], [0.7, 0.49]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(data / "probs.tif")
    np.savez(data / "bundle.npz", probs=values, other=values)
    code, _, _ = run("threshold", str(data / "probs.tif"), "-o", str(data / "tif.npy"), "--scale", "1")
    assert code == 0 and np.load(data / "tif.npy").tolist() == [[0, 1], [1, 0]]
    code, _, err = run("threshold", str(data / "bundle.npz"), "-o", str(data / "npz.npy"), "--scale", "1")
    assert code == 2 and "choose one as" in err
    code, _, _ = run("threshold", f"{data / 'bundle.npz'}:probs", "-o", str(data / "npz.npy"), "--scale", "1")
    assert code == 0 and np.load(data / "npz.npy").tolist() == [[0, 1], [1, 0]]
