"""``gpudoc metrics-check``: lint logged image/regression metrics for scale errors, or compute
them from images at the declared range and compare with what a project reported."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import click

from gpudoc.cli.common import json_option
from gpudoc.errors import ExitCode, InputError

_RANGES = ["auto", "1", "2", "255", "65535"]


def _github(findings: list[Any]) -> None:
    def escape(text: str, prop: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if prop else text

    for f in findings:
        level = "error" if f.severity == "error" else "warning"
        props = f"file={escape(f.file, True)}" + (f",line={f.line}" if f.line else "")
        props += f",title={escape('gpudoc ' + f.rule, True)}"
        click.echo(f"::{level} {props}::{escape(f.message + ' — fix: ' + f.fix)}")


def _junit(dest: Path, checked: list[str], findings: list[Any], rules: dict[str, tuple[str, str]]) -> None:
    """One test case per (file, rule): a failure when the file broke the rule."""
    from gpudoc.output import atomic_file

    suite = ElementTree.Element("testsuite", name="gpudoc metrics-check")
    failures = 0
    for source in checked:
        for rule, (_, what) in rules.items():
            case = ElementTree.SubElement(suite, "testcase", classname=source, name=f"{rule}: {what}")
            hits = [f for f in findings if f.file == source and f.rule == rule]
            if hits:
                failures += 1
                text = "\n".join(f"{f.where}: {f.message} (x{f.count})\ncause: {f.cause}\nfix: {f.fix}" for f in hits)
                failure = ElementTree.SubElement(case, "failure", type=hits[0].severity, message=hits[0].message)
                failure.text = text
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    with atomic_file(dest, "wb") as out:
        ElementTree.ElementTree(suite).write(out, encoding="utf-8", xml_declaration=True)


def _print_findings(findings: list[Any]) -> None:
    for f in findings:
        times = f" ({f.count} steps)" if f.count > 1 else ""
        click.echo(f"{f.where}: {f.severity} [{f.rule}] {f.message}{times}")
        click.echo(f"    cause: {f.cause}")
        click.echo(f"    fix: {f.fix}")


def _reported(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The last value of each metric in a log (test, then val, then train split) and its rounding."""
    from gpudoc.metrics.logs import read_log

    latest: dict[str, dict[str, Any]] = {}
    for record in read_log(path):
        for name, value in record.values.items():
            latest.setdefault(record.split, {})[name] = value
    for split in ("test", "val", "train"):
        if latest.get(split):
            chosen = latest[split]
            return {k: v.value for k, v in chosen.items()}, {k: v.rounding for k, v in chosen.items()}
    raise InputError(f"{path}: no metric found (mae, mse, rmse, psnr, ssim, ms_ssim)",
                     'give a log or a JSON object such as {"psnr": 31.2, "ssim": 0.91}')


@click.command("metrics-check")
@click.argument("logs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--range", "range_", type=click.Choice(_RANGES), default="auto", show_default=True,
              help="The data range the metrics should be at (255 for 8-bit images); auto infers it from the "
              "numbers (logs) or the dtype (images) and says so.")
@click.option("--pred", type=click.Path(path_type=Path), help="Predicted images: a file or a directory.")
@click.option("--target", type=click.Path(path_type=Path), help="Target images, matched to --pred by name.")
@click.option("--reported", type=click.Path(path_type=Path),
              help="With --pred/--target: a log or JSON object with the metrics the project reported.")
@click.option("--y-channel", is_flag=True, help="Compute on BT.601 luma, as super-resolution papers do.")
@click.option("--crop-border", type=click.IntRange(0), default=0, help="Pixels to drop at each border.")
@click.option("--ssim-preset", type=click.Choice(["wang", "skimage"]), default="wang", show_default=True,
              help="wang: 11-tap Gaussian, population covariance; skimage: scikit-image's 7x7 uniform window.")
@click.option("--ms-ssim", "with_ms_ssim", is_flag=True, help="Also compute MS-SSIM (images of 161 px or more).")
@click.option("--junit", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@click.option("--github", is_flag=True, help="Print GitHub Actions annotations instead of the text report.")
@json_option
def metrics_check(logs: tuple[Path, ...], range_: str, pred: Path | None, target: Path | None,
                  reported: Path | None, y_channel: bool, crop_border: int, ssim_preset: str,
                  with_ms_ssim: bool, junit: Path | None, github: bool, as_json: bool) -> int:
    """Check that image/regression metrics use the right scale.

    With LOG files (Keras stdout logs, CSVLogger files, TensorBoard event files or directories,
    JSON lines), check the logged numbers: MSE ≥ MAE², RMSE² = MSE, the peak PSNR and MSE imply,
    MSE < MAE (metrics on [0,1] data), SSIM within [-1, 1], plausible PSNR, no NaN.

    With --pred and --target, compute MAE, MSE, RMSE, PSNR and SSIM at the declared range and,
    with --reported, name the scale error behind any reported number that differs.

    Exit 0 clean, 1 findings, 2 unreadable or mismatched inputs.
    """
    from gpudoc.metrics.lint import RULES
    from gpudoc.output import emit_json

    declared = None if range_ == "auto" else float(range_)
    if (pred is None) != (target is None):
        raise click.UsageError("--pred and --target go together")
    if pred is None and not logs:
        raise click.UsageError("give LOG files to check, or --pred and --target images")
    if pred is not None and logs:
        raise click.UsageError("give either LOG files or --pred/--target, not both")
    if reported is not None and pred is None:
        raise click.UsageError("--reported compares with images: add --pred and --target")
    report: dict[str, Any]
    if pred is not None and target is not None:
        report, findings, checked = _compute(pred, target, reported, declared, y_channel=y_channel,
                                             crop_border=crop_border, ssim_preset=ssim_preset,
                                             ms_ssim=with_ms_ssim)
        rules = {"reported-mismatch": ("error", "reported metrics equal the recomputed ones")}
    else:
        report, findings, checked = _lint(list(logs), declared)
        rules = RULES
    if junit is not None:
        _junit(junit, checked, findings, rules)
    if as_json:
        emit_json({**report, "findings": findings})
    elif github:
        _github(findings)
    else:
        _print_findings(findings)
        if "metrics" in report:
            for name, value in report["metrics"].items():
                click.echo(f"{name:8} {value:.6g}" if value is not None else f"{name:8} inf")
        errors = sum(f.severity == "error" for f in findings)
        click.echo(f"{len(checked)} checked: {errors} error(s), {len(findings) - errors} warning(s)")
    return ExitCode.FINDINGS if findings else ExitCode.OK


def _lint(logs: list[Path], declared: float | None) -> tuple[dict[str, Any], list[Any], list[str]]:
    from gpudoc.metrics.lint import check_records
    from gpudoc.metrics.logs import read_log

    findings, files = [], []
    for path in logs:
        records = read_log(path)
        if not records:
            raise InputError(f"{path}: no metric values found (mae, mse, rmse, psnr, ssim, loss…)",
                             "is this a Keras log, a CSVLogger file, event files or JSON lines?")
        findings.extend(check_records(records, declared))
        names = sorted({n for r in records for n in r.values})
        files.append({"file": str(path), "records": len(records), "metrics": names})
    return {"range": declared, "files": files}, findings, [str(p) for p in logs]


def _compute(pred: Path, target: Path, reported: Path | None, declared: float | None,
             **options: Any) -> tuple[dict[str, Any], list[Any], list[str]]:
    from gpudoc.metrics.check import compare_reported, summary
    from gpudoc.metrics.images import RangeWarning, infer_range
    from gpudoc.metrics.io import load
    from gpudoc.metrics.scale import detect_scale

    names, p, t = load(pred, target)
    scale = detect_scale(p, t)
    for hazard in scale.hazards:
        if "wraps around" not in hazard:
            click.echo(f"gpudoc: warning: {hazard}", err=True)
    data_range = declared
    if data_range is None:
        data_range = infer_range(t, t.dtype)
        click.echo(f"gpudoc: warning: --range auto: using {data_range:g} (from the target's dtype and values)",
                   err=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RangeWarning)
        values, rounding = _reported(reported) if reported is not None else ({}, {})
        metrics, findings = compare_reported(p, t, values, data_range=data_range, rounding=rounding,
                                             source=str(reported or pred), **options)
    result = {
        "data_range": data_range,
        "images": names,
        "scale": scale,
        "metrics": summary(metrics),
        "pooled": summary(metrics, "pooled"),
        "reported": values or None,
    }
    return result, findings, [str(reported or pred)]
