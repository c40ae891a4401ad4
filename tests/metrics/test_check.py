"""assert_scale and compare_reported: the API a project's tests call."""

from __future__ import annotations

import numpy as np
import pytest

from gpudoc.metrics import ScaleError, assert_scale, compare_reported, image_metrics
from gpudoc.metrics.lint import PEAK_255_DB


def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    target = rng.integers(0, 256, (2, 32, 32)).astype(np.uint8)
    return np.clip(target + rng.normal(0, 10, target.shape), 0, 255).astype(np.uint8), target


def test_matching_numbers_pass_and_return_the_metrics() -> None:
    pred, target = pair()
    truth = image_metrics(pred, target, data_range=255)
    reported = {name: truth[name].mean for name in ("mae", "mse", "rmse", "psnr", "ssim")}
    assert assert_scale(pred, target, 255, reported=reported)["psnr"].mean == reported["psnr"]


@pytest.mark.parametrize(("name", "transform", "words"), [
    ("psnr", lambda m: m + PEAK_255_DB, "computed with peak 255 on [0,1] data"),
    ("psnr", lambda m: m + 20 * np.log10(2), "peak 2 on [0,1] data"),
    ("psnr", lambda m: m - PEAK_255_DB, "peak 1 on [0,255] data"),
    ("mse", lambda m: m / 255**2, "computed on [0,1] data"),
    ("mae", lambda m: m / 255, "computed on [0,1] data"),
])
def test_scale_errors_are_named(name: str, transform: object, words: str) -> None:
    pred, target = pair()
    value = transform(image_metrics(pred, target, data_range=255)[name].mean)  # type: ignore[operator]
    _, findings = compare_reported(pred, target, {name: value}, data_range=255)
    assert len(findings) == 1 and findings[0].severity == "error" and words in findings[0].cause


def test_pooled_psnr_is_a_convention_not_a_scale_error() -> None:
    pred, target = pair()
    pred[1] = target[1] // 2
    metrics = image_metrics(pred, target, data_range=255)
    _, findings = compare_reported(pred, target, {"psnr": metrics["psnr"].pooled}, data_range=255)
    assert [(f.severity, "pooled MSE" in f.cause) for f in findings] == [("warning", True)]


def test_data_on_another_scale_fails_before_any_metric() -> None:
    pred, target = pair()
    with pytest.raises(ScaleError, match=r"prediction values in \[0, 1\] \(float64\) are on \[0,1\], not the "
                       r"declared data_range 255: use range 1"):
        assert_scale(pred / 255.0, target, 255)
    with pytest.raises(ScaleError, match=r"values in \[0, 255\] \(uint8\) go beyond \[0,1\] \(the declared "
                       r"data_range 1\)"):
        assert_scale(pred, target, 1)
