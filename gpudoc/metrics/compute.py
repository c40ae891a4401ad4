"""metrics-check on images: the predictions checked against the range, their metrics computed at
it and checked like a log's, and the numbers a project reported compared with them; one
:class:`Report` (shared by ``gpudoc metrics-check --pred --target`` and the TUI's Metrics screen)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpudoc.errors import InputError
from gpudoc.metrics.logcheck import log_rules, read_records

if TYPE_CHECKING:
    from gpudoc.metrics.logs import Record
    from gpudoc.metrics.report import Report

RANGES = ("auto", "1", "2", "255", "65535")


def _reported(records: list[Record], path: Path) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """The last value of each metric in a log's records (test, then val, then train split), its
    rounding and how it was printed."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        for name, value in record.values.items():
            latest.setdefault(record.split, {})[name] = value
    for split in ("test", "val", "train"):
        if latest.get(split):
            chosen = latest[split]
            return ({k: v.value for k, v in chosen.items()}, {k: v.rounding for k, v in chosen.items()},
                    {k: v.text for k, v in chosen.items() if v.text is not None})
    raise InputError(f"{path}: no metric found (mae, mse, rmse, psnr, ssim, ms_ssim)",
                     'give a log or a JSON object such as {"psnr": 31.2, "ssim": 0.91}')


def _dims(h: int, w: int) -> str:
    return f"{h}×{w}"


def _applicable(pred: Path, batch: Any, values: dict[str, float], options: dict[str, Any]) -> dict[str, str]:
    """Check the options against the images' size and channels (bad usage, naming the file and
    what to do); the metrics that cannot be computed on these images, with why. A reported
    MS-SSIM the images are too small for is dropped from ``values``."""
    from gpudoc.metrics.images import MS_SSIM_WEIGHTS, window

    _, height, width, channels = batch.shape
    crop, preset = options["crop_border"], options["ssim_preset"]
    if crop and 2 * crop >= min(height, width):
        raise InputError(f"--crop-border {crop}: {pred} holds {_dims(height, width)} images; cropping {crop} pixels "
                         "at each border leaves none", f"use --crop-border {(min(height, width) - 1) // 2} or less")
    if options["y_channel"] and channels != 3:
        raise InputError(f"--y-channel: {pred} holds {channels}-channel images; the Y channel needs RGB",
                         "leave out --y-channel")
    h, w = height - 2 * crop, width - 2 * crop
    size = f"{_dims(h, w)}" + (f" after --crop-border {crop}" if crop else "")
    win = window(preset).size
    smallest = (win - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1
    skipped: dict[str, str] = {}
    if min(h, w) < win:
        other = " or --ssim-preset skimage (7×7)" if preset == "wang" and min(h, w) >= 7 else ""
        skipped["ssim"] = (f"the images are {size}, smaller than SSIM's {win}×{win} window (--ssim-preset {preset}); "
                           f"give images of {win}×{win} or more{other}")
    if min(h, w) < smallest and (options["ms_ssim"] or "ms_ssim" in values):
        skimage = (window("skimage").size - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1
        other = f" (or --ssim-preset skimage: {skimage}×{skimage})" if preset == "wang" and min(h, w) >= skimage else ""
        skipped["ms_ssim"] = (f"the images are {size}, smaller than the {smallest}×{smallest} MS-SSIM needs (5 scales "
                              f"of its {win}×{win} window); give images of {smallest}×{smallest} or more{other}")
        if "ms_ssim" in values:
            skipped["ms_ssim"] += "; the reported MS-SSIM is not compared"
            del values["ms_ssim"]
    return skipped


def _printed(metrics: dict[str, Any], skipped: dict[str, str]) -> dict[str, str]:
    """Each computed metric for the text report: finite values to 6 digits, others named
    (inf is the PSNR of identical images; -inf and nan an overflow the report explains)."""
    out = {}
    for name, metric in metrics.items():
        value = float(metric.mean)
        if math.isfinite(value):
            out[name] = f"{value:.6g}"
        elif value == math.inf and name == "psnr" and metric.pooled == math.inf:
            out[name] = "inf (identical images)"
        elif value == math.inf and name == "psnr" and math.isfinite(metric.pooled):
            same = sum(v == math.inf for v in metric.per_image)
            out[name] = f"inf ({same} of {len(metric.per_image)} images identical; pooled {metric.pooled:.6g})"
        else:
            out[name] = f"{value} (not finite: see the non-finite error)"
    out.update((name, f"not computed: {why.split(';')[0]}") for name, why in skipped.items() if name not in out)
    return out


def check_images(pred: Path, target: Path, reported: Path | None, declared: float | None, salvage: bool,
                 say: Callable[[str], None] = lambda _: None, **options: Any) -> tuple[Report, dict[str, Any]]:
    """The images checked against the range, their metrics computed at it and checked like a
    log's, and the reported numbers (if any) compared with them and checked too. The report and
    what ``--json`` adds to it (its ``printed``: each metric as the text report shows it);
    ``say`` gets the notes and warnings (the range chosen by auto, a metric not computed)."""
    from gpudoc.metrics.check import DATA_RULES, REPORTABLE, REPORTED_RULES, check_data, compare_reported, \
        metrics_record, summary
    from gpudoc.metrics.images import MetricInputError, RangeWarning
    from gpudoc.metrics.io import load
    from gpudoc.metrics.lint import DAMAGE_RULE, RULES, check_records
    from gpudoc.metrics.report import Report, Subject

    names, p, t = load(pred, target)
    source = str(pred)
    try:
        data = check_data(p, t, declared, source)
    except MetricInputError as exc:
        raise InputError(f"{target}: --range auto: {exc.message}",
                         "pass --range (2 for [-1,1] data, 255 for 8-bit, 65535 for 16-bit)") from None
    records, damage = read_records(reported, salvage) if reported is not None else ([], [])
    values, rounding, shown = _reported(records, reported) if reported is not None else ({}, {}, {})
    skipped = _applicable(pred, p, values, options)
    options["ms_ssim"] = options["ms_ssim"] and "ms_ssim" not in skipped
    if declared is None:
        say(f"note: --range auto: computing at {data.data_range:g}, {data.how}")
    for name, why in skipped.items():
        say(f"warning: {name.upper().replace('_', '-')} not computed: {why}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RangeWarning)
            metrics, mismatches = compare_reported(p, t, values, data_range=data.data_range, rounding=rounding,
                                                   shown=shown, source=str(reported), **options)
    except MetricInputError as exc:
        raise InputError(f"{pred}: {exc.message}", exc.fix) from None
    checked: set[str] = set()
    fits = (data.scale.target.fits, data.scale.target.fits_range) if data.scale.target.fits_range else None
    findings = [*data.findings, *check_records([metrics_record(metrics, source)], data.data_range, checked, fits)]
    rules = {rule: None for rule in DATA_RULES}
    rules.update({r: None if r in checked else "not computed" for r in RULES})
    if "ssim" in skipped:
        rules["ssim-out-of-range"] = f"SSIM not computed: {skipped['ssim'].split(';')[0]}"
    subjects = [Subject(source, "images", rules, {"target": str(target), "images": int(p.shape[0])})]
    if reported is not None:
        compared = any(name in REPORTABLE for name in values)
        checked = set()
        # The reported log is one input, even an event directory of several runs.
        for record in records:
            record.source = str(reported)
        damage = [(str(reported), what) for _, what in damage]
        findings += [*mismatches, *check_records(records, data.data_range, checked)]
        reported_rules = {"reported-mismatch": None if compared else "no MAE, MSE, RMSE, PSNR or SSIM reported"}
        reported_rules.update(log_rules(reported, records, str(reported), checked, damage, findings))
        subjects.append(Subject(str(reported), "reported", reported_rules, {"records": len(records)}))
    range_text = f"{data.data_range:g} ({data.how})"
    # What --json's not_computed says, in JUnit's properties too (a metric not computed is no rule of its own).
    not_computed = "; ".join(f"{name.upper().replace('_', '-')}: {why.split(';')[0]}" for name, why in skipped.items())
    report = Report({**DATA_RULES, **RULES, **REPORTED_RULES, **DAMAGE_RULE}, subjects, findings,
                    {"range": range_text, **({"not_computed": not_computed} if skipped else {})})
    extra = {
        "data_range": data.data_range,
        "range_source": data.how,
        "images": names,
        "scale": {k: v for k, v in asdict(data.scale).items() if k != "hazards"},
        "metrics": summary(metrics),
        "pooled": summary(metrics, "pooled"),
        "not_finite": {name: str(float(m.mean)) for name, m in metrics.items() if not math.isfinite(m.mean)},
        "not_computed": skipped,
        "reported": values or None,
        "printed": _printed(metrics, skipped),
    }
    return report, extra


def report_lines(report: Report, printed: dict[str, str]) -> list[str]:
    """The text report, with the computed metrics (``printed``) above its summary line."""
    from gpudoc.metrics.report import text_lines

    lines = text_lines(report)
    for name, value in printed.items():
        lines.insert(-1, f"{name:8} {value}")
    return lines
