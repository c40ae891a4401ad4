"""Invariants that logged metrics obey when computed at one, declared scale.

At one scale MAE ≤ RMSE (so MSE ≥ MAE²), RMSE² = MSE, and PSNR and MSE imply the peak
``R = sqrt(MSE · 10^(PSNR/10))``. MSE < MAE forces MAE < 1, which on 8-bit data is a PSNR
above 48.13 dB. Each broken invariant is a :class:`Finding` naming the rule, where, the numbers,
the likely cause and the fix; repeated findings of one rule in one series are folded into the
first, with a count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from gpudoc.metrics.logs import Record, Value, pow10

PEAK_255_DB = 20 * math.log10(255)
PEAKS = (1.0, 2.0, 255.0, 65535.0)

# Rule id -> (severity, what it checks).
RULES = {
    "non-finite": ("error", "metric values are finite"),
    "mse-below-mae-squared": ("error", "MSE ≥ MAE² (MAE ≤ RMSE at one scale)"),
    "rmse-mse-mismatch": ("error", "RMSE² = MSE"),
    "implied-range": ("error", "the peak implied by PSNR and MSE is the declared range"),
    "unit-scale": ("warning", "MSE ≥ MAE (MSE < MAE means MAE < 1: metrics of [0,1] data)"),
    "psnr-implausible": ("error", "0 dB ≤ PSNR ≤ 60 dB"),
    "ssim-out-of-range": ("error", "SSIM and MS-SSIM within [-1, 1]"),
}

# Rule id -> why it checks nothing in a log that never gives it the numbers it needs.
NOT_APPLICABLE = {
    "non-finite": "no metric logged",
    "mse-below-mae-squared": "no step logs MAE with MSE or RMSE",
    "rmse-mse-mismatch": "no step logs RMSE with MSE",
    "implied-range": "no step logs PSNR with MSE or RMSE at a known range (declare --range)",
    "unit-scale": "no step logs MAE with MSE or RMSE (or --range 1 declares [0,1] data)",
    "psnr-implausible": "no finite PSNR logged",
    "ssim-out-of-range": "no SSIM or MS-SSIM logged",
}

# Event files only: whether --salvage had to skip part of the file.
DAMAGE_RULE = {"log-damaged": ("warning", "the event file is whole: no damaged or cut-off record skipped")}


@dataclass
class Finding:
    """One broken invariant: the rule, how bad, where, the numbers, the cause and the fix."""

    rule: str
    severity: str
    where: str
    message: str
    cause: str
    fix: str
    file: str
    line: int | None = None
    step: int | None = None
    split: str | None = None
    count: int = 1


def _fmt(v: Value) -> str:
    """A value as it was logged (``0.7160``), or to 6 significant digits when not printed."""
    return v.text if v.text is not None else f"{v.value:.6g}"


def _non_finite(record: Record, bad: list[str]) -> Finding:
    """One finding for the values of a record that are not finite (a step counts once)."""
    values = record.values
    listed = ", ".join(f"{record.names[name]} is {_fmt(values[name])}" for name in bad)
    many = f" ({len(bad)} values)" if len(bad) > 1 else ""
    if record.split == "images":
        return _finding(record, "non-finite", f"computed {listed}{many}",
                        "the images' values overflow float64 in the metric (a squared difference or SSIM's "
                        "moments beyond 1.8e308: values above about 1e154)",
                        "convert the images to their data range before computing metrics")
    return _finding(record, "non-finite", f"{listed}{many}",
                    "a diverged run, an empty batch, or PSNR of identical images (infinite)",
                    "check the loss and the data for this step; guard divisions by zero")


def _finding(record: Record, rule: str, message: str, cause: str, fix: str, severity: str | None = None) -> Finding:
    return Finding(rule, severity or RULES[rule][0], record.where, message, cause, fix, record.source, record.line,
                   record.step, record.split)


def _nearest_peak(r: float) -> float:
    if not 0 < r < math.inf:  # an implied peak that under- or overflowed
        return min(PEAKS) if r <= 0 else max(PEAKS)
    return min(PEAKS, key=lambda p: abs(math.log(r / p)))


def _negative_psnr(data_range: float | None, shown: tuple[str, float] | None) -> tuple[str, str]:
    """Cause and fix of a negative PSNR (MSE above the peak²), from the range the data shows
    (``shown``: images' usual range and its size) or the declared one."""
    if shown is not None and data_range is not None and shown[1] > data_range:
        loss = 20 * math.log10(shown[1] / data_range)
        return (f"PSNR at peak {data_range:g} on {shown[0]} data: the peak is below the data's range "
                f"(-{loss:.2f} dB)", f"compute at the data's range: --range {shown[1]:g} (data_range={shown[1]:g})")
    fix = "compute PSNR at the data's true range (data_range=255 for 8-bit data, 65535 for 16-bit)"
    if data_range is not None:
        return (f"errors larger than the peak {data_range:g}: the data is not on a range of {data_range:g} "
                f"(e.g. 16-bit data at peak 255 loses {20 * math.log10(65535 / 255):.2f} dB)", fix)
    return f"the peak is smaller than the data's range: peak 1 on [0,255] data subtracts {PEAK_255_DB:.2f} dB", fix


def check_record(record: Record, data_range: float | None, checked: set[str] | None = None,
                 shown: tuple[str, float] | None = None) -> list[Finding]:
    """The findings of one record against a declared range (None: infer from the numbers);
    the rules that had numbers to check are added to ``checked``. ``shown`` is the usual
    range images' values fit (``("[0,65535]", 65535.0)``), when the record was computed from them."""
    v = record.values
    found: list[Finding] = []
    ran: set[str] = set() if checked is None else checked
    if v:
        ran.add("non-finite")
    bad = [name for name, x in v.items() if not math.isfinite(x.value)]
    if bad:
        found.append(_non_finite(record, bad))
    ok = {name: x for name, x in v.items() if math.isfinite(x.value)}
    mse = ok.get("mse")
    if mse is None and "rmse" in ok:
        r = ok["rmse"]
        mse = Value(r.value * r.value, 2 * abs(r.value) * r.rounding + r.rounding * r.rounding)
    mae, rmse, psnr = ok.get("mae"), ok.get("rmse"), ok.get("psnr")
    if mae is not None and mse is not None:
        ran.add("mse-below-mae-squared")
        if data_range != 1:
            ran.add("unit-scale")
    if mae is not None and mse is not None and mse.high < mae.low * mae.low * (1 - 1e-6) and mae.low > 0:
        found.append(_finding(
            record, "mse-below-mae-squared",
            f"MSE {_fmt(mse)} < MAE² {mae.value * mae.value:.6g} (MAE {_fmt(mae)}); impossible at one scale",
            "MSE and MAE were computed at different scales (e.g. MSE on [0,1], MAE on [0,255]) or on different data",
            "compute every metric from the same tensors at the declared range"))
    if rmse is not None and "mse" in ok:
        ran.add("rmse-mse-mismatch")
        m = ok["mse"]
        low, high = rmse.low * rmse.low, rmse.high * rmse.high
        tolerance = 0.01
        if low > m.high * (1 + tolerance):
            found.append(_finding(
                record, "rmse-mse-mismatch",
                f"RMSE² {rmse.value * rmse.value:.6g} > MSE {_fmt(m)} (RMSE {_fmt(rmse)})",
                "RMSE and MSE were computed at different scales", "compute both from the same tensors"))
        elif high < m.low * (1 - tolerance):
            found.append(_finding(
                record, "rmse-mse-mismatch",
                f"RMSE² {rmse.value * rmse.value:.6g} < MSE {_fmt(m)} by "
                f"{100 * (1 - rmse.value * rmse.value / m.value):.1f}%",
                "RMSE averaged over batches or images (a mean of square roots is below the root of the mean)",
                "report sqrt(mean MSE), e.g. Keras RootMeanSquaredError, or name it 'mean per-batch RMSE'",
                "warning"))
    unit = mae is not None and mse is not None and mse.high < mae.low
    if psnr is not None and mse is not None and mse.value > 0:
        implied = math.sqrt(mse.value * pow10(psnr.value / 10))
        if data_range is not None or unit:
            ran.add("implied-range")
        found.extend(_implied_range(record, implied, mse, psnr, data_range, unit))
    if psnr is not None:
        ran.add("psnr-implausible")
        if psnr.high < 0:
            found.append(_finding(record, "psnr-implausible", f"PSNR {_fmt(psnr)} dB is negative",
                                  *_negative_psnr(data_range, shown)))
        elif psnr.low > 60:
            found.append(_finding(
                record, "psnr-implausible", f"PSNR {_fmt(psnr)} dB is implausibly high for a learned model",
                f"peak 255 on [0,1] data adds {PEAK_255_DB:.2f} dB",
                "compute PSNR with data_range=1 on [0,1] data, or convert the data to [0,255] first",
                "warning"))
    for name in ("ssim", "ms_ssim"):
        x = ok.get(name)
        if x is not None:
            ran.add("ssim-out-of-range")
        if x is not None and (x.low > 1 or x.high < -1):
            found.append(_finding(
                record, "ssim-out-of-range", f"{record.names[name]} {_fmt(x)} is outside [-1, 1]",
                "SSIM with a data range that does not match the data (its constants are wrong) or a summed, "
                "not averaged, SSIM",
                "pass the data's true range (data_range=255 for 8-bit, 1 for [0,1]) and average the SSIM map"))
    if unit and not any(f.rule == "implied-range" for f in found) and data_range != 1:
        certain = psnr is not None and psnr.value < PEAK_255_DB
        evidence = f"MSE {_fmt(mse)} < MAE {_fmt(mae)}" if mse is not None and mae is not None else ""
        if certain and psnr is not None:
            evidence += f" with PSNR {_fmt(psnr)} dB < {PEAK_255_DB:.2f} dB"
        found.append(_finding(
            record, "unit-scale",
            f"{evidence}, so MAE < 1 (MAE² ≤ MSE < MAE): these metrics were most likely computed on [0,1] data"
            + ("" if data_range == 255 else " (declare --range 1 if that is intended)"),
            "the tensors were scaled to [0,1] before the metrics (MSE squares differences below 1 and shrinks them)",
            "convert prediction and target back to [0,255] before MAE/MSE/PSNR/SSIM, or report the range used",
            "error" if data_range == 255 else None))
    return found


def _implied_range(record: Record, implied: float, mse: Value, psnr: Value, data_range: float | None,
                   unit: bool) -> list[Finding]:
    nearest = _nearest_peak(implied)
    numbers = f"PSNR {_fmt(psnr)} dB with MSE {_fmt(mse)} implies a peak of {implied:.4g}"
    expected = data_range if data_range is not None else (1.0 if unit else None)
    against = "the declared range" if data_range is not None else "the range MSE < MAE points to"
    if unit and abs(implied - 1) <= 0.05:
        expected = 1.0  # consistent metrics of [0,1] data: the unit-scale rule tells the range
    if expected is None:
        return []
    ratio = implied / expected
    if abs(ratio - 1) <= 0.05 + 10 * psnr.rounding:
        return []
    decades = math.log10(ratio) if 0 < ratio < math.inf else math.nan
    if abs(decades - math.log10(255)) < 0.15:
        cause = f"PSNR used peak 255 on [0,1] data (+{PEAK_255_DB:.2f} dB)"
        fix = "use data_range=1 for [0,1] tensors, or convert them to [0,255] for the 8-bit convention"
    elif abs(decades + math.log10(255)) < 0.15:
        cause = f"PSNR used peak 1 on [0,255] data (-{PEAK_255_DB:.2f} dB)"
        fix = "use data_range=255 for 8-bit data"
    elif abs(ratio - 2) < 0.1:
        cause = "PSNR used peak 2 (scikit-image's old default for signed floats) on [0,1] data (+6.02 dB)"
        fix = "pass data_range=1 explicitly"
    elif ratio > 1:
        return [_finding(record, "implied-range", f"{numbers}, above {against} {expected:g}",
                         "PSNR averaged per image while MSE is pooled (a mean of logs exceeds the log of the mean), "
                         f"or a peak near {nearest:g}",
                         "log PSNR of the pooled MSE next to the mean per-image PSNR and name which is which",
                         "warning")]
    else:
        cause = f"PSNR and MSE were computed at different scales or on different data (nearest peak {nearest:g})"
        fix = "compute PSNR from the logged MSE's tensors at the declared range"
    return [_finding(record, "implied-range", f"{numbers}, not {against} {expected:g}", cause, fix)]


def fold(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (file, split, rule, severity): the first, with how many steps broke it
    (``count``: each record gives a rule at most one finding)."""
    folded: dict[tuple[str, str | None, str, str], Finding] = {}
    for f in findings:
        key = (f.file, f.split, f.rule, f.severity)
        if key in folded:
            folded[key].count += 1
        else:
            folded[key] = f
    return list(folded.values())


def check_records(records: Iterable[Record], data_range: float | None, checked: set[str] | None = None,
                  shown: tuple[str, float] | None = None) -> list[Finding]:
    """Folded findings of a log's records; the rules that had numbers to check are added to
    ``checked`` (``shown``: see :func:`check_record`)."""
    return fold(f for record in records for f in check_record(record, data_range, checked, shown))


def damage_finding(source: str, skipped: str) -> Finding:
    """A warning that ``--salvage`` skipped part of an event file (its other records were checked)."""
    return Finding("log-damaged", DAMAGE_RULE["log-damaged"][0], source, skipped,
                   "the file was cut off (a killed or still running writer) or damaged on disk",
                   "check the complete file once training has finished, or accept the gap", source)
