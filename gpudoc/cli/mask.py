"""``gpudoc mask threshold|audit|sweep``: mask thresholds with explicit rules."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from gpudoc.cli.common import json_option
from gpudoc.errors import InputError

T = TypeVar("T")

_RULES = ["ge", "gt", "round-half-even", "round-half-up"]
_SCALES = ["auto", "1", "255", "logits"]

rule_option = click.option("--rule", type=click.Choice(_RULES), default="ge", show_default=True,
                           help="ge: x ≥ t; gt: x > t; round-half-even/-up: how a value at exactly 0.5 goes.")
threshold_option = click.option("--t", "t", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                                help="Threshold, as a probability.")
scale_option = click.option("--scale", type=click.Choice(_SCALES), default="auto", show_default=True,
                            help="What the input's numbers mean: probabilities (1), 8-bit (255) or logits; "
                            "auto infers it and warns.")


@contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        click.echo(f"gpudoc: warning: {warning.message}", err=True)


def _per_file(path: Path, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, naming ``path`` in any input error."""
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        if str(path) in str(exc):
            raise
        raise InputError(f"{path}: {exc.message}", exc.fix) from None


def _declared(scale: str) -> str | None:
    return None if scale == "auto" else scale


@click.group()
def mask() -> None:
    """Threshold masks with an explicit rule, audit a threshold, sweep for the best one."""


@mask.command("threshold")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="A .png/.npy file for one input, else a directory (created) for one mask per input.")
@threshold_option
@rule_option
@scale_option
@click.option("--format", "fmt", type=click.Choice(["png", "npy"]), default=None,
              help="png: 0/255; npy: 0/1 uint8 (default: from the output's suffix, else png).")
@click.option("--force", is_flag=True, help="Replace existing output files.")
@json_option
def threshold_command(inputs: tuple[str, ...], output: Path, t: float, rule: str, scale: str,
                      fmt: str | None, force: bool, as_json: bool) -> int:
    """Write the binary mask of each input (png, tif, npy, npz, or directories of them)."""
    from gpudoc.masks import threshold
    from gpudoc.imagefiles import read_array
    from gpudoc.masks.io import expand, write_mask
    from gpudoc.output import emit_json

    files = expand(list(inputs))
    single = len(files) == 1 and output.suffix.lower() in (".png", ".npy")
    if single:
        targets = [output]
    else:
        suffix = f".{fmt or 'png'}"
        targets = [output / (Path(str(f).split(".npz:")[0]).stem + suffix) for f in files]
        clashes = {d for d in targets if targets.count(d) > 1}
        if clashes:
            raise InputError(f"two inputs would write {sorted(clashes)[0]}", "give inputs with distinct names")
    if not force:
        existing = [d for d in targets if d.exists()]
        if existing:
            raise InputError(f"{existing[0]}: exists", "pass --force to replace it")
    results = []
    for source, dest in zip(files, targets):
        with _warnings_to_stderr():
            values = _per_file(source, read_array, source, single_channel=True)
            binary = _per_file(source, threshold, values, t, rule, scale=_declared(scale))
        write_mask(binary, dest, force=True)
        results.append({"input": str(source), "output": str(dest), "pixels": int(binary.size),
                        "foreground": int(binary.sum())})
    if as_json:
        emit_json(results)
    else:
        for r in results:
            click.echo(f"{r['input']} → {r['output']}  {r['foreground']} of {r['pixels']} pixels foreground")
    return 0


@mask.command("audit")
@click.argument("inputs", nargs=-1, required=True)
@threshold_option
@rule_option
@scale_option
@json_option
def audit_command(inputs: tuple[str, ...], t: float, rule: str, scale: str, as_json: bool) -> int:
    """What thresholding each input at --t does: values at and near it, where rules and
    common idioms (tf.where, tf.cast(x + 0.5), tf.round, uint8 casts) disagree."""
    from gpudoc.masks import audit
    from gpudoc.imagefiles import read_array
    from gpudoc.masks.io import expand
    from gpudoc.output import emit_json, to_jsonable

    reports = []
    for source in expand(list(inputs)):
        with _warnings_to_stderr():
            values = _per_file(source, read_array, source, single_channel=True)
            report = _per_file(source, audit, values, t, rule, scale=_declared(scale))
        reports.append((source, report))
    if as_json:
        emit_json([{"input": str(s), **to_jsonable(r)} for s, r in reports])
        return 0
    for source, r in reports:
        click.echo(f"{source}: {r.values} values, {r.dtype}, scale {r.scale}, range [{r.minimum:g}, {r.maximum:g}]")
        click.echo(f"  rule {r.rule} at t={r.threshold:g}: {r.foreground} foreground")
        click.echo(f"  exactly at the threshold: {r.at_threshold}; within one ulp: {r.near_threshold}; "
                   f"ge and gt disagree on {r.rules_disagree}")
        click.echo("  histogram: " + "  ".join(f"[{lo:.1f},{hi:.1f}) {n}" for lo, hi, n in r.histogram))
        for idiom in r.idioms:
            mark = "same" if idiom.differs == 0 else f"{idiom.differs} pixel(s) differ"
            click.echo(f"  {idiom.idiom:<42} {mark:<22} {idiom.note}")
    return 0


@mask.command("sweep")
@click.option("--probs", "probs_paths", multiple=True, required=True, help="Probability maps (files or directories).")
@click.option("--truth", "truth_paths", multiple=True, required=True,
              help="Ground-truth masks, matched to --probs by file name (0/1 or 0/255).")
@click.option("--thresholds", type=click.IntRange(2, 100001), default=101, show_default=True,
              help="How many evenly spaced thresholds over [0, 1].")
@click.option("--metric", type=click.Choice(["dice", "iou"]), default="dice", show_default=True)
@click.option("--reduction", type=click.Choice(["pooled", "per-image"]), default="pooled", show_default=True,
              help="Best threshold by the score over all pixels, or by the mean of per-image scores.")
@rule_option
@scale_option
@click.option("--exact", is_flag=True, help="Also search every distinct probability (sorts all pixels).")
@click.option("--plot", type=click.Path(path_type=Path),
              help="Write a PNG chart of Dice and IoU against the threshold.")
@json_option
def sweep_command(probs_paths: tuple[str, ...], truth_paths: tuple[str, ...], thresholds: int, metric: str,
                  reduction: str, rule: str, scale: str, exact: bool, plot: Path | None, as_json: bool) -> int:
    """Dice, IoU, precision and recall over thresholds; the best threshold, and Otsu's."""
    import numpy as np

    from gpudoc.masks import sweep
    from gpudoc.imagefiles import read_array
    from gpudoc.masks.io import expand, read_truth
    from gpudoc.masks.rules import Scale, resolve_scale
    from gpudoc.output import emit_json

    probs_files, truth_files = expand(list(probs_paths)), expand(list(truth_paths))
    truth_by_stem = {f.stem: f for f in truth_files}
    missing = [f.name for f in probs_files if f.stem not in truth_by_stem]
    if missing:
        raise InputError(f"no truth mask named like {missing[0]}", "give truth files with the same names")
    maps, masks = [], []
    for source in probs_files:
        with _warnings_to_stderr():
            values = _per_file(source, read_array, source, single_channel=True)
            found = _per_file(source, resolve_scale, values, _declared(scale))
        p = values.astype(np.float64)
        if found is Scale.BYTE:
            p = p / 255
        elif found is Scale.LOGITS:
            p = 1 / (1 + np.exp(-p))
        truth = read_truth(truth_by_stem[source.stem])
        if truth.shape != p.shape:
            truth_file = truth_by_stem[source.stem]
            raise InputError(f"{source}: shape {p.shape} but its truth {truth_file} is {truth.shape}")
        maps.append(p)
        masks.append(truth)
    if len({m.shape for m in maps}) > 1:
        raise InputError("the probability maps differ in shape; sweep images of one size at a time")
    result = sweep(np.stack(maps), np.stack(masks), thresholds, metric=metric, reduction=reduction,
                   rule=rule, exact=exact)
    if plot:
        from gpudoc.masks.plot import write_plot

        write_plot(result, plot)
    if as_json:
        emit_json(result)
        return 0
    step = max(1, len(result.rows) // 20)
    click.echo(f"{'t':>7} {'dice':>7} {'iou':>7} {'prec':>7} {'recall':>7} {'dice/img':>9} {'iou/img':>8}")
    for i, row in enumerate(result.rows):
        if i % step == 0 or row.threshold == result.best_threshold:
            mark = "  ← best" if row.threshold == result.best_threshold else ""
            click.echo(f"{row.threshold:7.3f} {row.dice:7.4f} {row.iou:7.4f} {row.precision:7.4f} {row.recall:7.4f} "
                       f"{row.dice_per_image:9.4f} {row.iou_per_image:8.4f}{mark}")
    click.echo(f"best {result.metric} ({result.reduction}, rule {result.rule}): {result.best_score:.4f} "
               f"at t={result.best_threshold:g} over {result.images} image(s)")
    if result.exact_best_threshold is not None:
        click.echo(f"exact best (pooled): {result.exact_best_score:.4f} at t={result.exact_best_threshold:.6g}")
    click.echo(f"Otsu's threshold: {result.otsu_threshold:.4f} ({result.metric} {result.otsu_score:.4f})")
    return 0
