"""Thresholding with an explicit rule, exact at the boundary, for numpy arrays, torch tensors
(kept on their device) and TensorFlow tensors (kept in TF).

The rule is applied to the real number each element stands for: ``x / scale`` (or
``sigmoid(x)`` for logits) compared with ``t``. Instead of converting the input, ``t`` is moved
into the input's own number space once — the smallest value of the input's dtype that is
``≥ scale·t`` (rule ``ge``), or the largest ``≤ scale·t`` (rule ``gt``) — so the comparison runs
in the native dtype on every backend and gives the same mask bit for bit, with no rounding
of ``t`` to float16 and no float32 surprises such as ``0.49999997 + 0.5 == 1.0``.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from gpudoc.errors import InputError


class Rule(str, enum.Enum):
    """How a value at the threshold is decided.

    ``round-half-even`` is what ``np.round``, ``torch.round`` and ``tf.round`` mean (a value at
    exactly 0.5 becomes 0), ``round-half-up`` what ``floor(p + 0.5)`` intends (it becomes 1);
    both are defined at ``t = 0.5`` only.
    """

    GE = "ge"
    GT = "gt"
    ROUND_HALF_EVEN = "round-half-even"
    ROUND_HALF_UP = "round-half-up"

    @property
    def inclusive(self) -> bool:
        """Whether a value exactly at the threshold is foreground."""
        return self in (Rule.GE, Rule.ROUND_HALF_UP)


class Scale(str, enum.Enum):
    """What range the input's numbers live in."""

    UNIT = "1"
    BYTE = "255"
    LOGITS = "logits"


class ScaleWarning(UserWarning):
    """The input's scale was inferred, not declared."""


class MaskValueError(InputError, ValueError):
    """Input values outside the declared scale, or an unsupported dtype."""


_OUTPUT_DTYPES = ("uint8", "bool", "int32", "int64", "float32")


@dataclass(frozen=True)
class Bound:
    """``t`` moved into the input's number space: foreground is ``x >= value`` when
    ``inclusive``, else ``x > value``."""

    value: float | int
    inclusive: bool


def backend_of(x: Any) -> str:
    """``numpy``, ``torch`` or ``tensorflow``, from the object's type (without importing)."""
    module = type(x).__module__
    if module.startswith("torch"):
        return "torch"
    if module.startswith(("tensorflow", "keras")):
        return "tensorflow"
    if isinstance(x, np.ndarray | np.generic):
        return "numpy"
    raise MaskValueError(f"unsupported input type {type(x).__name__}: give a numpy array, torch or TF tensor")


def dtype_name(x: Any) -> str:
    """The element type as numpy names it (``float32``, ``uint8``, …)."""
    backend = backend_of(x)
    if backend == "numpy":
        return str(x.dtype)
    if backend == "torch":
        return str(x.dtype).removeprefix("torch.")
    return str(x.dtype.name)


def as_scale(value: Scale | str | int) -> Scale:
    """A scale from its enum, its name (``"1"``, ``"255"``, ``"logits"``) or the number 1 or 255."""
    if isinstance(value, Scale):
        return value
    try:
        return Scale(str(value))
    except ValueError:
        raise MaskValueError(f"scale {value!r} is not one of 1, 255, logits") from None


def _value_range(x: Any) -> tuple[float, float]:
    backend = backend_of(x)
    if backend == "numpy":
        return (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if backend == "torch":
        if x.numel() == 0:
            return 0.0, 0.0
        return float(x.min().item()), float(x.max().item())
    import tensorflow as tf

    if int(tf.size(x)) == 0:
        return 0.0, 0.0
    return float(tf.reduce_min(x).numpy()), float(tf.reduce_max(x).numpy())


def infer_scale(x: Any) -> Scale:
    """The scale the values suggest: bool, or values within [0, 1] → unit (a 0/1 uint8 mask
    too); values within [0, 255] with some above 1 → byte; other floats → logits. Integers
    outside [0, 255] (a 16-bit image) fit none of them: declare the scale."""
    name = dtype_name(x)
    if name == "bool":
        return Scale.UNIT
    low, high = _value_range(x)
    if low >= 0 and high <= 1:
        return Scale.UNIT
    if low >= 0 and high <= 255:
        return Scale.BYTE
    if np.dtype(name).kind in "ui":
        raise MaskValueError(f"{name} values span [{low:g}, {high:g}]: not probabilities, 8-bit values or logits",
                             "rescale them to [0, 1] or [0, 255], or declare --scale logits")
    return Scale.LOGITS


def resolve_scale(x: Any, scale: Scale | str | int | None) -> Scale:
    """The declared scale, checked against the values; or the inferred one, with a warning."""
    if scale is None or scale == "auto":
        found = infer_scale(x)
        warnings.warn(
            f"scale not declared; inferred {found.value!r} from dtype {dtype_name(x)} and the value range "
            "(declare it to silence this)",
            ScaleWarning,
            stacklevel=3,
        )
        return found
    declared = as_scale(scale)
    if declared is not Scale.LOGITS:
        low, high = _value_range(x)
        top = 1 if declared is Scale.UNIT else 255
        if low < 0 or high > top or math.isnan(low) or math.isnan(high):
            raise MaskValueError(
                f"values span [{low:g}, {high:g}], outside the declared scale [0, {top}]",
                "declare the scale the data is in (--scale 1|255|logits)",
            )
    return declared


def _float_info(name: str) -> type[np.floating[Any]]:
    try:
        kind = np.dtype(name)
    except TypeError:
        raise MaskValueError(f"unsupported dtype {name}", "cast to float32 first") from None
    if kind.kind != "f":
        raise MaskValueError(f"unsupported dtype {name}", "cast to float32 or uint8 first")
    return kind.type  # type: ignore[no-any-return]


def bound(t: float, rule: Rule | str, dtype: str, scale: Scale | str | int) -> Bound:
    """``t`` (a probability) as a comparison in ``dtype``'s own values at ``scale``."""
    rule = Rule(rule)
    scale = as_scale(scale)
    if not 0 <= t <= 1:
        raise MaskValueError(f"threshold {t} is not a probability in [0, 1]")
    if rule in (Rule.ROUND_HALF_EVEN, Rule.ROUND_HALF_UP) and t != 0.5:
        raise MaskValueError(f"rule {rule.value} rounds at 0.5; use ge or gt for t={t}")
    if scale is Scale.LOGITS:
        if t in (0.0, 1.0):
            raise MaskValueError("a logit threshold needs 0 < t < 1")
        target = Fraction(math.log(t / (1 - t)))
    else:
        target = Fraction(t) * (255 if scale is Scale.BYTE else 1)
    kind = np.dtype("uint8" if dtype == "bool" else dtype)
    if kind.kind in "ui":
        if rule.inclusive:
            return Bound(math.ceil(target), True)
        return Bound(math.floor(target), False)
    ftype = _float_info(dtype)
    value = ftype(float(target))
    if rule.inclusive and Fraction(float(value)) < target:
        value = np.nextafter(value, ftype(np.inf))
    if not rule.inclusive and Fraction(float(value)) > target:
        value = np.nextafter(value, ftype(-np.inf))
    return Bound(float(value), rule.inclusive)


def threshold(
    x: Any,
    t: float = 0.5,
    rule: Rule | str = Rule.GE,
    *,
    scale: Scale | str | int | None = None,
    dtype: str = "uint8",
) -> Any:
    """The binary mask of ``x`` under ``rule``, of the same kind as ``x`` (numpy, torch on the
    same device, or TF) with elements of ``dtype`` (0/1). ``scale`` None infers it and warns."""
    if dtype not in _OUTPUT_DTYPES:
        raise MaskValueError(f"output dtype {dtype!r} not one of {', '.join(_OUTPUT_DTYPES)}")
    backend = backend_of(x)
    resolved = resolve_scale(x, scale)
    limit = bound(t, rule, dtype_name(x), resolved)
    if backend == "numpy":
        hit = x >= limit.value if limit.inclusive else x > limit.value
        return hit.astype(dtype)
    if backend == "torch":
        import torch

        hit = x >= limit.value if limit.inclusive else x > limit.value
        return hit.to(getattr(torch, dtype))
    import tensorflow as tf

    edge = tf.constant(limit.value, dtype=x.dtype)
    hit = tf.greater_equal(x, edge) if limit.inclusive else tf.greater(x, edge)
    return tf.cast(hit, getattr(tf, dtype))
