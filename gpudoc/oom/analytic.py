"""Analytic estimates, labelled with their expected error: PyTorch models that cannot be traced
on fake tensors, and Keras/TensorFlow models (parameters, trainable vs frozen, per-layer
activations at the batch and input size, optimizer slots, mixed-precision policy)."""

from __future__ import annotations

import contextlib
import math
import re
import zipfile
from collections.abc import Callable
from typing import Any

from gpudoc.errors import InputError
from gpudoc.oom.devices import Device
from gpudoc.oom.result import Estimate, verdict
from gpudoc.oom.quiet import quiet_frameworks
from gpudoc.oom.trace import TraceConfig, checked_forward, compile_freeze, parse_input

ANALYTIC_ERROR = 0.30
# Adam/AdamW keep two moments per trainable value, SGD with momentum one, plain SGD none.
SLOTS = {"adam": 2, "adamw": 2, "momentum": 1, "sgd": 0, "rmsprop": 1, "adagrad": 1, "nadam": 2, "adamax": 2,
         "lion": 1, "adafactor": 1}
ALLOCATOR_OVERHEAD = 0.10


def _finish(name: str, config: TraceConfig, device: Device, parts: dict[str, int], parameters: int,
            trainable: int, top: list[tuple[str, int]], notes: list[str]) -> Estimate:
    allocated = sum(parts.values())
    reserved = int(allocated * (1 + ALLOCATOR_OVERHEAD))
    total = reserved + device.context + device.cudnn_margin
    breakdown = dict(parts)
    breakdown["allocator overhead (reserved - allocated)"] = reserved - allocated
    breakdown["CUDA context"] = device.context
    breakdown["cuDNN workspace margin"] = device.cudnn_margin
    return Estimate(name, config, device.name, "analytic", allocated, reserved, total, device.capacity,
                    verdict(total, device.usable), device.usable - total, breakdown, top, parameters,
                    trainable, notes)


def torch_analytic(name: str, factory: Callable[[], Any], config: TraceConfig, device: Device,
                   reason: str) -> Estimate:
    """Parameters, gradients and optimizer state from the model; activations as the sum of
    every leaf module's output in one real batch-1 CPU forward, scaled to the batch."""
    import torch

    shape, tokens = parse_input(config.input, 1)
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # the user's factory (argparse exits too): one line
        raise InputError(f"calling the model factory failed: {type(exc).__name__}: {exc}") from None
    frozen = compile_freeze(config.freeze)
    params = list(model.named_parameters())
    trainable = [p for n, p in params if not config.inference and not (frozen and frozen.search(n))]
    outputs: dict[str, int] = {}

    def hook(module_name: str) -> Callable[..., None]:
        def record(_: Any, __: Any, out: Any) -> None:
            tensors = [out] if isinstance(out, torch.Tensor) else [t for t in out if isinstance(t, torch.Tensor)] \
                if isinstance(out, (tuple, list)) else []
            outputs[module_name] = outputs.get(module_name, 0) + sum(t.numel() * t.element_size() for t in tensors)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            checked_forward(model, torch.zeros(shape, dtype=torch.long) if tokens else torch.zeros(shape), config)
    finally:
        for h in handles:
            h.remove()
    types = {n: type(m).__name__ for n, m in model.named_modules()}
    scale = _micro_batch(config) * (0.5 if config.precision != "fp32" else 1.0)
    activations = 0 if config.inference else int(sum(outputs.values()) * scale)
    n_trainable = sum(p.numel() for p in trainable)
    slots = SLOTS.get(config.optimizer.lower(), 2)
    parts = {"parameters": sum(p.numel() * p.element_size() for _, p in params),
             "gradients": n_trainable * 4, "optimizer state": n_trainable * 4 * slots,
             "activations": activations, "cuBLAS workspace": device.cublas_workspace}
    top = sorted(((f"{n} ({types[n]})", int(v * scale)) for n, v in outputs.items()), key=lambda kv: -kv[1])[:8]
    notes = [f"analytic (expected error ±{ANALYTIC_ERROR:.0%}): the training step cannot run on fake tensors "
             f"({reason})", *_unmodelled(config)]
    return _finish(name, config, device, parts, sum(p.numel() for _, p in params), n_trainable, top, notes)


def keras_estimate(name: str, model: Any, config: TraceConfig, device: Device) -> Estimate:
    """A Keras model's training memory: variables, gradients and optimizer slots of the
    trainable weights, and every layer's output at the batch (kept for the backward pass) in
    the compute dtype of the precision policy."""
    layers = list(_layers(model))
    frozen = compile_freeze(config.freeze)
    if frozen is not None and not any(frozen.search(layer.name) for layer in layers):
        raise InputError(f"--freeze {config.freeze!r} matches no layer name",
                         "names look like " + ", ".join(layer.name for layer in layers[:3]))
    trainable = 0
    total_params = 0
    for layer in layers:
        count = sum(int(math.prod(w.shape)) for w in layer.weights)
        if not layer.weights:
            continue
        total_params += count
        if not config.inference and not (frozen and frozen.search(layer.name)) and layer.trainable:
            trainable += sum(int(math.prod(w.shape)) for w in layer.trainable_weights)
    policy = str(getattr(getattr(model, "dtype_policy", None), "name", "float32"))
    compute_bytes = 2 if config.precision in ("amp", "bf16") or policy.startswith("mixed_") else 4
    outputs: dict[str, int] = {}
    for layer in layers:
        for out in _outputs(layer):
            dims = [d for d in tuple(out.shape)[1:]]
            if any(d is None for d in dims):
                raise InputError(f"{name}: layer {layer.name} has an unknown output size {tuple(out.shape)}",
                                 "build the model with a fixed input size (--input)")
            key = f"{layer.name} ({type(layer).__name__})"
            outputs[key] = outputs.get(key, 0) + int(math.prod(dims)) * _micro_batch(config) * compute_bytes
    activations = sum(outputs.values()) if not config.inference else max(outputs.values(), default=0) * 2
    slots = SLOTS.get(config.optimizer.lower(), 2)
    parts = {"parameters": total_params * 4, "gradients": trainable * 4, "optimizer state": trainable * 4 * slots,
             "activations": activations}
    top = sorted(outputs.items(), key=lambda kv: -kv[1])[:8]
    notes = [f"analytic Keras estimate (expected error ±{ANALYTIC_ERROR:.0%}): layer outputs kept for the backward "
             "pass, no allocator or XLA fusion modelled", *_unmodelled(config)]
    if policy.startswith("mixed_") and config.precision == "fp32":
        notes.append(f"the model's dtype policy is {policy}: activations counted at 2 bytes")
    if device.kind == "tpu":
        notes.append("TPU: per core; the global batch is split across cores (batch = per-core batch here)")
    return _finish(name, config, device, parts, total_params, trainable, top, notes)


def _micro_batch(config: TraceConfig) -> int:
    return max(1, config.batch // max(1, config.accumulate))


def _unmodelled(config: TraceConfig) -> list[str]:
    notes = []
    if config.accumulate > 1:
        notes.append(f"gradient accumulation: micro-batch {_micro_batch(config)}")
    if config.optimizer_impl != "foreach" or config.zero_grad != "none":
        notes.append("--optimizer-impl and --zero-grad are not modelled by the analytic estimate (gradients and "
                     "optimizer state are counted in full, temporaries not)")
    if config.checkpointing:
        notes.append("--checkpointing had no effect: " + (
            "--inference has no backward pass" if config.inference else "the analytic estimate does not model it"))
    return notes


def _layers(model: Any) -> Any:
    for layer in model.layers:
        inner = getattr(layer, "layers", None)
        if inner:
            yield from _layers(layer)
        else:
            yield layer


def _outputs(layer: Any) -> list[Any]:
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return []
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _layer_error(model: Any, input_spec: str, exc: Exception) -> InputError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    found = re.search(r"""layer ["']([^"']+)["']""", text)
    where = ""
    if found is not None:
        where = f" at layer {found.group(1)}"
        with contextlib.suppress(ValueError):  # not a layer of this model: the name alone
            where += f" ({type(model.get_layer(found.group(1))).__name__})" if model is not None else ""
    return InputError(f"--input {input_spec}: the model rejects it{where} [{type(exc).__name__}: {text}]",
                      "give the size of one sample the model takes (HxWxC), without the batch")


def import_keras() -> Any:
    """``keras``, imported without TensorFlow's log lines on stderr."""
    with quiet_frameworks():
        import keras
    return keras


def load_keras(source: Any, input_spec: str | None) -> Any:
    """A Keras model from a ``.keras`` file (its graph rebuilt at ``input_spec``, ``HxWxC``,
    when given) or a zoo factory taking the input shape. Keras's own errors are bad input."""
    keras = import_keras()
    shape = parse_input(input_spec, 1)[0][1:] if input_spec else None
    with quiet_frameworks():
        if not isinstance(source, str):
            try:
                return source(shape)
            except ValueError as exc:  # Keras applications check the input size
                raise _layer_error(None, input_spec or "", exc) from None
        if source.endswith(".keras") and not zipfile.is_zipfile(source):
            raise InputError(f"{source}: not a .keras archive (a zip file): cut off, or another format",
                             "save it again with model.save('model.keras')")
        try:
            model = keras.models.load_model(source, compile=False)
        except Exception as exc:  # the user's file: anything Keras raises on it, in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"{source}: cannot load this Keras model ({type(exc).__name__}: {first})") from None
        saved = model.input_shape[1:] if isinstance(model.input_shape, tuple) else None
        if shape is not None and saved and len(saved) == len(shape) and saved[-1] is not None \
                and saved[-1] != shape[-1]:
            dims = "x".join("?" if d is None else str(d) for d in saved)
            raise InputError(f"--input {input_spec}: the model takes {saved[-1]} channels last ({dims}), "
                             f"not {shape[-1]}", "Keras inputs are HxWxC, e.g. 224x224x3")
        if shape is not None and tuple(model.input_shape[1:]) != shape:
            try:
                model = keras.models.clone_model(model, input_tensors=keras.Input(shape))
            except Exception as exc:  # the model's own check of the new input
                raise _layer_error(model, input_spec or "", exc) from None
    return model
