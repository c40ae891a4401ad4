"""Time of `gpudoc oom` estimates on this CPU next to PyTorch's MemTracker on the same two
training steps (fake CPU tensors), in one process, with both peaks side by side.

    python benchmarks/oom_estimate_time.py --batch 32

The first estimate in a process also pays for importing torch._dynamo (FakeTensorMode needs it);
it is reported apart ("cold"). MemTracker reports tensor bytes only; gpudoc's allocated peak adds
512-byte rounding, block accounting and the cuBLAS workspace, its reserved peak the allocator.
"""

from __future__ import annotations

import argparse
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    start = time.perf_counter()
    import torch  # noqa: F401

    from gpudoc.oom.devices import find_device
    from gpudoc.oom.estimate import estimate
    from gpudoc.oom.trace import TraceConfig, memtracker_peak
    from gpudoc.oom.zoo import resnet18, resnet50

    imported = time.perf_counter() - start
    device = find_device("V100-32GB")
    rows = []
    for name, factory in (("resnet50", resnet50), ("resnet50", resnet50), ("resnet18", resnet18)):
        start = time.perf_counter()
        ours = estimate(name, factory, TraceConfig(args.batch, "3x224x224"), device)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        peer = memtracker_peak(factory, "3x224x224", args.batch)
        peer_s = time.perf_counter() - start
        rows.append((name, ours_s, ours.peak_allocated_bytes, ours.peak_reserved_bytes, peer_s, peer))
    print(f"import torch: {imported:.2f} s; batch {args.batch}, 3x224x224, Adam, fp32")
    print("| model | run | gpudoc s | MemTracker s | gpudoc allocated MiB | gpudoc reserved MiB | MemTracker MiB | "
          "allocated / MemTracker |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for i, (name, ours_s, alloc, reserved, peer_s, peer) in enumerate(rows):
        run = "cold (imports torch._dynamo)" if i == 0 else "warm"
        print(f"| {name} | {run} | {ours_s:.2f} | {peer_s:.2f} | {alloc / 2**20:,.0f} | {reserved / 2**20:,.0f} | "
              f"{peer / 2**20:,.0f} | {alloc / peer:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
