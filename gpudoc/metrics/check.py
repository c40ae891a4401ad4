"""Compare reported metrics with values recomputed at the declared range, naming the scale
error when they differ; :func:`assert_scale` for test suites."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gpudoc.metrics.images import Metric, image_metrics
from gpudoc.metrics.lint import Finding
from gpudoc.metrics.scale import detect_scale

REPORTABLE = ("mae", "mse", "rmse", "psnr", "ssim", "ms_ssim")


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
    ms_ssim: bool = False,
    **options: Any,
) -> tuple[dict[str, Metric], list[Finding]]:
    """The metrics of ``pred``/``target`` at ``data_range`` and a finding for each reported
    value (means over images) that disagrees, with the scale error that explains it."""
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
            f"reported {name} {value:.6g} but {c:.6g} at data_range {data_range:g}",
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
    report = detect_scale(pred, target)
    problems = [h for h in report.hazards if "convert one" in h or "goes outside" in h]
    for side in (report.pred, report.target):
        if side.data_range is not None and not math.isclose(side.data_range, data_range) and side.scale != "{0,1}":
            problems.append(f"values in [{side.low:g}, {side.high:g}] ({side.dtype}) are on {side.scale}, "
                            f"not the declared data_range {data_range:g}")
    if problems:
        raise ScaleError("; ".join(dict.fromkeys(problems)))
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
