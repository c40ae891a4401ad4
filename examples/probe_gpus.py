"""Print one snapshot of the GPUs, their processes and the host, using gpudoc's probe API.

    python examples/probe_gpus.py                 # real GPUs through NVML
    python examples/probe_gpus.py --simulate dgx  # a built-in simulated scenario
"""

from __future__ import annotations

import argparse
import sys

from gpudoc.gpu import GpuBackend, NvmlBackend, SimulatedBackend, available
from gpudoc.host import HostProbe
from gpudoc.output import format_bytes


def show(backend: GpuBackend, probe: HostProbe) -> int:
    """Print the snapshot; return 1 when the GPUs could not be read."""
    snap = backend.snapshot()
    if snap.error:
        print(f"no GPUs: {snap.error}")
    else:
        print(f"driver {snap.driver.driver_version}, CUDA {snap.driver.cuda_version}")
    for gpu in snap.devices:
        if gpu.error:
            print(f"GPU {gpu.index}: {gpu.error}")
            continue
        memory = (
            f"{format_bytes(gpu.memory_used)} / {format_bytes(gpu.memory_total)}"
            if available(gpu.memory_used) and available(gpu.memory_total) else "N/A"
        )
        print(f"GPU {gpu.index}: {gpu.name}  util {gpu.utilization_gpu}%  mem {memory}  "
              f"{gpu.temperature} °C  fan {gpu.fan_speed}%  {gpu.power_draw} / {gpu.power_limit} W")
        for proc in gpu.processes:
            used = format_bytes(proc.used_memory) if available(proc.used_memory) else "N/A"
            print(f"    pid {proc.pid:>7}  {proc.type.value:<16} {used}")
    host = probe.sample()
    load = " ".join(f"{x:.2f}" for x in host.load_average) if available(host.load_average) else "N/A"
    print(f"host: {len(host.cpu_per_core)} cores at {host.cpu_percent:.0f}%, "
          f"RAM {format_bytes(host.memory_used)} / {format_bytes(host.memory_total)}, load {load}")
    return 1 if snap.error else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", metavar="SCENARIO", help="built-in scenario name or scenario file")
    args = parser.parse_args()
    backend = SimulatedBackend(args.simulate) if args.simulate else NvmlBackend()
    with backend:
        return show(backend, HostProbe())


if __name__ == "__main__":
    sys.exit(main())
