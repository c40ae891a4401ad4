"""A test a project adds to its suite so the image metrics it reports stay at the 8-bit scale.

Run it with ``python -m pytest examples/test_metric_scale.py``. ``evaluate`` stands for the
project's own evaluation code: here it has the classic bug (PSNR with peak 255 on [0,1] tensors),
and the second test shows what gpudoc reports about it.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudoc.metrics import ScaleError, assert_scale


def evaluate(pred: np.ndarray, target: np.ndarray, *, buggy: bool) -> dict[str, float]:
    """The project's evaluation: PSNR of [0,1] tensors, with the peak it (mis)declares."""
    unit_pred, unit_target = pred / 255.0, target / 255.0
    mse = float(np.mean((unit_pred - unit_target) ** 2))
    peak = 255.0 if buggy else 1.0
    return {"psnr": 10 * np.log10(peak**2 / mse)}


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    pred = np.clip(target + rng.normal(0, 8, target.shape), 0, 255).astype(np.uint8)
    return pred, target


def test_reported_psnr_is_at_the_8bit_scale(batch: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = batch
    reported = {"psnr": float(np.mean([evaluate(p, t, buggy=False)["psnr"] for p, t in zip(pred, target)]))}
    metrics = assert_scale(pred, target, 255, reported=reported)
    assert metrics["psnr"].mean == pytest.approx(reported["psnr"])


def test_the_peak_255_bug_is_caught(batch: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = batch
    reported = {"psnr": float(np.mean([evaluate(p, t, buggy=True)["psnr"] for p, t in zip(pred, target)]))}
    with pytest.raises(ScaleError, match="peak 255 on \\[0,1\\] data"):
        assert_scale(pred, target, 255, reported=reported)
    with pytest.raises(ScaleError, match="on \\[0,1\\], not the declared data_range 255"):
        assert_scale(pred / 255.0, target / 255.0, 255)
