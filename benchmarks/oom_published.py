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
  for-loop AdamW, gradients zeroed rather than freed, eager attention) and the PyTorch of that
  time (<= 1.10: softmax's backward kept its input), hence --torch 1.10: NVML used memory in MiB.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from gpudoc.oom.versions import rules_of

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
# The guides' era: PyTorch <= 1.10 (softmax's backward keeps its input; zero_grad zeros the
# gradients; for-loop optimizers: --torch 1.10's defaults, as `gpudoc oom --torch 1.10` takes them).
_ERA = rules_of("1.10")
_HF_TRAINER = {"optimizer": "adamw", "torch": "1.10", "optimizer_impl": _ERA.optimizer_impl_default,
               "zero_grad": _ERA.zero_grad_default}
_ERA_SETTING = "--torch 1.10 (the guides' era: PyTorch <= 1.10)"
ROWS: tuple[Row, ...] = (
    Row("bert-base-uncased:BertForMaskedLM", "b2 s16 fp32 AdamW", OPTIMUM, "allocated", 2093.6, "A100-80GB", "12",
        {"batch": 2, "input": "tokens:16", "optimizer": "adamw", "torch": "2.2"}),
    Row("bert-base-uncased:BertForMaskedLM", "b2 s16 fp32 AdamW", OPTIMUM, "reserved", 2382.0, "A100-80GB", "12",
        {"batch": 2, "input": "tokens:16", "optimizer": "adamw", "torch": "2.2"}),
    Row("gpt2:GPT2LMHeadModel", "b2 s16 fp32 AdamW", OPTIMUM, "allocated", 2390.6, "A100-80GB", "12",
        {"batch": 2, "input": "tokens:16", "optimizer": "adamw", "torch": "2.2"}),
    Row("gpt2:GPT2LMHeadModel", "b2 s16 fp32 AdamW", OPTIMUM, "reserved", 2760.0, "A100-80GB", "12",
        {"batch": 2, "input": "tokens:16", "optimizer": "adamw", "torch": "2.2"}),
    Row("roberta-base:RobertaForMultipleChoice", "b2 s16 fp32 AdamW, 2 choices", OPTIMUM, "allocated", 2382.2,
        "A100-80GB", "12", {"batch": 2, "input": "tokens:16", "optimizer": "adamw", "torch": "2.2"}),
    Row("roberta-base:RobertaForMultipleChoice", "b2 s16 fp32 AdamW, 2 choices", OPTIMUM, "reserved", 2582.0,
        "A100-80GB", "12", {"batch": 2, "input": "tokens:16", "optimizer": "adamw", "torch": "2.2"}),
    Row(_BERT_LARGE, f"b4 s512 fp32 AdamW, {_ERA_SETTING}", HF_DOCS, "nvml", 14949, "V100-16GB", "11.2",
        {"batch": 4, "input": "tokens:512", **_HF_TRAINER}, True, True),
    Row(_BERT_LARGE, f"b1 x4 accumulation, {_ERA_SETTING}", HF_DOCS, "nvml", 8681, "V100-16GB", "11.2",
        {"batch": 4, "accumulate": 4, "input": "tokens:512", **_HF_TRAINER}, True, True),
    Row(_BERT_LARGE, f"b1 x4 accumulation + checkpointing, {_ERA_SETTING}", HF_DOCS, "nvml", 6775, "V100-16GB", "11.2",
        {"batch": 4, "accumulate": 4, "checkpointing": True, "input": "tokens:512", **_HF_TRAINER}, True, True),
    Row(_BERT_LARGE, f"b4 s512 AMP (fp16), {_ERA_SETTING}", HF_DOCS, "nvml", 13939, "V100-16GB", "11.2",
        {"batch": 4, "input": "tokens:512", "precision": "amp", **_HF_TRAINER}, True, True),
    Row(_BERT_LARGE, f"b4 s512 Adafactor, {_ERA_SETTING}", HF_DOCS, "nvml", 12295, "V100-16GB", "11.2",
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


def estimate_row(row: Row) -> tuple[Any, float]:
    """The estimate for ``row`` and the seconds it took."""
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
    est = estimate(label, factory, TraceConfig(**row.config), device)
    return est, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small-model rows")
    args = parser.parse_args()
    import torch
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print("| model (from its config) | setting | source | metric | measured MiB | estimate MiB | ratio | trace s |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    cache: dict[tuple[str, str], tuple[Any, float]] = {}
    for row in ROWS:
        if args.quick and row.big:
            continue
        key = (row.model, repr(sorted(row.config.items())))
        if key not in cache:
            cache[key] = estimate_row(row)
        est, seconds = cache[key]
        mib = {"allocated": est.peak_allocated_bytes, "reserved": est.peak_reserved_bytes,
               "nvml": est.total_bytes}[row.metric] / 2**20
        if est.method != "trace":
            print(f"note: {row.model} {row.setting}: {est.notes[0]}", file=sys.stderr)
        attention = "eager attention" if row.eager_attention else ", ".join(est.attention_kernels) or "-"
        print(f"| {row.model} | {row.setting}; {row.gpu}, CUDA {row.cuda}, {attention} | {row.source} | "
              f"{row.metric} | {row.measured_mib:,.1f} | {mib:,.1f} | {mib / row.measured_mib:.3f} | "
              f"{seconds:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
