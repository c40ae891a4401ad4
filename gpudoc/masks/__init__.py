"""Mask thresholding with explicit rules, an audit of what a threshold does, and sweeps."""

from gpudoc.masks.audit import IdiomResult, MaskAudit, audit
from gpudoc.masks.rules import MaskValueError, Rule, Scale, ScaleWarning, infer_scale, threshold
from gpudoc.masks.sweep import SweepResult, SweepRow, otsu, sweep

__all__ = [
    "IdiomResult",
    "MaskAudit",
    "MaskValueError",
    "Rule",
    "Scale",
    "ScaleWarning",
    "SweepResult",
    "SweepRow",
    "audit",
    "infer_scale",
    "otsu",
    "sweep",
    "threshold",
]
