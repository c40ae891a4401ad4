"""``gpudoc metrics-check``: lint logged image/regression metrics for scale errors, or compute
them from images at the declared range and compare with what a project reported. Every report
(text, --json, --junit, --github, the exit code) is made from one :class:`Report`."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gpudoc.cli.common import json_option
from gpudoc.errors import InputError
from gpudoc.metrics.logcheck import lint_logs as _lint
from gpudoc.metrics.logcheck import log_rules as _log_rules
from gpudoc.metrics.logcheck import read_records as _read

if TYPE_CHECKING:
    from gpudoc.metrics.logs import Record
    from gpudoc.metrics.report import Report

_RANGES = ["auto", "1", "2", "255", "65535"]
STACKS = ("Stacks: arrays (.npy, .npz) of H×W and H×W×C (C = 1, 3 or 4) are one image, N×H×W a stack of N, "
          "N×H×W×C a stack of N; channels-first N×1×H×W and N×3×H×W (as torch saves them) are read as "
          "N×H×W×1 and N×H×W×3 when the last axis is not 1, 3 or 4. An image file is one image.")


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


@click.command("metrics-check", epilog=STACKS)
@click.argument("logs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--range", "range_", type=click.Choice(_RANGES), default="auto", show_default=True,
              help="The data range the metrics should be at (255 for 8-bit images). auto declares none for logs "
              "(MSE < MAE points to [0,1]) and infers it from the target's dtype and values for images, saying "
              "which.")
@click.option("--pred", type=click.Path(path_type=Path), help="Predicted images: a file or a directory.")
@click.option("--target", type=click.Path(path_type=Path), help="Target images, matched to --pred by name.")
@click.option("--reported", type=click.Path(path_type=Path),
              help="With --pred/--target: a log or JSON object with the metrics the project reported.")
@click.option("--y-channel", is_flag=True, help="Compute on BT.601 luma, as super-resolution papers do.")
@click.option("--crop-border", type=click.IntRange(0), default=0, help="Pixels to drop at each border.")
@click.option("--ssim-preset", type=click.Choice(["wang", "skimage"]), default="wang", show_default=True,
              help="wang: 11-tap Gaussian, population covariance; skimage: scikit-image's 7x7 uniform window.")
@click.option("--ms-ssim", "with_ms_ssim", is_flag=True, help="Also compute MS-SSIM (images of 161 px or more).")
@click.option("--salvage", is_flag=True,
              help="Read the complete records of damaged or cut-off event files (a warning) instead of failing.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write a JUnit XML report here (- for stdout).")
@click.option("--github", is_flag=True, help="Print GitHub Actions annotations instead of the text report.")
@json_option
def metrics_check(logs: tuple[Path, ...], range_: str, pred: Path | None, target: Path | None,
                  reported: Path | None, y_channel: bool, crop_border: int, ssim_preset: str,
                  with_ms_ssim: bool, salvage: bool, junit: Path | None, github: bool, as_json: bool) -> int:
    """Check that image/regression metrics use the right scale.

    With LOG files (Keras stdout logs, CSVLogger files, TensorBoard event files or directories,
    JSON lines), check the logged numbers: MSE ≥ MAE², RMSE² = MSE, the peak PSNR and MSE imply,
    MSE < MAE (metrics on [0,1] data), SSIM within [-1, 1], plausible PSNR, no NaN.

    With --pred and --target, check that the images fit the range, compute MAE, MSE, RMSE, PSNR
    and SSIM at it, check those numbers as a log's, and, with --reported, name the scale error
    behind any reported number that differs (arrays: see Stacks below). SSIM needs images at
    least as large as its window (11 pixels; 7 with --ssim-preset skimage): a metric that
    cannot be computed is warned about, never left out silently.

    Every report (text, --json, --junit, --github) lists the same findings; the JUnit file has a
    test case per input file and rule (failed on an error, skipped where the rule cannot apply).
    Exit 0 with no error (warnings are reported), 1 on errors, 2 unreadable or mismatched inputs.
    """
    from gpudoc.metrics.report import github_lines, junit_xml, text_lines, to_json
    from gpudoc.output import atomic_file, emit_json, is_stdout

    declared = None if range_ == "auto" else float(range_)
    if (pred is None) != (target is None):
        raise click.UsageError("--pred and --target go together")
    if pred is None and not logs:
        raise click.UsageError("give LOG files to check, or --pred and --target images")
    if pred is not None and logs:
        raise click.UsageError("give either LOG files or --pred/--target, not both")
    if reported is not None and pred is None:
        raise click.UsageError("--reported compares with images: add --pred and --target")
    if as_json and github:
        raise click.UsageError("--json and --github both write to stdout: choose one")
    junit_out = junit is not None and is_stdout(junit)
    if junit_out and (as_json or github):
        raise click.UsageError("--junit - and --json/--github would both write to stdout: give --junit a file")
    report_name = "--json" if as_json else "--github" if github else "the report"
    _refuse_overwriting(junit, report_name, [*logs, *([reported] if reported else [])],
                        [p for p in (pred, target) if p is not None])
    extra: dict[str, Any]
    if pred is not None and target is not None:
        report, extra = _compute(pred, target, reported, declared, y_channel=y_channel, crop_border=crop_border,
                                 ssim_preset=ssim_preset, ms_ssim=with_ms_ssim, salvage=salvage)
    else:
        report, extra = _lint(list(logs), declared, salvage)
    if junit is not None:
        with atomic_file(junit, "wb") as out:
            out.write(junit_xml(report))
    printed = extra.pop("printed", {})
    if as_json:
        emit_json({**extra, **to_json(report)})
    elif github:
        for line in github_lines(report):
            click.echo(line)
    else:
        lines = text_lines(report)
        for name, value in printed.items():
            lines.insert(-1, f"{name:8} {value}")
        for line in lines:
            click.echo(line, err=junit_out)
    return report.exit_code


def _refuse_overwriting(junit: Path | None, report: str, logs: list[Path], images: list[Path]) -> None:
    """Stop before any work when --junit, or stdout redirected to a file, is one of the files the
    command reads: ``logs`` (a directory's event files) and ``images`` (a directory's images)."""
    from gpudoc.events.discover import is_event_file
    from gpudoc.imagefiles import refuse_inputs_as_outputs
    from gpudoc.metrics.io import SUFFIXES

    files: list[Path] = []
    for path in [*logs, *images]:
        try:
            if not path.is_dir():
                files.append(path)
            elif path in logs:
                files.extend(p for p in path.rglob("*") if is_event_file(p))
            else:
                files.extend(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        except OSError:  # an unreadable directory: reading it is refused later, naming it
            continue
    outputs: list[tuple[str, str | Path]] = [(report, "-")]
    if junit is not None:
        outputs.append(("--junit", junit))
    refuse_inputs_as_outputs(outputs, files)


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
    if min(h, w) < smallest:
        why = (f"the images are {size}; MS-SSIM's 5 scales of the {win}-pixel window need {smallest}×{smallest} "
               "or more")
        if options["ms_ssim"]:
            raise InputError(f"--ms-ssim: {pred}: {why}", "leave out --ms-ssim, or give larger images")
        if "ms_ssim" in values:
            skipped["ms_ssim"] = f"{why}; the reported MS-SSIM is not compared"
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


def _compute(pred: Path, target: Path, reported: Path | None, declared: float | None, salvage: bool,
             **options: Any) -> tuple[Report, dict[str, Any]]:
    """The images checked against the range, their metrics computed at it and checked like a
    log's, and the reported numbers (if any) compared with them and checked too."""
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
    records, damage = _read(reported, salvage) if reported is not None else ([], [])
    values, rounding, shown = _reported(records, reported) if reported is not None else ({}, {}, {})
    skipped = _applicable(pred, p, values, options)
    if declared is None:
        click.echo(f"gpudoc: note: --range auto: computing at {data.data_range:g}, {data.how}", err=True)
    for name, why in skipped.items():
        click.echo(f"gpudoc: warning: {name.upper().replace('_', '-')} not computed: {why}", err=True)
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
        reported_rules.update(_log_rules(reported, records, str(reported), checked, damage, findings))
        subjects.append(Subject(str(reported), "reported", reported_rules, {"records": len(records)}))
    range_text = f"{data.data_range:g} ({data.how})"
    report = Report({**DATA_RULES, **RULES, **REPORTED_RULES, **DAMAGE_RULE}, subjects, findings,
                    {"range": range_text})
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
