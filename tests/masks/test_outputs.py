"""`gpudoc mask` never writes over what it reads, and refuses clashing outputs before any work."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from gpudoc.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["mask", *args])
    return result.exit_code, result.stdout, result.stderr


def probabilities(path: Path, count: int = 3) -> bytes:
    np.save(path, np.random.default_rng(2).random((count, 16, 16)))
    return path.read_bytes()


def test_threshold_refuses_to_write_its_own_input(tmp_path: Path) -> None:
    # `mask threshold sself.npy -o sself.npy --force` replaced the probabilities with the mask.
    source = tmp_path / "sself.npy"
    kept = probabilities(source)
    (tmp_path / "link.npy").symlink_to(source)
    os.link(source, tmp_path / "hard.npy")
    for output in (source, tmp_path / "link.npy", tmp_path / "hard.npy"):
        code, out, err = run("threshold", str(source), "-o", str(output), "--force", "--scale", "1")
        assert code == 2 and out == ""
        assert f"-o {output}: the same file as the input {source}; writing it would destroy what is read" in err
    # A directory of inputs thresholded into itself, one .npy per input: the same files.
    code, _, err = run("threshold", str(tmp_path), "-o", str(tmp_path), "--format", "npy", "--force", "--scale", "1")
    assert code == 2 and "the same file as the input" in err
    assert source.read_bytes() == kept and (tmp_path / "link.npy").is_symlink()
    code, _, _ = run("threshold", str(source), "-o", str(tmp_path / "mask.npy"), "--scale", "1")
    assert code == 0 and np.load(tmp_path / "mask.npy").shape == (3, 16, 16)


def test_sweep_refuses_outputs_that_are_inputs_or_each_other(tmp_path: Path) -> None:
    probs, truth = tmp_path / "stack.npy", tmp_path / "truth.npy"
    probabilities(probs)
    np.save(truth, (np.random.default_rng(3).random((3, 16, 16)) > 0.5).astype(np.uint8))
    kept = truth.read_bytes()
    code, out, err = run("sweep", "--probs", str(probs), "--truth", str(truth), "--scale", "1", "--csv", str(truth),
                         "--force")
    assert code == 2 and out == "" and f"--csv {truth}: the same file as the input {truth}" in err
    assert truth.read_bytes() == kept
    same = tmp_path / "both.png"
    code, out, err = run("sweep", "--probs", str(probs), "--truth", str(truth), "--scale", "1", "--plot", str(same),
                         "--csv", str(same))
    assert code == 2 and out == "" and "name the same file" in err and not same.exists()
    code, out, err = run("sweep", "--probs", str(probs), "--truth", str(truth), "--scale", "1", "--plot", "-",
                         "--csv", "-")
    assert code == 2 and out == "" and "--plot - and --csv - would both write to stdout" in err
    code, out, _ = run("sweep", "--probs", str(probs), "--truth", str(truth), "--scale", "1", "--csv", "/dev/null",
                       "--plot", "/dev/null")
    assert code == 0 and "best dice" in out, "a device twice is no clash"
