"""GPU probe layer: a backend interface, NVML and simulated implementations, typed snapshots.

Names are loaded on first use, so importing one light piece (the data model, the errors) does
not pull in pynvml, YAML and the simulator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "GpuBackend": "gpudoc.gpu.backend",
    "BackendTimeout": "gpudoc.gpu.errors",
    "DriverLibraryMismatch": "gpudoc.gpu.errors",
    "DriverNotLoaded": "gpudoc.gpu.errors",
    "GpuError": "gpudoc.gpu.errors",
    "GpuLost": "gpudoc.gpu.errors",
    "NoDevices": "gpudoc.gpu.errors",
    "NvmlCallFailed": "gpudoc.gpu.errors",
    "NvmlLibraryNotFound": "gpudoc.gpu.errors",
    "NvmlPermissionDenied": "gpudoc.gpu.errors",
    "DriverInfo": "gpudoc.gpu.model",
    "GpuDevice": "gpudoc.gpu.model",
    "GpuProcess": "gpudoc.gpu.model",
    "GpuSnapshot": "gpudoc.gpu.model",
    "ProcessType": "gpudoc.gpu.model",
    "NvmlBackend": "gpudoc.gpu.nvml",
    "ManualClock": "gpudoc.gpu.simulated",
    "Scenario": "gpudoc.gpu.simulated",
    "ScenarioError": "gpudoc.gpu.simulated",
    "SimulatedBackend": "gpudoc.gpu.simulated",
    "builtin_scenarios": "gpudoc.gpu.simulated",
    "load_scenario": "gpudoc.gpu.simulated",
    "NA": "gpudoc.na",
    "NotAvailable": "gpudoc.na",
    "available": "gpudoc.na",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpudoc.gpu' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
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
    from gpudoc.gpu.simulated import (
        ManualClock,
        Scenario,
        ScenarioError,
        SimulatedBackend,
        builtin_scenarios,
        load_scenario,
    )
    from gpudoc.na import NA, NotAvailable, available
