"""Check that images fit the range their metrics are computed at, compare reported metrics
with values recomputed at that range, naming the scale error when they differ;
:func:`assert_scale` for test suites."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpudoc.metrics.images import Metric, image_metrics, infer_range
from gpudoc.metrics.lint import Finding
from gpudoc.metrics.logs import Record, Value
from gpudoc.metrics.scale import SLACK, ScaleReport, detect_scale

REPORTABLE = ("mae", "mse", "rmse", "psnr", "ssim", "ms_ssim")

# Rule id -> (severity, what it checks), for images (compute mode) and reported numbers.
DATA_RULES = {
    "data-range": ("error", "prediction and target values fit the range the metrics use"),
    "data-dtype": ("warning", "the images' dtype agrees with their values and keeps precision"),
}
REPORTED_RULES = {"reported-mismatch": ("error", "reported metrics equal the recomputed ones")}


@dataclass
class DataCheck:
    """The range metrics are computed at, how it was chosen, and what the images say about it."""

    data_range: float
    how: str
    scale: ScaleReport
    findings: list[Finding] = field(default_factory=list)


def check_data(pred: Any, target: Any, declared: float | None, source: str = "images") -> DataCheck:
    """The range to compute at (``declared``, or inferred from the target by
    :func:`infer_range`) and a finding for each side whose values contradict it: values
    beyond it (error; within 5% of [0,1] or [-1,1], a warning to clip), or values that fit a
    smaller usual range — [0,1] data under 255 (error) — and, for an inferred range, float
    data holding 8-bit values (warning)."""
    scale = detect_scale(pred, target)
    p, t = scale.pred, scale.target
    if declared is None:
        data_range = infer_range(target, getattr(target, "dtype", None))
        basis = f"its {t.dtype} dtype" if t.dtype in ("uint8", "uint16") else f"its {t.describe}"
        how = f"inferred from the target: {basis}"
        said = beyond = f", but --range auto took {data_range:g} from the target's {basis.removeprefix('its ')}"
    else:
        data_range, how = declared, "declared"
        said, beyond = f", not the declared data_range {declared:g}", f" (the declared data_range {declared:g})"
    lo = -1.0 if data_range == 2 else 0.0
    hi = lo + data_range
    expected = f"[{lo:g},{hi:g}]"
    slack = SLACK * data_range if data_range <= 2 else 0.0
    found: list[Finding] = []

    def add(rule: str, severity: str, message: str, cause: str, fix: str) -> None:
        found.append(Finding(rule, severity, source, message, cause, fix, source))

    for name, a in (("prediction", p), ("target", t)):
        elsewhere = f"use range {a.fits_range:g} (--range {a.fits_range:g}) for {a.fits} data, or " \
            if a.fits_range is not None else ""
        if a.low < lo - slack or a.high > hi + slack:
            add("data-range", "error", f"{name} {a.describe} go beyond {expected}{beyond}",
                "the images are not at the range the metrics use: PSNR's peak and SSIM's constants are wrong",
                f"{elsewhere}convert the images to {expected}")
        elif a.fits_range is not None and a.fits_range < data_range and a.low < a.high:
            gain = 20 * math.log10(data_range / a.fits_range)
            add("data-range", "error", f"{name} {a.describe} are on {a.fits}{said}",
                f"metrics at peak {data_range:g} on {a.fits} data: PSNR gains {gain:.2f} dB and SSIM nears 1",
                f"{elsewhere}save the images at {expected}")
        elif a.low < lo or a.high > hi:
            add("data-range", "warning", f"{name} {a.describe} go slightly outside {expected}",
                "a network output that overshoots its range (no final sigmoid or clamp)",
                f"clip to {expected} before computing PSNR/SSIM")
        if a.dtype in ("float16", "bfloat16"):
            add("data-dtype", "warning", f"{name} is {a.dtype}", "squared errors lose precision in half floats",
                "compute metrics in float32 or float64 (gpudoc computes in float64)")
        if declared is None and a.dtype.startswith("float") and a.fits == "[0,255]":
            add("data-dtype", "warning", f"{name} {a.describe} hold 8-bit values in a float dtype; "
                f"--range auto used {data_range:g}",
                "scikit-image infers data_range 1 for floats in [0,1] only and refuses others",
                "declare --range 255 (data_range=255) so no tool has to guess")
    return DataCheck(data_range, how, scale, found)


def metrics_record(metrics: Mapping[str, Metric], source: str) -> Record:
    """The computed metrics as a log record (pooled MAE, MSE, RMSE, PSNR; mean SSIM), so the
    log rules check them as they check logged numbers — a value that overflowed included (the
    ``non-finite`` rule reports it); only the infinite PSNR of identical images is left out."""
    record = Record(source, "images", None)
    for name, metric in metrics.items():
        value = float(metric.mean if name in ("ssim", "ms_ssim") else metric.pooled)
        if name == "psnr" and value == math.inf and metrics["mse"].pooled == 0:
            continue
        record.values[name] = Value(value)
        record.names[name] = name
    return record


class ScaleError(AssertionError):
    """Data or reported metrics that do not match the declared range."""


def _close(name: str, reported: float, computed: float, rounding: float) -> bool:
    if name == "psnr":
        return abs(reported - computed) <= rounding + 0.01
    return abs(reported - computed) <= rounding + 1e-4 * max(abs(computed), 1e-12 if name != "ssim" else 1.0)


def _explanations(data_range: float) -> list[tuple[str, float]]:
    """Readings of a mismatch: the peak the project used, as a factor on the declared range."""
    readings = [("computed with peak 255 on [0,1] data", 255.0),
                ("computed with peak 2 on [0,1] data (scikit-image's old default for floats)", 2.0)]
    if data_range != 1:
        readings.append((f"computed with peak 1 on [0,{data_range:g}] data", 1 / data_range))
    return readings


def compare_reported(
    pred: Any,
    target: Any,
    reported: Mapping[str, float],
    *,
    data_range: float,
    source: str = "reported",
    rounding: Mapping[str, float] | None = None,
    shown: Mapping[str, str] | None = None,
    ms_ssim: bool = False,
    **options: Any,
) -> tuple[dict[str, Metric], list[Finding]]:
    """The metrics of ``pred``/``target`` at ``data_range`` and a finding for each reported
    value (means over images) that disagrees, with the scale error that explains it
    (``shown``: the reported values as they were printed, for the messages)."""
    ms_ssim = ms_ssim or "ms_ssim" in reported
    computed = image_metrics(pred, target, data_range=data_range, ms_ssim=ms_ssim, **options)
    findings: list[Finding] = []
    rounding = rounding or {}
    cache: dict[float, dict[str, Metric]] = {}

    def at(factor: float) -> dict[str, Metric]:
        if factor not in cache:
            cache[factor] = image_metrics(pred, target, data_range=data_range * factor, ms_ssim=ms_ssim, **options)
        return cache[factor]

    for name, value in reported.items():
        if name not in REPORTABLE or name not in computed:
            continue
        c = computed[name].mean
        r = rounding.get(name, 0.0)
        if _close(name, value, c, r):
            continue
        reason = _explain(name, value, computed, data_range, r, at)
        findings.append(Finding(
            "reported-mismatch", "error" if reason[1] else "warning", source,
            f"reported {name} {(shown or {}).get(name) or f'{value:.6g}'} but {c:.6g} at data_range {data_range:g}",
            reason[0], "compute the metric at the data's true range from float tensors", source))
    return computed, findings


def _explain(name: str, value: float, computed: dict[str, Metric], data_range: float, rounding: float,
             at: Callable[[float], dict[str, Metric]]) -> tuple[str, bool]:
    """Why a reported value differs, and whether that is a scale error (True) or a convention."""
    c = computed[name].mean
    if name == "psnr":
        delta = value - c
        for label, factor in _explanations(data_range):
            if abs(delta - 20 * math.log10(factor)) <= rounding + 0.05:
                sign = "above" if delta > 0 else "below"
                return f"reported PSNR is {abs(delta):.2f} dB {sign} the {data_range:g}-peak value: {label}", True
        if _close(name, value, computed[name].pooled, rounding):
            return "the reported value is PSNR of the pooled MSE, not the mean of per-image PSNRs", False
    elif name in ("mse", "mae", "rmse"):
        power = 2 if name == "mse" else 1
        for label, factor in ((f"computed on [0,1] data, not [0,{data_range:g}]", 1 / data_range),
                              (f"computed on data scaled by {data_range:g} twice", data_range)):
            if _close(name, value, c * factor**power, rounding):
                times = f"{factor**power:.6g} times the value at {data_range:g}"
                return f"reported {name.upper()} is {times}: {label}", True
    else:
        for label, factor in _explanations(data_range):
            if _close(name, value, at(factor)[name].mean, rounding):
                return f"reported {name.upper()} matches data_range {data_range * factor:g}: {label}", True
    return "no scale error explains the difference (other data, crop, colour space or window?)", False


def assert_scale(
    pred: Any,
    target: Any,
    data_range: float,
    *,
    reported: Mapping[str, float] | None = None,
    **options: Any,
) -> dict[str, Metric]:
    """Assert that ``pred`` and ``target`` live on ``[0, data_range]`` (or ``[-1, 1]`` for 2)
    and, with ``reported``, that those numbers are what the data gives at that range. Returns
    the metrics; raises :class:`ScaleError` naming the problem otherwise.

    >>> assert_scale(pred_uint8, target_uint8, 255, reported={"psnr": 31.2, "ssim": 0.91})
    """
    problems = [f"{f.message}: {f.fix}" for f in check_data(pred, target, data_range).findings
                if f.rule == "data-range"]
    if problems:
        raise ScaleError("; ".join(problems))
    if reported is None:
        return image_metrics(pred, target, data_range=data_range, **options)
    metrics, findings = compare_reported(pred, target, reported, data_range=data_range, **options)
    if findings:
        raise ScaleError("; ".join(f"{f.message}: {f.cause}" for f in findings))
    return metrics


def summary(metrics: Mapping[str, Metric], reduction: str = "mean") -> dict[str, float | None]:
    """Means over images (or the ``pooled`` values), as plain numbers; None for the infinite
    PSNR of identical images."""
    values = {name: float(getattr(m, reduction)) for name, m in metrics.items()}
    return {name: (v if np.isfinite(v) else None) for name, v in values.items()}
