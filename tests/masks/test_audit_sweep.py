"""The audit's idioms against the real frameworks, the sweep against brute force, Otsu
against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import torch
from skimage.filters import threshold_otsu

from gpudoc.masks import audit, otsu, sweep


def idiom(report, name: str) -> int:
    return next(i.differs for i in report.idioms if i.idiom.startswith(name))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_idioms_count_what_the_frameworks_really_compute(dtype: str) -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.random(500), [0.5, 0.49999997, 0.50000006, 0.4999, 0.0, 1.0, 127.5 / 255, 0.501],
    ]).astype(dtype)
    report = audit(values, 0.5, "ge", scale=1)
    reference = values >= 0.5
    as_tf, as_torch = tf.constant(values), torch.from_numpy(values)
    real = {
        "tf.where(x >= 0.5": tf.where(as_tf >= 0.5, 1, 0).numpy() == 1,
        "tf.where(x > 0.5": tf.where(as_tf > 0.5, 1, 0).numpy() == 1,
        "tf.cast(x + 0.5": tf.cast(as_tf + 0.5, tf.int32).numpy() == 1,
        "tf.cast(x, tf.int32)": tf.cast(as_tf, tf.int32).numpy() == 1,
        "tf.round(x)": tf.round(as_tf).numpy() == 1,
        "(x * 255)": (values * values.dtype.type(255)).astype(np.uint8) >= 128,
    }
    for name, mask in real.items():
        assert idiom(report, name) == int(np.count_nonzero(mask != reference)), name
    assert torch.equal(torch.round(as_torch), torch.from_numpy(np.round(values)))
    assert report.at_threshold == int(np.count_nonzero(values == 0.5))
    assert report.rules_disagree == report.at_threshold
    kind = values.dtype.type
    low, high = np.nextafter(kind(0.5), kind(0)), np.nextafter(kind(0.5), kind(1))
    assert report.near_threshold == int(np.count_nonzero((values >= low) & (values <= high)))
    assert sum(count for _, _, count in report.histogram) == values.size


def test_the_seed_notes_cast_floor_and_round_values() -> None:
    assert tf.cast(tf.constant([0.1, 0.5, 0.9, 1.2, 1.9]), tf.int32).numpy().tolist() == [0, 0, 0, 1, 1]
    assert tf.floor([0.1, 0.5, 0.9, 1.2, 1.9]).numpy().tolist() == [0, 0, 0, 1, 1]
    assert tf.round([0.1, 1.5, 2.5, 0.5, 0.6, 1.2, 1.9]).numpy().tolist() == [0, 2, 2, 0, 1, 1, 2]
    report = audit(np.array([0.1, 0.5, 0.9], dtype=np.float32), 0.5, "ge", scale=1)
    assert idiom(report, "tf.cast(x, tf.int32)") == 2 and idiom(report, "tf.round(x)") == 1


def test_byte_idioms_show_the_off_by_ones() -> None:
    report = audit(np.arange(256, dtype=np.uint8), 0.5, "ge", scale=255)
    assert report.at_threshold == 0 and report.foreground == 128
    assert idiom(report, "x >= 128") == 0 and idiom(report, "x > 127") == 0
    assert idiom(report, "x >= 127") == 1 and idiom(report, "x > 128") == 1


def brute_force(probs: np.ndarray, truth: np.ndarray, t: float, inclusive: bool) -> dict[str, float]:
    """The scores with each probability compared with ``t`` as real numbers (float64: exact
    for float32 data), as gpudoc's threshold() does — not with ``t`` rounded to float32."""
    exact = probs.astype(np.float64)
    mask = exact >= t if inclusive else exact > t
    tp = np.count_nonzero(mask & truth)
    fp = np.count_nonzero(mask & ~truth)
    fn = np.count_nonzero(~mask & truth)
    def ratio(a: float, b: float) -> float:
        return a / b if b else 1.0
    return {"dice": ratio(2 * tp, 2 * tp + fp + fn), "iou": ratio(tp, tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


@pytest.mark.parametrize("rule", ["ge", "gt"])
def test_sweep_matches_brute_force(rule: str) -> None:
    rng = np.random.default_rng(3)
    probs = np.round(rng.random((5, 24, 24)), 2).astype(np.float32)
    truth = rng.random((5, 24, 24)) < probs
    truth[4] = False
    probs[4] = 0.0
    result = sweep(probs, truth, 21, rule=rule, exact=True, reduction="per-image")
    inclusive = rule == "ge"
    for row in result.rows:
        pooled = brute_force(probs, truth, row.threshold, inclusive)
        assert row.dice == pytest.approx(pooled["dice"]) and row.iou == pytest.approx(pooled["iou"])
        assert row.precision == pytest.approx(pooled["precision"]) and row.recall == pytest.approx(pooled["recall"])
        per_image = [brute_force(probs[i], truth[i], row.threshold, inclusive)["dice"] for i in range(5)]
        assert row.dice_per_image == pytest.approx(np.mean(per_image))
    best = max(result.rows, key=lambda r: r.dice_per_image)
    assert (result.best_threshold, result.best_score) == (best.threshold, pytest.approx(best.dice_per_image))
    candidates = np.unique(probs)
    exact_scores = [brute_force(probs, truth, float(v), inclusive)["dice"] for v in candidates]
    assert result.exact_best_score == pytest.approx(max(exact_scores))
    assert result.exact_best_threshold == pytest.approx(float(candidates[int(np.argmax(exact_scores))]))
    assert len(result.per_image_best) == 5
    from gpudoc.masks import threshold

    for row in result.rows[::5]:
        mask = threshold(probs, row.threshold, rule, scale=1).astype(bool)
        tp, fp = np.count_nonzero(mask & truth), np.count_nonzero(mask & ~truth)
        assert row.precision == pytest.approx(tp / (tp + fp) if tp + fp else 1.0), "sweep and threshold() agree"


def test_otsu_matches_scikit_image() -> None:
    rng = np.random.default_rng(11)
    cases = [
        np.concatenate([rng.normal(0.25, 0.05, 5000), rng.normal(0.7, 0.1, 3000)]).clip(0, 1),
        rng.random((64, 64)),
        np.concatenate([np.full(100, 0.1), np.full(50, 0.9)]),
    ]
    for values in cases:
        assert otsu(values) == pytest.approx(threshold_otsu(values), abs=1e-9)


def test_otsu_and_sweep_on_a_range_of_a_few_ulps() -> None:
    """Sigmoids of large logits differ by ulps: 256 bins do not fit (numpy's histogram raised)."""
    a = np.nextafter(0.5, 1)
    values = np.array([0.5, 0.5, a, np.nextafter(a, 1), np.nextafter(a, 1)])
    assert otsu(values) == a
    result = sweep(values.reshape(1, 1, 5), np.array([[[0, 0, 1, 1, 1]]]), 11)
    assert result.otsu_threshold == a and result.otsu_score == pytest.approx(0.8), "foreground is above Otsu"


def test_sweep_rejects_bad_input() -> None:
    from gpudoc.masks import MaskValueError

    with pytest.raises(MaskValueError, match="differ in shape"):
        sweep(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(MaskValueError, match="outside"):
        sweep(np.full((4, 4), 3.0), np.zeros((4, 4)))
    with pytest.raises(MaskValueError, match="NaN"):
        sweep(np.full((4, 4), np.nan), np.zeros((4, 4)))
