"""The masks screen: ``gpudoc mask sweep`` on probability/truth files, its curve drawn by the
run view's braille renderer (:func:`tui.curves.plot`), the best threshold and Otsu's, and
``gpudoc mask audit`` of the probabilities at a chosen threshold. ctrl+s saves the sweep's
``--json`` and the audit's, each to its own file."""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path
from typing import Any

from textual.content import Content

from gpudoc.errors import InputError

from .curves import plot
from .runview import number
from .tools import Field, Outcome, Progress, ToolScreen

CHART_ROWS = 8
CHART_WIDTH = 64  # cells of braille (two thresholds per cell at the default 101)
_RULES = ("ge", "gt", "round-half-even", "round-half-up")


class MasksScreen(ToolScreen):
    """``gpudoc mask sweep --probs … --truth …`` and ``gpudoc mask audit PROBS… --t T``."""

    TOOL = "mask"
    TITLE_TEXT = "Masks: Dice/IoU against the threshold, the best one and Otsu's, and the audit of one threshold"
    COLUMNS = 2
    FIELDS = (
        Field("probs", "probabilities", placeholder="probs.npy, preds/ (.npy .npz .png .tif; shell quoting)",
              wide=True),
        Field("truth", "truth", placeholder="truth.npy, masks/ (0/1 or 0/255; matched by name for directories)",
              wide=True),
        Field("metric", "metric", "dice", choices=("dice", "iou")),
        Field("reduction", "reduction", "pooled", choices=("pooled", "per-image")),
        Field("rule", "rule", "ge", choices=_RULES),
        Field("scale", "scale", "auto", choices=("auto", "1", "255", "logits")),
        Field("thresholds", "thresholds", "101", "how many over [0, 1]"),
        Field("t", "audit at", "0.5", "t in [0, 1], best or otsu"),
        Field("audit_path", "audit JSON to", "gpudoc-mask-audit.json", wide=True),
    )

    SAVE_NAME = "gpudoc-mask-sweep.json"
    FIXES = (("(declare it with --scale to silence this)", "(pick the scale to silence this)"),
             ("declare the scale the data is in (--scale 1|255|logits)",
              "pick the scale the data is in: 1, 255, logits"),
             ("or declare --scale logits", "or pick the scale logits"))

    def __init__(self) -> None:
        super().__init__()
        self.audit_json: Any = None

    def compute(self, progress: Progress) -> Outcome:
        from gpudoc.masks import sweep
        from gpudoc.masks.audit import audit_json, audit_stack
        from gpudoc.masks.io import expand, load_pairs, pair_files, read_stack, resolve_scales

        probs_paths, truth_paths = _paths(self.field("probs"), "probabilities"), _paths(self.field("truth"), "truth")
        metric = _choice(self.field("metric") or "dice", "metric", ("dice", "iou"))
        reduction = _choice(self.field("reduction") or "pooled", "reduction", ("pooled", "per-image"))
        rule = _choice(self.field("rule") or "ge", "rule", _RULES)
        scale = _choice(self.field("scale") or "auto", "scale", ("auto", "1", "255", "logits"))
        count = _whole(self.field("thresholds") or "101", "thresholds", 2, 100001)
        audit_at = (self.field("t") or "0.5").lower()
        if audit_at not in ("best", "otsu"):
            _threshold(audit_at)
        declared = None if scale == "auto" else scale
        progress("reading the maps and masks")
        pairs, unused = pair_files(probs_paths, truth_paths)
        probs, truth, warning = load_pairs(pairs, declared)
        progress(f"sweeping {count} thresholds over {probs.shape[0]} image(s)")
        result = sweep(probs, truth, count, metric=metric, reduction=reduction, rule=rule)
        named = {"best": result.best_threshold, "otsu": result.otsu_threshold}
        t = named[audit_at] if audit_at in named else _threshold(audit_at)
        progress(f"auditing t={t:g}")
        stacks = [read_stack(source) for source in expand(probs_paths)]  # as `gpudoc mask audit PROBS…`
        scales, _ = resolve_scales(stacks, declared)
        reports = [(stack, *audit_stack(stack, t, rule, found)) for stack, found in zip(stacks, scales)]
        self.audit_json = audit_json(reports)
        notes = [Content.styled(f"warning: {self.own_words(w)}", "yellow") for w in (unused, warning) if w]
        text = Content("\n").join([*notes, *_sweep_lines(result), Content(""), *_audit_lines(reports)])
        return Outcome(result, text, [_on_disk(f) for pair in pairs for f in pair])

    def saves(self) -> list[tuple[str, str, Any]]:
        """The sweep's JSON to the save field, the audit's to its own."""
        dest = self.field("audit_path")
        return [*super().saves(), *([("audit JSON to", os.path.expanduser(dest), self.audit_json)] if dest else [])]

    def read_files(self) -> list[Path]:
        """The pairs the sweep read and the probabilities the audit read."""
        from gpudoc.masks.io import expand

        return [*super().read_files(), *(_on_disk(f) for f in expand(_paths(self.field("probs"), "probabilities")))]


def for_app(app: Any) -> MasksScreen:
    """The screen (it starts empty: the files are chosen in its form)."""
    return MasksScreen()


def _on_disk(source: str) -> Path:
    """The file of an input (``file.npz:NAME`` is in ``file.npz``)."""
    name, sep, _ = source.partition(".npz:")
    return Path(name + ".npz" if sep else source)


def _paths(text: str, label: str) -> list[str]:
    try:
        paths = [os.path.expanduser(p) for p in shlex.split(text)]
    except ValueError as exc:
        raise InputError(f"{label}: {exc}", "quote paths as in a shell") from None
    if not paths:
        raise InputError(f"give the {label} files", "an .npy/.npz/.png/.tif file, or a directory of them")
    return paths


def _choice(value: str, label: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"{label} {value!r}: not one of {', '.join(allowed)}", f"use {allowed[0]}")
    return value


def _whole(value: str, label: str, low: int, high: int) -> int:
    try:
        number_ = int(value)
    except ValueError:
        raise InputError(f"{label} {value!r}: not a whole number", f"e.g. {low} to {high}") from None
    if not low <= number_ <= high:
        raise InputError(f"{label} {number_}: not in {low}..{high}", "101 tests every 0.01")
    return number_


def _threshold(value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        t = math.nan
    if not 0 <= t <= 1:
        raise InputError(f"audit at {value!r}: not a threshold in [0, 1]", "e.g. 0.5, best or otsu")
    return t


def _sweep_lines(result: Any) -> list[Content]:
    """The chosen metric as the line, the other as dots, with the best threshold (▲) and
    Otsu's (○) marked under the x axis."""
    other = "iou" if result.metric == "dice" else "dice"
    suffix = "_per_image" if result.reduction == "per-image" else ""
    xs = [row.threshold for row in result.rows]
    line = [getattr(row, result.metric + suffix) for row in result.rows]
    dots = [getattr(row, other + suffix) for row in result.rows]
    lines = [Content.assemble((f"{result.metric} ({result.reduction})", "bold $accent"), " the line  ·  ",
                              (other, "dim"), " the dots  ·  rule ", result.rule, f"  ·  {result.images} image(s)")]
    drawn = plot(xs, dots, line, CHART_WIDTH, CHART_ROWS)
    if drawn is None:
        return [*lines, Content.styled("no finite score", "dim")]
    label = max(len(number(drawn.high)), len(number(drawn.low)), 5)
    for y in range(CHART_ROWS):
        value = number(drawn.high) if y == 0 else number(drawn.low) if y == CHART_ROWS - 1 else ""
        parts: list[str | tuple[str, str]] = [(f"{value:>{label}}┤", "dim")]
        text, strong = drawn.rows[y], drawn.strong[y]
        start = 0
        for x in range(1, len(text) + 1):
            if x == len(text) or strong[x] != strong[start]:
                parts.append((text[start:x], "$accent" if strong[start] else "dim"))
                start = x
        lines.append(Content.assemble(*parts))
    marks = [" "] * CHART_WIDTH
    span = (drawn.x1 - drawn.x0) or 1.0
    for t, mark in ((result.otsu_threshold, "○"), (result.best_threshold, "▲")):
        cell = round((t - drawn.x0) / span * (CHART_WIDTH * 2 - 1)) // 2
        marks[min(max(cell, 0), CHART_WIDTH - 1)] = mark
    lines.append(Content.styled(" " * (label + 1) + "".join(marks), "bold"))
    axis = f"t {drawn.x0:g}"
    lines.append(Content.styled(" " * (label + 1) + axis + f"{drawn.x1:g}".rjust(CHART_WIDTH - len(axis)), "dim"))
    lines.append(Content.assemble(("▲ best ", "bold"), f"{result.metric} {result.best_score:.4f} at "
                                  f"t={result.best_threshold:g}   ", ("○ Otsu ", "bold"),
                                  f"t={result.otsu_threshold:.4f} ({result.metric} {result.otsu_score:.4f})"))
    return lines


def _audit_lines(reports: list[tuple[Any, Any, Any]]) -> list[Content]:
    lines: list[Content] = []
    for stack, r, per_image in reports:
        images = f" in {stack.count} images" if stack.stacked else ""
        lines.append(Content.assemble(("audit ", "bold"), f"{stack.source}: {r.values} values{images}, {r.dtype}, "
                                      f"scale {r.scale}, range [{r.minimum:g}, {r.maximum:g}]"))
        lines.append(Content(f"  rule {r.rule} at t={r.threshold:g}: {r.foreground} foreground"))
        disagree = ("bold yellow" if r.rules_disagree else "green")
        lines.append(Content.assemble(f"  exactly at the threshold: {r.at_threshold}; within one ulp: "
                                      f"{r.near_threshold}; ", (f"≥ and > disagree on {r.rules_disagree}", disagree)))
        if not r.idioms:
            lines.append(Content.styled("  idioms are compared at t=0.5 (on [0,1] floats or 8-bit data)", "dim"))
        for idiom in r.idioms:
            mark = "same" if idiom.differs == 0 else f"{idiom.differs} pixel(s) differ"
            lines.append(Content.assemble(f"  {idiom.idiom:<42} ", (f"{mark:<20}", "yellow" if idiom.differs else
                                                                     "green"), (f" {idiom.note}", "dim")))
        worst = sorted(per_image or [], key=lambda s: -s["near_threshold"])[:5]
        for s in sorted(worst, key=lambda s: s["image"]):
            lines.append(Content(f"  image {s['image']}: {s['foreground']} foreground, {s['at_threshold']} at the "
                                 f"threshold, {s['near_threshold']} within one ulp, ≥/> disagree on "
                                 f"{s['rules_disagree']}"))
    return lines
