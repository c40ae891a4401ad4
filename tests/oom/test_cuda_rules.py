"""CUDA's rules that the CPU trace does not follow by itself: module layering, dropout masks,
SDPA backend selection, CUDA context by version, optimizer implementations, zero_grad."""

from __future__ import annotations

import ast

from pathlib import Path

import pytest

import gpudoc.oom

OOM = Path(gpudoc.oom.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_imports_are_one_way() -> None:
    """estimate may call analytic (the fallback); analytic never imports estimate; the shared
    types live in result, which imports neither."""
    assert "gpudoc.oom.estimate" not in _imports(OOM / "analytic.py")
    assert not {"gpudoc.oom.estimate", "gpudoc.oom.analytic"} & _imports(OOM / "result.py")
    from gpudoc.oom import analytic, estimate, result

    assert analytic.Estimate is estimate.Estimate is result.Estimate
    assert analytic.verdict is estimate.verdict is result.verdict


# --- dropout masks ------------------------------------------------------------------------------

def _activation_sizes(factory: object, config: object, capability: tuple[int, int] = (8, 0)) -> list[int]:
    from gpudoc.oom.trace import trace_training

    trace = trace_training(factory, config, capability=capability)  # type: ignore[arg-type]
    return [e.nbytes for e in trace.events if e.nbytes and e.phase == "activations"]


def test_dropout_keeps_a_one_byte_mask_as_cudas_fused_kernel() -> None:
    """CUDA's fused dropout (native_dropout) keeps a bool mask: 1 byte per element, where the
    CPU path kept a noise tensor of the input's 4-byte elements."""
    torch = pytest.importorskip("torch")
    from gpudoc.oom.trace import TraceConfig

    batch, width = 4, 1000

    def model() -> object:
        return torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Dropout(0.5), torch.nn.Linear(width, 1))

    sizes = _activation_sizes(model, TraceConfig(batch, "8", optimizer="sgd"))
    per_step = {n: sizes.count(n) // 2 for n in set(sizes)}  # two traced steps
    assert per_step.get(batch * width) == 1  # the mask, bool
    assert per_step.get(batch * width * 4) == 2  # the first Linear's output and the dropout's output, float32


# --- SDPA backend selection -----------------------------------------------------------------------

from gpudoc.oom.kernels import EFFICIENT, FLASH, MATH, Attention, sdpa_backend  # noqa: E402

V100, T4_CC, A100, H100 = (7, 0), (7, 5), (8, 0), (9, 0)


def _call(dtype: str = "float16", head: int = 64, value: int | None = None, dropout: float = 0.1,
          mask: bool = False, causal: bool = False, lq: int = 512, lk: int = 512) -> Attention:
    return Attention(dtype, head, head if value is None else value, dropout, mask, causal, lq, lk)


@pytest.mark.parametrize(("capability", "call", "kernel", "why"), [
    # PyTorch's order: flash, then memory-efficient, then math; dropout is no obstacle to either.
    (A100, _call(), FLASH, "every flash constraint"),
    (H100, _call("bfloat16", dropout=0.0, causal=True), FLASH, "every flash constraint"),
    (A100, _call(head=7), FLASH, "every flash constraint"),  # flash pads the head dimension to 8
    (V100, _call(), EFFICIENT, "compute capability 8.0"),  # flash: sm80 and newer
    (T4_CC, _call(), EFFICIENT, "compute capability 8.0"),
    (A100, _call("float32"), EFFICIENT, "float16 or bfloat16"),  # flash: half precision only
    (V100, _call("float32"), EFFICIENT, "compute capability 8.0"),
    (A100, _call(mask=True), EFFICIENT, "no attn_mask"),  # memory-efficient takes a mask
    (A100, _call(head=512), EFFICIENT, "at most 256"),
    (A100, _call(causal=True, lq=128, lk=512), EFFICIENT, "different lengths"),
    (A100, _call(mask=True, head=12), MATH, "divisible by 8"),
    (T4_CC, _call("bfloat16"), MATH, "bfloat16 needs compute capability 8.0"),
    (A100, _call("float64"), MATH, "float32, float16 or bfloat16"),
    ((3, 7), _call("float32"), MATH, "compute capability 5.0"),
])
def test_sdpa_backend_follows_cudas_rules(capability: tuple[int, int], call: Attention, kernel: str, why: str) -> None:
    chosen, reason = sdpa_backend(capability, call)
    assert chosen == kernel
    assert why in reason


class _Attention:
    """One self-attention: a projection, then SDPA with dropout and optionally a mask."""

    def __new__(cls, heads: int, dim: int, mask: bool) -> object:
        torch = pytest.importorskip("torch")
        from torch.nn import functional

        class Block(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.qkv = torch.nn.Linear(heads * dim, 3 * heads * dim)

            def forward(self, x: object) -> object:
                b, t, _ = x.shape  # type: ignore[attr-defined]
                q, k, v = self.qkv(x).view(b, t, 3, heads, dim).permute(2, 0, 3, 1, 4)
                keep = torch.ones(b, 1, t, t, dtype=torch.bool) if mask else None
                out = functional.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=0.1)
                return out.transpose(1, 2).reshape(b, t, heads * dim)

        return Block()


@pytest.mark.parametrize(("capability", "precision", "dim", "mask", "kernel"), [
    (V100, "fp32", 16, False, EFFICIENT), (A100, "amp", 16, False, FLASH), (A100, "amp", 12, True, MATH)])
def test_sdpa_saved_tensors_are_the_chosen_kernels(capability: tuple[int, int], precision: str, dim: int,
                                                   mask: bool, kernel: str) -> None:
    """Flash and memory-efficient keep a float32 logsumexp per query row and no score matrix
    (the CPU's choice with dropout materialised it); the math path keeps the L x L weights and
    a 1-byte dropout mask."""
    from gpudoc.oom.trace import TraceConfig, trace_training

    batch, heads, length = 2, 4, 256
    trace = trace_training(lambda: _Attention(heads, dim, mask), TraceConfig(batch, f"{length}x{heads * dim}",
                           precision, "sgd"), capability=capability)
    assert list(trace.attention) == [kernel]
    sizes = {e.nbytes for e in trace.events if e.nbytes and e.phase == "activations"}
    square = batch * heads * length * length
    if kernel == MATH:
        assert square * 2 in sizes and square in sizes  # fp16 weights, and the bool dropout mask
    else:
        assert not {square, square * 2, square * 4} & sizes
        rows = batch * heads * (length if kernel == FLASH else -(-length // 32) * 32)
        assert rows * 4 in sizes  # logsumexp, float32


def test_estimate_names_the_attention_kernel() -> None:
    from gpudoc.oom.devices import find_device
    from gpudoc.oom.estimate import estimate
    from gpudoc.oom.trace import TraceConfig

    config = TraceConfig(2, "64x32", "fp32", "sgd")
    est = estimate("attn", lambda: _Attention(2, 16, False), config, find_device("V100"))
    assert est.attention_kernels == {EFFICIENT: "flash needs compute capability 8.0, the device has 7.0"}
    assert any("memory-efficient kernel assumed" in n and "V100-16GB (compute capability 7.0)" in n for n in est.notes)


# --- CUDA context by CUDA version ------------------------------------------------------------------

def test_context_follows_the_cuda_version() -> None:
    """Lazy module loading (CUDA 11.7 on) keeps the catalog's context; before it, every kernel
    is loaded: 1343 MiB measured on a V100 with CUDA 11.2."""
    from gpudoc.errors import InputError
    from gpudoc.oom.devices import MiB, cuda_note, find_device, for_cuda, parse_cuda

    v100 = find_device("V100")
    assert parse_cuda("11.2") == (11, 2) and parse_cuda("12.x") == parse_cuda("12") == (12, 0)
    assert parse_cuda("12.4.1") == (12, 4)
    assert for_cuda(v100, (11, 2)).context == 1343 * MiB
    assert for_cuda(v100, (11, 8)).context == for_cuda(v100, (12, 4)).context == v100.context == 300 * MiB
    assert for_cuda(find_device("TPU-v3-core"), (11, 2)).context == 0
    assert "eager module loading" in str(cuda_note(for_cuda(v100, (11, 2)), (11, 2), "--cuda"))
    for bad in ("abc", "1.0", "12.y", "", "11.8-rc"):
        with pytest.raises(InputError, match="--cuda"):
            parse_cuda(bad)


def test_local_cuda_default_is_the_torch_builds() -> None:
    torch = pytest.importorskip("torch")
    from gpudoc.oom.devices import local_torch_cuda

    assert local_torch_cuda() == torch.version.cuda


@pytest.mark.parametrize(("text", "cuda"), [
    ("__version__ = '2.13.0+cu124'\ncuda: Optional[str] = '12.4'\nhip = None\n", "12.4"),
    ("cuda = '11.8'\n", "11.8"), ("cuda: Optional[str] = None\n", None), ("git_version = 'abc'\n", None)])
def test_the_cuda_of_a_torch_version_file(text: str, cuda: str | None) -> None:
    from gpudoc.oom.devices import cuda_of_version_file

    assert cuda_of_version_file(text) == cuda


# --- optimizer implementation and zero_grad ---------------------------------------------------------

def _mlp() -> object:
    torch = pytest.importorskip("torch")
    return torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(4)])


def _estimate(batch: int = 512, **changes: object) -> object:
    import dataclasses

    from gpudoc.oom.devices import find_device
    from gpudoc.oom.estimate import estimate
    from gpudoc.oom.trace import TraceConfig

    return estimate("mlp", _mlp, dataclasses.replace(TraceConfig(batch, "256"), **changes), find_device("A100"))


def test_foreach_for_loop_and_fused_optimizers() -> None:
    """foreach's temporaries span every parameter, the for-loop's one parameter, fused none."""
    params = 4 * (256 * 256 + 256) * 4
    foreach, loop, fused = (_estimate(8, optimizer_impl=i) for i in ("foreach", "for-loop", "fused"))
    assert foreach.breakdown["optimizer temporaries"] >= params  # type: ignore[attr-defined]
    assert loop.breakdown["optimizer temporaries"] < params / 2  # type: ignore[attr-defined]
    assert "optimizer temporaries" not in fused.breakdown  # type: ignore[attr-defined]
    assert foreach.peak_allocated_bytes > loop.peak_allocated_bytes > fused.peak_allocated_bytes  # type: ignore[attr-defined]


def test_zero_grad_zeros_keeps_gradients_through_the_forward() -> None:
    grads = 4 * (256 * 256 + 256) * 4
    none, zeros = _estimate(optimizer_impl="fused"), _estimate(optimizer_impl="fused", zero_grad="zeros")
    assert zeros.peak_allocated_bytes - none.peak_allocated_bytes >= 0.9 * grads  # type: ignore[attr-defined]


def test_fused_needs_an_optimizer_that_has_one() -> None:
    from gpudoc.errors import InputError

    with pytest.raises(InputError, match="no fused implementation"):
        _estimate(optimizer="torch.optim:LBFGS", optimizer_impl="fused")


def test_state_the_optimizers_constructor_makes_is_counted() -> None:
    """Adagrad makes its sums in __init__, before the first step: they are optimizer state."""
    est = _estimate(8, optimizer="Adagrad")
    assert est.breakdown["optimizer state"] >= 4 * (256 * 256 + 256) * 4  # type: ignore[attr-defined]


@pytest.mark.parametrize("precision", ["fp32", "amp"])
def test_checkpointing_recomputes_under_the_same_cuda_rules(precision: str) -> None:
    """The backward's recomputation runs with the trace's dropout and autocast rules (else the
    recomputed tensors differ from the saved ones and torch's checkpoint raises)."""
    torch = pytest.importorskip("torch")
    from gpudoc.oom.trace import TraceConfig, trace_training

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(64, 64)
            self.dropout = torch.nn.Dropout(0.1)

        def forward(self, x: object) -> object:
            return torch.relu(self.dropout(self.linear(x)))

    def model() -> object:
        return torch.nn.Sequential(*[Block() for _ in range(3)])

    trace = trace_training(model, TraceConfig(4, "64", precision, checkpointing=True))
    assert trace.checkpointed == ["0", "1", "2"]


def test_the_analytic_estimate_says_it_ignores_the_optimizer_options() -> None:
    from gpudoc.oom.analytic import torch_analytic
    from gpudoc.oom.devices import find_device
    from gpudoc.oom.trace import TraceConfig

    config = TraceConfig(8, "256", optimizer_impl="fused", zero_grad="zeros")
    est = torch_analytic("mlp", _mlp, config, find_device("A100"), "a data-dependent op")
    assert any("--optimizer-impl and --zero-grad are not modelled" in n for n in est.notes)
    plain = torch_analytic("mlp", _mlp, TraceConfig(8, "256"), find_device("A100"), "a data-dependent op")
    assert not any("--optimizer-impl" in n for n in plain.notes)


def test_the_fused_remedy_is_offered_only_where_it_saves_memory() -> None:
    torch = pytest.importorskip("torch")
    from gpudoc.oom.devices import find_device
    from gpudoc.oom.estimate import estimate, remedies
    from gpudoc.oom.trace import TraceConfig

    a100 = find_device("A100")

    def wide() -> object:
        return torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(4)])

    def run(cfg: TraceConfig) -> object:
        return estimate("wide", wide, cfg, a100)

    others = frozenset({"amp", "bf16", "smaller-input", "checkpointing", "accumulate", "sgd"})
    for batch, offered in ((8, True), (65536, False)):  # the peak at the optimizer step, or in the forward
        names = {r.name for r in remedies(run(TraceConfig(batch, "2048")), run, None, skip=others)}  # type: ignore[arg-type]
        assert ("fused" in names) == offered, batch
