"""GPU backend errors, and the mapping from NVML return codes to messages a user can act on."""

from __future__ import annotations

import os
import re
from pathlib import Path

from gpudoc.errors import EnvironmentMissing


class GpuError(EnvironmentMissing):
    """A GPU backend could not answer."""


class NvmlLibraryNotFound(GpuError):
    """libnvidia-ml.so.1 cannot be loaded."""


class DriverNotLoaded(GpuError):
    """The NVIDIA kernel driver is not loaded."""


class DriverLibraryMismatch(GpuError):
    """The kernel module and the user-space NVML library are different driver versions."""


class NoDevices(GpuError):
    """NVML works but sees no GPU."""


class NvmlPermissionDenied(GpuError):
    """The user may not query the driver."""


class GpuLost(GpuError):
    """A GPU stopped answering (fell off the bus, needs a reset)."""


class BackendTimeout(GpuError):
    """A backend call did not return in time; the caller gave up waiting."""


class NvmlCallFailed(GpuError):
    """Any other NVML failure."""


# NVML return codes (nvml.h); pynvml exposes the same numbers as NVML_ERROR_*.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_GPU_NOT_FOUND = 28

# Codes that mean "this field is not there" rather than "something is wrong".
FIELD_UNAVAILABLE_CODES = frozenset(
    {NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_NO_PERMISSION, NVML_ERROR_FUNCTION_NOT_FOUND}
)

_PROC_VERSION = Path("/proc/driver/nvidia/version")


def kernel_module_version(version_file: Path = _PROC_VERSION) -> str | None:
    """The loaded NVIDIA kernel module's version, from /proc/driver/nvidia/version."""
    try:
        text = version_file.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def nvml_library_version() -> str | None:
    """The user-space NVML library's version, from the file libnvidia-ml.so.1 resolves to."""
    import ctypes.util

    name = ctypes.util.find_library("nvidia-ml")
    candidates = [name] if name and os.path.isabs(name) else []
    candidates += [
        f"{d}/libnvidia-ml.so.1"
        for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/aarch64-linux-gnu", "/usr/lib")
    ]
    for candidate in candidates:
        real = os.path.realpath(candidate)
        match = re.search(r"libnvidia-ml\.so\.(\d+\.\d+(?:\.\d+)?)$", real)
        if os.path.exists(real) and match:
            return match.group(1)
    return None


def map_nvml_error(code: int, where: str, raw: str = "") -> GpuError:
    """Turn an NVML return code raised at ``where`` into a gpudoc error with a fix."""
    if code == NVML_ERROR_LIBRARY_NOT_FOUND:
        return NvmlLibraryNotFound(
            "NVIDIA driver library libnvidia-ml.so.1 not found",
            "install the NVIDIA driver; in a container, start it with the NVIDIA Container "
            "Toolkit (--gpus all)",
        )
    if code == NVML_ERROR_DRIVER_NOT_LOADED:
        return DriverNotLoaded(
            "NVIDIA kernel driver is not loaded",
            "run 'sudo modprobe nvidia' and check 'dmesg | grep -i nvidia'; reinstall the "
            "driver if the module is missing",
        )
    if code == NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        known = [
            f"{label} {version}"
            for label, version in (
                ("kernel module", kernel_module_version()),
                ("libnvidia-ml", nvml_library_version()),
            )
            if version
        ]
        versions = f" ({', '.join(known)})" if known else ""
        return DriverLibraryMismatch(
            f"NVIDIA driver/library version mismatch{versions}",
            "the driver was upgraded but the old kernel module is still loaded; reboot, or stop "
            "every GPU process and reload the modules (sudo rmmod nvidia_uvm nvidia_drm "
            "nvidia_modeset nvidia && sudo modprobe nvidia)",
        )
    if code == NVML_ERROR_NO_PERMISSION:
        return NvmlPermissionDenied(
            f"no permission to query the NVIDIA driver at {where}",
            "check the permissions of /dev/nvidiactl and /dev/nvidia* (gpudoc doctor lists them)",
        )
    if code in (NVML_ERROR_GPU_IS_LOST, NVML_ERROR_RESET_REQUIRED, NVML_ERROR_GPU_NOT_FOUND):
        return GpuLost(
            f"{where} is lost (fell off the bus or needs a reset)",
            "check 'dmesg | grep -i xid', then 'nvidia-smi -r' or reboot",
        )
    detail = f" ({raw})" if raw else f" (code {code})"
    if code == NVML_ERROR_TIMEOUT:
        return BackendTimeout(f"NVML timed out at {where}{detail}")
    return NvmlCallFailed(f"NVML call failed at {where}{detail}")
