"""Thresholding rules across numpy, torch and TensorFlow, exact at the boundary."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf
import torch

from gpudoc.masks import MaskValueError, Rule, ScaleWarning, infer_scale, threshold

SEED = np.array([[0.1, 0.2, 0.6, 0.7], [0.5, 0.7, 0.3, 0.4]], dtype=np.float32)
FLOATS = ["float16", "float32", "float64"]


def boundary_values(t: float, dtype: str) -> np.ndarray:
    """The representable values right around ``t`` in ``dtype``, plus a spread over [0, 1]."""
    kind = np.dtype(dtype).type
    centre = kind(t)
    around = [centre]
    for direction in (np.inf, -np.inf):
        value = centre
        for _ in range(3):
            value = np.nextafter(value, kind(direction))
            around.append(value)
    spread = np.linspace(0, 1, 41).astype(dtype)
    return np.concatenate([np.array(around, dtype=dtype), spread]).clip(0, 1)


def exact(values: np.ndarray, t: float, inclusive: bool) -> np.ndarray:
    """The rule on the real numbers, with fractions."""
    target = Fraction(t)
    return np.array([(Fraction(float(v)) >= target) if inclusive else (Fraction(float(v)) > target)
                     for v in values.ravel()]).reshape(values.shape).astype(np.uint8)


def on_backends(values: np.ndarray, t: float, rule: str) -> dict[str, np.ndarray]:
    return {
        "numpy": threshold(values, t, rule, scale=1),
        "torch": threshold(torch.from_numpy(values), t, rule, scale=1).numpy(),
        "tensorflow": threshold(tf.constant(values), t, rule, scale=1).numpy(),
    }


def test_the_seed_notes_tf_where_examples() -> None:
    ge = threshold(tf.constant(SEED), 0.5, "ge", scale=1)
    gt = threshold(tf.constant(SEED), 0.5, "gt", scale=1)
    assert isinstance(ge, tf.Tensor) and ge.dtype == tf.uint8
    assert ge.numpy().tolist() == [[0, 0, 1, 1], [1, 1, 0, 0]]
    assert gt.numpy().tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]
    assert tf.where(SEED >= 0.5, 1, 0).numpy().tolist() == ge.numpy().tolist()
    assert tf.where(SEED > 0.5, 1, 0).numpy().tolist() == gt.numpy().tolist()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("t", [0.5, 0.3, 0.7, 1 / 3, 0.1])
@pytest.mark.parametrize("rule", ["ge", "gt"])
def test_all_backends_agree_with_the_exact_rule(dtype: str, t: float, rule: str) -> None:
    values = boundary_values(t, dtype)
    reference = exact(values, t, inclusive=rule == "ge")
    for backend, mask in on_backends(values, t, rule).items():
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, reference, err_msg=f"{backend} {dtype} t={t} {rule}")


@pytest.mark.parametrize("dtype", FLOATS)
def test_round_rules_are_gt_and_ge_at_one_half_and_differ_only_there(dtype: str) -> None:
    values = boundary_values(0.5, dtype)
    even = on_backends(values, 0.5, "round-half-even")
    up = on_backends(values, 0.5, "round-half-up")
    for backend in even:
        np.testing.assert_array_equal(even[backend], exact(values, 0.5, inclusive=False))
        np.testing.assert_array_equal(up[backend], exact(values, 0.5, inclusive=True))
        assert set(np.flatnonzero(even[backend] != up[backend])) == set(np.flatnonzero(values == 0.5))
    assert np.round(values[values != 0.5]).astype(np.uint8).tolist() == even["numpy"][values != 0.5].tolist()
    with pytest.raises(MaskValueError, match="rounds at 0.5"):
        threshold(values, 0.3, "round-half-even", scale=1)


def test_float32_just_below_one_half_is_background_unlike_cast_plus_half() -> None:
    x = np.array([0.49999997, 0.5], dtype=np.float32)
    assert threshold(x, 0.5, "ge", scale=1).tolist() == [0, 1]
    assert tf.cast(tf.constant(x) + 0.5, tf.int32).numpy().tolist() == [1, 1]


@pytest.mark.parametrize("rule", ["ge", "gt"])
def test_uint8_byte_scale_on_every_backend(rule: str) -> None:
    values = np.arange(256, dtype=np.uint8)
    expected = (values.astype(float) / 255 >= 0.5 if rule == "ge" else values.astype(float) / 255 > 0.5)
    for backend, mask in {
        "numpy": threshold(values, 0.5, rule, scale=255),
        "torch": threshold(torch.from_numpy(values), 0.5, rule, scale=255).numpy(),
        "tensorflow": threshold(tf.constant(values), 0.5, rule, scale=255).numpy(),
    }.items():
        np.testing.assert_array_equal(mask, expected.astype(np.uint8), err_msg=backend)
    assert threshold(values, 0.5, rule, scale=255)[127:129].tolist() == [0, 1]


def test_logits_compare_with_the_logit_of_t_without_saturating() -> None:
    logits = np.array([-3.0, -1e-7, 0.0, 1e-7, 20.0, 40.0], dtype=np.float32)
    assert threshold(logits, 0.5, "ge", scale="logits").tolist() == [0, 0, 1, 1, 1, 1]
    assert threshold(logits, 0.5, "gt", scale="logits").tolist() == [0, 0, 0, 1, 1, 1]
    near_one = torch.tensor([17.0, 20.0])
    assert threshold(near_one, 0.99999999, "ge", scale="logits").tolist() == [0, 1]
    assert (torch.sigmoid(near_one) >= 0.99999999).tolist() == [True, True], "float32 sigmoid saturates"


def test_outputs_stay_in_their_framework_with_the_chosen_dtype() -> None:
    x = torch.tensor([0.2, 0.8])
    out = threshold(x, scale=1, dtype="bool")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bool and out.device == x.device
    assert threshold(tf.constant([0.2, 0.8]), scale=1, dtype="float32").dtype == tf.float32
    assert threshold(np.array([0.2, 0.8]), scale=1, dtype="int64").dtype == np.int64


def test_scale_is_inferred_with_a_warning_and_checked_when_declared() -> None:
    with pytest.warns(ScaleWarning, match="inferred '255'"):
        threshold(np.array([0, 200], dtype=np.uint8))
    assert infer_scale(np.array([0, 1], dtype=np.uint8)).value == "1"
    assert infer_scale(np.array([-2.0, 3.0])).value == "logits"
    with pytest.raises(MaskValueError, match="uint16 values span"):
        infer_scale(np.array([0, 40000], dtype=np.uint16))
    with pytest.raises(MaskValueError, match="outside the declared scale"):
        threshold(np.array([0.2, 1.5]), scale=1)
    with pytest.raises(MaskValueError, match="not a probability"):
        threshold(np.array([0.2]), 1.5, scale=1)
    assert Rule("ge").inclusive and not Rule("gt").inclusive
