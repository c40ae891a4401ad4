"""GPU backend over NVML (nvidia-ml-py, imported as ``pynvml``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gpudoc.gpu.backend import GpuBackend
from gpudoc.bounded import BoundedCaller
from gpudoc.gpu.errors import (
    FIELD_UNAVAILABLE_CODES,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_GPU_NOT_FOUND,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_RESET_REQUIRED,
    NVML_ERROR_TIMEOUT,
    NVML_ERROR_UNINITIALIZED,
    BackendTimeout,
    GpuError,
    NoDevices,
    map_nvml_error,
)
from gpudoc.gpu.model import DriverInfo, GpuDevice, GpuProcess, ProcessType
from gpudoc.na import NA, NotAvailable, na_map

T = TypeVar("T")

# PIDs that garbage or mismatched bindings report; never real processes.
_IMPOSSIBLE_PIDS = frozenset({0, 0xFFFFFFFF})
_UNAVAILABLE_U64 = 0xFFFFFFFFFFFFFFFF
# Codes that fail the whole device (or NVML) rather than one process list.
_DEVICE_FAILURE_CODES = frozenset({
    NVML_ERROR_UNINITIALIZED, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_TIMEOUT, NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_GPU_IS_LOST, NVML_ERROR_RESET_REQUIRED, NVML_ERROR_LIB_RM_VERSION_MISMATCH, NVML_ERROR_GPU_NOT_FOUND,
})
_PROCESS_LISTS = (
    (ProcessType.COMPUTE, "nvmlDeviceGetComputeRunningProcesses"),
    (ProcessType.GRAPHICS, "nvmlDeviceGetGraphicsRunningProcesses"),
    (ProcessType.MPS, "nvmlDeviceGetMPSComputeRunningProcesses"),
)


def read_pid_max(path: Path = Path("/proc/sys/kernel/pid_max")) -> int:
    """The kernel's largest PID (4194304 when it cannot be read)."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 4_194_304


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _cuda_version(encoded: int) -> str:
    """NVML encodes CUDA 12.4 as 12040."""
    encoded = int(encoded)
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _unread_lists(unread: dict[str, list[str]]) -> str | None:
    """``process list unavailable (Not Supported)`` when every list failed alike, else each
    failed list named (``mps: Not Supported``); None when every list was read."""
    if not unread:
        return None
    if len(unread) == 1 and len(next(iter(unread.values()))) == len(_PROCESS_LISTS):
        return f"process list unavailable ({next(iter(unread))})"
    return "process list unavailable (" + "; ".join(f"{', '.join(k)}: {why}" for why, k in unread.items()) + ")"


def _merge_type(old: ProcessType, new: ProcessType) -> ProcessType:
    if old == new:
        return old
    if {old, new} <= {ProcessType.COMPUTE, ProcessType.GRAPHICS, ProcessType.COMPUTE_GRAPHICS}:
        return ProcessType.COMPUTE_GRAPHICS
    return old


class NvmlBackend(GpuBackend):
    """Reads GPUs through NVML.

    ``nvml`` is the module to call (``pynvml`` by default, imported on first use as it is
    large; the simulated backend passes its own). Every device read runs under a deadline of
    ``timeout`` seconds, so a GPU whose driver hangs is reported as such while the others
    keep answering. Failures in NVML
    initialisation are retried on the next call, so the backend recovers after a driver
    reload.
    """

    name = "nvml"

    def __init__(self, *, nvml: Any = None, timeout: float = 2.0, pid_max: int | None = None):
        self._module = nvml
        self._caller = BoundedCaller(
            timeout, BackendTimeout, "the driver may be hung: check 'dmesg | grep -i xid'"
        )
        self._init_lock = threading.Lock()
        self._initialized = False
        self._pid_max = read_pid_max() if pid_max is None else pid_max

    @property
    def _nvml(self) -> Any:
        if self._module is None:
            import pynvml

            self._module = pynvml
        return self._module

    def _nvml_error_code(self, exc: BaseException) -> int | None:
        if isinstance(exc, self._nvml.NVMLError):
            return int(exc.value)
        return None

    def _call(self, key: object, label: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` bounded, turning NVML errors into gpudoc errors."""
        try:
            return self._caller.call(key, label, fn, *args)
        except GpuError:
            raise
        except Exception as exc:
            code = self._nvml_error_code(exc)
            if code is None:
                raise
            if code in (NVML_ERROR_UNINITIALIZED, NVML_ERROR_DRIVER_NOT_LOADED):
                self._initialized = False
            raise map_nvml_error(code, label, str(exc)) from None

    def _ensure_init(self) -> None:
        with self._init_lock:
            if not self._initialized:
                self._call("init", "NVML initialisation", self._nvml.nvmlInit)
                self._initialized = True

    def driver(self) -> DriverInfo:
        self._ensure_init()
        return self._call("system", "NVML system query", self._read_driver)

    def device_count(self) -> int:
        """The number of GPUs; :class:`NoDevices` when the driver answers but sees none."""
        self._ensure_init()
        count = int(self._call("system", "NVML device count", self._nvml.nvmlDeviceGetCount))
        if count == 0:
            raise NoDevices(
                "the NVIDIA driver answers but sees no GPU",
                "check 'nvidia-smi -L', 'lspci | grep -i nvidia' and 'dmesg | grep -i nvidia'",
            )
        return count

    def device(self, index: int) -> GpuDevice:
        self._ensure_init()
        return self._call(("gpu", index), f"GPU {index}", self._read_device, index)

    def close(self) -> None:
        with self._init_lock:
            if self._initialized:
                with contextlib.suppress(GpuError):
                    self._call("init", "NVML shutdown", self._nvml.nvmlShutdown)
                self._initialized = False
        self._caller.close()

    def _optional(self, fn: Callable[..., T], *args: Any) -> T | NotAvailable:
        """A field read: unsupported or forbidden fields become ``NA``; GPU loss propagates."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as exc:
            if int(exc.value) in FIELD_UNAVAILABLE_CODES:
                return NA
            raise

    def _read_driver(self) -> DriverInfo:
        nv = self._nvml
        return DriverInfo(
            driver_version=na_map(self._optional(nv.nvmlSystemGetDriverVersion), _text),
            cuda_version=na_map(self._optional(nv.nvmlSystemGetCudaDriverVersion), _cuda_version),
            nvml_version=na_map(self._optional(nv.nvmlSystemGetNVMLVersion), _text),
        )

    def _read_device(self, index: int) -> GpuDevice:
        nv = self._nvml
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        opt = self._optional
        name = opt(nv.nvmlDeviceGetName, handle)
        uuid = opt(nv.nvmlDeviceGetUUID, handle)
        pci = opt(nv.nvmlDeviceGetPciInfo, handle)
        minor = opt(nv.nvmlDeviceGetMinorNumber, handle)
        memory = opt(nv.nvmlDeviceGetMemoryInfo, handle)
        rates = opt(nv.nvmlDeviceGetUtilizationRates, handle)
        power = opt(nv.nvmlDeviceGetPowerUsage, handle)
        limit = opt(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        tx = opt(nv.nvmlDeviceGetPcieThroughput, handle, nv.NVML_PCIE_UTIL_TX_BYTES)
        rx = opt(nv.nvmlDeviceGetPcieThroughput, handle, nv.NVML_PCIE_UTIL_RX_BYTES)
        processes, processes_error = self._read_processes(index, handle)
        return GpuDevice(
            index=index,
            name=na_map(name, _text),
            uuid=na_map(uuid, _text),
            pci_bus_id=na_map(pci, lambda p: _text(p.busId)),
            minor_number=na_map(minor, int),
            memory_total=na_map(memory, lambda m: int(m.total)),
            memory_used=na_map(memory, lambda m: int(m.used)),
            memory_free=na_map(memory, lambda m: int(m.free)),
            utilization_gpu=na_map(rates, lambda r: int(r.gpu)),
            utilization_memory=na_map(rates, lambda r: int(r.memory)),
            temperature=opt(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU),
            power_draw=na_map(power, lambda mw: mw / 1000.0),
            power_limit=na_map(limit, lambda mw: mw / 1000.0),
            fan_speed=opt(nv.nvmlDeviceGetFanSpeed, handle),
            clock_sm=opt(nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM),
            clock_memory=opt(nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_MEM),
            pcie_tx=na_map(tx, lambda kib: kib * 1024),
            pcie_rx=na_map(rx, lambda kib: kib * 1024),
            processes=processes,
            processes_error=processes_error,
        )

    def _read_processes(self, index: int, handle: Any) -> tuple[tuple[GpuProcess, ...], str | None]:
        """Compute, graphics and MPS lists merged per PID, impossible PIDs dropped, and why a
        list could not be read (None when all were): an unreadable list means "unknown", never
        "no process". A lost GPU or driver still fails the whole device."""
        found: dict[int, GpuProcess] = {}
        unread: dict[str, list[str]] = {}  # why → the lists it stopped
        for kind, fn_name in _PROCESS_LISTS:
            fn = getattr(self._nvml, fn_name, None)
            if fn is None:
                unread.setdefault("not in this pynvml", []).append(kind.value)
                continue
            try:
                entries = fn(handle)
            except self._nvml.NVMLError as exc:
                if int(exc.value) in _DEVICE_FAILURE_CODES:
                    raise
                unread.setdefault(str(exc) or f"code {int(exc.value)}", []).append(kind.value)
                continue
            for entry in entries:
                pid = int(entry.pid)
                if pid in _IMPOSSIBLE_PIDS or pid > self._pid_max:
                    continue
                used = entry.usedGpuMemory
                memory: int | NotAvailable = (
                    NA if used is None or used == _UNAVAILABLE_U64 else int(used)
                )
                if pid in found:
                    old = found[pid]
                    merged_memory = old.used_memory if old.used_memory is not NA else memory
                    found[pid] = GpuProcess(pid, index, _merge_type(old.type, kind), merged_memory)
                else:
                    found[pid] = GpuProcess(pid, index, kind, memory)
        return tuple(sorted(found.values(), key=lambda p: p.pid)), _unread_lists(unread)
