"""gpudoc doctor's checks on simulated GPUs, fake device files, a fake /proc and real frameworks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpudoc.doctor import (
    DoctorReport,
    Status,
    _numba_check,
    _tensorflow_check,
    _torch_check,
    diagnose,
    probe_frameworks,
)
from gpudoc.errors import ExitCode
from gpudoc.gpu import ManualClock, SimulatedBackend

GPU = {"name": "NVIDIA A100-SXM4-80GB", "memory_total_mib": 81920, "utilization": 50}


def _backend(**extra) -> SimulatedBackend:
    scenario = {"name": "t", "gpus": [GPU, GPU], "processes": [{"pid": 4242, "gpu": 0, "memory_mib": 1000}]}
    scenario.update(extra)
    return SimulatedBackend(scenario, clock=ManualClock(1))


@pytest.fixture
def host(tmp_path: Path) -> dict:
    """Fake /dev/nvidia* files and a fake /proc that holds the scenario's PID."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm"):
        (dev / name).write_text("")
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "status").write_text("Name:\tpython\nNSpid:\t4000\n")
    (proc / "4242").mkdir()
    return {"device_glob": str(dev / "nvidia*"), "proc_root": proc, "frameworks": ()}


def by_name(report) -> dict:
    return {c.name: c for c in report.checks}


def test_healthy_gpu_machine(host: dict) -> None:
    report = diagnose(_backend(), **host)
    checks = by_name(report)
    assert report.exit_code == ExitCode.OK
    assert checks["NVIDIA driver"].status is Status.OK and "550.54.15" in checks["NVIDIA driver"].detail
    assert "CUDA 12.4" in checks["NVIDIA driver"].detail
    assert checks["GPU 0"].status is Status.OK and "A100" in checks["GPU 0"].detail
    assert "1 process(es)" in checks["GPU 0"].detail
    assert checks["device files"].status is Status.OK and "4 readable and writable" in checks["device files"].detail
    assert checks["PID namespace"].status is Status.OK


def test_driver_library_mismatch_is_missing(host: dict) -> None:
    backend = _backend(faults=[{"kind": "init_failure", "error": "driver_library_mismatch"}])
    report = diagnose(backend, **host)
    check = by_name(report)["NVIDIA driver"]
    assert report.exit_code == ExitCode.ENVIRONMENT
    assert check.status is Status.MISSING and "version mismatch" in check.detail and "reboot" in check.fix


def test_lost_gpu_is_a_problem(host: dict) -> None:
    report = diagnose(_backend(faults=[{"kind": "gpu_lost", "gpu": 1}]), **host)
    checks = by_name(report)
    assert report.exit_code == ExitCode.FINDINGS
    assert checks["GPU 0"].status is Status.OK
    assert checks["GPU 1"].status is Status.PROBLEM and "lost" in checks["GPU 1"].detail


def test_no_gpus_is_missing(host: dict) -> None:
    report = diagnose(_backend(gpus=[], processes=[]), **host)
    assert report.exit_code == ExitCode.ENVIRONMENT
    assert by_name(report)["GPUs"].detail == "the NVIDIA driver answers but sees no GPU"


def test_cpu_only_machine_is_fine_unless_a_gpu_is_required(tmp_path: Path) -> None:
    absent = _backend(faults=[{"kind": "init_failure", "error": "library_not_found"}])
    empty = {"device_glob": str(tmp_path / "nvidia*"), "proc_root": tmp_path, "frameworks": ()}
    report = diagnose(absent, **empty)
    assert report.exit_code == ExitCode.OK
    assert by_name(report)["NVIDIA driver"].status is Status.INFO
    required = diagnose(absent, require_gpu=True, **empty)
    assert required.exit_code == ExitCode.ENVIRONMENT
    assert "libnvidia-ml.so.1 not found" in by_name(required)["NVIDIA driver"].detail


def test_driver_files_without_library_is_missing(host: dict) -> None:
    absent = _backend(faults=[{"kind": "init_failure", "error": "library_not_found"}])
    report = diagnose(absent, **host)
    assert report.exit_code == ExitCode.ENVIRONMENT
    assert "Container Toolkit" in by_name(report)["NVIDIA driver"].fix


def test_device_files_missing_or_denied(host: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = diagnose(_backend(), **{**host, "device_glob": str(tmp_path / "none" / "nvidia*")})
    files = by_name(report)["device files"]
    assert files.status is Status.PROBLEM and "--gpus all" in files.fix
    monkeypatch.setattr("gpudoc.doctor.os.access", lambda path, mode: not path.endswith("nvidia1"))
    files = by_name(diagnose(_backend(), **host))["device files"]
    assert files.status is Status.PROBLEM and "nvidia1 (-rw" in files.detail and "usermod" in files.fix


def test_container_pid_namespace(host: dict) -> None:
    (host["proc_root"] / "self" / "status").write_text("NSpid:\t12\t1\n")
    (host["proc_root"] / "4242").rmdir()
    check = by_name(diagnose(_backend(), **host))["PID namespace"]
    assert check.status is Status.WARN
    assert "container" in check.detail and "4242" in check.detail and "--pid=host" in check.fix


def test_pid_namespace_unknown_is_not_called_the_hosts(host: dict) -> None:
    (host["proc_root"] / "self" / "status").write_text("Name:\tpython\n")
    check = by_name(diagnose(_backend(gpus=[GPU], processes=[]), **host))["PID namespace"]
    assert check.status is Status.INFO and "cannot name" in check.detail and "host" not in check.detail


def test_torch_check_logic() -> None:
    cpu = {"version": "2.13.0+cpu", "cuda_build": None, "available": False}
    assert _torch_check(cpu, 0, None).status is Status.OK
    wrong = _torch_check(cpu, 2, "12.4")
    assert wrong.status is Status.PROBLEM and wrong.fix.endswith("download.pytorch.org/whl/cu124")
    old_driver = {"version": "2.5.1+cu124", "cuda_build": "12.4", "available": False,
                  "cuda_error": "The NVIDIA driver on your system is too old (found version 11040)."}
    check = _torch_check(old_driver, 1, "11.4")
    assert check.status is Status.PROBLEM and "too old" in check.detail
    assert "supports CUDA 11.4 but torch needs CUDA 12.4" in check.fix and check.fix.endswith("whl/cu118")
    good = {"version": "2.5.1+cu124", "cuda_build": "12.4", "available": True, "devices": ["NVIDIA H100"]}
    assert _torch_check(good, 1, "12.4").status is Status.OK
    assert _torch_check(None, 1, "12.4").status is Status.INFO
    assert _torch_check({"error": "ImportError: libcudnn.so.9"}, 1, "12.4").status is Status.PROBLEM


def test_tensorflow_check_logic() -> None:
    cpu = {"version": "2.21.0", "cuda_build": False, "devices": []}
    assert _tensorflow_check(cpu, 0).status is Status.OK
    assert "tensorflow[and-cuda]" in _tensorflow_check(cpu, 1).fix
    gpu_build = {"version": "2.21.0", "cuda_build": True, "cuda_version": "12.5.1", "devices": []}
    assert _tensorflow_check(gpu_build, 1).status is Status.PROBLEM
    assert _tensorflow_check({**gpu_build, "devices": ["/physical_device:GPU:0"]}, 1).status is Status.OK


def test_real_framework_probes_report_what_is_installed() -> None:
    import tensorflow as tf
    import torch

    results = probe_frameworks(["torch", "tensorflow"], timeout=300)
    assert results["torch"]["version"] == torch.__version__
    assert results["torch"]["cuda_build"] == torch.version.cuda
    assert results["torch"]["available"] == torch.cuda.is_available()
    assert results["tensorflow"]["version"] == tf.__version__
    assert results["tensorflow"]["cuda_build"] == tf.test.is_built_with_cuda()


def test_numba_is_probed_and_optional() -> None:
    import numba

    result = probe_frameworks(["numba"], timeout=120)["numba"]
    assert result == {"version": numba.__version__}
    assert _numba_check(result).status is Status.OK
    absent = _numba_check(None)
    assert absent.status is Status.INFO and "gpudoc[fast]" in absent.fix
    broken = _numba_check({"error": "ImportError: Numba needs NumPy 2.3 or less. Got NumPy 2.5."})
    assert broken.status is Status.WARN and "NumPy 2.3" in broken.detail
    assert DoctorReport((broken,)).exit_code == ExitCode.OK


def test_crashing_framework_import_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos.abort()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    result = probe_frameworks(["torch"], timeout=60)["torch"]
    assert "crashed" in result["error"]
    check = _torch_check(result, 0, None)
    assert check.status is Status.PROBLEM and "force-reinstall" in check.fix


def test_simulated_machine_is_the_scenarios_not_this_hosts(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gpudoc.cli import cli

    skip = ["--skip", "torch", "--skip", "tensorflow", "--skip", "numba", "--json"]
    result = CliRunner().invoke(cli, ["--simulate", "dgx", "doctor", *skip], env={"GPUDOC_SIMULATE": None})
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 0, result.output
    files = checks["device files"]
    assert files["status"] == "info" and "simulated (scenario dgx): nvidia0" in files["detail"]
    assert checks["PID namespace"]["status"] == "info" and "9 GPU process(es)" in checks["PID namespace"]["detail"]
    scenario = tmp_path / "nolib.json"
    scenario.write_text(json.dumps({"name": "nolib", "gpus": [GPU],
                                    "faults": [{"kind": "init_failure", "error": "library_not_found"}]}))
    result = CliRunner().invoke(cli, ["--simulate", str(scenario), "doctor", *skip], env={"GPUDOC_SIMULATE": None})
    assert result.exit_code == 3, "a simulated GPU machine without its library is missing a piece, wherever it runs"


def test_frameworks_are_judged_on_this_host_under_simulation() -> None:
    report = diagnose(SimulatedBackend("dgx", clock=ManualClock(1)), frameworks=("torch",), simulated="dgx")
    torch_check = by_name(report)["torch"]
    assert torch_check.status is Status.OK and "frameworks cannot see simulated GPUs" in torch_check.detail


def test_probes_start_before_the_driver_is_checked_and_progress_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "torch-imported"
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))

    class SlowDriver(SimulatedBackend):
        """NVML whose initialisation waits (up to 10 s) for the torch probe to have run."""

        seen_probe = False

        def driver(self):  # type: ignore[no-untyped-def]
            for _ in range(1000):
                if marker.exists():
                    self.seen_probe = True
                    break
                time.sleep(0.01)
            return super().driver()

    backend = SlowDriver({"name": "t", "gpus": [GPU]}, clock=ManualClock(1))
    told: list[str] = []
    diagnose(backend, frameworks=("torch", "numba"), framework_timeout=120, progress=told.append)
    assert backend.seen_probe, "the framework probes run while the driver is checked"
    imports = [t for t in told if t.startswith("importing ")]
    assert imports[0] == "importing numba, torch (each in a subprocess)"
    assert imports[-1] in ("importing torch (numba done)", "importing numba (torch done)")
    assert "checking the NVIDIA driver" in told


def test_a_gpu_whose_process_list_is_unavailable_does_not_claim_no_process() -> None:
    """Was '0 process(es)' for a GPU whose list NVML refused: unknown is not none."""
    import dataclasses

    from gpudoc.doctor import _gpu_check
    from gpudoc.gpu import SimulatedBackend

    device = SimulatedBackend("dgx").snapshot().devices[0]
    refused = dataclasses.replace(device, processes=(), processes_error="NVML: insufficient permissions")
    detail = _gpu_check(refused).detail
    assert "process list N/A (NVML: insufficient permissions)" in detail and "0 process(es)" not in detail
    assert f"{len(device.processes)} process(es)" in _gpu_check(device).detail
