"""The PyTorch version an estimate models (``--torch``), and the rules that depend on it.

- **softmax / log_softmax backward**: up to 1.10 the autograd formulas were
  ``_softmax_backward_data(grad, result, dim, self)``, so the op's *input* was saved for the
  backward beside its output; from 1.11 only the input's dtype is (pytorch#64000, fixed by
  #65242, relanded as #66018 after the 1.10 branch cut).
- **zero_grad**: ``Optimizer.zero_grad()`` and ``nn.Module.zero_grad()`` set the gradients to
  None by default from 2.0 (pytorch#92731); before, they zeroed them in place.
- **optimizer implementation**: from 2.0 the torch.optim classes default to their foreach
  (multi-tensor) implementation when every parameter is on CUDA (one PR per optimizer, e.g.
  pytorch#91896, #92728; Adam's went in as fused, #90865, and #95241 set it back to foreach
  before the release); before, the for-loop.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass

from gpudoc.errors import InputError

LAST_1X_MINOR = 13  # 1.13 was the last 1.x release
SOFTMAX_SAVES_OUTPUT_ONLY_FROM = (1, 11)
SET_TO_NONE_FROM = (2, 0)
FOREACH_DEFAULT_FROM = (2, 0)


@dataclass(frozen=True)
class TorchRules:
    """The version-dependent behaviour of PyTorch ``version`` that changes the peak."""

    version: tuple[int, int]

    @property
    def softmax_keeps_input(self) -> bool:
        return self.version < SOFTMAX_SAVES_OUTPUT_ONLY_FROM

    @property
    def zero_grad_default(self) -> str:
        """``--zero-grad``'s default: ``none`` (set_to_none=True) from 2.0, else ``zeros``."""
        return "none" if self.version >= SET_TO_NONE_FROM else "zeros"

    @property
    def optimizer_impl_default(self) -> str:
        """``--optimizer-impl``'s default: ``foreach`` on CUDA from 2.0, else ``for-loop``."""
        return "foreach" if self.version >= FOREACH_DEFAULT_FROM else "for-loop"

    def assumed(self) -> list[str]:
        """Each version rule as it applies, with the version it changed in."""
        return [
            "softmax/log_softmax backward keeps its input (torch <= 1.10)" if self.softmax_keeps_input else
            "softmax/log_softmax backward keeps its output only (from torch 1.11)",
            "zero_grad() zeros the gradients by default (set_to_none=False before torch 2.0)"
            if self.zero_grad_default == "zeros" else
            "zero_grad() frees the gradients by default (set_to_none=True from torch 2.0)",
            "optimizers default to the for-loop implementation (foreach on CUDA from torch 2.0)"
            if self.optimizer_impl_default == "for-loop" else
            "optimizers default to foreach on CUDA (from torch 2.0)",
        ]


def rules_of(version: str) -> TorchRules:
    """The rules of a version as :func:`parse_torch` accepts it; "" (no version given to a
    bare :class:`~gpudoc.oom.trace.TraceConfig`) is the newest rules."""
    return TorchRules(parse_torch(version) if version else (99, 0))


def parse_torch(text: str) -> tuple[int, int]:
    """``1.10`` / ``2.3.1`` / ``2.1.0+cu118`` → (major, minor). A version that never existed
    (before 1.0, 1.14 to 1.99) or is not a version is bad input; one newer than any known
    is taken as it is (the newest rules apply)."""
    found = re.fullmatch(r"\s*([0-9]{1,2})\.([0-9]{1,3})(?:\.[0-9]{1,3})?(?:(?:a|b|rc)[0-9]+|\.dev[0-9]+|\+[\w.]+)?\s*",
                         text, re.ASCII)
    if found is None:
        raise InputError(f"--torch {text!r}: not a PyTorch version", "give MAJOR.MINOR, e.g. 1.10 or 2.3")
    version = int(found.group(1)), int(found.group(2))
    if version < (1, 0) or (version[0] == 1 and version[1] > LAST_1X_MINOR):
        raise InputError(f"--torch {text!r}: no such PyTorch release (gpudoc models 1.0 to 1.{LAST_1X_MINOR} "
                         "and 2.0 on)", "give MAJOR.MINOR, e.g. 1.10 or 2.3")
    return version


def local_torch_version() -> str | None:
    """The installed torch's MAJOR.MINOR (from its package metadata, without importing it)."""
    try:
        found = re.match(r"(\d+)\.(\d+)", importlib.metadata.version("torch"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return f"{found.group(1)}.{found.group(2)}" if found else None


def torch_note(version: str, source: str, local: str | None) -> str:
    """What ``--torch`` was taken to be and which of its rules apply."""
    newer = f"; newer than the local torch {local}: its rules" if local and parse_torch(version) > parse_torch(
        local) else ""
    return f"torch {version} ({source}{newer}): " + "; ".join(rules_of(version).assumed())
