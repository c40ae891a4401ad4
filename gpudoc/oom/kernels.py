"""The CUDA kernels a CPU trace would not pick by itself, emulated on fake CPU tensors so the
trace records what CUDA keeps.

- **Dropout**: on CUDA, ``dropout`` (training, 0 < p < 1, not in place) runs the fused
  ``native_dropout`` kernel, which keeps a 1-byte (bool) mask for the backward; the CPU path
  keeps a noise tensor of the input's dtype (4 bytes in fp32).
- **Scaled-dot-product attention**: CUDA picks flash, then memory-efficient, then math, the
  first whose constraints the call meets (PyTorch's ``sdp_utils.cpp``, its documented order);
  the CPU has its own rules (it takes its math path with dropout, materialising the score
  matrix). The chosen kernel's own op runs, so its saved tensors (logsumexp, the RNG seed and
  offset) are what the trace records; the math path is spelled out with the fused dropout.
- **softmax / log_softmax of PyTorch <= 1.10** (``--torch``, :mod:`gpudoc.oom.versions`): their
  autograd kept the op's input as well as its output for the backward, so they run as an
  autograd function that saves both (cross entropy on class indices, which is log_softmax and
  nll_loss, too); CUDA's half-to-float path (an fp16 input with ``dtype=float32``) keeps the
  fp16 input, not a float copy. Later versions keep the output only: the plain ops.
- **PyTorch before 2.0** had no ``scaled_dot_product_attention``: a call to it runs as the
  eager computation attention was written as then (scores, softmax, dropout, product), and a
  transformers model takes its eager attention (:func:`eager_transformers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

FLASH = "flash"
EFFICIENT = "memory-efficient"
MATH = "math"
EAGER = "eager"  # no SDPA kernel: the attention spelled out (PyTorch before 2.0)


def eager_why(version: str, transformers: bool = False) -> str:
    """Why attention is eager under PyTorch ``version`` (< 2.0): for a call to SDPA, or (with
    ``transformers``) a transformers model switched to its eager attention."""
    what = "transformers' eager attention" if transformers else \
        "the eager computation (scores, softmax, dropout, product)"
    return f"torch {version} has no scaled_dot_product_attention (added in 2.0): {what}"


def eager_transformers(model: Any, version: str, chosen: dict[str, str]) -> None:
    """A transformers model set to SDPA attention switched to its eager attention, as
    transformers does where torch has no SDPA; recorded in ``chosen``."""
    config = getattr(model, "config", None)
    if type(model).__module__.startswith("transformers.") and getattr(config, "_attn_implementation", None) == "sdpa":
        config._attn_implementation = "eager"
        chosen.setdefault(EAGER, eager_why(version, transformers=True))


@dataclass(frozen=True)
class Attention:
    """What CUDA's SDPA dispatch looks at in one call."""

    dtype: str  # float32, float16, bfloat16, float64
    head_dim: int  # of the query and key
    value_dim: int
    dropout: float
    mask: bool
    causal: bool
    query_len: int
    key_len: int


def sdpa_backend(capability: tuple[int, int], call: Attention) -> tuple[str, str]:
    """The kernel CUDA takes for ``call`` on a device of compute ``capability``, and why
    (the first rule that ruled out each faster kernel)."""
    why_not_flash = _flash_refusal(capability, call)
    if why_not_flash is None:
        return FLASH, "it meets every flash constraint"
    why_not_efficient = _efficient_refusal(capability, call)
    if why_not_efficient is None:
        return EFFICIENT, f"flash {why_not_flash}"
    return MATH, f"flash {why_not_flash}; memory-efficient {why_not_efficient}"


def _flash_refusal(capability: tuple[int, int], call: Attention) -> str | None:
    if capability < (8, 0):
        return f"needs compute capability 8.0, the device has {capability[0]}.{capability[1]}"
    if call.dtype not in ("float16", "bfloat16"):
        return f"needs float16 or bfloat16, the inputs are {call.dtype}"
    if call.mask:
        return "takes no attn_mask"
    if call.head_dim != call.value_dim or call.head_dim > 256:
        return f"needs one head dimension of at most 256 for q, k and v (got {call.head_dim}/{call.value_dim})"
    if call.causal and call.query_len != call.key_len:
        return "is_causal with query and key of different lengths"
    return None


def _efficient_refusal(capability: tuple[int, int], call: Attention) -> str | None:
    if capability < (5, 0):
        return f"needs compute capability 5.0, the device has {capability[0]}.{capability[1]}"
    if call.dtype not in ("float32", "float16", "bfloat16"):
        return f"needs float32, float16 or bfloat16, the inputs are {call.dtype}"
    if call.dtype == "bfloat16" and capability < (8, 0):
        return "bfloat16 needs compute capability 8.0"
    if call.head_dim % 8 or call.value_dim % 8:
        return f"needs head dimensions divisible by 8 (got {call.head_dim}/{call.value_dim})"
    return None


def fused_dropout(x: Any, p: float) -> Any:
    """CUDA's training dropout: ``native_dropout``, its mask kept as bool."""
    import torch

    return torch.ops.aten.native_dropout(x, p, True)[0]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _kept_input(log: bool) -> Any:
    """softmax (``log``: log_softmax) as PyTorch <= 1.10's autograd ran it: the input saved
    beside the result, the backward from the result (``_softmax_backward_data``)."""
    import torch

    class KeptInput(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, dim: int, half_to_float: bool) -> Any:
            y = (torch._log_softmax if log else torch._softmax)(x, dim, half_to_float)
            ctx.save_for_backward(x, y)
            ctx.dim = dim
            return y

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            x, y = ctx.saved_tensors
            backward = torch.ops.aten._log_softmax_backward_data if log else torch.ops.aten._softmax_backward_data
            return backward(grad, y, ctx.dim, x.dtype), None, None

    return KeptInput


def legacy_softmax(x: Any, dim: int, dtype: Any, log: bool) -> Any:
    """softmax / log_softmax of ``x`` along ``dim`` (to ``dtype`` when given), its input kept
    for the backward as PyTorch <= 1.10 did."""
    import torch

    half_to_float = x.dtype == torch.float16 and dtype == torch.float32
    if dtype is not None and not half_to_float:
        x = x.to(dtype)
    return _kept_input(log).apply(x, dim, half_to_float)


def cuda_kernels(capability: tuple[int, int], chosen: dict[str, str], softmax_keeps_input: bool = False,
                 no_sdpa: str = "") -> Any:
    """A torch-function mode running dropout and SDPA as CUDA would on a device of compute
    ``capability``; each SDPA kernel taken goes into ``chosen`` (kernel → why).
    ``softmax_keeps_input``: softmax, log_softmax and cross entropy as PyTorch <= 1.10 ran
    them (:func:`legacy_softmax`). ``no_sdpa``: the PyTorch version modelled, when it had no
    SDPA (before 2.0): every call runs as the eager computation."""
    import torch
    from torch.nn import functional
    from torch.overrides import TorchFunctionMode

    def dropout(args: tuple[Any, ...], kwargs: dict[str, Any], training_name: str) -> Any | None:
        x = args[0]
        p = float(_arg(args, kwargs, 1, "p", 0.5))
        training = bool(_arg(args, kwargs, 2, training_name, True))
        inplace = bool(_arg(args, kwargs, 3, "inplace", False))
        if training and 0 < p < 1 and not inplace and isinstance(x, torch.Tensor) and x.numel() > 0:
            return fused_dropout(x, p)
        return None

    def attention(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any | None:
        q, k, v = args[:3]
        mask = _arg(args, kwargs, 3, "attn_mask", None)
        p = float(_arg(args, kwargs, 4, "dropout_p", 0.0))
        causal = bool(_arg(args, kwargs, 5, "is_causal", False))
        scale = _arg(args, kwargs, 6, "scale", None)
        if no_sdpa:
            if not all(isinstance(t, torch.Tensor) for t in (q, k, v)) or kwargs.get("enable_gqa"):
                return None
            chosen.setdefault(EAGER, eager_why(no_sdpa))
            return _math(q, k, v, mask, p, causal, scale, softmax_keeps_input)
        if kwargs.get("enable_gqa") or not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (q, k, v)) \
                or q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.is_nested:
            return None  # grouped-query or unusual shapes: the CPU's own path
        call = Attention(str(q.dtype).removeprefix("torch."), q.shape[-1], v.shape[-1], p, mask is not None,
                         causal, q.shape[-2], k.shape[-2])
        backend, why = sdpa_backend(capability, call)
        chosen.setdefault(backend, why)
        if backend == FLASH:
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, p, causal, False, scale=scale)[0]
        if backend == EFFICIENT:
            bias = _float_mask(mask, q.dtype)
            grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
            return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, grad, p, causal,
                                                                         scale=scale)[0]
        return _math(q, k, v, mask, p, causal, scale, softmax_keeps_input)

    def softmax(args: tuple[Any, ...], kwargs: dict[str, Any], log: bool, dtype_index: int) -> Any | None:
        x = args[0]
        dim = _arg(args, kwargs, 1, "dim", None)
        dtype = _arg(args, kwargs, dtype_index, "dtype", None)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return None
        if dim is None:  # functional.softmax's implicit dim, as it picks it
            dim = functional._get_softmax_dim("log_softmax" if log else "softmax", x.dim(), 3)
        if not isinstance(dim, int):
            return None  # a named dimension: the plain op
        return legacy_softmax(x, dim, dtype, log)

    def cross_entropy(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any | None:
        x, target = args[0], _arg(args, kwargs, 1, "target", None)
        smoothing = float(_arg(args, kwargs, 7, "label_smoothing", 0.0))
        legacy_reduction = _arg(args, kwargs, 3, "size_average", None) is not None or \
            _arg(args, kwargs, 5, "reduce", None) is not None
        if not isinstance(x, torch.Tensor) or not isinstance(target, torch.Tensor) or target.is_floating_point() \
                or smoothing or legacy_reduction or not x.is_floating_point():
            return None  # probabilities, label smoothing, size_average/reduce: the plain op
        logp = legacy_softmax(x, 1 if x.dim() >= 2 else 0, None, log=True)
        return functional.nll_loss(logp, target, _arg(args, kwargs, 2, "weight", None),
                                   ignore_index=_arg(args, kwargs, 4, "ignore_index", -100),
                                   reduction=_arg(args, kwargs, 6, "reduction", "mean"))

    handlers = {functional.dropout: lambda a, k: dropout(a, k, "training"),
                torch.dropout: lambda a, k: dropout(a, k, "train"),
                functional.scaled_dot_product_attention: attention}
    if softmax_keeps_input:
        handlers.update({functional.softmax: lambda a, k: softmax(a, k, False, 3),
                         functional.log_softmax: lambda a, k: softmax(a, k, True, 3),
                         torch.softmax: lambda a, k: softmax(a, k, False, 2),
                         torch.log_softmax: lambda a, k: softmax(a, k, True, 2),
                         torch.Tensor.softmax: lambda a, k: softmax(a, k, False, 2),
                         torch.Tensor.log_softmax: lambda a, k: softmax(a, k, True, 2),
                         functional.cross_entropy: cross_entropy})

    class CudaKernels(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            handler = handlers.get(func)
            if handler is not None:
                out = handler(tuple(args), kwargs)
                if out is not None:
                    return out
            return func(*args, **kwargs)

    return CudaKernels()


def _float_mask(mask: Any, dtype: Any) -> Any:
    """SDPA's additive mask: a bool mask becomes 0 / -inf in the query's dtype (a new tensor)."""
    import torch

    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype).masked_fill_(mask.logical_not(), float("-inf"))


def _math(q: Any, k: Any, v: Any, mask: Any, p: float, causal: bool, scale: float | None,
          softmax_keeps_input: bool = False) -> Any:
    """SDPA's math path on CUDA: the score matrix, softmax (its input kept too with
    ``softmax_keeps_input``: PyTorch <= 1.10), fused dropout, and the product."""
    import torch

    root = math.sqrt(scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    scores = (q * root) @ (k * root).transpose(-2, -1)
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(keep.logical_not(), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = legacy_softmax(scores, -1, None, log=False) if softmax_keeps_input else torch.softmax(scores, dim=-1)
    if p > 0:
        weights = fused_dropout(weights, p)
    return weights @ v
