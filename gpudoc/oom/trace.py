"""Two real PyTorch training steps on fake CPU tensors (no memory, no GPU), recording every
storage allocation and free, for the allocator simulation.

The model is built inside ``FakeTensorMode``; a dispatch mode below autograd sees every op's
outputs and records each new storage (views share theirs), and a weak reference on the storage
records its free. CUDA's autocast is emulated above autograd with its own op lists (CPU autocast
casts different ops, and autocast is ignored on meta tensors). Step 1 creates the optimizer
state lazily; step 2 is the steady state.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from gpudoc.errors import InputError
from gpudoc.oom.quiet import quiet_frameworks

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
PRECISIONS = ("fp32", "amp", "bf16")
IMPLEMENTATIONS = ("foreach", "for-loop", "fused")
ZERO_GRAD = ("none", "zeros")


@dataclass(frozen=True)
class TraceConfig:
    """What one training step does."""

    batch: int
    input: str
    precision: str = "fp32"
    optimizer: str = "adam"
    freeze: str | None = None
    checkpointing: bool = False
    accumulate: int = 1
    inference: bool = False
    zero_grad: str = "none"  # optimizer.zero_grad(set_to_none=True), or "zeros" (False)
    optimizer_impl: str = "foreach"  # CUDA's default; "for-loop" (foreach=False) or "fused"
    torch: str = ""  # the PyTorch version modelled (gpudoc.oom.versions); "": the newest rules


@dataclass
class Event:
    """A storage allocated (``nbytes`` > 0) or freed (``nbytes`` == 0) by handle."""

    handle: int
    nbytes: int
    phase: str
    module: str


@dataclass
class Trace:
    """The event stream, the handles that turned out to be gradients or optimizer state, each
    module's class by path, the blocks that ``checkpointing`` wrapped, and the SDPA kernels
    assumed (kernel → why CUDA takes it)."""

    events: list[Event] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)
    parameters: int = 0
    trainable: int = 0
    module_types: dict[str, str] = field(default_factory=dict)
    checkpointed: list[str] = field(default_factory=list)
    attention: dict[str, str] = field(default_factory=dict)


class _Recorder:
    """Storage-level allocation log; ``phase`` and the current module label new allocations."""

    def __init__(self) -> None:
        self.trace = Trace()
        self.phase = "setup"
        self.modules: list[str] = []
        # Every module call in progress (the root too): after an error, the innermost is the
        # module that raised it, with the shapes it was given.
        self.calls: list[tuple[str, Any, list[tuple[int, ...]]]] = []
        self._handles: dict[int, int] = {}
        self._refs: dict[int, Any] = {}
        self._next = 0

    def track(self, tensor: Any, phase: str | None = None) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._handles:
            return
        handle = self._next
        self._next += 1
        self._handles[key] = handle
        nbytes = storage.nbytes()
        self.trace.events.append(Event(handle, max(nbytes, 1), phase or self.phase,
                                       self.modules[-1] if self.modules else ""))

        def freed(_: Any, key: int = key, handle: int = handle) -> None:
            self._handles.pop(key, None)
            self._refs.pop(key, None)
            self.trace.events.append(Event(handle, 0, "", ""))

        self._refs[key] = weakref.ref(storage, freed)

    def repeat(self, start: int) -> None:
        """Append the events from ``start`` on once more, as the next training step makes them:
        what was allocated and freed there again under new handles (with the same roles), what
        survived it (state made on the first step) not again."""
        events = self.trace.events[start:]
        freed = {e.handle for e in events if not e.nbytes}
        fresh: dict[int, int] = {}
        for event in events:
            if event.nbytes:
                if event.handle not in freed:
                    continue
                handle = fresh[event.handle] = self._next
                self._next += 1
                if event.handle in self.trace.roles:
                    self.trace.roles[handle] = self.trace.roles[event.handle]
                self.trace.events.append(Event(handle, event.nbytes, event.phase, event.module))
            elif event.handle in fresh:
                self.trace.events.append(Event(fresh.pop(event.handle), 0, "", ""))

    def handle_of(self, tensor: Any) -> int | None:
        return self._handles.get(tensor.untyped_storage()._cdata)


def _dispatch_mode(recorder: _Recorder) -> Any:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Recording(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for item in tree_flatten(out)[0]:
                if isinstance(item, torch.Tensor):
                    recorder.track(item)
            return out

    return Recording()


def _cuda_autocast(dtype: Any) -> Any:
    """CUDA autocast's casting rules as a torch-function mode: matmul/conv/linear/attention to
    ``dtype``; reductions, norms, softmax, losses and exp/log/pow to float32."""
    import torch
    from torch.nn import functional
    from torch.overrides import TorchFunctionMode

    lower = {functional.linear, functional.conv1d, functional.conv2d, functional.conv3d, functional.conv_transpose1d,
             functional.conv_transpose2d, functional.conv_transpose3d, functional.scaled_dot_product_attention,
             functional.prelu, torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.addbmm,
             torch.mv, torch.addmv, torch.einsum, torch.Tensor.__matmul__, torch.Tensor.matmul, torch.Tensor.mm,
             torch.Tensor.bmm}
    # softmax and log_softmax get dtype=float32 rather than a float32 copy (autocast's
    # fp32_set_opt_dtype): an fp16 input takes CUDA's half-to-float kernel; by dtype's position.
    set_dtype = {functional.softmax: 3, functional.log_softmax: 3, torch.softmax: 2, torch.log_softmax: 2,
                 torch.Tensor.softmax: 2, torch.Tensor.log_softmax: 2}
    full = {functional.layer_norm, functional.group_norm,
            functional.cross_entropy, functional.nll_loss, functional.mse_loss, functional.l1_loss,
            functional.smooth_l1_loss, functional.binary_cross_entropy_with_logits, functional.kl_div,
            functional.normalize, functional.softplus, functional.cosine_similarity, torch.exp, torch.log,
            torch.log1p, torch.pow, torch.sum, torch.prod, torch.cumsum, torch.norm, torch.rsqrt, torch.Tensor.sum,
            torch.Tensor.pow, torch.Tensor.exp, torch.Tensor.log, torch.Tensor.norm, torch.Tensor.cumsum}

    def cast(value: Any, to: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != to:
            return value.to(to)
        if isinstance(value, (list, tuple)):
            return type(value)(cast(v, to) for v in value)
        return value

    class Autocast(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func in set_dtype:
                x = args[0] if args else None
                if len(args) <= set_dtype[func] and kwargs.get("dtype") is None and isinstance(x, torch.Tensor) \
                        and x.dtype in (torch.float16, torch.bfloat16):
                    kwargs = {**kwargs, "dtype": torch.float32}
                return func(*args, **kwargs)
            target = dtype if func in lower else torch.float32 if func in full else None
            if target is not None:
                args = tuple(cast(a, target) for a in args)
                kwargs = {k: cast(v, target) for k, v in kwargs.items()}
            return func(*args, **kwargs)

    return Autocast()


def parse_input(spec: str, batch: int) -> tuple[tuple[int, ...], bool]:
    """``3x224x224`` → ((batch, 3, 224, 224), False); ``tokens:1024`` → ((batch, 1024), True)."""
    text = spec.strip().lower()
    tokens = text.startswith("tokens:")
    body = text.removeprefix("tokens:")
    try:
        dims = tuple(int(d) for d in re.split(r"[x,]", body) if d)
    except ValueError:
        raise InputError(f"--input {spec!r}: expected sizes such as 3x224x224, or tokens:1024") from None
    if not dims or any(d <= 0 for d in dims) or (tokens and len(dims) != 1):
        raise InputError(f"--input {spec!r}: expected sizes such as 3x224x224, or tokens:1024")
    if math.prod(dims) * batch >= 2**62:
        raise InputError(f"--input {spec!r} at batch {batch}: {math.prod(dims) * batch:.3g} values is more than any "
                         "device holds", "give the size of one sample, without the batch")
    return (batch, *dims), tokens


def _optimizer(name: str, params: list[Any], impl: str = "foreach") -> Any:
    """The optimizer of ``--optimizer``, as ``impl`` runs it: ``foreach`` (the default on CUDA:
    multi-tensor kernels and their temporaries; CPU tensors would get the per-parameter loop),
    ``for-loop`` or ``fused``."""
    import torch

    if impl not in IMPLEMENTATIONS:
        raise InputError(f"--optimizer-impl {impl!r}: not one of {', '.join(IMPLEMENTATIONS)}")
    lowered = name.lower()
    builtin = {"sgd": (torch.optim.SGD, {"lr": 0.1}), "momentum": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
               "adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {})}
    if lowered in builtin:
        cls, settings = builtin[lowered]
        return cls(params, **settings, **_implementation(cls, impl, name))
    if ":" in name:
        module, _, attr = name.partition(":")
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
            raise InputError(f"--optimizer {name!r}: {module!r} is not a module name", "e.g. torch.optim:RMSprop")
        try:
            with quiet_frameworks():
                cls = getattr(importlib.import_module(module), attr, None)
        except (Exception, SystemExit) as exc:  # the user's module: its import error, in one line
            raise InputError(f"--optimizer {name!r}: cannot import {module!r} ({_first_line(exc)})") from None
    else:
        cls = getattr(torch.optim, name, None)
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
        make: Callable[..., Any] = cls
        options = _implementation(cls, impl, name)
        try:
            return make(params, **options)
        except Exception as exc:  # e.g. the abstract torch.optim.Optimizer, or required arguments
            raise InputError(f"--optimizer {name!r}: cannot be made with default settings ({_first_line(exc)})",
                             "choose sgd, momentum, adam, adamw or another torch.optim class") from None
    raise InputError(f"--optimizer {name!r}: not sgd, momentum, adam, adamw, a torch.optim class name or "
                     "module:OptimizerClass")


def _implementation(cls: Any, impl: str, name: str) -> dict[str, bool]:
    """The keyword arguments that make ``cls`` run as ``impl``; an optimizer without a
    ``fused`` argument cannot be fused, one without ``foreach`` runs its own way."""
    import inspect

    try:
        accepted = set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        accepted = set()
    if impl == "fused":
        if "fused" not in accepted:
            raise InputError(f"--optimizer-impl fused: {name} has no fused implementation",
                             "use foreach or for-loop, or adam, adamw, sgd, momentum")
        return {"fused": True}
    return {"foreach": impl == "foreach"} if "foreach" in accepted else {}


def _checkpoint_blocks(model: Any, modes: Callable[[], list[Any]]) -> list[str]:
    """Wrap every block of the model's block containers (Sequential/ModuleList of two or more
    modules that hold parameters and submodules) in non-reentrant activation checkpointing;
    the paths of the blocks wrapped. The recomputation in the backward runs under ``modes()``
    (the trace's CUDA kernels and autocast: the backward runs outside the trace's
    torch-function modes, and the recomputed tensors must match the saved ones)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    @contextmanager
    def recomputing() -> Iterator[None]:
        with ExitStack() as stack:
            for mode in modes():
                stack.enter_context(mode)
            yield

    def contexts() -> tuple[Any, Any]:
        return nullcontext(), recomputing()

    def wrap(module: Any) -> None:
        forward = module.forward

        def checkpointed(*args: Any, **kwargs: Any) -> Any:
            return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)

        module.forward = checkpointed

    wrapped = []
    for path, container in model.named_modules():
        if not isinstance(container, (torch.nn.Sequential, torch.nn.ModuleList)):
            continue
        blocks = [(f"{path}.{name}" if path else name, m) for name, m in container.named_children()
                  if any(True for _ in m.parameters()) and not isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList))
                  and len(list(m.children())) > 0]
        if len(blocks) >= 2:
            for name, block in blocks:
                wrap(block)
                wrapped.append(name)
    return wrapped


def training_loss(output: Any, tokens: bool, target: Any) -> Any:
    """The loss a step takes: cross entropy for token models (over the vocabulary) and for
    ``(N, classes)`` outputs with class targets, else MSE against zeros (dense outputs)."""
    import torch
    from torch.nn import functional

    if isinstance(output, dict):
        output = output.get("logits", next(iter(output.values())))
    if isinstance(output, (tuple, list)):
        output = output[0]
    if tokens and output.dim() == 3:
        return functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))
    if output.dim() == 2 and target is not None and target.dtype == torch.long:
        # (N, classes): one class per sample (the first token's, for a token input)
        return functional.cross_entropy(output, target if target.dim() == 1 else target[:, 0])
    return functional.mse_loss(output, torch.zeros_like(output))


@contextmanager
def _module_labels(model: Any, recorder: _Recorder) -> Iterator[None]:
    import torch

    handles = []
    for name, module in model.named_modules():

        def pre(module: Any, args: Any, kwargs: Any, name: str = name) -> None:
            given = [*args, *kwargs.values()]
            shapes = [tuple(a.shape) for a in given if isinstance(a, torch.Tensor)]
            recorder.calls.append((name, module, shapes))
            if name:
                recorder.modules.append(name)

        def post(_: Any, __: Any, ___: Any, name: str = name) -> None:
            if recorder.calls:
                recorder.calls.pop()
            if name and recorder.modules:
                recorder.modules.pop()

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def compile_freeze(pattern: str | None) -> re.Pattern[str] | None:
    """``--freeze REGEX`` compiled; a pattern that is not a regular expression is bad input."""
    if pattern is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "possible nested set": still a valid pattern
            return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:  # OverflowError: a{4294967296}
        raise InputError(f"--freeze {pattern!r}: not a regular expression Python takes ({exc})",
                         "e.g. '^backbone\\.' (quote it for the shell)") from None


@contextmanager
def quiet_torch_logs() -> Iterator[None]:
    """Silence torch's own logging (FakeTensorMode logs a traceback for every op that fails
    on its meta kernel, before the error reaches gpudoc)."""
    loggers = [logging.getLogger(name) for name in ("torch", "torch._subclasses.fake_tensor")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _data_dependent(exc: BaseException) -> bool:
    return type(exc).__name__ in ("DataDependentOutputException", "DynamicOutputShapeException",
                                  "UnsupportedOperatorException") or "data-dependent" in str(exc)


_POSITION_NAME = re.compile(r"(^|[._])(wpe|pos|position|positions|position_embeddings?|pos_embed)$")


def _check_positions(model: Any, length: int) -> None:
    """Fake tensors do not check indices, so a sequence longer than the model's learned
    position table (GPT-2's 1024) would be estimated as if it ran: refuse it, naming the table."""
    import torch

    for name, module in model.named_modules():
        if (isinstance(module, torch.nn.Embedding) and _POSITION_NAME.search(name)
                and module.num_embeddings < length):
            raise InputError(f"{name} (Embedding) holds {module.num_embeddings} positions; the input has {length} "
                             "tokens", f"use at most tokens:{module.num_embeddings}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def expected_input(module: Any) -> str | None:
    """What a common layer takes, in the shape notation of its docs (``(N, 3, H, W)``)."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return f"(*, {module.in_features})"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                           nn.ConvTranspose3d)):
        spatial = {1: "L", 2: "H, W", 3: "D, H, W"}[len(module.kernel_size)]
        return f"(N, {module.in_channels}, {spatial})"
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
                           nn.InstanceNorm3d)):
        return f"(N, {module.num_features}, ...)"
    if isinstance(module, nn.GroupNorm):
        return f"(N, {module.num_channels}, ...)"
    if isinstance(module, nn.LayerNorm):
        return "(*, " + ", ".join(str(d) for d in module.normalized_shape) + ")"
    if isinstance(module, nn.Embedding):
        return f"integer token ids below {module.num_embeddings} (--input tokens:N)"
    if isinstance(module, nn.MultiheadAttention):
        return f"(N, L, {module.embed_dim})" if module.batch_first else f"(L, N, {module.embed_dim})"
    return None


def _rejected(recorder: _Recorder, config: TraceConfig, exc: BaseException) -> InputError:
    """The model's own error on the input, as one line: the module that raised it (path and
    class), the shapes it was given, and what it takes where that is known."""
    where = ""
    if recorder.calls:
        path, module, shapes = recorder.calls[-1]
        name = type(module).__name__
        got = ", ".join(str(tuple(s)) for s in shapes) or "no tensor"
        expected = expected_input(module)
        where = (f" at {path} ({name})" if path else f" in {name}.forward (the model itself)") + f": got {got}" + (
            f", expects {expected}" if expected else "")
    return InputError(f"--input {config.input} at batch {config.batch}: the model rejects it{where} "
                      f"[{_first_line(exc)}]", "give the size of one sample the model takes, without the batch")


def checked_forward(model: Any, x: Any, config: TraceConfig) -> Any:
    """``model(x)`` outside a trace (the analytic estimate's real forward); the model's own
    error on the input becomes :class:`InputError` naming the module."""
    recorder = _Recorder()
    with quiet_torch_logs(), _module_labels(model, recorder):
        try:
            return model(x)
        except Exception as exc:  # the user's model on the user's input: its own error, in one line
            raise _rejected(recorder, config, exc) from None


def trace_training(factory: Callable[[], Any], config: TraceConfig,
                   progress: Callable[[str], None] | None = None, capability: tuple[int, int] = (8, 0),
                   repeat_step: bool = True) -> Trace:
    """Build the model and run two training steps (or one forward in inference mode) on fake
    CPU tensors, recording storages, with dropout and attention as CUDA runs them on a device
    of compute ``capability`` (:mod:`gpudoc.oom.kernels`). ``repeat_step``: the second step's
    allocations are the first's repeated (:meth:`_Recorder.repeat`) rather than run.
    Raises :class:`TraceImpossible` for data-dependent ops
    and :class:`InputError` when the model rejects the input."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from gpudoc.oom.kernels import cuda_kernels, eager_transformers
    from gpudoc.oom.versions import rules_of

    say = progress or (lambda _: None)
    rules = rules_of(config.torch)
    legacy_softmax = rules.softmax_keeps_input
    no_sdpa = "" if rules.has_sdpa else rules.name
    if config.precision not in PRECISIONS:
        raise InputError(f"--precision {config.precision!r}: not one of {', '.join(PRECISIONS)}")
    shape, tokens = parse_input(config.input, config.batch)
    frozen = compile_freeze(config.freeze)
    micro = max(1, config.batch // max(1, config.accumulate))
    micro_shape = (micro, *shape[1:])
    recorder = _Recorder()
    with quiet_torch_logs(), FakeTensorMode(allow_non_fake_inputs=True):
        say("building the model")
        try:
            with quiet_frameworks():
                model = factory()
        except (Exception, SystemExit) as exc:  # the user's factory (argparse exits too): one line
            raise InputError(f"calling the model factory failed: {_first_line(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            if type(model).__module__.startswith(("keras", "tensorflow", "tf_keras")):
                raise InputError(f"the model factory returned a Keras model ({type(model).__name__}): Keras models "
                                 "are estimated from a file", "save it with model.save('model.keras') and pass "
                                 "model.keras as MODEL")
            raise InputError(f"the model factory returned {type(model).__name__}, not a torch.nn.Module")
        if no_sdpa:
            eager_transformers(model, no_sdpa, recorder.trace.attention)
        params = list(model.parameters())
        for name, p in model.named_parameters():
            if config.inference or (frozen is not None and frozen.search(name)):
                p.requires_grad_(False)
        trainable = [p for p in params if p.requires_grad]
        names = ", ".join(n for n, _ in list(model.named_parameters())[:3])
        if frozen is not None and not config.inference and len(trainable) == len(params):
            raise InputError(f"--freeze {config.freeze!r} matches no parameter name", f"names look like {names}")
        if not config.inference and not trainable:
            what = f"--freeze {config.freeze!r} matches every parameter" if frozen else "the model has no parameters"
            raise InputError(f"{what}: nothing to train", "use --inference for a forward pass only"
                             + (f"; names look like {names}" if names else ""))
        if tokens:
            _check_positions(model, shape[-1])
        recorder.trace.parameters = sum(p.numel() for p in params)
        recorder.trace.trainable = sum(p.numel() for p in trainable)
        recorder.trace.module_types = {n: type(m).__name__ for n, m in model.named_modules() if n}
        low = {"amp": torch.float16, "bf16": torch.bfloat16}.get(config.precision)
        if config.checkpointing and not config.inference:
            recorder.trace.checkpointed = _checkpoint_blocks(model, lambda: [
                cuda_kernels(capability, {}, legacy_softmax, no_sdpa),
                *([_cuda_autocast(low)] if low is not None else [])])
        model.train(not config.inference)
        if config.zero_grad not in ZERO_GRAD:
            raise InputError(f"--zero-grad {config.zero_grad!r}: not one of {', '.join(ZERO_GRAD)}")
        optimizer = _optimizer(config.optimizer, trainable, config.optimizer_impl) if not config.inference else None
        mode = _dispatch_mode(recorder)
        try:
            with mode, cuda_kernels(capability, recorder.trace.attention, legacy_softmax, no_sdpa), \
                    _module_labels(model, recorder):
                for p in params:
                    recorder.track(p, "parameters")
                for b in model.buffers():
                    recorder.track(b, "parameters")
                for state in (optimizer.state.values() if optimizer is not None else ()):
                    for value in state.values():  # made by the constructor (Adagrad's sums)
                        if isinstance(value, torch.Tensor):
                            recorder.track(value, "optimizer")

                def mark_gradients() -> None:
                    for p in trainable:
                        if p.grad is not None and (h := recorder.handle_of(p.grad)) is not None:
                            recorder.trace.roles[h] = "gradients"

                micro_steps = 1 if config.inference else min(config.accumulate, 2)
                say("forward pass" if config.inference else "training step 1/2")
                first = len(recorder.trace.events)
                _step(model, optimizer, recorder, config, micro_shape, tokens, low, micro_steps, mark_gradients)
                # Step 2 differs from step 1 only by what step 1 made to keep (the optimizer's
                # state), unless the gradients stay allocated (zeros: step 2 accumulates into them).
                if not config.inference and repeat_step and config.zero_grad == "none":
                    say("training step 2/2 (step 1's allocations repeated)")
                    recorder.repeat(first)
                elif not config.inference:
                    say("training step 2/2")
                    _step(model, optimizer, recorder, config, micro_shape, tokens, low, micro_steps, mark_gradients)
                if optimizer is not None:
                    for state in optimizer.state.values():
                        for value in state.values():
                            if isinstance(value, torch.Tensor) and (h := recorder.handle_of(value)) is not None:
                                recorder.trace.roles[h] = "optimizer state"
        except (RuntimeError, NotImplementedError) as exc:
            if _data_dependent(exc):
                raise TraceImpossible(str(exc).splitlines()[0]) from None
            raise
        del optimizer, model, params
    return recorder.trace


class TraceImpossible(Exception):
    """The model uses an op whose output depends on tensor values (``.item()``, ``nonzero``)."""


MULTIPLE_CHOICES = 2  # choices per sample of a *ForMultipleChoice model (optimum-benchmark's default)
_PER_SAMPLE_LABELS = ("SequenceClassification", "MultipleChoice", "ImageClassification", "AudioClassification")


def labelled_inputs(model: Any, shape: tuple[int, ...], tokens: bool, labels: bool = True) -> dict[str, Any] | None:
    """The keyword inputs of a model that follows transformers' convention (its forward takes
    ``labels`` and returns an output whose ``.loss`` is the training loss): token ids, an
    attention mask of ones, and labels shaped for the head (one per sample for classification
    and multiple choice, else one per token); a ``*ForMultipleChoice`` model gets
    :data:`MULTIPLE_CHOICES` sequences per sample. None for any other model."""
    import inspect

    import torch

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    if "labels" not in params:
        return None
    name = type(model).__name__
    batch = shape[0]
    first = next((p for p in params if p not in ("self", "labels")), "input_ids")
    if tokens:
        ids = (batch, MULTIPLE_CHOICES, *shape[1:]) if "MultipleChoice" in name else shape
        key = "input_ids" if "input_ids" in params else first
        inputs: dict[str, Any] = {key: torch.zeros(ids, dtype=torch.long)}
        if "attention_mask" in params:
            inputs["attention_mask"] = torch.ones(ids, dtype=torch.long)
    else:
        inputs = {"pixel_values" if "pixel_values" in params else first: torch.zeros(shape)}
    if labels:
        per_sample = not tokens or any(kind in name for kind in _PER_SAMPLE_LABELS)
        inputs["labels"] = torch.zeros(batch if per_sample else shape, dtype=torch.long)
    return inputs


def _step(model: Any, optimizer: Any, recorder: _Recorder, config: TraceConfig, shape: tuple[int, ...],
          tokens: bool, low: Any, micro_steps: int, after_backward: Callable[[], None]) -> None:
    import torch

    for _ in range(micro_steps):
        recorder.phase = "inputs"
        inputs = labelled_inputs(model, shape, tokens, labels=not config.inference)
        x = target = None
        if inputs is None and tokens:
            x = torch.zeros(shape, dtype=torch.long)
            target = torch.zeros(shape, dtype=torch.long)
        elif inputs is None:
            x = torch.zeros(shape)
            target = torch.zeros(shape[0], dtype=torch.long)
        recorder.phase = "activations"
        autocast = _cuda_autocast(low) if low is not None else None
        recorder.calls.clear()
        with (torch.no_grad() if config.inference else _nothing()), autocast or _nothing():
            try:
                out = model(**inputs) if inputs is not None else model(x)
            except Exception as exc:  # the user's model on the user's input: its own error, in one line
                if _data_dependent(exc):
                    raise TraceImpossible(f"in the model's forward: {str(exc).splitlines()[0]}") from None
                raise _rejected(recorder, config, exc) from None
            if config.inference:
                del out, inputs
                return
            try:
                own = getattr(out, "loss", None) if inputs is not None else None
                loss = own if isinstance(own, torch.Tensor) else training_loss(
                    out, tokens, inputs["labels"] if inputs is not None else target)
            except Exception as exc:  # an output the loss cannot take
                raise InputError(f"the model's output ({_describe(out)}) cannot be turned into a loss: "
                                 f"{_first_line(exc)}", "return a tensor, a tuple whose first item is one, or "
                                 "a dict with 'logits'") from None
        del out
        recorder.phase = "backward"
        if not loss.requires_grad:
            raise InputError("the model's output does not depend on any trainable parameter: nothing to train",
                             "check the model's forward, or use --inference")
        loss.backward()
        after_backward()
        del loss, x, target, inputs
    recorder.phase = "optimizer"
    try:
        optimizer.step()
    except Exception as exc:  # the optimizer's own limits (LBFGS needs a closure, SparseAdam sparse gradients)
        if _data_dependent(exc):
            raise TraceImpossible(f"in {type(optimizer).__name__}.step(): {str(exc).splitlines()[0]}") from None
        raise InputError(f"--optimizer {config.optimizer}: {type(optimizer).__name__}.step() cannot train this model "
                         f"({_first_line(exc)})", "choose sgd, momentum, adam, adamw or another torch.optim class"
                         ) from None
    recorder.phase = "backward"
    optimizer.zero_grad(set_to_none=config.zero_grad == "none")


def _describe(value: Any) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def memtracker_peak(factory: Callable[[], Any], input_spec: str, batch: int) -> int:
    """Peak tensor bytes PyTorch's MemTracker sees over two Adam steps of ``factory``'s model
    on fake CPU tensors, with the loss of :func:`training_loss`: a peer to check a trace
    against (tensor bytes only: no allocator rounding, no cuBLAS workspace)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    dims, tokens = parse_input(input_spec, batch)
    with FakeTensorMode():
        model = factory()
        optimizer = torch.optim.Adam(model.parameters(), foreach=True)
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            for step in range(2):
                if step:
                    tracker.reset_mod_stats()
                x = torch.zeros(dims, dtype=torch.long) if tokens else torch.zeros(dims)
                target = torch.zeros(dims if tokens else dims[:1], dtype=torch.long)
                loss = training_loss(model(x), tokens, target)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                del loss, x, target
        return int(tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"])
