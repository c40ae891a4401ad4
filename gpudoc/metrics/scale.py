"""Which range image data lives in, and the dtype hazards that make metrics silently wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpudoc.metrics.images import MetricInputError, is_tensorflow, is_torch

SLACK = 0.05


@dataclass(frozen=True)
class ArrayScale:
    """One array: its values, its dtype and the range they fit."""

    scale: str
    data_range: float | None
    low: float
    high: float
    dtype: str
    integer_valued: bool
    fits: str = "other"
    fits_range: float | None = None

    @property
    def describe(self) -> str:
        """``values in [0, 0.998] (float64)``."""
        return f"values in [{self.low:g}, {self.high:g}] ({self.dtype})"


@dataclass(frozen=True)
class ScaleReport:
    """The range of a prediction/target pair (from the target), and what to watch out for."""

    scale: str
    data_range: float | None
    pred: ArrayScale
    target: ArrayScale
    hazards: tuple[str, ...]


def _stats(x: Any) -> tuple[np.ndarray, str]:
    if is_torch(x):
        dtype = str(x.dtype).removeprefix("torch.")
        x = x.detach()
        return np.array([float(x.min()), float(x.max()), float((x == x.round()).all()) if x.is_floating_point()
                         else 1.0]), dtype
    array = np.asarray(x.numpy() if is_tensorflow(x) else x)
    if array.size == 0:
        raise MetricInputError("an empty array has no scale")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise MetricInputError("the array contains NaN or infinity")
    integer = array.dtype.kind in "biu" or bool(np.all(array == np.round(array)))
    return np.array([float(array.min()), float(array.max()), float(integer)]), str(array.dtype)


# The usual ranges, smallest first: name, low end, high end, overshoot allowed (network outputs).
USUAL_RANGES = (("[0,1]", 0.0, 1.0, SLACK), ("[-1,1]", -1.0, 1.0, 2 * SLACK),
                ("[0,255]", 0.0, 255.0, 0.0), ("[0,65535]", 0.0, 65535.0, 0.0))


def _fit(low: float, high: float) -> tuple[str, float | None]:
    for scale, lo, hi, slack in USUAL_RANGES:
        if lo - slack <= low and high <= hi + slack:
            return scale, hi - lo
    return "other", None


def array_scale(x: Any) -> ArrayScale:
    """The range ``x`` fits: dtype first (uint8 → [0,255], uint16 → [0,65535], bool → {0,1}),
    then its values ([0,1] and [-1,1] allowing 5% of the range beyond their ends — network
    outputs overshoot — then [0,255] and [0,65535]). ``fits`` is the smallest of those ranges
    the values fit, whatever the dtype."""
    (low, high, integer), dtype = _stats(x)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise MetricInputError("the array contains NaN or infinity")
    fits, fits_range = _fit(low, high)
    fixed = {"uint8": ("[0,255]", 255.0), "uint16": ("[0,65535]", 65535.0), "bool": ("{0,1}", 1.0)}
    if dtype in fixed:
        scale, data_range = fixed[dtype]
        return ArrayScale(scale, data_range, low, high, dtype, True, fits, fits_range)
    return ArrayScale(fits, fits_range, low, high, dtype, bool(integer), fits, fits_range)


def detect_scale(pred: Any, target: Any) -> ScaleReport:
    """The scale of a prediction/target pair, with the hazards a metric computation meets."""
    p, t = array_scale(pred), array_scale(target)
    hazards: list[str] = []
    for name, a in (("prediction", p), ("target", t)):
        if a.dtype.startswith(("uint", "int")):
            hazards.append(f"{name} is {a.dtype}: subtracting in {a.dtype} wraps around (10 - 250 = 16 in uint8); "
                           "cast to float first")
        if a.dtype in ("float16", "bfloat16"):
            hazards.append(f"{name} is {a.dtype}: squared errors lose precision; compute metrics in float32 or float64")
        if a.scale == "[0,255]" and a.dtype.startswith("float"):
            hazards.append(f"{name} holds 8-bit values in {a.dtype}: scikit-image infers data_range 1 for floats "
                           "in [0,1] only and refuses others; declare data_range=255")
        if a.scale == "[-1,1]":
            hazards.append(f"{name} is on [-1,1] (tanh output?): use data_range=2, or map with (x + 1) / 2 to [0,1]")
        if a.data_range is not None and a.scale != "{0,1}":
            lo = -1.0 if a.scale == "[-1,1]" else 0.0
            if a.low < lo or a.high > lo + a.data_range:
                hazards.append(f"{name} goes outside {a.scale} (min {a.low:g}, max {a.high:g}): clip it before "
                               "computing PSNR/SSIM")
        if a.scale == "other":
            hazards.append(f"{name} values in [{a.low:g}, {a.high:g}] fit no usual image range: declare data_range")
    if p.scale != t.scale and "other" not in (p.scale, t.scale):
        hazards.append(f"prediction is on {p.scale} but target on {t.scale}: convert one before comparing")
    if t.scale == "[0,255]" and t.high <= 1.0 + SLACK:
        hazards.append("target values are all ≤ 1 although its dtype is 8-bit: is it a mask or already divided?")
    return ScaleReport(t.scale, t.data_range, p, t, tuple(hazards))
