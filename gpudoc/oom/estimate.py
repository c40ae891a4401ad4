"""Peak GPU memory of a training step: the trace replayed through the caching-allocator
simulation, plus the device's constant costs; a verdict, the largest safe batch, and remedies
ranked by the memory they save."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gpudoc.oom.allocator import CachingAllocator
from gpudoc.oom.devices import Device, supports
from gpudoc.oom.kernels import EAGER
from gpudoc.oom.result import TIGHT, Estimate, Remedy, verdict
from gpudoc.oom.trace import Trace, TraceConfig

_TOP_LEVEL = "(top level: loss, glue code)"
_PHASE_CATEGORY = {"parameters": "parameters", "inputs": "inputs", "activations": "activations",
                   "backward": "backward temporaries", "optimizer": "optimizer temporaries", "setup": "other"}


@dataclass(frozen=True)
class Replay:
    """One pass of a trace through the allocator simulation."""

    peak_allocated: int
    peak_reserved: int
    breakdown: dict[str, int]
    top_modules: list[tuple[str, int]]


def _module_group(path: str, types: dict[str, str]) -> str:
    """A module path cut to two levels (``layer1.0``, ``features.3``) with its class."""
    if not path:
        return _TOP_LEVEL
    group = ".".join(path.split(".")[:2])
    return f"{group} ({types[group]})" if group in types else group


def replay(trace: Trace, device: Device) -> Replay:
    """Peak allocated and reserved, and what was live at the allocated peak (by category, and
    activations by module)."""
    allocator = CachingAllocator()
    sizes: dict[int, tuple[int, str, str]] = {}
    live: dict[str, int] = defaultdict(int)
    by_module: dict[str, int] = defaultdict(int)
    snapshot: tuple[dict[str, int], dict[str, int]] = ({}, {})
    peak = -1
    workspace = -1
    if device.cublas_workspace:
        allocator.malloc(workspace, device.cublas_workspace)
        live["cuBLAS workspace"] += device.cublas_workspace
    for event in trace.events:
        if event.nbytes:
            category = trace.roles.get(event.handle) or _PHASE_CATEGORY.get(event.phase, "other")
            allocator.malloc(event.handle, event.nbytes)
            sizes[event.handle] = (event.nbytes, category, event.module)
            live[category] += event.nbytes
            if category == "activations":
                by_module[_module_group(event.module, trace.module_types)] += event.nbytes
            if allocator.stats.allocated > peak:
                peak = allocator.stats.allocated
                snapshot = (dict(live), dict(by_module))
        elif event.handle in sizes:
            nbytes, category, module = sizes.pop(event.handle)
            allocator.free(event.handle)
            live[category] -= nbytes
            if category == "activations":
                by_module[_module_group(module, trace.module_types)] -= nbytes
    stats = allocator.stats
    breakdown = {k: v for k, v in snapshot[0].items() if v > 0}
    top = sorted(((k, v) for k, v in snapshot[1].items() if v > 0), key=lambda kv: -kv[1])[:8]
    return Replay(stats.peak_allocated, stats.peak_reserved, breakdown, top)


def from_trace(name: str, trace: Trace, config: TraceConfig, device: Device, notes: list[str]) -> Estimate:
    """An :class:`Estimate` from a trace on ``device``."""
    free = replay(trace, device)
    total = free.peak_reserved + device.context + device.cudnn_margin
    breakdown = dict(free.breakdown)
    breakdown["allocator overhead (reserved - allocated)"] = free.peak_reserved - free.peak_allocated
    breakdown["CUDA context"] = device.context
    breakdown["cuDNN workspace margin"] = device.cudnn_margin
    return Estimate(
        name, config, device.name, "trace", free.peak_allocated, free.peak_reserved, total, device.capacity,
        verdict(total, device.usable), device.usable - total, breakdown, free.top_modules,
        trace.parameters, trace.trainable, notes, checkpointed_blocks=list(trace.checkpointed),
        attention_kernels=dict(trace.attention))


def checkpointing_note(blocks: list[str]) -> str:
    """What ``--checkpointing`` did: the blocks it wrapped, or why it did nothing."""
    if not blocks:
        return ("--checkpointing had no effect: the model has no blocks gpudoc knows how to checkpoint "
                "(modules with parameters and submodules, two or more in one nn.Sequential or nn.ModuleList)")
    shown = ", ".join(blocks[:6]) + (f", … ({len(blocks)} in all)" if len(blocks) > 6 else "")
    return f"checkpointing: {len(blocks)} block{'s' if len(blocks) != 1 else ''} recomputed in the backward: {shown}"


def estimate(name: str, factory: Callable[[], Any], config: TraceConfig, device: Device,
             progress: Callable[[str], None] | None = None) -> Estimate:
    """Trace ``factory``'s model under ``config`` and estimate it on ``device``; a model that
    cannot be traced (data-dependent ops) gets the analytic estimate, labelled. ``progress``
    hears each stage (building the model, each training step, the allocator simulation)."""
    from gpudoc.oom.trace import TraceImpossible, trace_training
    from gpudoc.oom.versions import rules_of

    capability = device.capability or (8, 0)
    try:
        trace = trace_training(factory, config, progress, capability)
    except TraceImpossible as exc:
        from gpudoc.oom.analytic import torch_analytic

        if progress is not None:
            progress("analytic estimate (one real batch-1 forward)")
        analytic = torch_analytic(name, factory, config, device, str(exc))
        if rules_of(config.torch).softmax_keeps_input:  # no trace: no version rule applies (torch_rules empty)
            analytic.notes.append(f"torch {config.torch}'s kept softmax inputs are not modelled by the analytic "
                                  "estimate")
        return analytic
    notes = []
    if config.precision != "fp32":
        notes.append(f"{config.precision}: CUDA autocast's casting rules emulated on CPU")
    if config.accumulate > 1:
        notes.append(f"gradient accumulation: micro-batch {max(1, config.batch // config.accumulate)}")
    if config.checkpointing:
        notes.append("--checkpointing had no effect: --inference has no backward pass" if config.inference
                     else checkpointing_note(trace.checkpointed))
    known = "" if device.capability else ", unknown: assumed"
    for kernel, why in trace.attention.items():
        if kernel == EAGER:
            notes.append(eager_note(name, why))
            continue
        notes.append(f"attention: CUDA's {kernel} kernel assumed for scaled_dot_product_attention on {device.name} "
                     f"(compute capability {capability[0]}.{capability[1]}{known}): {why}")
    if progress is not None:
        progress("allocator simulation")
    est = from_trace(name, trace, config, device, notes)
    est.torch_rules = rules_of(config.torch).assumed()
    return est


def eager_note(name: str, why: str) -> str:
    """The note on attention run eagerly because the PyTorch version modelled has no SDPA
    (``why``, :func:`gpudoc.oom.kernels.eager_why`): a built-in or Hugging Face model is
    modelled as written for that version; a user's model calling SDPA would fail there."""
    from gpudoc.oom.zoo import ZOO

    if name in ZOO or name.startswith("hf:") or why.endswith("transformers' eager attention"):
        return f"attention: {why}"
    version = why.removeprefix("torch ").split(" ", 1)[0]
    return (f"attention: the model calls F.scaled_dot_product_attention, which torch {version} does not have "
            f"(added in 2.0): it would fail there; modelled as the eager computation (scores, softmax, dropout, "
            "product)")


REMEDIES: tuple[tuple[str, str], ...] = (
    ("amp", "mixed precision (fp16 autocast + GradScaler)"),
    ("bf16", "bf16 autocast"),
    ("checkpointing", "gradient checkpointing of every block"),
    ("accumulate", "gradient accumulation: half the micro-batch (x2 steps)"),
    ("freeze", "frozen backbone (train the head only)"),
    ("sgd", "SGD with momentum instead of Adam (one state tensor instead of two)"),
    ("fused", "fused optimizer (--optimizer-impl fused: no foreach temporaries)"),
    ("smaller-input", "input at 75% of the side length"),
)


def _remedy_config(config: TraceConfig, remedy: str, backbone: str | None, channels_last: bool) -> TraceConfig | None:
    if remedy in ("amp", "bf16"):
        return replace(config, precision=remedy) if config.precision == "fp32" else None
    if remedy == "checkpointing":
        return None if config.checkpointing or config.inference else replace(config, checkpointing=True)
    if remedy == "accumulate":
        return replace(config, accumulate=config.accumulate * 2) if config.batch // config.accumulate >= 2 else None
    if remedy == "freeze":
        return replace(config, freeze=backbone) if backbone and not config.freeze and not config.inference else None
    if remedy == "sgd":
        return replace(config, optimizer="momentum") if config.optimizer.lower() in ("adam", "adamw") else None
    if remedy == "fused":
        fusable = config.optimizer.lower() in ("adam", "adamw", "sgd", "momentum")
        return replace(config, optimizer_impl="fused") if fusable and config.optimizer_impl != "fused" \
            and not config.inference else None
    if remedy == "smaller-input":
        if config.input.startswith("tokens:"):
            return replace(config, input=f"tokens:{max(1, int(config.input.split(':')[1]) * 3 // 4)}")
        dims = config.input.lower().split("x")
        if len(dims) < 3:
            return None
        # The spatial sides only: CxHxW for torch, HxWxC for Keras.
        sides = range(len(dims) - 1) if channels_last else range(1, len(dims))
        scaled = [str(max(1, int(d) * 3 // 4)) if i in sides else d for i, d in enumerate(dims)]
        return replace(config, input="x".join(scaled))
    return None


def remedies(base: Estimate, run: Callable[[TraceConfig], Estimate], backbone: str | None,
             progress: Callable[[str], None] | None = None, skip: frozenset[str] = frozenset(),
             device: Device | None = None, channels_last: bool = False) -> list[Remedy]:
    """Each applicable remedy (less ``skip``, and less precisions ``device`` is not known to
    run) re-estimated with ``run``, largest saving first. ``progress`` hears ``i/n name``;
    ``channels_last``: inputs are HxWxC (Keras), else CxHxW."""
    todo = []
    for remedy, change in REMEDIES:
        config = _remedy_config(base.config, remedy, backbone, channels_last)
        if config is None or remedy in skip:
            continue
        if device is not None and remedy in ("amp", "bf16") and supports(device, remedy) is not True:
            continue
        todo.append((remedy, change, config))
    found = []
    for i, (remedy, change, config) in enumerate(todo, 1):
        if progress is not None:
            progress(f"{i}/{len(todo)} {remedy}")
        other = run(config)
        if remedy == "checkpointing" and not other.checkpointed_blocks:
            continue  # nothing in the model to checkpoint: not a remedy
        if remedy == "fused" and other.total_bytes >= base.total_bytes:
            continue  # the peak is not at the optimizer step: fusing it changes nothing
        found.append(Remedy(remedy, change, other.total_bytes, base.total_bytes - other.total_bytes, other.verdict))
    return sorted(found, key=lambda r: -r.saved_bytes)


def max_batch(config: TraceConfig, device: Device, run: Callable[[TraceConfig], Estimate],
              progress: Callable[[int], None] | None = None, limit: float = 1.0 - TIGHT,
              tries: int = 16) -> tuple[int, Estimate]:
    """The largest batch whose estimate (by ``run``) stays within ``limit`` of the device (of its
    free memory when known), to within 2%: estimate batch 1 and ``config.batch``, then close a
    bracket (largest batch that fits, smallest that does not) by interpolating along the line
    through the estimates, doubling while nothing is over yet and halving the bracket when
    interpolation stalls (small models: the allocator's segments can make batch 1 and 32 cost
    the same)."""
    target = int(device.usable * limit)  # the memory free now, when the device was read with it

    def at(batch: int) -> Estimate:
        if progress is not None:
            progress(batch)
        return run(replace(config, batch=batch))

    low = at(1)
    if low.total_bytes > target:
        return 0, low
    fit_b, fit = 1, low
    over: tuple[int, Estimate] | None = None
    guess = max(2, config.batch)
    for _ in range(tries):
        trial = at(guess)
        if trial.total_bytes <= target and trial.verdict != "oom":
            fit_b, fit = guess, trial
        else:
            over = (guess, trial)
        if over is not None and over[0] - fit_b <= max(1, fit_b // 50):
            break
        guess = _next_guess(fit_b, fit, over, low, target)
    return fit_b, fit


def _next_guess(fit_b: int, fit: Estimate, over: tuple[int, Estimate] | None, low: Estimate, target: int) -> int:
    """The batch to try next inside the bracket (``fit_b``, ``over``): on the line through the
    nearest estimates, kept a quarter of the bracket away from its ends (else bisection)."""
    if over is None:
        slope = (fit.total_bytes - low.total_bytes) / max(1, fit_b - 1)
        line = int(fit_b + (target - fit.total_bytes) / slope) if slope > 0 else 0
        return max(line, 2 * fit_b)
    over_b, over_est = over
    slope = (over_est.total_bytes - fit.total_bytes) / (over_b - fit_b)
    line = int(fit_b + (target - fit.total_bytes) / slope) if slope > 0 else (fit_b + over_b) // 2
    quarter = max(1, (over_b - fit_b) // 4)
    if over_b - fit_b <= 4:
        return fit_b + 1 if line <= fit_b else min(line, over_b - 1)
    return min(max(line, fit_b + quarter), over_b - quarter)
