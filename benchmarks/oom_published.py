"""`gpudoc oom` against published measurements of real GPU runs: each model built from its
config (no download), each setting as the source ran it, the estimate next to the figure.

    python benchmarks/oom_published.py            # every row (BERT-large rows take a while)
    python benchmarks/oom_published.py --quick    # the small-model rows only

Sources:
- optimum-benchmark's ROCm training reports (PyTorch 2.2-2.3 caching allocator, fp32, Trainer's
  AdamW — torch's, foreach — batch 2, sequence 16, five steps): max_memory_allocated /
  max_memory_reserved in MiB.
- Hugging Face's "model memory anatomy" and "efficient training on a single GPU" guides:
  bert-large-uncased sequence classification at sequence 512 on a V100 16 GB with CUDA 11.2
  (eager module loading: 1343 MiB of context measured alone), Trainer of that time (its own
  for-loop AdamW, gradients zeroed rather than freed, eager attention): NVML used memory in MiB.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

OPTIMUM = "optimum-benchmark ROCm training report (PyTorch 2.2-2.3)"
HF_DOCS = "HF docs, model memory anatomy / single-GPU training (V100, CUDA 11.2)"


@dataclass(frozen=True)
class Row:
    """One published figure and the setting it was measured in."""

    model: str  # hf: spec
    setting: str
    source: str
    metric: str  # allocated, reserved, nvml
    measured_mib: float
    gpu: str
    cuda: str
    config: dict[str, Any] = field(default_factory=dict)
    eager_attention: bool = False
    big: bool = False


_BERT_LARGE = "bert-large-uncased:BertForSequenceClassification"
_HF_TRAINER = {"optimizer": "adamw", "optimizer_impl": "for-loop", "zero_grad": "zeros"}
ROWS: tuple[Row, ...] = (
    Row("bert-base-uncased:BertForMaskedLM", "b2 s16 fp32 AdamW", OPTIMUM, "allocated", 2093.6, "A100-80GB", "12",
        {"batch": 2, "input": "tokens:16", "optimizer": "adamw"}),
    Row("bert-base-uncased:BertForMaskedLM", "b2 s16 fp32 AdamW", OPTIMUM, "reserved", 2382.0, "A100-80GB", "12",
        {"batch": 2, "input": "tokens:16", "optimizer": "adamw"}),
    Row("gpt2:GPT2LMHeadModel", "b2 s16 fp32 AdamW", OPTIMUM, "allocated", 2390.6, "A100-80GB", "12",
        {"batch": 2, "input": "tokens:16", "optimizer": "adamw"}),
    Row("gpt2:GPT2LMHeadModel", "b2 s16 fp32 AdamW", OPTIMUM, "reserved", 2760.0, "A100-80GB", "12",
        {"batch": 2, "input": "tokens:16", "optimizer": "adamw"}),
    Row("roberta-base:RobertaForMultipleChoice", "b2 s16 fp32 AdamW, 2 choices", OPTIMUM, "allocated", 2382.2,
        "A100-80GB", "12", {"batch": 2, "input": "tokens:16", "optimizer": "adamw"}),
    Row("roberta-base:RobertaForMultipleChoice", "b2 s16 fp32 AdamW, 2 choices", OPTIMUM, "reserved", 2582.0,
        "A100-80GB", "12", {"batch": 2, "input": "tokens:16", "optimizer": "adamw"}),
    Row(_BERT_LARGE, "b4 s512 fp32 AdamW", HF_DOCS, "nvml", 14949, "V100-16GB", "11.2",
        {"batch": 4, "input": "tokens:512", **_HF_TRAINER}, True, True),
    Row(_BERT_LARGE, "b1 x4 accumulation", HF_DOCS, "nvml", 8681, "V100-16GB", "11.2",
        {"batch": 4, "accumulate": 4, "input": "tokens:512", **_HF_TRAINER}, True, True),
    Row(_BERT_LARGE, "b1 x4 accumulation + checkpointing", HF_DOCS, "nvml", 6775, "V100-16GB", "11.2",
        {"batch": 4, "accumulate": 4, "checkpointing": True, "input": "tokens:512", **_HF_TRAINER}, True, True),
    Row(_BERT_LARGE, "b4 s512 AMP (fp16)", HF_DOCS, "nvml", 13939, "V100-16GB", "11.2",
        {"batch": 4, "input": "tokens:512", "precision": "amp", **_HF_TRAINER}, True, True),
    Row(_BERT_LARGE, "b4 s512 Adafactor", HF_DOCS, "nvml", 12295, "V100-16GB", "11.2",
        {"batch": 4, "input": "tokens:512", **_HF_TRAINER, "optimizer": "__main__:TrainerAdafactor",
         "optimizer_impl": "foreach"}, True, True),
)


def _trainer_adafactor() -> type:
    from transformers.optimization import Adafactor

    class TrainerAdafactor(Adafactor):  # type: ignore[misc]
        """Adafactor as Trainer's optim="adafactor" makes it (no parameter scaling, no relative
        step: with them its step reads tensor values, which fake tensors cannot)."""

        def __init__(self, params: Any) -> None:
            super().__init__(params, lr=5e-5, scale_parameter=False, relative_step=False)

    return TrainerAdafactor


def __getattr__(name: str) -> Any:  # the optimizer spec "__main__:TrainerAdafactor", built on demand
    if name == "TrainerAdafactor":
        return _trainer_adafactor()
    raise AttributeError(name)


@contextmanager
def legacy_softmax() -> Iterator[None]:
    """PyTorch <= 1.10's softmax autograd (``_softmax_backward_data(grad, output, dim, self)``):
    the backward kept the softmax's input as well as its output. Patched into
    ``torch.nn.functional`` for the "as torch 1.x" column only."""
    import torch
    from torch.nn import functional

    class Softmax(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, dim: int) -> Any:
            y = torch.softmax(x, dim)
            ctx.save_for_backward(x, y)
            ctx.dim = dim
            return y

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            x, y = ctx.saved_tensors
            return torch.ops.aten._softmax_backward_data(grad, y, ctx.dim, x.dtype), None

    def softmax(x: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
        return Softmax.apply(x if dtype is None else x.to(dtype), -1 if dim is None else dim)

    plain = functional.softmax
    functional.softmax = softmax
    try:
        yield
    finally:
        functional.softmax = plain


def estimate_row(row: Row, legacy: bool = False) -> tuple[Any, float]:
    """The estimate for ``row`` (``legacy``: with torch 1.x's softmax) and the seconds it took."""
    from gpudoc.oom.devices import find_device, for_cuda, parse_cuda
    from gpudoc.oom.estimate import estimate
    from gpudoc.oom.hf import hf_factory
    from gpudoc.oom.trace import TraceConfig

    label, factory, _, _ = hf_factory(row.model)
    if row.eager_attention:
        plain = factory

        def factory() -> Any:
            model = plain()
            model.config._attn_implementation = "eager"
            model.set_attn_implementation("eager")
            return model

    device = for_cuda(find_device(row.gpu), parse_cuda(row.cuda))
    start = time.perf_counter()
    with legacy_softmax() if legacy else nullcontext():
        est = estimate(label, factory, TraceConfig(**row.config), device)
    return est, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small-model rows")
    args = parser.parse_args()
    import torch
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print("| model (from its config) | setting | source | metric | measured MiB | estimate MiB | ratio | "
          "as torch 1.x: MiB | ratio | trace s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    cache: dict[tuple[str, str, bool], tuple[Any, float]] = {}

    def value(row: Row, legacy: bool) -> tuple[float, Any, float]:
        key = (row.model, repr(sorted(row.config.items())), legacy)
        if key not in cache:
            cache[key] = estimate_row(row, legacy)
        est, seconds = cache[key]
        picked = {"allocated": est.peak_allocated_bytes, "reserved": est.peak_reserved_bytes,
                  "nvml": est.total_bytes}[row.metric]
        return picked / 2**20, est, seconds

    for row in ROWS:
        if args.quick and row.big:
            continue
        mib, est, seconds = value(row, False)
        if est.method != "trace":
            print(f"note: {row.model} {row.setting}: {est.notes[0]}", file=sys.stderr)
        old = f"{value(row, True)[0]:,.1f} | {value(row, True)[0] / row.measured_mib:.3f}" if row.big else "- | -"
        attention = "eager attention" if row.eager_attention else ", ".join(est.attention_kernels) or "-"
        print(f"| {row.model} | {row.setting}; {row.gpu}, CUDA {row.cuda}, {attention} | {row.source} | "
              f"{row.metric} | {row.measured_mib:,.1f} | {mib:,.1f} | {mib / row.measured_mib:.3f} | {old} | "
              f"{seconds:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
