"""Time of `gpudoc oom` estimates on this CPU next to PyTorch's MemTracker on the same two
training steps (fake CPU tensors), in one process, with both peaks side by side.

    python benchmarks/oom_estimate_time.py --batch 32

The first estimate in a process also pays for importing torch._dynamo (FakeTensorMode needs it);
it is reported apart ("cold"). A second table shows where a warm estimate's time goes, stage by
stage (as its progress line names them), for ResNet-50 and, with transformers installed,
BERT-large at batch 4, sequence 512. MemTracker reports tensor bytes only; gpudoc's allocated peak adds
512-byte rounding, block accounting and the cuBLAS workspace, its reserved peak the allocator.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
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
    stages = [("resnet50", resnet50, TraceConfig(args.batch, "3x224x224"))]
    if importlib.util.find_spec("transformers") is not None:
        from gpudoc.oom.hf import hf_factory

        stages.append(("bert-large b4 s512", hf_factory("bert-large-uncased:BertForSequenceClassification")[1],
                       TraceConfig(4, "tokens:512", optimizer="adamw")))
    timings = []
    for name, factory, config in stages:
        marks: list[tuple[str, float]] = [("", time.perf_counter())]
        estimate(name, factory, config, device, lambda stage, marks=marks: marks.append((stage, time.perf_counter())))
        marks.append(("", time.perf_counter()))
        timings.append((name, [(stage, t2 - t1) for (stage, t1), (_, t2) in itertools.pairwise(marks[1:])],
                        marks[-1][1] - marks[0][1]))
    print(f"import torch: {imported:.2f} s; batch {args.batch}, 3x224x224, Adam, fp32")
    print("| model | run | gpudoc s | MemTracker s | gpudoc allocated MiB | gpudoc reserved MiB | MemTracker MiB | "
          "allocated / MemTracker |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for i, (name, ours_s, alloc, reserved, peer_s, peer) in enumerate(rows):
        run = "cold (imports torch._dynamo)" if i == 0 else "warm"
        print(f"| {name} | {run} | {ours_s:.2f} | {peer_s:.2f} | {alloc / 2**20:,.0f} | {reserved / 2**20:,.0f} | "
              f"{peer / 2**20:,.0f} | {alloc / peer:.3f} |")
    print("\n| model (warm) | stage | s |\n|---|---|---:|")
    for name, parts, total in timings:
        for stage, seconds in parts:
            print(f"| {name} | {stage} | {seconds:.2f} |")
        print(f"| {name} | **total** | {total:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
