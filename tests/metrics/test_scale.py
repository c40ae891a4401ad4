"""The scale detector on the arrays users actually feed metrics."""

from __future__ import annotations

import numpy as np
import pytest

from gpudoc.metrics import MetricInputError
from gpudoc.metrics.scale import array_scale, detect_scale


def test_dtype_decides_for_integer_images() -> None:
    assert array_scale(np.zeros((4, 4), np.uint8)).scale == "[0,255]"
    assert array_scale(np.full((4, 4), 4000, np.uint16)).data_range == 65535
    assert array_scale(np.ones((4, 4), bool)).scale == "{0,1}"


@pytest.mark.parametrize(("values", "scale", "data_range"), [
    ((0.0, 1.0), "[0,1]", 1.0),
    ((-1.0, 0.7), "[-1,1]", 2.0),
    ((0.0, 231.0), "[0,255]", 255.0),
    ((0.0, 1.03), "[0,1]", 1.0),
    ((-20.0, 900.0), "other", None),
])
def test_values_decide_for_floats(values: tuple[float, float], scale: str, data_range: float | None) -> None:
    found = array_scale(np.array(values, np.float32))
    assert (found.scale, found.data_range) == (scale, data_range)


def test_hazards_name_the_mistakes() -> None:
    unit = np.random.default_rng(0).random((8, 8))
    report = detect_scale(unit, (unit * 255).round().astype(np.uint8))
    assert report.scale == "[0,255]"
    assert any("prediction is on [0,1] but target on [0,255]" in h for h in report.hazards)
    assert any("uint8 wraps" in h or "wraps around" in h for h in report.hazards)
    floats = detect_scale(unit * 255, unit * 255)
    assert any("scikit-image infers data_range 1" in h for h in floats.hazards)
    tanh = detect_scale(unit * 2 - 1, unit * 2 - 1)
    assert tanh.data_range == 2 and any("data_range=2" in h for h in tanh.hazards)
    over = detect_scale(unit * 1.03, unit)
    assert any("goes outside [0,1]" in h for h in over.hazards)
    half = detect_scale(unit.astype(np.float16), unit.astype(np.float16))
    assert any("float16" in h for h in half.hazards)


def test_torch_tensors_and_bad_arrays() -> None:
    torch = pytest.importorskip("torch")
    assert array_scale(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)).scale == "[0,255]"
    assert array_scale(torch.rand(2, 3, 4, 4)).scale == "[0,1]"
    with pytest.raises(MetricInputError, match="NaN"):
        array_scale(np.array([0.0, np.nan]))
    with pytest.raises(MetricInputError, match="empty"):
        array_scale(np.zeros((0, 4)))
