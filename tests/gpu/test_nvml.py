"""NvmlBackend over the real pynvml module with its functions substituted (no GPU needed)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pynvml
import pytest

from gpudoc.gpu import (
    NA,
    BackendTimeout,
    DriverLibraryMismatch,
    DriverNotLoaded,
    GpuLost,
    NoDevices,
    NvmlBackend,
    NvmlLibraryNotFound,
    NvmlPermissionDenied,
    ProcessType,
)
from gpudoc.gpu.errors import kernel_module_version, map_nvml_error

MIB = 1024 * 1024


def _raise(code: int):
    def fn(*args):
        raise pynvml.NVMLError(code)

    return fn


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Two healthy GPUs answered by substituted pynvml functions; tests edit ``state``."""
    state: dict = {
        "names": ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"],
        "compute": {0: [SimpleNamespace(pid=4242, usedGpuMemory=30_000 * MIB)], 1: []},
        "graphics": {0: [], 1: []},
        "fan": _raise(pynvml.NVML_ERROR_NOT_SUPPORTED),
    }
    p = monkeypatch.setattr
    p(pynvml, "nvmlInit", lambda: None)
    p(pynvml, "nvmlShutdown", lambda: None)
    p(pynvml, "nvmlSystemGetDriverVersion", lambda: "550.54.15")
    p(pynvml, "nvmlSystemGetCudaDriverVersion", lambda: 12040)
    p(pynvml, "nvmlSystemGetNVMLVersion", lambda: "12.550.54.15")
    p(pynvml, "nvmlDeviceGetCount", lambda: len(state["names"]))
    p(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
    p(pynvml, "nvmlDeviceGetName", lambda h: state["names"][h])
    p(pynvml, "nvmlDeviceGetUUID", lambda h: f"GPU-{h}")
    p(pynvml, "nvmlDeviceGetPciInfo", lambda h: SimpleNamespace(busId=f"00000000:{h:02X}:00.0"))
    p(pynvml, "nvmlDeviceGetMemoryInfo",
      lambda h: SimpleNamespace(total=81920 * MIB, used=30_500 * MIB, free=51420 * MIB))
    p(pynvml, "nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=97, memory=61))
    p(pynvml, "nvmlDeviceGetTemperature", lambda h, s: 64)
    p(pynvml, "nvmlDeviceGetMinorNumber", lambda h: h)
    p(pynvml, "nvmlDeviceGetPowerUsage", lambda h: 312_456)
    p(pynvml, "nvmlDeviceGetEnforcedPowerLimit", lambda h: 400_000)
    p(pynvml, "nvmlDeviceGetFanSpeed", lambda h: state["fan"](h))
    p(pynvml, "nvmlDeviceGetClockInfo", lambda h, c: 1410 if c == pynvml.NVML_CLOCK_SM else 1593)
    p(pynvml, "nvmlDeviceGetPcieThroughput", lambda h, c: 100 if c == pynvml.NVML_PCIE_UTIL_TX_BYTES else 300)
    p(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda h: state["compute"][h])
    p(pynvml, "nvmlDeviceGetGraphicsRunningProcesses", lambda h: state["graphics"][h])
    p(pynvml, "nvmlDeviceGetMPSComputeRunningProcesses", lambda h: [])
    return state


def test_readings_units_and_unsupported_fields(fake_gpus: dict) -> None:
    with NvmlBackend() as backend:
        snap = backend.snapshot()
    assert snap.error is None
    assert snap.driver.driver_version == "550.54.15"
    assert snap.driver.cuda_version == "12.4"
    gpu = snap.devices[0]
    assert gpu.name == "NVIDIA A100-SXM4-80GB"
    assert gpu.memory_total == 81920 * MIB and gpu.memory_used + gpu.memory_free == gpu.memory_total
    assert (gpu.utilization_gpu, gpu.utilization_memory, gpu.temperature) == (97, 61, 64)
    assert gpu.power_draw == pytest.approx(312.456) and gpu.power_limit == 400.0
    assert gpu.fan_speed is NA
    assert (gpu.clock_sm, gpu.clock_memory) == (1410, 1593)
    assert (gpu.pcie_tx, gpu.pcie_rx) == (100 * 1024, 300 * 1024)
    assert gpu.minor_number == 0
    assert [(p.pid, p.used_memory, p.type) for p in gpu.processes] == [
        (4242, 30_000 * MIB, ProcessType.COMPUTE)
    ]


def test_impossible_pids_are_discarded(fake_gpus: dict) -> None:
    fake_gpus["compute"][0] = [
        SimpleNamespace(pid=0, usedGpuMemory=MIB),
        SimpleNamespace(pid=4294967295, usedGpuMemory=MIB),
        SimpleNamespace(pid=5_000_000, usedGpuMemory=MIB),
        SimpleNamespace(pid=77, usedGpuMemory=None),
    ]
    with NvmlBackend(pid_max=4_194_304) as backend:
        procs = backend.device(0).processes
    assert [(p.pid, p.used_memory) for p in procs] == [(77, NA)]


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (pynvml.NVML_ERROR_NOT_SUPPORTED, "compute: Not Supported"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "compute: Insufficient Permissions"),
        (pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, "compute: Function Not Found"),
        (pynvml.NVML_ERROR_UNKNOWN, "compute: Unknown Error"),
    ],
)
def test_a_process_list_nvml_cannot_give_is_unknown_not_empty(
    fake_gpus: dict, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    original = pynvml.nvmlDeviceGetComputeRunningProcesses
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda h: _raise(code)(h) if h == 1 else original(h)
    )
    with NvmlBackend() as backend:
        snap = backend.snapshot()
    healthy, unlisted = snap.devices
    assert healthy.processes_error is None and [p.pid for p in healthy.processes] == [4242]
    assert unlisted.error is None and unlisted.name == "NVIDIA A100-SXM4-80GB", "the readings are kept"
    assert unlisted.processes == () and words in (unlisted.processes_error or "")


def test_an_unreadable_mps_or_graphics_list_keeps_what_the_others_listed(
    fake_gpus: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMPSComputeRunningProcesses", _raise(pynvml.NVML_ERROR_NOT_SUPPORTED))
    with NvmlBackend() as backend:
        gpu = backend.device(0)
    assert [p.pid for p in gpu.processes] == [4242]
    assert gpu.processes_error == "process list unavailable (mps: Not Supported)"


def test_a_gpu_lost_while_listing_processes_fails_the_device(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetGraphicsRunningProcesses", _raise(pynvml.NVML_ERROR_GPU_IS_LOST))
    with NvmlBackend() as backend:
        snap = backend.snapshot()
    assert all("is lost" in (d.error or "") and d.processes_error is None for d in snap.devices)


def test_compute_and_graphics_entries_merge(fake_gpus: dict) -> None:
    fake_gpus["graphics"][0] = [SimpleNamespace(pid=4242, usedGpuMemory=None)]
    with NvmlBackend() as backend:
        (proc,) = backend.device(0).processes
    assert proc.type is ProcessType.COMPUTE_GRAPHICS
    assert proc.used_memory == 30_000 * MIB


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, NvmlLibraryNotFound, "libnvidia-ml.so.1 not found"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, DriverNotLoaded, "modprobe nvidia"),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, DriverLibraryMismatch, "reboot"),
        (pynvml.NVML_ERROR_NO_PERMISSION, NvmlPermissionDenied, "/dev/nvidiactl"),
    ],
)
def test_init_errors_are_mapped(monkeypatch: pytest.MonkeyPatch, code: int, error: type, words: str) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", _raise(code))
    backend = NvmlBackend()
    with pytest.raises(error) as info:
        backend.driver()
    assert words in str(info.value)
    assert info.value.exit_code == 3
    snap = backend.snapshot()
    assert snap.devices == () and words in (snap.error or "")


def test_init_is_retried_after_a_driver_reload(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = []

    def flaky_init() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", flaky_init)
    backend = NvmlBackend()
    assert "not loaded" in (backend.snapshot().error or "")
    assert backend.snapshot().error is None
    assert len(attempts) == 2


def test_uninitialized_mid_run_reinitialises(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    inits = []
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: inits.append(1))
    backend = NvmlBackend()
    backend.snapshot()
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", _raise(pynvml.NVML_ERROR_UNINITIALIZED))
    assert backend.snapshot().error is not None
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
    assert backend.snapshot().error is None
    assert len(inits) == 2


def test_lost_gpu_is_reported_on_that_device_only(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    original = pynvml.nvmlDeviceGetMemoryInfo

    def memory(handle: int):
        if handle == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return original(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory)
    with NvmlBackend() as backend:
        snap = backend.snapshot()
        with pytest.raises(GpuLost, match="GPU 1 is lost"):
            backend.device(1)
    assert snap.devices[0].error is None and snap.devices[0].name == "NVIDIA A100-SXM4-80GB"
    assert "GPU 1 is lost" in (snap.devices[1].error or "")
    assert snap.devices[1].memory_total is NA


def test_zero_devices_raise_no_devices(fake_gpus: dict) -> None:
    fake_gpus["names"] = []
    backend = NvmlBackend()
    with pytest.raises(NoDevices, match="sees no GPU"):
        backend.device_count()
    assert "sees no GPU" in (backend.snapshot().error or "")


def test_a_hung_device_does_not_freeze_the_caller(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    release, returned = threading.Event(), threading.Event()
    original = pynvml.nvmlDeviceGetName

    def name(handle: int) -> str:
        if handle == 0:
            release.wait(30)
            returned.set()
        return original(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", name)
    backend = NvmlBackend(timeout=0.2)
    snap = backend.snapshot()
    assert not returned.is_set(), "the snapshot waited for the stuck call"
    assert "no answer within 0.2 s" in (snap.devices[0].error or "")
    assert snap.devices[1].error is None and snap.devices[1].name == "NVIDIA A100-SXM4-80GB"
    again = backend.snapshot()
    assert "has not returned" in (again.devices[0].error or "")
    release.set()
    deadline = time.monotonic() + 5
    while backend.snapshot().devices[0].error and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.snapshot().devices[0].error is None
    backend.close()


def test_timeout_error_type(fake_gpus: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: time.sleep(1))
    backend = NvmlBackend(timeout=0.1)
    with pytest.raises(BackendTimeout):
        backend.device(0)


def test_mismatch_message_names_both_versions(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = tmp_path / "version"
    version.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.161.07  Sat Feb 17 22:55:48 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert kernel_module_version(version) == "535.161.07"
    monkeypatch.setattr("gpudoc.gpu.errors.kernel_module_version", lambda: "535.161.07")
    monkeypatch.setattr("gpudoc.gpu.errors.nvml_library_version", lambda: "550.54.15")
    error = map_nvml_error(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "NVML initialisation")
    assert "kernel module 535.161.07, libnvidia-ml 550.54.15" in error.message
    assert kernel_module_version(tmp_path / "absent") is None
