"""GPU probe layer: a backend interface, NVML and simulated implementations, typed snapshots."""

from gpudoc.gpu.backend import GpuBackend
from gpudoc.gpu.errors import (
    BackendTimeout,
    DriverLibraryMismatch,
    DriverNotLoaded,
    GpuError,
    GpuLost,
    NoDevices,
    NvmlCallFailed,
    NvmlLibraryNotFound,
    NvmlPermissionDenied,
)
from gpudoc.gpu.model import DriverInfo, GpuDevice, GpuProcess, GpuSnapshot, ProcessType
from gpudoc.gpu.nvml import NvmlBackend
from gpudoc.na import NA, NotAvailable, available
from gpudoc.gpu.simulated import (
    ManualClock,
    Scenario,
    ScenarioError,
    SimulatedBackend,
    builtin_scenarios,
    load_scenario,
)

__all__ = [
    "NA",
    "BackendTimeout",
    "DriverInfo",
    "DriverLibraryMismatch",
    "DriverNotLoaded",
    "GpuBackend",
    "GpuDevice",
    "GpuError",
    "GpuLost",
    "GpuProcess",
    "GpuSnapshot",
    "ManualClock",
    "NoDevices",
    "NotAvailable",
    "NvmlBackend",
    "NvmlCallFailed",
    "NvmlLibraryNotFound",
    "NvmlPermissionDenied",
    "ProcessType",
    "Scenario",
    "ScenarioError",
    "SimulatedBackend",
    "available",
    "builtin_scenarios",
    "load_scenario",
]
