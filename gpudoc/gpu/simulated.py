"""Simulated GPUs with NVML's semantics: the public test double and the TUI's demo.

A :class:`Scenario` describes GPUs whose readings vary with time, processes that appear and
vanish, and scripted faults. :class:`SimulatedNvml` answers the ``pynvml`` calls from it,
raising real ``pynvml.NVMLError`` codes, and :class:`SimulatedBackend` is the real
:class:`NvmlBackend` running over it, so error mapping, PID filtering and deadlines are the
production code paths.

Scenario fields (JSON or YAML; times in seconds since the scenario started):

- ``gpus[]``: ``name``, ``memory_total_mib``, ``reserved_mib``, ``power_limit_w``, and
  readings given as *signals*: ``utilization``, ``memory_utilization``, ``temperature``,
  ``power_w``, ``fan``, ``clock_sm_mhz``, ``clock_memory_mhz``, ``pcie_tx_kib``,
  ``pcie_rx_kib``. A signal is a number, a list of ``[t, value]`` keyframes (linear in
  between, held at the ends), or ``{base, amplitude, period_s, phase_s}`` (a sine).
  A missing reading is derived from utilisation; ``null`` makes NVML answer NOT_SUPPORTED.
- ``processes[]``: ``pid``, ``gpu``, ``memory_mib`` (signal), ``type`` (compute, graphics,
  mps), ``start_s``, ``end_s``, ``user``, ``command``.
- ``faults[]``: ``kind`` with ``from_s``/``until_s``: ``init_failure`` (``error``:
  library_not_found, driver_not_loaded, driver_library_mismatch, no_permission),
  ``gpu_lost`` (``gpu``), ``hang`` (``gpu``, ``seconds``: each call blocks that long),
  ``garbage_pids`` and ``vanished_pids`` (``gpu``, ``pids``: NVML lists them with
  ``memory_mib``), ``process_list_unavailable`` (``gpu``, ``error``: not_supported, the
  default, or no_permission: NVML answers that for the GPU's process lists, as on old
  GeForce cards or under MIG without root).
- ``loop_s``: with the real clock, the scenario restarts after this many seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import yaml

from gpudoc.errors import InputError
from gpudoc.gpu.errors import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
)
from gpudoc.gpu.nvml import NvmlBackend

MIB = 1024 * 1024
_INIT_ERRORS = {
    "library_not_found": NVML_ERROR_LIBRARY_NOT_FOUND,
    "driver_not_loaded": NVML_ERROR_DRIVER_NOT_LOADED,
    "driver_library_mismatch": NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    "no_permission": NVML_ERROR_NO_PERMISSION,
}
_LIST_ERRORS = {"not_supported": NVML_ERROR_NOT_SUPPORTED, "no_permission": NVML_ERROR_NO_PERMISSION}
_FAULT_KINDS = frozenset(
    {"init_failure", "gpu_lost", "hang", "garbage_pids", "vanished_pids", "process_list_unavailable"}
)
_PROCESS_TYPES = ("compute", "graphics", "mps")
_SIGNAL_FIELDS = (
    "utilization",
    "memory_utilization",
    "temperature",
    "power_w",
    "fan",
    "clock_sm_mhz",
    "clock_memory_mhz",
    "pcie_tx_kib",
    "pcie_rx_kib",
)
_INVALID_ARGUMENT = 2
_LONGEST_HANG_S = 86_400  # a hang fault blocks each call this long at most (time.sleep's range is finite)


class ScenarioError(InputError):
    """A scenario file or object is malformed."""


@dataclass(frozen=True)
class Signal:
    """A reading as a function of time: keyframes, or a sine around a base."""

    keyframes: tuple[tuple[float, float], ...] = ()
    base: float = 0.0
    amplitude: float = 0.0
    period_s: float = 60.0
    phase_s: float = 0.0

    def at(self, t: float) -> float:
        """The value at ``t`` seconds."""
        if self.keyframes:
            points = self.keyframes
            if t <= points[0][0]:
                return points[0][1]
            for (t0, v0), (t1, v1) in itertools.pairwise(points):
                if t <= t1:
                    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
            return points[-1][1]
        return self.base + self.amplitude * math.sin(2 * math.pi * (t + self.phase_s) / self.period_s)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where}: expected a number, got {_shown(value)}")
    if not math.isfinite(value):
        raise ScenarioError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _choice(value: Any, choices: Iterable[str], where: str) -> str:
    """``value`` when it is one of ``choices`` (strings), else a ScenarioError naming them."""
    names = list(choices)
    if not isinstance(value, str) or value not in names:
        raise ScenarioError(f"{where}: expected one of {', '.join(names)}, got {_shown(value)}")
    return value


def _items(data: dict[str, Any], key: str, where: str) -> list[Any]:
    """A list field; missing or null is empty."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: {key}: expected a list, got {_shown(value)}")
    return value


def _text_or_none(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ScenarioError(f"{where}: expected text, got {_shown(value)}")
    return value


def parse_signal(spec: Any, where: str) -> Signal:
    """A :class:`Signal` from a number, ``[[t, v], …]`` or ``{base, amplitude, period_s, phase_s}``."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Signal(base=_number(spec, where))
    if isinstance(spec, list) and spec:
        points = []
        for i, point in enumerate(spec):
            if not (isinstance(point, list) and len(point) == 2):
                raise ScenarioError(f"{where}[{i}]: expected a [t, value] pair, got {point!r}")
            points.append((_number(point[0], f"{where}[{i}][0]"), _number(point[1], f"{where}[{i}][1]")))
        if any(b[0] < a[0] for a, b in itertools.pairwise(points)):
            raise ScenarioError(f"{where}: keyframe times must not decrease")
        return Signal(keyframes=tuple(points))
    if isinstance(spec, dict):
        unknown = set(spec) - {"base", "amplitude", "period_s", "phase_s"}
        if unknown:
            raise ScenarioError(f"{where}: unknown signal keys {sorted(unknown)}")
        period = _number(spec.get("period_s", 60.0), f"{where}.period_s")
        if period <= 0:
            raise ScenarioError(f"{where}.period_s: must be positive")
        return Signal(
            base=_number(spec.get("base", 0.0), f"{where}.base"),
            amplitude=_number(spec.get("amplitude", 0.0), f"{where}.amplitude"),
            period_s=period,
            phase_s=_number(spec.get("phase_s", 0.0), f"{where}.phase_s"),
        )
    raise ScenarioError(
        f"{where}: expected a number, a list of [t, value] keyframes or "
        f"{{base, amplitude, period_s}}, got {spec!r}"
    )


@dataclass(frozen=True)
class SimGpu:
    """One simulated GPU. A ``signals`` entry of ``None`` means NVML reports NOT_SUPPORTED."""

    name: str
    memory_total_mib: int
    reserved_mib: int
    power_limit_w: float
    uuid: str
    pci_bus_id: str
    signals: dict[str, Signal | None]


@dataclass(frozen=True)
class SimProcess:
    """A process using a simulated GPU between ``start_s`` and ``end_s``."""

    pid: int
    gpu: int
    memory_mib: Signal
    type: str = "compute"
    start_s: float = 0.0
    end_s: float | None = None
    user: str | None = None
    command: str | None = None

    def alive(self, t: float) -> bool:
        """Whether the process exists at ``t``."""
        return self.start_s <= t and (self.end_s is None or t < self.end_s)


@dataclass(frozen=True)
class Fault:
    """A scripted failure active from ``from_s`` until ``until_s``."""

    kind: str
    from_s: float = 0.0
    until_s: float | None = None
    gpu: int | None = None
    error: str | None = None
    seconds: float = 0.0
    pids: tuple[int, ...] = ()
    memory_mib: float = 0.0

    def active(self, t: float) -> bool:
        """Whether the fault applies at ``t``."""
        return self.from_s <= t and (self.until_s is None or t < self.until_s)


@dataclass(frozen=True)
class Scenario:
    """GPUs, processes and faults over time."""

    name: str
    description: str = ""
    driver_version: str = "550.54.15"
    cuda_version: str = "12.4"
    gpus: tuple[SimGpu, ...] = ()
    processes: tuple[SimProcess, ...] = ()
    faults: tuple[Fault, ...] = ()
    loop_s: float | None = None
    source: str = field(default="<object>", compare=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<object>") -> Scenario:
        """Validate and build a scenario; errors name ``source`` and the field."""
        if not isinstance(data, dict):
            raise ScenarioError(f"{source}: a scenario is a mapping, got {type(data).__name__}")
        known = {"name", "description", "driver_version", "cuda_version", "gpus", "processes",
                 "faults", "loop_s"}
        unknown = set(data) - known
        if unknown:
            raise ScenarioError(f"{source}: unknown keys {sorted(unknown)}")
        gpus = tuple(_parse_gpu(g, i, f"{source}: gpus[{i}]") for i, g in enumerate(_items(data, "gpus", source)))
        processes = tuple(
            _parse_process(p, len(gpus), f"{source}: processes[{i}]")
            for i, p in enumerate(_items(data, "processes", source))
        )
        faults = tuple(
            _parse_fault(f, len(gpus), f"{source}: faults[{i}]")
            for i, f in enumerate(_items(data, "faults", source))
        )
        loop = data.get("loop_s")
        loop_s = None if loop is None else _number(loop, f"{source}: loop_s")
        if loop_s is not None and loop_s <= 0:
            raise ScenarioError(f"{source}: loop_s: must be positive")
        cuda = str(data.get("cuda_version", "12.4"))
        if not re.fullmatch(r"\d{1,3}(\.\d{1,2})?", cuda):
            raise ScenarioError(f"{source}: cuda_version: expected MAJOR.MINOR such as 12.4, got {_shown(cuda)}")
        return cls(
            name=str(data.get("name", Path(source).stem)),
            description=str(data.get("description", "")),
            driver_version=str(data.get("driver_version", "550.54.15")),
            cuda_version=cuda,
            gpus=gpus,
            processes=processes,
            faults=faults,
            loop_s=loop_s,
            source=source,
        )


def _expect_dict(raw: Any, where: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {raw!r}")
    unknown = set(raw) - known
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    return raw


def _gpu_index(value: Any, count: int, where: str) -> int:
    if count == 0:
        raise ScenarioError(f"{where}.gpu: the scenario has no GPU (add one under gpus)")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < count:
        raise ScenarioError(f"{where}.gpu: expected a GPU index in 0..{count - 1}, got {value!r}")
    return value


def _parse_gpu(raw: Any, index: int, where: str) -> SimGpu:
    known = {"name", "memory_total_mib", "reserved_mib", "power_limit_w", "uuid", "pci_bus_id",
             *_SIGNAL_FIELDS}
    raw = _expect_dict(raw, where, known)
    if "name" not in raw or "memory_total_mib" not in raw:
        raise ScenarioError(f"{where}: 'name' and 'memory_total_mib' are required")
    if _number(raw["memory_total_mib"], f"{where}.memory_total_mib") < 1:
        raise ScenarioError(f"{where}.memory_total_mib: must be at least 1")
    digest = hashlib.sha1(f"{raw['name']}/{index}".encode()).hexdigest()
    uuid = f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    signals: dict[str, Signal | None] = {}
    for name in _SIGNAL_FIELDS:
        if name in raw:
            signals[name] = None if raw[name] is None else parse_signal(raw[name], f"{where}.{name}")
    return SimGpu(
        name=str(raw["name"]),
        memory_total_mib=int(_number(raw["memory_total_mib"], f"{where}.memory_total_mib")),
        reserved_mib=int(_number(raw.get("reserved_mib", 400), f"{where}.reserved_mib")),
        power_limit_w=_number(raw.get("power_limit_w", 300), f"{where}.power_limit_w"),
        uuid=str(raw.get("uuid", uuid)),
        pci_bus_id=str(raw.get("pci_bus_id", f"00000000:{0x17 + index * 0x10:02X}:00.0")),
        signals=signals,
    )


def _parse_process(raw: Any, gpus: int, where: str) -> SimProcess:
    known = {"pid", "gpu", "memory_mib", "type", "start_s", "end_s", "user", "command"}
    raw = _expect_dict(raw, where, known)
    pid = raw.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ScenarioError(f"{where}.pid: expected a positive integer, got {pid!r}")
    kind = _choice(raw.get("type", "compute"), _PROCESS_TYPES, f"{where}.type")
    end = raw.get("end_s")
    return SimProcess(
        pid=pid,
        gpu=_gpu_index(raw.get("gpu", 0), gpus, where),
        memory_mib=parse_signal(raw.get("memory_mib", 0), f"{where}.memory_mib"),
        type=kind,
        start_s=_number(raw.get("start_s", 0.0), f"{where}.start_s"),
        end_s=None if end is None else _number(end, f"{where}.end_s"),
        user=_text_or_none(raw.get("user"), f"{where}.user"),
        command=_text_or_none(raw.get("command"), f"{where}.command"),
    )


def _parse_fault(raw: Any, gpus: int, where: str) -> Fault:
    known = {"kind", "from_s", "until_s", "gpu", "error", "seconds", "pids", "memory_mib"}
    raw = _expect_dict(raw, where, known)
    kind = _choice(raw.get("kind"), sorted(_FAULT_KINDS), f"{where}.kind")
    error = None
    if kind == "init_failure":
        error = _choice(raw.get("error"), _INIT_ERRORS, f"{where}.error")
    elif kind == "process_list_unavailable":
        error = _choice(raw.get("error", "not_supported"), _LIST_ERRORS, f"{where}.error")
    seconds = _number(raw.get("seconds", 0.0), f"{where}.seconds")
    if not 0 <= seconds <= _LONGEST_HANG_S:
        raise ScenarioError(f"{where}.seconds: expected 0 to {_LONGEST_HANG_S} seconds, got {seconds:g}")
    needs_gpu = kind != "init_failure"
    until = raw.get("until_s")
    pids = raw.get("pids", [])
    if not isinstance(pids, list) or not all(isinstance(p, int) for p in pids):
        raise ScenarioError(f"{where}.pids: expected a list of integers")
    return Fault(
        kind=kind,
        from_s=_number(raw.get("from_s", 0.0), f"{where}.from_s"),
        until_s=None if until is None else _number(until, f"{where}.until_s"),
        gpu=_gpu_index(raw.get("gpu"), gpus, where) if needs_gpu else None,
        error=error,
        seconds=seconds,
        pids=tuple(pids),
        memory_mib=_number(raw.get("memory_mib", 0.0), f"{where}.memory_mib"),
    )


def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped with gpudoc."""
    folder = resources.files("gpudoc.gpu") / "scenarios"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(".json"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a JSON/YAML scenario file."""
    path = Path(name_or_path)
    if path.is_file():
        source, text = str(path), _read(path)
    elif str(name_or_path) in builtin_scenarios():
        resource = resources.files("gpudoc.gpu") / "scenarios" / f"{name_or_path}.json"
        source, text = f"{name_or_path}.json", resource.read_text()
    else:
        raise ScenarioError(
            f"no scenario file or built-in scenario named {str(name_or_path)!r}; "
            f"built-in: {', '.join(builtin_scenarios())}"
        )
    is_yaml = source.endswith((".yaml", ".yml"))
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{source}: not valid {'YAML' if is_yaml else 'JSON'}: {_parse_error(exc)}") from None
    except RecursionError:
        raise ScenarioError(f"{source}: nested too deeply to be a scenario") from None
    return Scenario.from_dict(data, source)


def _parse_error(exc: Exception) -> str:
    """A JSON or YAML error on one line: what is wrong, and where (line and column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from None


class ManualClock:
    """A clock tests move by hand: ``clock.advance(5)``."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.t += seconds

    def __call__(self) -> float:
        return self.t


class _WallClock:
    """Seconds since creation, wrapping at ``loop_s``."""

    def __init__(self, loop_s: float | None) -> None:
        self._start = time.monotonic()
        self._loop = loop_s

    def __call__(self) -> float:
        elapsed = time.monotonic() - self._start
        return elapsed % self._loop if self._loop else elapsed


class SimulatedNvml:
    """Answers the subset of the ``pynvml`` API gpudoc uses, from a scenario at clock time."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_PCIE_UTIL_TX_BYTES = pynvml.NVML_PCIE_UTIL_TX_BYTES
    NVML_PCIE_UTIL_RX_BYTES = pynvml.NVML_PCIE_UTIL_RX_BYTES

    def __init__(self, scenario: Scenario, clock: Callable[[], float]) -> None:
        self.scenario = scenario
        self.clock = clock
        self.initialized = False

    def _faults(self, kind: str, t: float, gpu: int | None = None) -> list[Fault]:
        return [
            f for f in self.scenario.faults
            if f.kind == kind and f.active(t) and (gpu is None or f.gpu == gpu)
        ]

    def _require_init(self) -> float:
        if not self.initialized:
            raise pynvml.NVMLError(NVML_ERROR_UNINITIALIZED)
        t = self.clock()
        for fault in self._faults("init_failure", t):
            self.initialized = False
            raise pynvml.NVMLError(_INIT_ERRORS[fault.error or ""])
        return t

    def _gpu(self, handle: int) -> tuple[SimGpu, float]:
        t = self._require_init()
        for fault in self._faults("hang", t, handle):
            time.sleep(fault.seconds)
        if self._faults("gpu_lost", t, handle):
            raise pynvml.NVMLError(NVML_ERROR_GPU_IS_LOST)
        return self.scenario.gpus[handle], t

    def _signal(self, handle: int, name: str) -> float:
        gpu, t = self._gpu(handle)
        if name in gpu.signals:
            signal = gpu.signals[name]
            if signal is None:
                raise pynvml.NVMLError(NVML_ERROR_NOT_SUPPORTED)
            return signal.at(t)
        util = self._utilization(gpu, t)
        derived = {
            "memory_utilization": util * 0.55,
            "temperature": 32 + util * 0.45,
            "power_w": gpu.power_limit_w * (0.18 + 0.72 * util / 100),
            "fan": 30 + util * 0.5,
            "clock_sm_mhz": 345 + util * 14.6,
            "clock_memory_mhz": 1593.0,
            "pcie_tx_kib": util * 2400,
            "pcie_rx_kib": util * 5200,
        }
        return derived[name]

    @staticmethod
    def _utilization(gpu: SimGpu, t: float) -> float:
        signal = gpu.signals.get("utilization")
        return min(100.0, max(0.0, signal.at(t))) if signal else 0.0

    def _processes_at(self, handle: int, t: float) -> list[SimProcess]:
        return [p for p in self.scenario.processes if p.gpu == handle and p.alive(t)]

    def nvmlInit(self) -> None:
        self.initialized = True
        self._require_init()

    def nvmlShutdown(self) -> None:
        self._require_init()
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_init()
        return self.scenario.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._require_init()
        major, _, minor = self.scenario.cuda_version.partition(".")
        return int(major) * 1000 + int(minor or 0) * 10

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._require_init()
        major = self.scenario.cuda_version.split(".")[0]
        return f"{major}.{self.scenario.driver_version}"

    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self.scenario.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._require_init()
        if not 0 <= index < len(self.scenario.gpus):
            raise pynvml.NVMLError(_INVALID_ARGUMENT)
        self._gpu(index)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle)[0].name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle)[0].uuid

    def nvmlDeviceGetPciInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self._gpu(handle)[0].pci_bus_id)

    def nvmlDeviceGetMinorNumber(self, handle: int) -> int:
        self._gpu(handle)
        return handle

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        gpu, t = self._gpu(handle)
        total = gpu.memory_total_mib * MIB
        used_mib = gpu.reserved_mib + sum(
            max(0.0, p.memory_mib.at(t)) for p in self._processes_at(handle, t)
        )
        used_mib += sum(f.memory_mib * len(f.pids) for f in self._faults("vanished_pids", t, handle))
        used = min(total, int(used_mib * MIB))
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        gpu, t = self._gpu(handle)
        if "utilization" in gpu.signals and gpu.signals["utilization"] is None:
            raise pynvml.NVMLError(NVML_ERROR_NOT_SUPPORTED)
        memory = self._signal(handle, "memory_utilization")
        return SimpleNamespace(gpu=round(self._utilization(gpu, t)), memory=round(min(100.0, max(0.0, memory))))

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return round(self._signal(handle, "temperature"))

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return round(self._signal(handle, "power_w") * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return round(self._gpu(handle)[0].power_limit_w * 1000)

    def nvmlDeviceGetFanSpeed(self, handle: int) -> int:
        return round(min(100.0, max(0.0, self._signal(handle, "fan"))))

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        name = "clock_sm_mhz" if clock == self.NVML_CLOCK_SM else "clock_memory_mhz"
        return round(self._signal(handle, name))

    def nvmlDeviceGetPcieThroughput(self, handle: int, counter: int) -> int:
        name = "pcie_tx_kib" if counter == self.NVML_PCIE_UTIL_TX_BYTES else "pcie_rx_kib"
        return round(max(0.0, self._signal(handle, name)))

    def _listed(self, handle: int, kind: str) -> list[SimpleNamespace]:
        _, t = self._gpu(handle)
        for fault in self._faults("process_list_unavailable", t, handle):
            raise pynvml.NVMLError(_LIST_ERRORS[fault.error or "not_supported"])
        listed = [
            SimpleNamespace(pid=p.pid, usedGpuMemory=int(max(0.0, p.memory_mib.at(t)) * MIB))
            for p in self._processes_at(handle, t) if p.type == kind
        ]
        if kind == "compute":
            extra = self._faults("garbage_pids", t, handle) + self._faults("vanished_pids", t, handle)
            for fault in extra:
                listed += [
                    SimpleNamespace(pid=pid, usedGpuMemory=int(fault.memory_mib * MIB))
                    for pid in fault.pids
                ]
        return listed

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return self._listed(handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return self._listed(handle, "graphics")

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return self._listed(handle, "mps")


class SimulatedBackend(NvmlBackend):
    """The NVML backend over :class:`SimulatedNvml`: simulated GPUs with NVML's semantics.

    ``scenario`` is a :class:`Scenario`, a mapping, a built-in scenario's name or a file.
    ``clock`` returns seconds since the scenario started (wall time, looping at ``loop_s``,
    by default; pass a :class:`ManualClock` for deterministic tests).
    """

    name = "simulated"

    def __init__(
        self,
        scenario: Scenario | dict[str, Any] | str | Path,
        *,
        clock: Callable[[], float] | None = None,
        timeout: float = 2.0,
    ) -> None:
        if isinstance(scenario, dict):
            scenario = Scenario.from_dict(scenario)
        elif not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        self.scenario = scenario
        self.nvml = SimulatedNvml(scenario, clock or _WallClock(scenario.loop_s))
        super().__init__(nvml=self.nvml, timeout=timeout, pid_max=4_194_304)

    def process_info(self, pid: int) -> tuple[str | None, str | None]:
        """The scenario's user and command for its simulated PIDs."""
        for process in self.scenario.processes:
            if process.pid == pid:
                return process.user, process.command
        return None, None
