"""Environment checks: Python, gpudoc, the NVIDIA driver and GPUs, device files, PID
namespace, torch and TensorFlow. Each failed check carries the fix."""

from __future__ import annotations

import dataclasses
import enum
import getpass
import glob
import grp
import importlib.util
import json
import os
import platform
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpudoc import __version__
from gpudoc.errors import ExitCode
from gpudoc.gpu import GpuBackend, GpuDevice, GpuError, GpuSnapshot, NvmlLibraryNotFound, SimulatedBackend, available
from gpudoc.output import format_bytes


class Status(str, enum.Enum):
    """A check's outcome. PROBLEM makes the exit code 1, MISSING makes it 3."""

    OK = "ok"
    INFO = "info"
    WARN = "warn"
    PROBLEM = "problem"
    MISSING = "missing"


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class DoctorReport:
    """All checks, in order, and the exit code they imply."""

    checks: tuple[Check, ...]
    exit_code: ExitCode = field(init=False)

    def __post_init__(self) -> None:
        statuses = {c.status for c in self.checks}
        code = (
            ExitCode.ENVIRONMENT if Status.MISSING in statuses
            else ExitCode.FINDINGS if Status.PROBLEM in statuses
            else ExitCode.OK
        )
        object.__setattr__(self, "exit_code", code)


_TORCH_PROBE = """
import json, os
out = {}
try:
    import torch
    out["version"] = torch.__version__
    out["cuda_build"] = torch.version.cuda
    out["available"] = torch.cuda.is_available()
    count = torch.cuda.device_count() if out["available"] else 0
    out["devices"] = [torch.cuda.get_device_name(i) for i in range(count)]
    if not out["available"] and out["cuda_build"]:
        try:
            torch.cuda.init()
        except Exception as exc:
            out["cuda_error"] = str(exc).strip().splitlines()[0]
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
print(json.dumps(out))
"""

_TF_PROBE = """
import json, os
out = {}
try:
    import tensorflow as tf
    out["version"] = tf.__version__
    out["cuda_build"] = tf.test.is_built_with_cuda()
    out["cuda_version"] = tf.sysconfig.get_build_info().get("cuda_version")
    out["devices"] = [d.name for d in tf.config.list_physical_devices("GPU")]
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
print(json.dumps(out))
"""

_NUMBA_PROBE = """
import json
out = {}
try:
    import numba
    out["version"] = numba.__version__
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
print(json.dumps(out))
"""

_FRAMEWORK_PROBES = {"torch": _TORCH_PROBE, "tensorflow": _TF_PROBE, "numba": _NUMBA_PROBE}
FRAMEWORKS = tuple(_FRAMEWORK_PROBES)


Progress = Callable[[str], None]


class FrameworkProbes:
    """Each installed framework imported in its own subprocess, all started at once (so the
    slowest import, not their sum, is the wait) when this object is made.

    Subprocesses keep a crashing or slow import (TensorFlow aborting on an old CPU, a wedged
    CUDA init) away from gpudoc.
    """

    def __init__(self, names: Iterable[str], timeout: float) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        self.timeout = timeout
        self.running = {
            name: subprocess.Popen(
                [sys.executable, "-c", _FRAMEWORK_PROBES[name]],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            for name in names
            if importlib.util.find_spec(name) is not None
        }

    def results(self, progress: Progress | None = None) -> dict[str, dict[str, Any]]:
        """Every probe's answer; ``progress`` is told which are still running as each ends.

        A framework that is not installed is absent; one whose probe crashed or overran the
        deadline has an ``error`` entry.
        """
        results: dict[str, dict[str, Any]] = {}
        if not self.running:
            return results
        with ThreadPoolExecutor(len(self.running), thread_name_prefix="gpudoc-probe") as pool:
            pending = {pool.submit(self._answer, name, proc): name for name, proc in self.running.items()}
            waiting = set(pending.values())
            if progress:
                progress(f"importing {', '.join(sorted(waiting))} (each in a subprocess)")
            for done in as_completed(pending):
                name = pending[done]
                results[name] = done.result()
                waiting.discard(name)
                if progress and waiting:
                    progress(f"importing {', '.join(sorted(waiting))} ({name} done)")
        return results

    def close(self) -> None:
        """End any probe still running (diagnose failed before it read them)."""
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    def _answer(self, name: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"'import {name}' did not finish within {self.timeout:g} s"}
        lines = out.strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            result = {}
        if not isinstance(result, dict) or not result:
            tail = err.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            return {"error": f"the import crashed: {tail[0]}"}
        return result


def probe_frameworks(names: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Import each installed framework in its own subprocess, all at once, with a deadline
    (see :class:`FrameworkProbes`)."""
    return FrameworkProbes(names, timeout).results()


def _dependencies() -> Check:
    import importlib.metadata

    try:
        requirements = importlib.metadata.requires("gpudoc") or []
    except importlib.metadata.PackageNotFoundError:
        return Check("gpudoc", Status.WARN, f"{__version__}, running from a source tree that is not installed",
                     "pip install -e . (or pip install gpudoc)")
    missing = []
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check("gpudoc", Status.MISSING, f"{__version__}, missing dependencies: {', '.join(missing)}",
                     f"pip install {' '.join(missing)}")
    return Check("gpudoc", Status.OK, f"{__version__}, all dependencies installed")


def _events_core() -> Check:
    """Which record core ``gpudoc events`` and the run view read event files with, and why."""
    from gpudoc.events.records import CORE_REASON, core_active

    if core_active() or "GPUDOC_EVENTS_CORE" in CORE_REASON:
        return Check("events core", Status.OK, CORE_REASON)
    return Check("events core", Status.INFO, CORE_REASON, "pip install -e . again where a C compiler is installed")


def _device_files(pattern: str, driver_ok: bool, gpu_expected: bool) -> Check:
    files = sorted(glob.glob(pattern))
    if not files:
        if driver_ok:
            return Check("device files", Status.PROBLEM, f"no {pattern} although the driver answers",
                         "in a container, start it with --gpus all (NVIDIA Container Toolkit); on the "
                         "host, run 'sudo nvidia-modprobe -u -c=0' or 'sudo nvidia-smi' once")
        status = Status.MISSING if gpu_expected else Status.INFO
        return Check("device files", status, f"no {pattern}")
    denied = [f for f in files if not os.access(f, os.R_OK | os.W_OK)]
    names = ", ".join(os.path.basename(f) for f in files)
    if denied:
        return Check("device files", Status.PROBLEM,
                     f"{getpass.getuser()} cannot open {', '.join(_describe_file(f) for f in denied)}",
                     "add the user to the owning group (sudo usermod -aG GROUP USER, then log in "
                     "again), or fix the udev rule that sets the mode")
    return Check("device files", Status.OK, f"{len(files)} readable and writable: {names}")


def _describe_file(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"{path} ({exc.strerror})"
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{path} ({stat.filemode(info.st_mode)} group {group})"


def _pid_namespace(snapshot: GpuSnapshot | None, proc_root: Path) -> Check:
    nested: bool | None = None  # unknown without an NSpid line (kernel < 4.1, no /proc)
    try:
        for line in (proc_root / "self" / "status").read_text().splitlines():
            if line.startswith("NSpid:"):
                nested = len(line.split()) > 2
    except OSError:
        pass
    pids = sorted({p.pid for d in (snapshot.devices if snapshot else ()) for p in d.processes})
    unseen = [pid for pid in pids if not (proc_root / str(pid)).exists()]
    where = (
        "a container's PID namespace" if nested
        else "the host PID namespace" if nested is False
        else "a PID namespace gpudoc cannot name (no NSpid in /proc/self/status)"
    )
    if unseen:
        shown = ", ".join(map(str, unseen[:5])) + (" …" if len(unseen) > 5 else "")
        return Check("PID namespace", Status.WARN,
                     f"in {where}; NVML lists PIDs with no /proc entry here ({shown}): "
                     "GPU processes cannot be matched to processes",
                     "run the container with --pid=host to see (and reap) the host's GPU processes"
                     if nested else "if this repeats, the processes live in another PID namespace")
    if pids:
        return Check("PID namespace", Status.OK, f"in {where}; all {len(pids)} NVML PIDs found in /proc")
    return Check("PID namespace", Status.OK if nested is False else Status.INFO,
                 f"in {where}" + ("" if nested is False else "; NVML lists no process to compare"))


def _cuda_major(version: object) -> int | None:
    match = re.match(r"(\d+)", str(version)) if version else None
    return int(match.group(1)) if match else None


def _wheel_tag(driver_cuda: object) -> str:
    """The PyTorch wheel index for the newest CUDA a driver supports (cu118 or cu12x)."""
    match = re.match(r"(\d+)\.(\d+)", str(driver_cuda))
    if not match:
        return "cu124"
    major, minor = int(match.group(1)), int(match.group(2))
    return "cu118" if major < 12 else f"cu{major}{min(minor, 8)}"


def _torch_check(result: dict[str, Any] | None, gpus: int, driver_cuda: object) -> Check:
    if result is None:
        return Check("torch", Status.INFO, "not installed (optional)", "pip install 'gpudoc[torch]'")
    if "error" in result:
        return Check("torch", Status.PROBLEM, f"installed but unusable: {result['error']}",
                     "reinstall it: pip install --force-reinstall torch")
    version, cuda = result["version"], result.get("cuda_build")
    devices = result.get("devices") or []
    if result.get("available"):
        names = ", ".join(map(str, devices))
        return Check("torch", Status.OK, f"{version} (CUDA {cuda}), sees {len(devices)} GPU(s): {names}")
    index_url = f"pip install torch --index-url https://download.pytorch.org/whl/{_wheel_tag(driver_cuda)}"
    if not cuda:
        if gpus:
            return Check("torch", Status.PROBLEM,
                         f"{version} is a CPU-only build but {gpus} GPU(s) are present", index_url)
        return Check("torch", Status.OK, f"{version}, CPU-only build (no GPU here)")
    if not gpus:
        return Check("torch", Status.INFO, f"{version} (CUDA {cuda}) runs on the CPU: no GPU here")
    reason = result.get("cuda_error") or "torch.cuda.is_available() is False"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        fix = f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU: unset it"
    elif (_cuda_major(cuda) or 0) > (_cuda_major(driver_cuda) or 99):
        fix = f"the driver supports CUDA {driver_cuda} but torch needs CUDA {cuda}: upgrade the driver, or {index_url}"
    else:
        fix = "check the driver with 'nvidia-smi'; reinstall a CUDA build: " + index_url
    return Check("torch", Status.PROBLEM, f"{version} (CUDA {cuda}) sees no GPU: {reason}", fix)


def _tensorflow_check(result: dict[str, Any] | None, gpus: int) -> Check:
    if result is None:
        return Check("tensorflow", Status.INFO, "not installed (optional)", "pip install 'gpudoc[tensorflow]'")
    if "error" in result:
        return Check("tensorflow", Status.PROBLEM, f"installed but unusable: {result['error']}",
                     "reinstall it: pip install --force-reinstall tensorflow")
    version, devices = result["version"], result.get("devices") or []
    build = f"CUDA {result.get('cuda_version')}" if result.get("cuda_build") else "CPU-only build"
    if devices:
        return Check("tensorflow", Status.OK, f"{version} ({build}), sees {len(devices)} GPU(s)")
    if not gpus:
        return Check("tensorflow", Status.OK, f"{version} ({build}), no GPU here")
    if not result.get("cuda_build"):
        return Check("tensorflow", Status.PROBLEM, f"{version} is a CPU-only build but {gpus} GPU(s) are present",
                     "pip uninstall tensorflow-cpu && pip install 'tensorflow[and-cuda]'")
    return Check("tensorflow", Status.PROBLEM, f"{version} ({build}) sees no GPU",
                 "install the CUDA libraries it was built for: pip install 'tensorflow[and-cuda]'; "
                 "check 'ldconfig -p | grep -E \"cudnn|cublas\"'")


def _numba_check(result: dict[str, Any] | None) -> Check:
    if result is None:
        return Check("numba", Status.INFO, "not installed (optional): image metrics take the BLAS path, ~2x "
                     "scikit-image instead of >= 5x", "pip install 'gpudoc[fast]'")
    if "error" in result:
        return Check("numba", Status.WARN, f"installed but unusable, image metrics take the BLAS path: "
                     f"{result['error']}", "pip install -U numba (it supports a range of numpy versions)")
    return Check("numba", Status.OK, f"{result['version']}: image metrics use the compiled kernel")


def diagnose(
    backend: GpuBackend,
    *,
    require_gpu: bool = False,
    device_glob: str = "/dev/nvidia*",
    proc_root: Path = Path("/proc"),
    frameworks: Sequence[str] = FRAMEWORKS,
    framework_timeout: float = 120.0,
    progress: Progress | None = None,
    simulated: str | None = None,
) -> DoctorReport:
    """Run every check. With ``require_gpu``, a machine without an NVIDIA driver fails (3);
    otherwise GPU checks are skipped there and only what is present is judged. The framework
    probes start first and run while the driver is checked; ``progress`` is told what runs.

    ``simulated`` names the simulated machine (``--simulate``) ``backend`` shows: whether GPUs
    are expected comes from its scenario, and this host's device files and PID namespace are
    not checked (they belong to another machine); the frameworks, which run on this host, are
    judged as here. Without it a simulated backend stands in for NVML on this host (tests)."""
    probes = FrameworkProbes(frameworks, framework_timeout)
    try:
        return _diagnose(backend, probes, require_gpu, device_glob, proc_root, frameworks, progress, simulated)
    finally:
        probes.close()


def _diagnose(
    backend: GpuBackend,
    probes: FrameworkProbes,
    require_gpu: bool,
    device_glob: str,
    proc_root: Path,
    frameworks: Sequence[str],
    progress: Progress | None,
    simulated: str | None,
) -> DoctorReport:
    tell = progress or (lambda text: None)
    checks = [
        Check("Python", Status.OK, f"{platform.python_version()} ({sys.executable})"),
        _dependencies(),
        _events_core(),
    ]
    if simulated is not None and isinstance(backend, SimulatedBackend):
        gpu_expected = require_gpu or bool(backend.scenario.gpus)
    else:
        gpu_expected = (
            require_gpu
            or (proc_root / "driver" / "nvidia" / "version").exists()
            or bool(glob.glob(device_glob))
        )
    tell("checking the NVIDIA driver")
    snapshot: GpuSnapshot | None = None
    driver_cuda: object = None
    driver_ok = False
    gpus = 0
    try:
        driver = backend.driver()
        driver_ok = True
        driver_cuda = driver.cuda_version
        checks.append(Check("NVIDIA driver", Status.OK,
                            f"{driver.driver_version} (supports CUDA {driver.cuda_version}; "
                            f"NVML {driver.nvml_version})"))
        gpus = backend.device_count()
    except NvmlLibraryNotFound as exc:
        if gpu_expected:
            checks.append(Check("NVIDIA driver", Status.MISSING, exc.message, exc.fix))
        else:
            checks.append(Check("NVIDIA driver", Status.INFO,
                                "not installed (no libnvidia-ml, no /proc/driver/nvidia): a CPU-only "
                                "machine, GPU checks skipped (--require-gpu makes this an error)"))
    except GpuError as exc:
        checks.append(Check("GPUs" if driver_ok else "NVIDIA driver", Status.MISSING, exc.message, exc.fix))
    if gpus:
        tell(f"reading {gpus} GPU(s)")
        snapshot = backend.snapshot()
        for device in snapshot.devices:
            checks.append(_gpu_check(device))
    if simulated is None:
        checks.append(_device_files(device_glob, driver_ok=driver_ok, gpu_expected=gpu_expected))
        checks.append(_pid_namespace(snapshot, proc_root))
    else:
        checks.extend(_simulated_host(simulated, gpus, snapshot))
    results = probes.results(progress)
    # Frameworks run on this host, which a simulation does not give GPUs.
    host_gpus = 0 if simulated is not None else gpus
    framework_checks = []
    if "torch" in frameworks:
        framework_checks.append(_torch_check(results.get("torch"), host_gpus, driver_cuda))
    if "tensorflow" in frameworks:
        framework_checks.append(_tensorflow_check(results.get("tensorflow"), host_gpus))
    if "numba" in frameworks:
        framework_checks.append(_numba_check(results.get("numba")))
    if simulated is not None:
        framework_checks = [
            dataclasses.replace(c, detail=f"{c.detail}; judged on this host (frameworks cannot see simulated GPUs)")
            if c.name != "numba" else c
            for c in framework_checks
        ]
    return DoctorReport(tuple(checks + framework_checks))


def _simulated_host(scenario: str, gpus: int, snapshot: GpuSnapshot | None) -> list[Check]:
    """Device files and PID namespace of a simulated machine: the scenario's, not this host's."""
    where = f"simulated (scenario {scenario})"
    if gpus:
        files = ", ".join([*(f"nvidia{i}" for i in range(gpus)), "nvidiactl", "nvidia-uvm"])
        pids = {p.pid for d in (snapshot.devices if snapshot else ()) for p in d.processes}
        processes = f"its {len(pids)} GPU process(es) are the scenario's, not this host's"
    else:
        files = processes = "the simulated driver shows no GPU"
    return [
        Check("device files", Status.INFO, f"{where}: {files}; this host's are not checked"),
        Check("PID namespace", Status.INFO, f"{where}: {processes}; this host's is not checked"),
    ]


def _gpu_check(device: GpuDevice) -> Check:
    name = f"GPU {device.index}"
    if device.error:
        return Check(name, Status.PROBLEM, device.error)
    parts = [str(device.name)]
    if isinstance(device.memory_used, int) and isinstance(device.memory_total, int):
        parts.append(f"{format_bytes(device.memory_used)} / {format_bytes(device.memory_total)} used")
    if available(device.temperature):
        parts.append(f"{device.temperature} °C")
    if device.processes_error:
        parts.append(f"process list N/A ({device.processes_error})")
    else:
        parts.append(f"{len(device.processes)} process(es)")
    return Check(name, Status.OK, ", ".join(parts))
