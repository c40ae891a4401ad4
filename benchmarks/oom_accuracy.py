"""Ground truth for `gpudoc oom`: train each built-in PyTorch model (and torchvision/timm models
where installed) for 3 steps on this machine's GPU at several batch sizes and precisions, and
print the measured peaks next to gpudoc's estimates for the same GPU. Needs a CUDA GPU.

    python benchmarks/oom_accuracy.py                       # the default grid
    python benchmarks/oom_accuracy.py --models resnet50 --batches 16 32 64 --precisions fp32 amp

Each configuration runs in a fresh subprocess (so the CUDA context and the caching allocator
start empty): measured = torch.cuda.max_memory_allocated / max_memory_reserved and the NVML
used memory of the device at the peak minus before CUDA was initialised (context included).
An OOM is recorded as such. Error = (estimate - measured) / measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

GRID = {
    "resnet18": ([32, 128], "3x224x224"),
    "resnet50": ([16, 32, 64], "3x224x224"),
    "unet": ([4, 8, 16], "3x256x256"),
    "vit_b16": ([16, 32, 64], "3x224x224"),
    "gpt2_small": ([4, 8], "tokens:1024"),
}

CHILD = r"""
import json, sys, threading, time
import pynvml, torch
name, batch, shape, precision = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
before = pynvml.nvmlDeviceGetMemoryInfo(handle).used
peak_used = [before]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak_used[0] = max(peak_used[0], pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
from gpudoc.oom.models import resolve
from gpudoc.oom.trace import parse_input, training_loss
spec = resolve(name)
dims, tokens = parse_input(shape, batch)
result = {"oom": False}
try:
    model = spec.source().cuda().train()
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "amp")
    low = {"amp": torch.float16, "bf16": torch.bfloat16}.get(precision)
    for _ in range(3):
        x = torch.zeros(dims, dtype=torch.long, device="cuda") if tokens else torch.zeros(dims, device="cuda")
        target = torch.zeros(dims if tokens else dims[:1], dtype=torch.long, device="cuda")
        with torch.autocast("cuda", dtype=low or torch.float32, enabled=low is not None):
            loss = training_loss(model(x), tokens, target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        del loss, x, target
    torch.cuda.synchronize()
except torch.OutOfMemoryError:
    result["oom"] = True
time.sleep(0.05)
stop.set()
result.update(allocated=torch.cuda.max_memory_allocated(), reserved=torch.cuda.max_memory_reserved(),
              nvml=peak_used[0] - before, device=torch.cuda.get_device_name())
print(json.dumps(result))
"""


def measure(name: str, batch: int, shape: str, precision: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(batch), shape, precision], capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(GRID))
    parser.add_argument("--batches", nargs="*", type=int)
    parser.add_argument("--precisions", nargs="*", default=["fp32", "amp"])
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 3
    from gpudoc.oom.devices import find_device
    from gpudoc.oom.estimate import estimate
    from gpudoc.oom.models import resolve
    from gpudoc.oom.trace import TraceConfig

    device = find_device("local")
    print(f"device: {device.name}, {device.capacity / 2**20:,.0f} MiB; torch {torch.__version__}")
    print("| model | batch | precision | measured allocated | est. | err | measured reserved | est. | err | "
          "NVML used | est. total | err |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    errors: list[float] = []
    for name in args.models:
        batches, shape = GRID.get(name, ([32], "3x224x224"))
        spec = resolve(name)
        for batch in args.batches or batches:
            for precision in args.precisions:
                got = measure(name, batch, shape, precision)
                est = estimate(name, spec.source, TraceConfig(batch, shape, precision), device)  # type: ignore[arg-type]
                if "error" in got or got.get("oom"):
                    print(f"| {name} | {batch} | {precision} | {got.get('error', 'OOM')} | | | | | | | "
                          f"{est.total_bytes / 2**20:,.0f} ({est.verdict}) | |")
                    continue

                def cell(measured: object, estimated: int) -> str:
                    m = float(measured)  # type: ignore[arg-type]
                    return f"{m / 2**20:,.0f} | {estimated / 2**20:,.0f} | {100 * (estimated - m) / m:+.1f}%"

                errors.append((est.peak_reserved_bytes - float(got["reserved"])) / float(got["reserved"]))  # type: ignore[arg-type]
                print(f"| {name} | {batch} | {precision} | {cell(got['allocated'], est.peak_allocated_bytes)} | "
                      f"{cell(got['reserved'], est.peak_reserved_bytes)} | {cell(got['nvml'], est.total_bytes)} |")
    if errors:
        print(f"\nreserved: median |error| {100 * statistics.median(abs(e) for e in errors):.1f}%, "
              f"worst under-estimate {100 * min(errors):+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
