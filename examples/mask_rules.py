"""Where mask thresholds disagree: the seed notes' tensor under each rule, and an audit of
float32 values around 0.5 — with numpy here, and the same calls take torch or TF tensors.

    python examples/mask_rules.py
"""

from __future__ import annotations

import numpy as np

from gpudoc.masks import audit, threshold

probs = np.array([[0.1, 0.2, 0.6, 0.7], [0.5, 0.7, 0.3, 0.4]], dtype=np.float32)
for rule in ("ge", "gt", "round-half-even", "round-half-up"):
    print(f"{rule:<16} {threshold(probs, 0.5, rule, scale=1).tolist()}")

edge = np.array([0.49999997, 0.5, 0.50000006, 0.25, 0.75], dtype=np.float32)
report = audit(edge, 0.5, "ge", scale=1)
print(f"at 0.5: {report.at_threshold}, within one float32 ulp: {report.near_threshold}")
for idiom in report.idioms:
    print(f"{idiom.idiom:<44} differs on {idiom.differs}")
