"""Trace-based estimates on CPU: orderings the physics demands, and MemTracker as a peer."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from gpudoc.oom.devices import find_device  # noqa: E402
from gpudoc.oom.estimate import Estimate, estimate, max_batch, remedies, replay  # noqa: E402
from gpudoc.oom.trace import TraceConfig, trace_training  # noqa: E402
from gpudoc.oom.zoo import ZOO, gpt2_small, resnet18, resnet50, unet, vit_b16  # noqa: E402

T4 = find_device("T4")
SMALL = "3x128x128"


def est(factory: object = resnet18, **changes: object) -> Estimate:
    config = dataclasses.replace(TraceConfig(32, SMALL), **changes)
    return estimate("m", factory, config, T4)  # type: ignore[arg-type]


def test_zoo_parameter_counts_match_the_papers() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    expected = {resnet18: 11_689_512, resnet50: 25_557_032, vit_b16: 86_567_656, unet: 31_037_633,
                gpt2_small: 124_439_808}
    with FakeTensorMode():
        for factory, count in expected.items():
            assert sum(p.numel() for p in factory().parameters()) == count, factory.__name__


def test_monotonic_in_batch_and_ordered_by_remedy() -> None:
    sizes = [est(batch=b, optimizer="sgd", input="3x128x128") for b in (4, 8, 16, 32)]
    for key in ("peak_allocated_bytes", "peak_reserved_bytes", "total_bytes"):
        values = [getattr(e, key) for e in sizes]
        assert values == sorted(values) and len(set(values)) == 4, key
    base = est()
    assert est(precision="amp").peak_allocated_bytes < base.peak_allocated_bytes
    assert est(precision="bf16").peak_allocated_bytes < base.peak_allocated_bytes
    assert est(freeze=r"^(?!fc\.)").peak_allocated_bytes < base.peak_allocated_bytes
    assert est(checkpointing=True).breakdown["activations"] < base.breakdown["activations"]
    assert est(accumulate=4).breakdown["activations"] < base.breakdown["activations"]
    assert est(optimizer="sgd").peak_allocated_bytes < est(optimizer="momentum").peak_allocated_bytes \
        < base.peak_allocated_bytes
    assert est(inference=True).peak_allocated_bytes < base.peak_allocated_bytes
    assert base.parameters == base.trainable_parameters == 11_689_512
    assert est(freeze=r"^(?!fc\.)").trainable_parameters == 513_000


def test_breakdown_names_the_parts() -> None:
    e = est(batch=32)
    assert e.breakdown["parameters"] == pytest.approx(11_689_512 * 4 + 9600 * 4 + 20 * 8, rel=0.01)
    assert {"activations", "inputs", "cuBLAS workspace", "CUDA context"} <= set(e.breakdown)
    assert e.peak_reserved_bytes >= e.peak_allocated_bytes
    assert e.total_bytes == e.peak_reserved_bytes + T4.context + T4.cudnn_margin
    assert e.top_modules[0][0] == "layer1.0 (BasicBlock)"  # module paths as named_modules() gives them, and classes


@pytest.mark.parametrize(("factory", "shape", "batch"), [
    (resnet18, SMALL, 8), (unet, "3x64x64", 2), (vit_b16, "3x224x224", 2), (gpt2_small, "tokens:128", 2)])
def test_within_ten_percent_of_memtracker(factory: object, shape: str, batch: int) -> None:
    """PyTorch's MemTracker on the same two steps (fake CPU tensors): a peer, not ground truth."""
    from gpudoc.oom.trace import memtracker_peak

    peer = memtracker_peak(factory, shape, batch)  # type: ignore[arg-type]
    no_workspace = dataclasses.replace(T4, cublas_workspace=0)
    ours = replay(trace_training(factory, TraceConfig(batch, shape)), no_workspace).peak_allocated  # type: ignore[arg-type]
    assert ours == pytest.approx(peer, rel=0.10)


def test_max_batch_and_remedies() -> None:
    config = TraceConfig(16, "3x224x224")
    def run(cfg: TraceConfig) -> Estimate:
        return estimate("resnet18", resnet18, cfg, T4)

    best, at_best = max_batch(config, T4, run)
    target = 0.9 * T4.capacity
    assert best > 16 and at_best.total_bytes <= target and at_best.config.batch == best
    over = estimate("resnet18", resnet18, dataclasses.replace(config, batch=int(best * 1.05) + 1), T4)
    assert over.total_bytes > target
    base = estimate("resnet18", resnet18, dataclasses.replace(config, batch=512), T4)
    assert base.verdict == "oom"
    ranked = remedies(base, run, ZOO["resnet18"].backbone)
    assert [r.saved_bytes for r in ranked] == sorted((r.saved_bytes for r in ranked), reverse=True)
    assert {"amp", "checkpointing", "accumulate", "freeze", "sgd", "smaller-input"} <= {r.name for r in ranked}
    assert all(r.saved_bytes > 0 for r in ranked)


def test_data_dependent_models_fall_back_to_the_analytic_estimate() -> None:
    class Gate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            return y * float(y.mean().item() > 0)

    e = estimate("gate", Gate, TraceConfig(4, "64"), T4)
    assert e.method == "analytic" and "cannot run on fake tensors (in the model's forward: " in e.notes[0]
    assert e.breakdown["parameters"] == (64 * 64 + 64) * 4 and e.breakdown["optimizer state"] == 2 * e.breakdown[
        "gradients"]


def test_precisions_a_device_cannot_run_are_refused_or_never_proposed() -> None:
    from gpudoc.errors import InputError
    from gpudoc.oom.devices import Device, check_precision, supports

    unknown = dataclasses.replace(find_device("A100-80GB"), name="NVIDIA A777", capability=None)
    assert supports(unknown, "bf16") is None and supports(unknown, "amp") is True
    assert "compute capability of NVIDIA A777 is unknown" in (check_precision(unknown, "bf16") or "")
    tpu: Device = find_device("TPU-v3-core")
    assert check_precision(tpu, "bf16") is None
    with pytest.raises(InputError, match="TPU-v3-core computes in bf16, not fp16"):
        check_precision(tpu, "amp")
    assert check_precision(find_device("H100"), "bf16") is None

    def two_layers() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))

    def on(device: Device) -> set[str]:
        def run(cfg: TraceConfig) -> Estimate:
            return estimate("m", two_layers, cfg, device)

        return {r.name for r in remedies(run(TraceConfig(8, "64")), run, None, device=device)}

    assert "bf16" in on(find_device("A100-40GB")) and "amp" in on(find_device("A100-40GB"))
    assert "bf16" not in on(unknown) and "bf16" not in on(T4) and "amp" in on(T4)


@pytest.mark.parametrize(("name", "capability", "bf16"), [
    ("NVIDIA A10G", (8, 6), True), ("NVIDIA L40S", (8, 9), True), ("NVIDIA H800", (9, 0), True),
    ("NVIDIA GeForce RTX 3080", (8, 6), True), ("Quadro RTX 8000", (7, 5), False),
    ("Tesla P100-PCIE-16GB", (6, 0), False), ("Tesla V100-SXM2-32GB", (7, 0), False), ("Tesla K80", None, None),
])
def test_a_local_gpu_outside_the_catalog_gets_the_capability_its_name_tells(
        name: str, capability: tuple[int, int] | None, bf16: bool | None) -> None:
    from gpudoc.oom.devices import device_named, supports

    device = device_named(name, 24 * 1024**3)
    assert device.capability == capability and supports(device, "bf16") is bf16
    assert device.cublas_workspace == (32 * 1024**2 if name == "NVIDIA H800" else 8 * 1024**2 + 128 * 1024)


@pytest.mark.parametrize("config", [
    TraceConfig(4, "3x32x32"), TraceConfig(4, "3x32x32", "amp", "momentum"),
    TraceConfig(4, "3x32x32", checkpointing=True, accumulate=2, optimizer="adamw"),
    TraceConfig(4, "3x32x32", optimizer="Adagrad", optimizer_impl="for-loop"),
    TraceConfig(4, "3x32x32", freeze=r"^(?!fc\.)", optimizer_impl="fused")])
def test_the_repeated_second_step_is_the_traced_one(config: TraceConfig) -> None:
    """Step 2 made from step 1's allocations (what step 1 kept not again) replays exactly as
    the traced step 2."""
    traced = replay(trace_training(resnet18, config, repeat_step=False), T4)
    repeated = replay(trace_training(resnet18, config, repeat_step=True), T4)
    assert repeated == traced


def test_zero_grad_zeros_traces_the_second_step() -> None:
    """With gradients kept, step 2 accumulates into them: it is traced, not repeated."""
    messages: list[str] = []
    trace_training(resnet18, TraceConfig(2, "3x32x32", zero_grad="zeros"), messages.append)
    assert "training step 2/2" in messages
    messages.clear()
    trace_training(resnet18, TraceConfig(2, "3x32x32"), messages.append)
    assert "training step 2/2 (step 1's allocations repeated)" in messages
