"""Typed snapshots of GPUs and their processes, with an explicit "not available" value."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gpudoc.na import NA, NotAvailable


class ProcessType(str, enum.Enum):
    """How a process uses a GPU, as NVML lists it (nvidia-smi's C, G, M and C+G)."""

    COMPUTE = "compute"
    GRAPHICS = "graphics"
    MPS = "mps"
    COMPUTE_GRAPHICS = "compute+graphics"


@dataclass(frozen=True)
class DriverInfo:
    """Versions of the driver stack; ``cuda_version`` is the newest CUDA the driver supports."""

    driver_version: str | NotAvailable = NA
    cuda_version: str | NotAvailable = NA
    nvml_version: str | NotAvailable = NA


@dataclass(frozen=True)
class GpuProcess:
    """A process NVML lists on one GPU; ``used_memory`` is in bytes."""

    pid: int
    gpu_index: int
    type: ProcessType
    used_memory: int | NotAvailable = NA


@dataclass(frozen=True)
class GpuDevice:
    """One GPU at one moment.

    Memory in bytes, utilisation and fan in percent, temperature in °C, power in watts,
    clocks in MHz, PCIe throughput in bytes/s. ``minor_number`` is N in the GPU's device
    file ``/dev/nvidiaN`` (not always equal to ``index``). ``error`` is set (and the readings are ``NA``)
    when the device could not be read at all, e.g. it fell off the bus. ``processes_error`` is
    set when NVML could not list the GPU's processes (not supported, not permitted): then
    ``processes`` holds what the other lists gave and is not the whole truth — an unlisted
    process may still own a context there.
    """

    index: int
    name: str | NotAvailable = NA
    uuid: str | NotAvailable = NA
    pci_bus_id: str | NotAvailable = NA
    minor_number: int | NotAvailable = NA
    memory_total: int | NotAvailable = NA
    memory_used: int | NotAvailable = NA
    memory_free: int | NotAvailable = NA
    utilization_gpu: int | NotAvailable = NA
    utilization_memory: int | NotAvailable = NA
    temperature: int | NotAvailable = NA
    power_draw: float | NotAvailable = NA
    power_limit: float | NotAvailable = NA
    fan_speed: int | NotAvailable = NA
    clock_sm: int | NotAvailable = NA
    clock_memory: int | NotAvailable = NA
    pcie_tx: int | NotAvailable = NA
    pcie_rx: int | NotAvailable = NA
    processes: tuple[GpuProcess, ...] = ()
    processes_error: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class GpuSnapshot:
    """Everything one backend poll saw. ``error`` is set when the backend itself failed."""

    backend: str
    timestamp: float
    driver: DriverInfo = field(default_factory=DriverInfo)
    devices: tuple[GpuDevice, ...] = ()
    error: str | None = None
