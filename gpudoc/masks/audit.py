"""What a threshold does to a probability map: values at and near it, where the rules
disagree, and which common idioms would give a different mask — computed in the input's own
dtype, as TensorFlow, torch and numpy compute them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gpudoc.masks.rules import Rule, Scale, bound, resolve_scale

if TYPE_CHECKING:
    from gpudoc.masks.io import Stack

Idiom = tuple[str, Callable[[np.ndarray], np.ndarray], str]


def to_numpy(x: Any) -> np.ndarray:
    """A host copy of a numpy array, torch tensor or TF tensor."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__
    if module.startswith("torch"):
        return x.detach().cpu().numpy()  # type: ignore[no-any-return]
    if hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return np.asarray(x)


@dataclass(frozen=True)
class IdiomResult:
    """How many pixels an idiom labels differently from the chosen rule."""

    idiom: str
    differs: int
    note: str


@dataclass(frozen=True)
class MaskAudit:
    """``at_threshold``: values exactly at the threshold; ``near_threshold``: within one ulp of
    it in the input's dtype (one step for integers), those included; ``rules_disagree``: pixels
    where ``ge`` and ``gt`` differ. ``histogram`` has ten probability bins (low, high, count)."""

    values: int
    dtype: str
    scale: str
    threshold: float
    rule: str
    minimum: float
    maximum: float
    foreground: int
    at_threshold: int
    near_threshold: int
    rules_disagree: int
    histogram: tuple[tuple[float, float, int], ...]
    idioms: tuple[IdiomResult, ...]


def _probabilities(x: np.ndarray, scale: Scale) -> np.ndarray:
    values = x.astype(np.float64)
    if scale is Scale.LOGITS:
        return 1 / (1 + np.exp(-values))
    return values / (255 if scale is Scale.BYTE else 1)


def _float_idioms(kind: np.dtype[Any]) -> list[Idiom]:
    half = kind.type(0.5)
    return [
        ("tf.where(x >= 0.5, 1, 0)", lambda x: x >= half, "inclusive: a value at 0.5 is foreground"),
        ("tf.where(x > 0.5, 1, 0)", lambda x: x > half, "strict: a value at 0.5 is background (torchmetrics, Keras)"),
        ("tf.cast(x + 0.5, tf.int32)", lambda x: np.trunc(x + half) >= 1,
         "the sum is rounded in the input's dtype: float32 0.49999997 + 0.5 == 1.0"),
        ("tf.cast(x, tf.int32)", lambda x: np.trunc(x) >= 1, "truncates toward zero: everything below 1 becomes 0"),
        ("tf.round(x) / torch.round(x) / np.round(x)", lambda x: np.round(x) >= 1,
         "rounds half to even: 0.5 becomes 0"),
        ("(x * 255).astype(np.uint8) >= 128", lambda x: (x * kind.type(255)).astype(np.uint8) >= 128,
         "truncating to uint8 moves the boundary to 128/255 = 0.50196"),
    ]


def _byte_idioms() -> list[Idiom]:
    return [
        ("x >= 128", lambda x: x >= 128, "the 0.5 boundary of 8-bit data (127.5) rounded up"),
        ("x > 127", lambda x: x > 127, "the same mask as x >= 128 for integers"),
        ("x >= 127", lambda x: x >= 127, "off by one: 127/255 = 0.498 counts as foreground"),
        ("x > 128", lambda x: x > 128, "off by one: 128/255 = 0.502 counts as background"),
        ("np.round(x / 255)", lambda x: np.round(x / 255.0) >= 1,
         "half to even on float64; no 8-bit value sits at 0.5"),
    ]


def audit(x: Any, t: float = 0.5, rule: Rule | str = Rule.GE, *, scale: Scale | str | None = None) -> MaskAudit:
    """Audit thresholding ``x`` at ``t`` with ``rule`` (the reference the idioms are compared
    with). The common idioms are checked at ``t = 0.5`` on [0, 1] floats and on 8-bit data."""
    rule = Rule(rule)
    values = to_numpy(x)
    resolved = resolve_scale(values, scale)
    name = "uint8" if values.dtype == np.bool_ else str(values.dtype)
    data = values.astype(np.uint8) if values.dtype == np.bool_ else values
    ge, gt = bound(t, Rule.GE, name, resolved), bound(t, Rule.GT, name, resolved)
    inclusive_mask = data >= ge.value
    strict_mask = data > gt.value
    reference = inclusive_mask if rule.inclusive else strict_mask
    at = int(np.count_nonzero(inclusive_mask)) - int(np.count_nonzero(strict_mask))
    if data.dtype.kind == "f":
        low = np.nextafter(data.dtype.type(gt.value), data.dtype.type(-np.inf))
        high = np.nextafter(data.dtype.type(ge.value), data.dtype.type(np.inf))
    else:
        low, high = gt.value - 1, ge.value + 1
    near = int(np.count_nonzero((data >= low) & (data <= high)))
    counts, edges = np.histogram(_probabilities(data, resolved), bins=10, range=(0.0, 1.0))
    idioms: list[Idiom] = []
    if t == 0.5 and resolved is Scale.UNIT and data.dtype.kind == "f":
        idioms = _float_idioms(data.dtype)
    elif t == 0.5 and resolved is Scale.BYTE and data.dtype.kind in "ui":
        idioms = _byte_idioms()
    results = tuple(
        IdiomResult(label, int(np.count_nonzero(make(data) != reference)), note) for label, make, note in idioms
    )
    return MaskAudit(
        values=int(data.size),
        dtype=str(values.dtype),
        scale=resolved.value,
        threshold=t,
        rule=rule.value,
        minimum=float(data.min()) if data.size else 0.0,
        maximum=float(data.max()) if data.size else 0.0,
        foreground=int(np.count_nonzero(reference)),
        at_threshold=at,
        near_threshold=near,
        rules_disagree=int(np.count_nonzero(inclusive_mask != strict_mask)),
        histogram=tuple((float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(len(counts))),
        idioms=results,
    )


def _image_summary(index: int, report: MaskAudit) -> dict[str, Any]:
    return {"image": index, "values": report.values, "minimum": report.minimum, "maximum": report.maximum,
            "foreground": report.foreground, "at_threshold": report.at_threshold,
            "near_threshold": report.near_threshold, "rules_disagree": report.rules_disagree}


def audit_stack(
    stack: Stack, t: float, rule: Rule | str, scale: Scale
) -> tuple[MaskAudit, list[dict[str, Any]] | None]:
    """``mask audit`` of one file: the whole of it, and for a stack each image's summary."""
    report = audit(stack.values, t, rule, scale=scale)
    per_image = None
    if stack.stacked:
        per_image = [_image_summary(i, audit(stack.images[i], t, rule, scale=scale)) for i in range(stack.count)]
    return report, per_image


def audit_json(reports: list[tuple[Stack, MaskAudit, list[dict[str, Any]] | None]]) -> list[dict[str, Any]]:
    """What ``mask audit --json`` prints."""
    from gpudoc.output import to_jsonable

    return [{"input": s.source, **to_jsonable(r), "images": s.count, "per_image": per} for s, r, per in reports]
