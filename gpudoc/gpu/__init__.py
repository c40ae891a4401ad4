"""GPU probe layer: a backend interface, NVML and simulated implementations, typed snapshots.

Names are loaded on first use, so importing one light piece (the data model, the errors) does
not pull in pynvml, YAML and the simulator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "GpuBackend": "backend",
    "BackendTimeout": "errors",
    "DriverLibraryMismatch": "errors",
    "DriverNotLoaded": "errors",
    "GpuError": "errors",
    "GpuLost": "errors",
    "NoDevices": "errors",
    "NvmlCallFailed": "errors",
    "NvmlLibraryNotFound": "errors",
    "NvmlPermissionDenied": "errors",
    "DriverInfo": "model",
    "GpuDevice": "model",
    "GpuProcess": "model",
    "GpuSnapshot": "model",
    "ProcessType": "model",
    "NvmlBackend": "nvml",
    "ManualClock": "simulated",
    "Scenario": "simulated",
    "ScenarioError": "simulated",
    "SimulatedBackend": "simulated",
    "builtin_scenarios": "simulated",
    "load_scenario": "simulated",
    "NA": "na",
    "NotAvailable": "na",
    "available": "na",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpudoc.gpu' has no attribute {name!r}")
    package = "gpudoc" if module == "na" else "gpudoc.gpu"
    value = getattr(importlib.import_module(f"{package}.{module}"), name)
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
