"""Accelerators an estimate is checked against: memory the framework can use, and the constant
costs that are not tensors (CUDA context, cuBLAS workspace, cuDNN workspace margin)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from gpudoc.errors import EnvironmentMissing, InputError

if TYPE_CHECKING:
    from gpudoc.gpu import GpuBackend, GpuSnapshot

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class Device:
    """One accelerator (or one TPU core). ``capacity`` is the total memory NVML reports;
    ``context`` what the CUDA context takes from it before any tensor (lazy module loading);
    ``cublas_workspace`` what cuBLAS takes through the caching allocator on the first matmul;
    ``cudnn_margin`` room kept for convolution workspaces; ``capability`` the CUDA compute
    capability (None: unknown, or a TPU); ``free`` the memory free on it now, when read from a
    live GPU (other processes hold the rest): an estimate must fit in :attr:`usable`."""

    name: str
    capacity: int
    context: int
    cublas_workspace: int
    cudnn_margin: int
    kind: str = "gpu"
    aliases: tuple[str, ...] = ()
    capability: tuple[int, int] | None = None
    free: int | None = None

    @property
    def usable(self) -> int:
        """The memory an estimate must fit: what is free now when known, else the capacity."""
        return self.capacity if self.free is None else min(self.free, self.capacity)


def _gpu(name: str, mib: int, context_mib: int, capability: tuple[int, int], *aliases: str) -> Device:
    hopper = capability >= (9, 0)
    return Device(name, mib * MiB, context_mib * MiB, (32 if hopper else 8) * MiB + (0 if hopper else 128 * 1024),
                  64 * MiB, "gpu", aliases, capability)


# Capacities as NVML reports them on these boards; contexts measured with CUDA 12 lazy loading
# and PyTorch 2.x (they grow with eager loading: ~650 MiB).
CATALOG: tuple[Device, ...] = (
    _gpu("V100-16GB", 16160, 300, (7, 0), "v100", "v100-16", "tesla v100-sxm2-16gb", "tesla v100-pcie-16gb"),
    _gpu("V100-32GB", 32510, 300, (7, 0), "v100-32", "tesla v100-sxm2-32gb", "tesla v100-pcie-32gb"),
    _gpu("A100-40GB", 40536, 420, (8, 0), "a100-40", "a100-sxm4-40gb", "a100-pcie-40gb"),
    _gpu("A100-80GB", 81251, 420, (8, 0), "a100", "a100-80", "a100-sxm4-80gb", "a100 80gb pcie"),
    _gpu("H100-80GB", 81559, 520, (9, 0), "h100", "h100-80", "h100 80gb hbm3", "nvidia h100 80gb hbm3", "h100 pcie"),
    _gpu("H200-141GB", 143771, 520, (9, 0), "h200", "nvidia h200"),
    _gpu("L4", 23034, 350, (8, 9), "nvidia l4"),
    _gpu("T4", 15360, 300, (7, 5), "tesla t4"),
    _gpu("RTX-3090", 24576, 350, (8, 6), "3090", "geforce rtx 3090", "nvidia geforce rtx 3090"),
    _gpu("RTX-4090", 24564, 350, (8, 9), "4090", "geforce rtx 4090", "nvidia geforce rtx 4090"),
    Device("TPU-v2-core", 8 * GiB, 0, 0, 0, "tpu", ("tpu v2", "tpu-v2", "tpu-v2-8")),
    Device("TPU-v3-core", 16 * GiB, 0, 0, 0, "tpu", ("tpu v3", "tpu-v3", "tpu-v3-8")),
)


# The CUDA context by CUDA version. Lazy module loading (CUDA_MODULE_LOADING=LAZY, which
# PyTorch sets when it is unset) exists from CUDA 11.7; the catalog's contexts are lazy ones.
# Before 11.7 every kernel of PyTorch's binary is loaded when the context is made: 1343 MiB
# measured on a V100 with CUDA 11.2 (Hugging Face's "model memory anatomy" guide, nvidia-smi
# after one small tensor), against 287 MiB lazy and 667 MiB eager on CUDA 11.7 (pytorch #86509).
LAZY_LOADING_FROM = (11, 7)
EAGER_CONTEXT = 1343 * MiB


def parse_cuda(text: str) -> tuple[int, int]:
    """``12.4`` → (12, 4); ``12``, ``12.x`` → (12, 0). Anything else is bad input."""
    found = re.fullmatch(r"\s*(\d{1,2})(?:\.(\d{1,2}|x))?(?:\.\d+)?\s*", text, re.IGNORECASE)
    if found is None or not 7 <= int(found.group(1)) <= 20:
        raise InputError(f"--cuda {text!r}: not a CUDA version", "e.g. 11.8, 12.4 or 12.x")
    minor = found.group(2)
    return int(found.group(1)), int(minor) if minor and minor.lower() != "x" else 0


def local_torch_cuda() -> str | None:
    """The CUDA version the installed torch was built with (``torch.version.cuda``), read from
    its ``version.py`` without importing torch; None for a CPU build or no torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        return cuda_of_version_file((Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text())
    except OSError:
        return None


def cuda_of_version_file(text: str) -> str | None:
    """The ``cuda`` value of a torch ``version.py`` (``cuda: Optional[str] = '12.4'``)."""
    found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", text, re.MULTILINE)
    return found.group(1) if found else None


def for_cuda(device: Device, cuda: tuple[int, int]) -> Device:
    """``device`` with the CUDA context of a PyTorch built for CUDA ``cuda``: the catalog's
    (lazy loading) from 11.7, the eager-loading context before."""
    if device.kind != "gpu" or cuda >= LAZY_LOADING_FROM:
        return device
    return replace(device, context=EAGER_CONTEXT)


def cuda_note(device: Device, cuda: tuple[int, int], source: str) -> str | None:
    """What the CUDA context was taken to be, for a GPU; ``source`` says where the version
    came from (``--cuda``, the local torch build, or the default)."""
    if device.kind != "gpu":
        return None
    loading = "lazy module loading" if cuda >= LAZY_LOADING_FROM else "eager module loading (lazy needs 11.7)"
    return f"CUDA {cuda[0]}.{cuda[1]} ({source}): context {device.context // MiB} MiB, {loading}"


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def find_device(name: str, backend: GpuBackend | None = None) -> Device:
    """A catalog entry by name or alias (case and spaces ignored), or ``local`` for GPU 0 of
    this machine through ``backend`` (NVML when None; the simulated GPUs of ``--simulate``)."""
    if name.strip().lower() == "local":
        return local_device(0, backend)
    wanted = _norm(name)
    for device in CATALOG:
        if wanted in {_norm(device.name), *(_norm(a) for a in device.aliases)}:
            return device
    names = ", ".join(d.name for d in CATALOG)
    raise InputError(f"--gpu {name!r}: not a known device", f"use one of {names}, or local")


def read_gpus(backend: GpuBackend, option: str, fix: str) -> GpuSnapshot:
    """A snapshot of this machine's GPUs through ``backend`` (closed after); NVML missing or
    broken is one line naming ``option``."""
    try:
        with backend as gpus:
            snap = gpus.snapshot()
    except Exception as exc:  # NVML missing or broken: say so, in one line
        raise EnvironmentMissing(f"{option}: cannot read this machine's GPUs ({exc})", fix) from None
    if snap.error and not snap.devices:
        raise EnvironmentMissing(f"{option}: cannot read this machine's GPUs ({snap.error})", fix)
    return snap


FALLBACK_DEVICE = "A100-80GB"


def device_or_fallback(name: str | None, backend: GpuBackend | None = None) -> tuple[Device, bool]:
    """The device named (``find_device``), or with no name the local GPU 0 (through
    ``backend``), else ``FALLBACK_DEVICE``; and whether the fallback was taken."""
    if name is not None:
        return find_device(name, backend), False
    try:
        return find_device("local", backend), False
    except EnvironmentMissing:
        return find_device(FALLBACK_DEVICE), True


def local_device(index: int = 0, backend: GpuBackend | None = None) -> Device:
    """GPU ``index`` of this machine (read through ``backend``, NVML when None), with its
    catalog constants when its name is known."""
    from gpudoc.gpu import NvmlBackend

    snap = read_gpus(backend or NvmlBackend(), "--gpu local", "name a device such as A100-80GB")
    devices = [d for d in snap.devices if d.index == index]
    if not devices or not isinstance(devices[0].memory_total, int):
        raise EnvironmentMissing(f"--gpu local: no GPU {index} with a memory reading on this machine",
                                 "name a device such as A100-80GB")
    gpu = devices[0]
    total = gpu.memory_total
    assert isinstance(total, int)
    name = str(gpu.name)
    return device_named(name, total)


def device_named(name: str, total: int) -> Device:
    """A GPU NVML names: the catalog's constants when the name is in it, else generic ones with
    the compute capability its name tells (:func:`capability_of`)."""
    try:
        known = find_device(name.removeprefix("NVIDIA ").removeprefix("Tesla "))
    except InputError:
        capability = capability_of(name)
        hopper = capability is not None and capability >= (9, 0)
        known = Device(name, 0, 450 * MiB, 32 * MiB if hopper else 8 * MiB + 128 * 1024, 64 * MiB, "gpu", (),
                       capability)
    return Device(name, total, known.context, known.cublas_workspace, known.cudnn_margin, "gpu", (),
                  known.capability)


# GPU name patterns (as NVML reports them) and their compute capability, newest first.
_CAPABILITIES: tuple[tuple[str, tuple[int, int]], ...] = (
    (r"RTX ?50\d\d", (12, 0)),
    (r"\bG?B(100|200)\b", (10, 0)),
    (r"\bG?H(100|200|800|20)\b", (9, 0)),
    (r"\bL(4|20|40S?)\b|RTX ?40\d\d|RTX \d{4} Ada", (8, 9)),
    (r"\bA(100|800|30)\b", (8, 0)),
    (r"\bA(2|10G?|16|40)\b|RTX ?30\d\d|RTX A\d{4}", (8, 6)),
    (r"\bT4\b|RTX ?20\d\d|Quadro RTX|TITAN RTX", (7, 5)),
    (r"V100|TITAN V\b", (7, 0)),
    (r"\bP100\b", (6, 0)),
    (r"\bP(4|40)\b|GTX ?10\d\d", (6, 1)),
)


def capability_of(name: str) -> tuple[int, int] | None:
    """The compute capability a GPU's name tells (``NVIDIA A10G`` → 8.6), or None."""
    for pattern, capability in _CAPABILITIES:
        if re.search(pattern, name, re.IGNORECASE):
            return capability
    return None


def supports(device: Device, precision: str) -> bool | None:
    """Whether ``device`` runs ``precision`` (``fp32``, ``amp``: fp16, ``bf16``); None when it
    cannot be told. bf16 needs compute capability 8.0 (Ampere); TPUs compute in bf16, not fp16."""
    if device.kind == "tpu":
        return precision != "amp"
    if precision != "bf16":
        return True
    return None if device.capability is None else device.capability >= (8, 0)


def check_precision(device: Device, precision: str) -> str | None:
    """Refuse (:class:`InputError`) a precision the device cannot run; a note when it is unknown."""
    ok = supports(device, precision)
    if ok is None:
        return f"--precision {precision}: the compute capability of {device.name} is unknown; bf16 needs 8.0 or newer"
    if ok:
        return None
    if device.kind == "tpu":
        raise InputError(f"--precision {precision}: {device.name} computes in bf16, not fp16", "use --precision bf16")
    assert device.capability is not None
    major, minor = device.capability
    raise InputError(f"--precision {precision}: {device.name} (compute capability {major}.{minor}) has no "
                     f"{precision} support; it needs 8.0 (Ampere) or newer", "use --precision amp (fp16 autocast)")
