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
- **what did not exist yet**: ``F.scaled_dot_product_attention`` is from 2.0; CUDA autocast
  (``torch.cuda.amp``, fp16) from 1.6; bf16 autocast on CUDA (``torch.autocast`` and its
  ``dtype``) from 1.10; ``Adam(fused=True)`` from 1.13 (pytorch#90752 reports on 1.13's),
  ``AdamW(fused=True)`` from 2.0 (pytorch#88015, after the 1.13 cut), ``SGD(fused=True)`` not
  before 2.2 (pytorch#94791, in review in October 2023, after the 2.1 cut).
- **CUDA builds**: the CUDA versions of each release's official builds, as PyTorch's "previous
  versions" install page lists them (conda and pip, Linux and Windows; every patch release);
  releases not listed there (1.3, 2.6 to 2.8, after 2.9) have none here.
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
SDPA_FROM = (2, 0)
PRECISION_FROM = {"amp": (1, 6), "bf16": (1, 10)}
PRECISION_FEATURE = {"amp": "CUDA autocast (torch.cuda.amp)", "bf16": "bf16 autocast on CUDA (torch.autocast's dtype)"}
FUSED_FROM = {"adam": ((1, 13), "Adam"), "adamw": ((2, 0), "AdamW"), "sgd": ((2, 2), "SGD"),
              "momentum": ((2, 2), "SGD")}

# pytorch.org/get-started/previous-versions (pytorch/pytorch.github.io, _get_started/previous-versions.md).
CUDA_BUILDS: dict[tuple[int, int], tuple[str, ...]] = {
    (1, 0): ("8.0", "9.0", "10.0"), (1, 1): ("9.0", "10.0"), (1, 2): ("9.2", "10.0"), (1, 4): ("9.2", "10.1"),
    (1, 5): ("9.2", "10.1", "10.2"), (1, 6): ("9.2", "10.1", "10.2"), (1, 7): ("9.2", "10.1", "10.2", "11.0"),
    (1, 8): ("10.1", "10.2", "11.1", "11.3"), (1, 9): ("10.2", "11.1", "11.3"), (1, 10): ("10.2", "11.1", "11.3"),
    (1, 11): ("10.2", "11.3"), (1, 12): ("10.2", "11.3", "11.6"), (1, 13): ("11.6", "11.7"),
    (2, 0): ("11.7", "11.8"), (2, 1): ("11.8", "12.1"), (2, 2): ("11.8", "12.1"), (2, 3): ("11.8", "12.1"),
    (2, 4): ("11.8", "12.1", "12.4"), (2, 5): ("11.8", "12.1", "12.4"), (2, 9): ("12.6", "12.8", "13.0"),
}


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

    @property
    def has_sdpa(self) -> bool:
        """Whether ``F.scaled_dot_product_attention`` exists (from 2.0)."""
        return self.version >= SDPA_FROM

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def cuda_builds(self) -> tuple[str, ...] | None:
        """The CUDA versions of the official builds, oldest first; None when not known."""
        return CUDA_BUILDS.get(self.version)

    def missing(self, precision: str, optimizer: str, impl: str) -> tuple[str, str] | None:
        """What of ``--precision``/``--optimizer-impl`` this version did not have: (the
        problem, the fix), naming the version it needs; None when it had them all."""
        needs = PRECISION_FROM.get(precision)
        if needs is not None and self.version < needs:
            fix = "use --precision " + ("amp or fp32" if self.version >= PRECISION_FROM["amp"] else "fp32")
            return (f"--precision {precision}: torch {self.name} has no {PRECISION_FEATURE[precision]}, which is "
                    f"from torch {needs[0]}.{needs[1]}", f"{fix}, or --torch {needs[0]}.{needs[1]} or newer")
        fused = self.fused_from(optimizer)
        if impl == "fused" and fused is not None and self.version < fused[0]:
            (major, minor), cls = fused
            return (f"--optimizer-impl fused: torch {self.name} has no fused {cls} ({cls}(fused=True) is from torch "
                    f"{major}.{minor})", f"use --optimizer-impl for-loop, or --torch {major}.{minor} or newer")
        return None

    @staticmethod
    def fused_from(optimizer: str) -> tuple[tuple[int, int], str] | None:
        """The release that gave ``optimizer`` (a name or torch.optim class) ``fused=True``, and
        its class name; None for one not known here."""
        return FUSED_FROM.get(optimizer.rsplit(":", 1)[-1].strip().lower())

    def lacks(self, optimizer: str) -> frozenset[str]:
        """The remedies (:data:`gpudoc.oom.estimate.REMEDIES` names) this version cannot offer."""
        fused = self.fused_from(optimizer)
        return frozenset([p for p, needs in PRECISION_FROM.items() if self.version < needs]
                         + (["fused"] if fused is not None and self.version < fused[0] else []))

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


def cuda_default(version: str) -> tuple[str, str] | None:
    """The CUDA version an estimate for torch ``version`` takes when ``--cuda`` is not given:
    the newest of its official builds, and where that came from; None when they are not known."""
    rules = rules_of(version)
    builds = rules.cuda_builds
    if builds is None:
        return None
    others = " or ".join(builds[:-1])
    return builds[-1], (f"the newest official build of torch {rules.name}; pass --cuda {others} for its other builds"
                        if others else f"the official build of torch {rules.name}")


def cuda_build_note(version: str, cuda: tuple[int, int]) -> str | None:
    """A note when no official build of torch ``version`` had CUDA ``cuda`` (a build from source)."""
    rules = rules_of(version)
    builds = rules.cuda_builds
    if builds is None or any(tuple(int(x) for x in b.split(".")) == cuda for b in builds):
        return None
    return (f"--cuda {cuda[0]}.{cuda[1]}: no official build of torch {rules.name} had it (its builds: "
            f"{', '.join(builds)}); taken as given, as for a build from source")


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
