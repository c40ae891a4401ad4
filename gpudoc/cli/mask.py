"""``gpudoc mask threshold|audit|sweep``: mask thresholds with explicit rules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gpudoc.cli.common import json_option
from gpudoc.errors import InputError

if TYPE_CHECKING:
    from gpudoc.masks.io import Stack
    from gpudoc.masks.rules import Scale

_RULES = ["ge", "gt", "round-half-even", "round-half-up"]
_SCALES = ["auto", "1", "255", "logits"]
_MASK_SUFFIXES = (".png", ".npy")
_OTHER_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".gif", ".npz")
STACKS = ("Stacks: an .npy/.npz array of N×H×W (or N×H×W×1, N×1×H×W) is N images, H×W (or H×W×1) "
          "one; an image file is one image (a multi-page TIFF one per page; one channel only).")

rule_option = click.option("--rule", type=click.Choice(_RULES), default="ge", show_default=True,
                           help="ge: x ≥ t; gt: x > t; round-half-even/-up: how a value at exactly 0.5 goes.")
threshold_option = click.option("--t", "t", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                                help="Threshold, as a probability.")
scale_option = click.option("--scale", type=click.Choice(_SCALES), default="auto", show_default=True,
                            help="What the input's numbers mean: probabilities (1), 8-bit (255) or logits; "
                            "auto infers it per file and warns once.")


def _scales(stacks: list[Stack], scale: str) -> tuple[list[Scale], str | None]:
    """The scale of every stack, and the command's one warning if they were inferred (to
    print once the inputs have passed every check)."""
    from gpudoc.masks.io import resolve_scales

    return resolve_scales(stacks, None if scale == "auto" else scale)


def _warn(message: str | None) -> None:
    if message:
        click.echo(f"gpudoc: warning: {message}", err=True)


def _read(paths: list[str]) -> list[Stack]:
    from gpudoc.masks.io import expand, read_stack

    return [read_stack(source) for source in expand(paths)]


def _refuse_existing(dest: str, force: bool) -> None:
    """Stop before any work if ``dest`` is a file that would be replaced without ``force``
    (or cannot be written: a directory, a socket)."""
    from gpudoc.output import output_target

    target = output_target(dest)
    if not force and not target.stream and target.path.exists():
        raise InputError(f"{dest}: exists", "pass --force to replace it")


def _stdout_free(outputs: dict[str, bool]) -> bool:
    """Whether the report may go to stdout: refuses two outputs there; False when one file
    output streams to stdout (the report then goes to stderr)."""
    taken = [name for name, on_stdout in outputs.items() if on_stdout]
    if len(taken) > 1:
        raise InputError(f"{' and '.join(taken)} would both write to stdout", "send one of them to a file")
    return not taken


def _on_stdout(dest: str | None) -> bool:
    """Whether an output argument streams to this process's stdout (``-``, ``/dev/stdout``)."""
    from gpudoc.output import is_stdout

    if not dest:
        return False
    path = Path(dest)
    return dest == "-" or (path.exists() and not path.is_dir() and is_stdout(dest))


def _refuse_terminal(dest: str, what: str) -> None:
    if _on_stdout(dest) and sys.stdout is not None and sys.stdout.isatty():
        raise InputError(f"{dest}: stdout is a terminal, and {what} is binary", "redirect stdout to a file or a pipe")


def _plan(stacks: list[Stack], output: str, fmt: str | None) -> list[tuple[int, int | None, str, str]]:
    """(stack, image index or None for the whole file, destination, format) for every output."""
    from gpudoc.output import output_target

    path = Path(output)
    suffix = path.suffix.lower()
    streamed = output == "-" or (path.exists() and not path.is_dir() and output_target(output).stream)
    if streamed or (suffix in _MASK_SUFFIXES and not path.is_dir()):
        if len(stacks) != 1:
            raise InputError(f"-o {output} is one file, but there are {len(stacks)} inputs",
                             "give a directory as -o for one mask per input")
        kind = fmt or (suffix[1:] if suffix in _MASK_SUFFIXES else "png")
        if not streamed and kind != suffix[1:]:
            raise InputError(f"--format {kind} but -o {output}", f"name the output .{kind}, or leave out --format")
        stack = stacks[0]
        if kind == "png":
            _check_png(stack)
            if stack.count > 1:
                dims = "×".join(map(str, stack.values.shape))
                raise InputError(f"{stack.source}: a stack of {stack.count} images ({dims}); one PNG holds one image",
                                 f"write one .npy (-o {stack.stem}_mask.npy), or one PNG per image into a directory "
                                 "(-o DIR)")
        return [(0, None, output, kind)]
    if suffix in _OTHER_SUFFIXES and not path.is_dir():
        raise InputError(f"-o {output}: masks are written as .png or .npy", "name a .png or .npy file, or a directory")
    if path.exists() and not path.is_dir():
        raise InputError(f"-o {output}: exists and is not a directory",
                         "give a directory for one mask per input, or a .png/.npy file for one input")
    kind = fmt or "png"
    plan: list[tuple[int, int | None, str, str]] = []
    for number, stack in enumerate(stacks):
        if kind == "npy" or not stack.stacked:
            if kind == "png":
                _check_png(stack)
            plan.append((number, None, str(path / f"{stack.stem}.{kind}"), kind))
            continue
        width = len(str(stack.count - 1))
        plan.extend((number, i, str(path / f"{stack.stem}_{i:0{width}d}.png"), kind) for i in range(stack.count))
    seen: dict[str, int] = {}
    for number, _, dest, _ in plan:
        if seen.setdefault(dest, number) != number:
            raise InputError(f"{stacks[seen[dest]].source} and {stacks[number].source} would both write {dest}",
                             "give inputs with distinct names")
    return plan


def _check_png(stack: Stack) -> None:
    if stack.images.ndim != 3:
        raise InputError(f"{stack.source}: 1-D values; a PNG mask needs a 2-D image", "write .npy (--format npy)")


@click.group(epilog=STACKS)
def mask() -> None:
    """Threshold masks with an explicit rule, audit a threshold, sweep for the best one."""


@mask.command("threshold", epilog=STACKS)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, metavar="PATH|-",
              help="A .png/.npy file (or - for stdout) for one input, else a directory (created) with one mask "
              "per input: NAME.png, or NAME_0.png… for each image of a stack, or NAME.npy with --format npy.")
@threshold_option
@rule_option
@scale_option
@click.option("--format", "fmt", type=click.Choice(["png", "npy"]), default=None,
              help="png: 0/255, one image per file; npy: 0/1 uint8 in the input's shape "
              "(default: from the output's suffix, else png).")
@click.option("--force", is_flag=True, help="Replace existing output files.")
@json_option
def threshold_command(inputs: tuple[str, ...], output: str, t: float, rule: str, scale: str,
                      fmt: str | None, force: bool, as_json: bool) -> int:
    """Write the binary mask of each input (png, tif, npy, npz, or directories of them)."""
    from gpudoc.imagefiles import refuse_inputs_as_outputs
    from gpudoc.masks import threshold
    from gpudoc.masks.io import write_mask
    from gpudoc.output import emit_json

    report_out = _stdout_free({f"-o {output}": _on_stdout(output), "--json": as_json})
    _refuse_terminal(output, "a mask file")
    stacks = _read(list(inputs))
    scales, warning = _scales(stacks, scale)
    plan = _plan(stacks, output, fmt)
    refuse_inputs_as_outputs([("-o", dest) for _, _, dest, _ in plan], [s.source for s in stacks])
    for _, _, dest, _ in plan:
        _refuse_existing(dest, force)
    _warn(warning)
    masks = [threshold(s.images, t, rule, scale=found) for s, found in zip(stacks, scales)]
    results, lines = [], []
    for number, index, dest, kind in plan:
        stack, binary = stacks[number], masks[number]
        whole = kind == "npy"
        data = binary.reshape(stack.values.shape) if whole else binary[index or 0]
        if dest != "-" and Path(dest).parent != Path(output).parent:
            Path(output).mkdir(parents=True, exist_ok=True)  # the output directory, named by -o
        write_mask(data, dest, kind)
        count, foreground = stack.count if whole else 1, int(data.sum())
        results.append({"input": stack.source, "image": None if whole or not stack.stacked else index or 0,
                        "output": dest, "images": count, "pixels": int(data.size), "foreground": foreground})
        images = f" in {count} images" if count > 1 else ""
        label = stack.source if whole else stack.label(index or 0)
        lines.append(f"{label} → {dest}  {foreground} of {data.size} pixels foreground{images}")
    if as_json:
        emit_json(results)
        return 0
    for line in lines:
        click.echo(line, err=not report_out)
    return 0


_SHOWN_IMAGES = 20


@mask.command("audit", epilog=STACKS)
@click.argument("inputs", nargs=-1, required=True)
@threshold_option
@rule_option
@scale_option
@json_option
def audit_command(inputs: tuple[str, ...], t: float, rule: str, scale: str, as_json: bool) -> int:
    """What thresholding each input at --t does: values at and near it, where rules and
    common idioms (tf.where, tf.cast(x + 0.5), tf.round, uint8 casts) disagree. A stack is
    audited as a whole and per image (--json: per_image)."""
    from gpudoc.masks.audit import audit_json, audit_stack
    from gpudoc.output import emit_json

    stacks = _read(list(inputs))
    scales, warning = _scales(stacks, scale)
    _warn(warning)
    reports = [(stack, *audit_stack(stack, t, rule, found)) for stack, found in zip(stacks, scales)]
    if as_json:
        emit_json(audit_json(reports))
        return 0
    for stack, r, per_image in reports:
        images = f" in {stack.count} images" if stack.stacked else ""
        click.echo(f"{stack.source}: {r.values} values{images}, {r.dtype}, scale {r.scale}, "
                   f"range [{r.minimum:g}, {r.maximum:g}]")
        click.echo(f"  rule {r.rule} at t={r.threshold:g}: {r.foreground} foreground")
        click.echo(f"  exactly at the threshold: {r.at_threshold}; within one ulp: {r.near_threshold}; "
                   f"ge and gt disagree on {r.rules_disagree}")
        click.echo("  histogram: " + "  ".join(f"[{lo:.1f},{hi:.1f}) {n}" for lo, hi, n in r.histogram))
        for idiom in r.idioms:
            mark = "same" if idiom.differs == 0 else f"{idiom.differs} pixel(s) differ"
            click.echo(f"  {idiom.idiom:<42} {mark:<22} {idiom.note}")
        if per_image:
            shown = per_image
            if len(per_image) > _SHOWN_IMAGES:
                shown = sorted(per_image, key=lambda s: -s["near_threshold"])[:_SHOWN_IMAGES]
                click.echo(f"  the {_SHOWN_IMAGES} images with the most values near the threshold (all: --json):")
            for s in sorted(shown, key=lambda s: s["image"]):
                click.echo(f"  image {s['image']}: range [{s['minimum']:g}, {s['maximum']:g}], {s['foreground']} "
                           f"foreground, {s['at_threshold']} at the threshold, {s['near_threshold']} within one ulp")
    return 0


@mask.command("sweep", epilog=STACKS)
@click.option("--probs", "probs_paths", multiple=True, required=True, help="Probability maps (files or directories).")
@click.option("--truth", "truth_paths", multiple=True, required=True,
              help="Ground-truth masks (0/1 or 0/255): with one file each for --probs and --truth, the two are "
              "paired (image by image for stacks); otherwise matched to --probs by file name.")
@click.option("--thresholds", type=click.IntRange(2, 100001), default=101, show_default=True,
              help="How many evenly spaced thresholds over [0, 1].")
@click.option("--metric", type=click.Choice(["dice", "iou"]), default="dice", show_default=True)
@click.option("--reduction", type=click.Choice(["pooled", "per-image"]), default="pooled", show_default=True,
              help="Best threshold by the score over all pixels, or by the mean of per-image scores.")
@rule_option
@scale_option
@click.option("--exact", is_flag=True, help="Also search every distinct probability (sorts all pixels).")
@click.option("--plot", metavar="FILE|-", help="Write a PNG chart of Dice and IoU against the threshold.")
@click.option("--csv", "csv_path", metavar="FILE|-", help="Write the whole table (every threshold) as CSV.")
@click.option("--force", is_flag=True, help="Replace existing --plot and --csv files.")
@json_option
def sweep_command(probs_paths: tuple[str, ...], truth_paths: tuple[str, ...], thresholds: int, metric: str,
                  reduction: str, rule: str, scale: str, exact: bool, plot: str | None, csv_path: str | None,
                  force: bool, as_json: bool) -> int:
    """Dice, IoU, precision and recall over thresholds, pooled and per image; the best
    threshold, and Otsu's."""
    from gpudoc.imagefiles import refuse_inputs_as_outputs
    from gpudoc.masks import sweep
    from gpudoc.masks.io import load_pairs, pair_files
    from gpudoc.output import emit_json, output_target, refuse_shared_outputs

    report_out = _stdout_free({f"--plot {plot}": _on_stdout(plot), f"--csv {csv_path}": _on_stdout(csv_path),
                               "--json": as_json})
    refuse_shared_outputs([(f"--{name}", dest) for name, dest in (("plot", plot), ("csv", csv_path)) if dest])
    pairs, unused = pair_files(list(probs_paths), list(truth_paths))
    _warn(unused)
    refuse_inputs_as_outputs([(f"--{name}", dest) for name, dest in (("plot", plot), ("csv", csv_path)) if dest],
                             [f for pair in pairs for f in pair])
    if plot:
        _refuse_terminal(plot, "a PNG chart")
        _refuse_existing(plot, force)
        if not output_target(plot).stream and Path(plot).suffix.lower() != ".png":
            raise InputError(f"--plot {plot}: the chart is a PNG", "name it .png, or - for stdout")
    if csv_path:
        _refuse_existing(csv_path, force)
    probs, truth, warning = load_pairs(pairs, None if scale == "auto" else scale)
    _warn(warning)
    result = sweep(probs, truth, thresholds, metric=metric, reduction=reduction,
                   rule=rule, exact=exact)
    if plot:
        from gpudoc.masks.plot import write_plot

        write_plot(result, plot)
    if csv_path:
        _write_table(result, csv_path)
    if as_json:
        emit_json(result)
        return 0
    _print_sweep(result, err=not report_out)
    return 0


def _write_table(result: Any, dest: str) -> None:
    import csv
    import dataclasses

    from gpudoc.output import atomic_file

    with atomic_file(dest, "w") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([f.name for f in dataclasses.fields(result.rows[0])])
        writer.writerows(dataclasses.astuple(row) for row in result.rows)


def _print_sweep(result: Any, *, err: bool) -> None:
    def say(line: str) -> None:
        click.echo(line, err=err)

    step = max(1, len(result.rows) // 20)
    say(f"{'t':>7} {'dice':>7} {'iou':>7} {'prec':>7} {'recall':>7} {'dice/img':>9} {'iou/img':>8}")
    for i, row in enumerate(result.rows):
        if i % step == 0 or row.threshold == result.best_threshold:
            mark = "  ← best" if row.threshold == result.best_threshold else ""
            say(f"{row.threshold:7.3f} {row.dice:7.4f} {row.iou:7.4f} {row.precision:7.4f} {row.recall:7.4f} "
                f"{row.dice_per_image:9.4f} {row.iou_per_image:8.4f}{mark}")
    say(f"best {result.metric} ({result.reduction}, rule {result.rule}): {result.best_score:.4f} "
        f"at t={result.best_threshold:g} over {result.images} image(s)")
    if result.exact_best_threshold is not None:
        say(f"exact best (pooled): {result.exact_best_score:.4f} at t={result.exact_best_threshold:.6g}")
    say(f"Otsu's threshold: {result.otsu_threshold:.4f} ({result.metric} {result.otsu_score:.4f})")
