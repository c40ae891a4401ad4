"""What an estimate reports, shared by the trace-based (``estimate``) and the analytic
(``analytic``) estimators: the :class:`Estimate`, its :class:`Remedy` entries and the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpudoc.oom.trace import TraceConfig

TIGHT = 0.10


@dataclass
class Estimate:
    """The estimate for one configuration on one device."""

    model: str
    config: TraceConfig
    device: str
    method: str
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    total_bytes: int
    capacity_bytes: int
    verdict: str
    headroom_bytes: int
    breakdown: dict[str, int]
    top_modules: list[tuple[str, int]]
    parameters: int
    trainable_parameters: int
    notes: list[str] = field(default_factory=list)
    remedies: list[Remedy] = field(default_factory=list)
    checkpointed_blocks: list[str] = field(default_factory=list)
    attention_kernels: dict[str, str] = field(default_factory=dict)  # kernel → why (eager: torch < 2.0)
    cuda: str = ""  # the CUDA version of the target's PyTorch build modelled ("": not a GPU)
    torch_rules: list[str] = field(default_factory=list)  # the version rules of config.torch assumed


@dataclass(frozen=True)
class Remedy:
    """A change, the estimate with it, and what it saves."""

    name: str
    change: str
    total_bytes: int
    saved_bytes: int
    verdict: str


def verdict(total: int, capacity: int) -> str:
    """``oom`` when it does not fit, ``tight`` with less than 10% headroom, else ``fits``."""
    if total > capacity:
        return "oom"
    return "tight" if capacity - total < TIGHT * capacity else "fits"
