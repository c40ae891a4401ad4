"""A stand-in ``pynvml`` that answers from gpudoc's simulated GPUs, so a peer monitor (nvitop)
can be measured next to ``gpudoc tui --demo`` on a machine with no GPU, on the same scenario.

Put this directory first on ``PYTHONPATH`` (with the gpudoc source tree) and name the scenario
in ``GPUDOC_SHIM_SCENARIO`` (default ``dgx``). Every constant, structure and error class comes
from the real nvidia-ml-py module; every ``nvml*`` function is either answered by
:class:`gpudoc.gpu.simulated.SimulatedNvml` or raises ``NVML_ERROR_NOT_SUPPORTED``, as a driver
does for a query the GPU does not support. ``_nvmlGetFunctionPointer`` is left out, so callers
take the module's Python functions rather than the C library.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

_here = os.path.dirname(os.path.abspath(__file__))
_spec = next(
    importlib.util.spec_from_file_location("_real_pynvml", os.path.join(entry, "pynvml.py"))
    for entry in sys.path
    if entry and os.path.abspath(entry) != _here and os.path.isfile(os.path.join(entry, "pynvml.py"))
)
_real = importlib.util.module_from_spec(_spec)
sys.modules["_real_pynvml"] = _real
_spec.loader.exec_module(_real)

_shim = sys.modules[__name__]
sys.modules["pynvml"] = _real  # gpudoc itself imports the real module
from gpudoc.gpu.simulated import SimulatedBackend  # noqa: E402

sys.modules["pynvml"] = _shim
_simulated = SimulatedBackend(os.environ.get("GPUDOC_SHIM_SCENARIO", "dgx")).nvml


def _not_supported(*_args: Any, **_kwargs: Any) -> Any:
    raise _real.NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)


def _processes(handle: int) -> list[Any]:
    return [_process(p) for p in _simulated.nvmlDeviceGetComputeRunningProcesses(handle)]


def _process(p: Any) -> Any:
    p.gpuInstanceId = p.computeInstanceId = 0xFFFFFFFF
    return p


_ANSWERS = {name: getattr(_simulated, name) for name in dir(_simulated) if name.startswith("nvml")}
_ANSWERS.update(
    nvmlInitWithFlags=lambda flags=0: _simulated.nvmlInit(),
    nvmlDeviceGetMemoryInfo=lambda handle, version=None: _simulated.nvmlDeviceGetMemoryInfo(handle),
    nvmlDeviceGetComputeRunningProcesses=_processes,
    nvmlDeviceGetGraphicsRunningProcesses=lambda handle: [
        _process(p) for p in _simulated.nvmlDeviceGetGraphicsRunningProcesses(handle)],
    nvmlDeviceGetTemperatureV=lambda handle, sensor=0: _simulated.nvmlDeviceGetTemperature(handle, sensor),
    nvmlDeviceGetPowerManagementLimit=_simulated.nvmlDeviceGetEnforcedPowerLimit,
    nvmlDeviceGetIndex=lambda handle: handle,
    nvmlErrorString=lambda code: str(_real.NVMLError(code)),
)

_HELPERS = {"nvmlExceptionClass", "nvmlStructToFriendlyObject", "nvmlFriendlyObjectToStruct"}

for _name in dir(_real):
    if _name == "_nvmlGetFunctionPointer":
        continue
    _value = getattr(_real, _name)
    if _name.startswith("nvml") and _name not in _HELPERS and callable(_value) and not isinstance(_value, type):
        globals()[_name] = _ANSWERS.get(_name, _not_supported)
    elif not _name.startswith("__"):
        globals()[_name] = _value
