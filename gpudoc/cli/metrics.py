"""``gpudoc metrics-check``: lint logged image/regression metrics for scale errors, or compute
them from images at the declared range and compare with what a project reported. Every report
(text, --json, --junit, --github, the exit code) is made from one :class:`Report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gpudoc.cli.common import json_option
from gpudoc.metrics.compute import RANGES, check_images, report_lines
from gpudoc.metrics.logcheck import lint_logs as _lint
STACKS = ("Stacks: arrays (.npy, .npz) of H×W and H×W×C (C = 1, 3 or 4) are one image, N×H×W a stack of N, "
          "N×H×W×C a stack of N; channels-first N×1×H×W and N×3×H×W (as torch saves them) are read as "
          "N×H×W×1 and N×H×W×3 when the last axis is not 1, 3 or 4. An image file is one image.")


@click.command("metrics-check", epilog=STACKS)
@click.argument("logs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--range", "range_", type=click.Choice(RANGES), default="auto", show_default=True,
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
@click.option("--ms-ssim", "with_ms_ssim", is_flag=True,
              help="Also compute MS-SSIM (images of 161 px or more, 97 with --ssim-preset skimage; smaller ones: "
              "a warning, not computed).")
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
    from gpudoc.metrics.report import github_lines, junit_xml, to_json
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
        report, extra = check_images(pred, target, reported, declared, salvage,
                                     lambda line: click.echo(f"gpudoc: {line}", err=True), y_channel=y_channel,
                                     crop_border=crop_border, ssim_preset=ssim_preset, ms_ssim=with_ms_ssim)
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
        for line in report_lines(report, printed):
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


