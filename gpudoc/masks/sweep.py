"""Dice, IoU, precision and recall of a probability map against the truth over many
thresholds at once, per image and pooled, with the exact best threshold and Otsu's.

Every pixel is placed once among the sorted thresholds (``searchsorted``) and counted per
image (``bincount``); suffix sums then give the confusion counts at every threshold, so the
cost barely depends on how many thresholds there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gpudoc.masks.rules import MaskValueError, Rule, Scale, bound

METRICS = ("dice", "iou")
_CHUNK_PIXELS = 1 << 23


@dataclass(frozen=True)
class SweepRow:
    """Scores at one threshold: pooled over all pixels, and the mean of per-image scores."""

    threshold: float
    dice: float
    iou: float
    precision: float
    recall: float
    dice_per_image: float
    iou_per_image: float


@dataclass(frozen=True)
class SweepResult:
    """The table and the best thresholds. ``best_*`` is over the grid for ``metric`` and
    ``reduction``; ``exact_best_*`` (pooled) is over every distinct probability, where the
    scores can change; ``per_image_best`` holds each image's exact best (threshold, score)."""

    metric: str
    reduction: str
    rule: str
    images: int
    rows: tuple[SweepRow, ...]
    best_threshold: float
    best_score: float
    exact_best_threshold: float | None
    exact_best_score: float | None
    per_image_best: tuple[tuple[float, float], ...] | None
    otsu_threshold: float
    otsu_score: float


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion(
    probs: np.ndarray, truth: np.ndarray, thresholds: np.ndarray, rule: Rule | str = Rule.GE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP and FN per image and threshold, each of shape (images, thresholds).

    ``probs`` and ``truth`` are (N, …) with the same shape; ``thresholds`` ascending.
    """
    rule = Rule(rule)
    side: Literal["left", "right"] = "right" if rule.inclusive else "left"
    edges = np.asarray(thresholds, dtype=np.float64)
    if probs.dtype in (np.float16, np.float32):
        # The same comparisons in the data's own dtype (no float64 copy of every pixel):
        # each threshold moved to its exact bound there, as threshold() does.
        edges = np.array([bound(float(t), rule, str(probs.dtype), Scale.UNIT).value for t in edges], probs.dtype)
    n = probs.shape[0]
    k = len(thresholds)
    flat_p = probs.reshape(n, -1)
    flat_t = truth.reshape(n, -1).astype(bool)
    per_image = flat_p.shape[1]
    counts = np.zeros((n, k + 1, 2), dtype=np.int64)
    step = max(1, _CHUNK_PIXELS // max(per_image, 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        passed = np.searchsorted(edges, flat_p[start:stop].ravel(), side=side)
        image = np.repeat(np.arange(stop - start), per_image)
        index = (image * (k + 1) + passed) * 2 + flat_t[start:stop].ravel()
        counts[start:stop] = np.bincount(index, minlength=(stop - start) * (k + 1) * 2).reshape(stop - start, k + 1, 2)
    suffix = np.cumsum(counts[:, ::-1, :], axis=1)[:, ::-1, :]
    above = suffix[:, 1:, :]
    tp, fp = above[..., 1], above[..., 0]
    fn = counts[:, :, 1].sum(axis=1, keepdims=True) - tp
    return tp, fp, fn


def scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, empty: float = 1.0) -> dict[str, np.ndarray]:
    """Dice, IoU, precision and recall; a score whose denominator is 0 (nothing predicted
    and nothing true) is ``empty``."""
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "iou": _ratio(tp, tp + fp + fn, empty),
        "precision": _ratio(tp, tp + fp, empty),
        "recall": _ratio(tp, tp + fn, empty),
    }


def exact_best(probs: np.ndarray, truth: np.ndarray, metric: str, rule: Rule | str = Rule.GE) -> tuple[float, float]:
    """The threshold among all distinct values of ``probs`` that maximises ``metric``
    (pooled), with its score; ties go to the lowest threshold."""
    rule = Rule(rule)
    values, inverse = np.unique(probs.ravel(), return_inverse=True)
    positives = np.bincount(inverse, weights=truth.ravel().astype(np.float64), minlength=len(values))
    totals = np.bincount(inverse, minlength=len(values)).astype(np.float64)
    at_or_above_tp = np.cumsum(positives[::-1])[::-1]
    at_or_above_all = np.cumsum(totals[::-1])[::-1]
    if rule.inclusive:
        tp, predicted = at_or_above_tp, at_or_above_all
    else:
        tp = np.append(at_or_above_tp[1:], 0.0)
        predicted = np.append(at_or_above_all[1:], 0.0)
    fp = predicted - tp
    fn = positives.sum() - tp
    score = scores(tp, fp, fn)[metric]
    best = int(np.argmax(score))
    return float(values[best]), float(score[best])


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold over a ``bins``-bin histogram of the values' range (the centre of
    the bin that maximises the between-class variance), as scikit-image defines it. A range
    too narrow for ``bins`` float64 bins (a few ulps) is binned by distinct value instead."""
    flat = values.ravel().astype(np.float64)
    low, high = float(flat.min()), float(flat.max())
    if low == high:
        return low
    edges = np.linspace(low, high, bins + 1)
    if np.all(np.diff(edges) > 0):
        hist, edges = np.histogram(flat, bins=edges)
        centres = (edges[:-1] + edges[1:]) / 2
    else:
        centres, hist = np.unique(flat, return_counts=True)
    weight = hist.astype(np.float64)
    below = np.cumsum(weight)
    above = np.cumsum(weight[::-1])[::-1]
    mean_below = np.cumsum(weight * centres) / np.where(below > 0, below, 1)
    mean_above = (np.cumsum((weight * centres)[::-1]) / np.where(above[::-1] > 0, above[::-1], 1))[::-1]
    between = below[:-1] * above[1:] * (mean_below[:-1] - mean_above[1:]) ** 2
    return float(centres[int(np.argmax(between))])


def _as_batch(probs: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(probs), np.asarray(truth)
    if p.shape != t.shape:
        raise MaskValueError(f"probabilities {p.shape} and truth {t.shape} differ in shape")
    if p.size == 0:
        raise MaskValueError("no pixels to sweep")
    if p.ndim < 2:
        raise MaskValueError("give at least one 2-D image")
    if p.ndim == 2:
        p, t = p[None], t[None]
    if not np.isfinite(p).all():
        raise MaskValueError("probabilities contain NaN or infinity")
    if p.min() < 0 or p.max() > 1:
        raise MaskValueError(f"probabilities span [{p.min():g}, {p.max():g}], outside [0, 1]",
                             "apply a sigmoid to logits, or divide 8-bit maps by 255")
    if not np.isin(t, (0, 1)).all():
        raise MaskValueError("the truth must hold 0/1 (or 0/255 converted) values only")
    return p, t.astype(bool)


def sweep(
    probs: Any,
    truth: Any,
    thresholds: Any = 101,
    *,
    metric: str = "dice",
    reduction: str = "pooled",
    rule: Rule | str = Rule.GE,
    exact: bool = False,
) -> SweepResult:
    """Scores of ``probs`` (N, H, W or H, W; in [0, 1]) against ``truth`` (same shape, 0/1) at
    ``thresholds`` (a count for an even grid over [0, 1], or the values). ``reduction`` picks
    the best threshold by pooled scores or by the mean of per-image scores; ``exact`` also
    searches every distinct probability (a full sort: slower on large batches)."""
    if metric not in METRICS:
        raise MaskValueError(f"metric {metric!r} not one of {', '.join(METRICS)}")
    if reduction not in ("pooled", "per-image"):
        raise MaskValueError("reduction is 'pooled' or 'per-image'")
    rule = Rule(rule)
    p, t = _as_batch(probs, truth)
    if isinstance(thresholds, int):
        grid = np.linspace(0.0, 1.0, thresholds)
    else:
        grid = np.sort(np.asarray(thresholds, dtype=np.float64))
    tp, fp, fn = confusion(p, t, grid, rule)
    pooled = scores(tp.sum(axis=0), fp.sum(axis=0), fn.sum(axis=0))
    per_image = scores(tp, fp, fn)
    per_image_mean = {name: values.mean(axis=0) for name, values in per_image.items()}
    rows = tuple(
        SweepRow(
            threshold=float(grid[i]), dice=float(pooled["dice"][i]), iou=float(pooled["iou"][i]),
            precision=float(pooled["precision"][i]), recall=float(pooled["recall"][i]),
            dice_per_image=float(per_image_mean["dice"][i]), iou_per_image=float(per_image_mean["iou"][i]),
        )
        for i in range(len(grid))
    )
    chosen = pooled[metric] if reduction == "pooled" else per_image_mean[metric]
    best = int(np.argmax(chosen))
    exact_threshold = exact_score = None
    image_bests = None
    if exact:
        exact_threshold, exact_score = exact_best(p, t, metric, rule)
        image_bests = tuple(exact_best(p[i], t[i], metric, rule) for i in range(p.shape[0]))
    otsu_threshold = otsu(p)
    foreground = p > otsu_threshold
    o_tp = np.count_nonzero(foreground & t)
    o_fp = np.count_nonzero(foreground) - o_tp
    o_fn = np.count_nonzero(t) - o_tp
    otsu_score = float(scores(np.array([o_tp]), np.array([o_fp]), np.array([o_fn]))[metric][0])
    return SweepResult(
        metric=metric, reduction=reduction, rule=rule.value, images=p.shape[0], rows=rows,
        best_threshold=float(grid[best]), best_score=float(chosen[best]),
        exact_best_threshold=exact_threshold, exact_best_score=exact_score, per_image_best=image_bests,
        otsu_threshold=otsu_threshold, otsu_score=otsu_score,
    )
