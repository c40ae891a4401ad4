"""Image and regression metrics at an explicit data range, batched.

Inputs are cast to float64 before anything is subtracted (no uint8 wrap-around). Batches are
``(N, H, W)`` or ``(N, H, W, C)`` (numpy and TensorFlow), ``(N, C, H, W)`` for torch tensors;
a single image is a batch of one. Every metric is reported per image, as the mean of the
per-image values, and pooled over all images (PSNR of the pooled MSE differs from the mean of
per-image PSNRs).

SSIM follows Wang et al. (2004) by default: an 11-tap Gaussian window with sigma = 1.5,
K1 = 0.01, K2 = 0.03, population covariances — or scikit-image's defaults with
``ssim_preset="skimage"`` (7x7 uniform window, sample covariances). The SSIM map is averaged
over the pixels whose window lies inside the image (scikit-image crops ``(win - 1) / 2``
pixels, TensorFlow filters with VALID padding: the same pixels), then over channels.
MS-SSIM is TensorFlow's ``ssim_multiscale`` (five scales, Wang et al. 2003 weights, 2x2
average pooling) at the same settings.

Host arrays go through a compiled kernel when numba is installed (the ``fast`` extra: every
metric of a plane in one pass, in the input's own dtype) and otherwise through banded matrix
products (BLAS) a few images at a time; both run on one thread per core. Torch and TensorFlow
tensors are computed on their own device with the same arithmetic (convolutions).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np

from gpudoc.errors import EnvironmentMissing, InputError

SSIM_PRESETS = ("wang", "skimage")
ENGINES = ("auto", "numba", "numpy")
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_BT601 = (65.481, 128.553, 24.966)
_BLOCK = 32
_CHUNK_PIXELS = 1 << 18
T = TypeVar("T")
R = TypeVar("R")


class RangeWarning(UserWarning):
    """The data range was inferred, not declared."""


class MetricInputError(InputError, ValueError):
    """Inputs that cannot be compared: shapes, NaN, empty, unknown range."""


@dataclass(frozen=True)
class Metric:
    """One metric: per image, the mean of those, and pooled over every pixel."""

    per_image: tuple[float, ...]
    mean: float
    pooled: float


@dataclass(frozen=True)
class _Window:
    taps: tuple[float, ...]
    cov_norm: float

    @property
    def size(self) -> int:
        return len(self.taps)


def _gaussian_taps(sigma: float, radius: int) -> tuple[float, ...]:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return tuple((taps / taps.sum()).tolist())


def window(preset: str) -> _Window:
    """The SSIM window of a preset: its taps (one axis) and covariance normalisation."""
    if preset == "wang":
        return _Window(_gaussian_taps(1.5, 5), 1.0)
    if preset == "skimage":
        return _Window((1 / 7,) * 7, 49 / 48)
    raise MetricInputError(f"SSIM preset {preset!r} not one of {', '.join(SSIM_PRESETS)}")


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch")


def is_tensorflow(x: Any) -> bool:
    """Whether ``x`` is a TensorFlow tensor or variable (without importing TensorFlow)."""
    return type(x).__module__.startswith(("tensorflow", "tf.", "keras"))


def _host(x: Any) -> np.ndarray:
    if is_torch(x):
        return np.asarray(x.detach().cpu().numpy())
    if is_tensorflow(x):
        return np.asarray(x.numpy())
    return np.asarray(x)


def _permute(array: Any, order: tuple[int, ...]) -> Any:
    if is_torch(array):
        return array.permute(*order)
    if is_tensorflow(array):
        import tensorflow as tf

        return tf.transpose(array, order)
    return array.transpose(order)


def _planes(x: Any, channels_first: bool | None) -> Any:
    """An ``(N, C, H, W)`` view of ``x`` (numpy array, torch or TF tensor, not yet cast)."""
    array: Any = x if is_torch(x) or is_tensorflow(x) else _host(x)
    first = is_torch(x) if channels_first is None else channels_first
    ndim = len(array.shape)
    if ndim == 2:
        return array[None, None]
    if ndim == 3:
        if first and array.shape[0] in (1, 3, 4):
            return array[None]
        if not first and array.shape[-1] in (1, 3, 4):
            return _permute(array, (2, 0, 1))[None]
        return array[:, None]
    if ndim == 4:
        return array if first else _permute(array, (0, 3, 1, 2))
    raise MetricInputError(f"expected images (H, W[, C]) or a batch (N, H, W[, C]), got shape {tuple(array.shape)}")


def infer_range(x: Any, dtype: Any) -> float:
    """The stated rule: uint8 → 255, uint16 → 65535, floats within [0, 1] → 1, other
    floats within [0, 255] → 255; anything else cannot be guessed."""
    name = str(dtype).rsplit(".", 1)[-1]
    if name == "uint8":
        return 255.0
    if name == "uint16":
        return 65535.0
    if is_tensorflow(x):
        import tensorflow as tf

        low, high = float(tf.reduce_min(x)), float(tf.reduce_max(x))
    else:
        low, high = float(x.min()), float(x.max())
    if low >= 0 and high <= 1:
        return 1.0
    if low >= 0 and high <= 255:
        return 255.0
    raise MetricInputError(f"cannot infer the data range of values in [{low:g}, {high:g}]", "declare data_range")


def to_y(batch: np.ndarray, data_range: float) -> np.ndarray:
    """BT.601 luma (Y of YCbCr, 16..235 at 8 bits) of ``(N, H, W, 3)`` RGB images, at the same range."""
    if batch.shape[-1] != 3:
        raise MetricInputError(f"the Y channel needs RGB images, got {batch.shape[-1]} channel(s)")
    y = (16.0 + (batch / data_range) @ np.array(_BT601)) / 255.0
    return (y * data_range)[..., None]


class _Numpy:
    """Array operations for host arrays: windows as banded BLAS products."""

    def __init__(self) -> None:
        self.lib = np

    def cast(self, planes: Any) -> np.ndarray:
        return np.ascontiguousarray(planes, dtype=np.float64)

    def moments(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``[x, y, x² + y², xy]`` stacked, for one filter pass."""
        out = np.empty((4, *x.shape))
        out[0], out[1] = x, y
        np.multiply(x, x, out=out[2])
        np.multiply(y, y, out=out[3])
        out[2] += out[3]
        np.multiply(x, y, out=out[3])
        return out

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def mean(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.mean(axis=axes)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return x.reshape(shape)

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """``fn`` over ``items`` on one thread per core, BLAS single-threaded meanwhile (numpy
        releases the GIL in the products and element-wise passes)."""
        workers = min(len(items), os.cpu_count() or 1)
        if workers < 2:
            return [fn(item) for item in items]
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))

    def finite(self, x: Any) -> bool:
        return bool(np.isfinite(x).all())

    def filter(self, a: np.ndarray, taps: tuple[float, ...]) -> np.ndarray:
        """Valid correlation of ``(..., H, W)`` with ``taps`` along both image axes."""
        k = len(taps)
        band = _band(taps)
        h, w = a.shape[-2:]
        oh, ow = h - k + 1, w - k + 1
        flat = a.reshape(-1, w)
        rows = np.empty((flat.shape[0], ow))
        for s in range(0, ow, _BLOCK):
            e = min(ow, s + _BLOCK)
            np.matmul(flat[:, s : e + k - 1], band[: e - s + k - 1, : e - s], out=rows[:, s:e])
        across = rows.reshape(-1, h, ow)
        out = np.empty((across.shape[0], oh, ow))
        for s in range(0, oh, _BLOCK):
            e = min(oh, s + _BLOCK)
            np.matmul(band[: e - s + k - 1, : e - s].T, across[:, s : e + k - 1], out=out[:, s:e])
        return out.reshape(*a.shape[:-2], oh, ow)

    @staticmethod
    def pool2(a: np.ndarray) -> np.ndarray:
        """2x2 average pooling; an odd edge is first padded by repeating it (TF's SYMMETRIC)."""
        h, w = a.shape[-2:]
        if h % 2 or w % 2:
            a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)], mode="symmetric")
            h, w = a.shape[-2:]
        return a.reshape(*a.shape[:-2], h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


@lru_cache(maxsize=8)
def _band(taps: tuple[float, ...]) -> np.ndarray:
    k = len(taps)
    band = np.zeros((_BLOCK + k - 1, _BLOCK))
    for j in range(_BLOCK):
        band[j : j + k, j] = taps
    return band


class _Torch:
    """The same operations on torch tensors, on their device, in float64."""

    def __init__(self) -> None:
        import torch

        self.lib = torch

    def cast(self, planes: Any) -> Any:
        return planes.detach().to(self.lib.float64).contiguous()

    def moments(self, x: Any, y: Any) -> Any:
        return self.lib.stack([x, y, x * x + y * y, x * y])

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.detach().cpu().numpy())

    def mean(self, x: Any, axes: tuple[int, ...]) -> Any:
        return x.mean(dim=axes)

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return x.reshape(shape)

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        return [fn(item) for item in items]

    def finite(self, x: Any) -> bool:
        return bool(self.lib.isfinite(x).all())

    def filter(self, a: Any, taps: tuple[float, ...]) -> Any:
        functional = self.lib.nn.functional
        k = len(taps)
        kernel = self.lib.tensor(taps, dtype=a.dtype, device=a.device)
        flat = a.reshape(-1, 1, *a.shape[-2:])
        flat = functional.conv2d(flat, kernel.view(1, 1, 1, k))
        flat = functional.conv2d(flat, kernel.view(1, 1, k, 1))
        return flat.reshape(*a.shape[:-2], *flat.shape[-2:])

    def pool2(self, a: Any) -> Any:
        functional = self.lib.nn.functional
        h, w = a.shape[-2:]
        flat = a.reshape(-1, 1, h, w)
        if h % 2 or w % 2:
            flat = self.lib.cat([flat, flat[..., -1:, :]], dim=-2) if h % 2 else flat
            flat = self.lib.cat([flat, flat[..., -1:]], dim=-1) if w % 2 else flat
        pooled = functional.avg_pool2d(flat, 2)
        return pooled.reshape(*a.shape[:-2], *pooled.shape[-2:])


class _TensorFlow:
    """The same operations on TensorFlow tensors, on their device, in float64."""

    def __init__(self) -> None:
        import tensorflow as tf

        self.lib = tf

    def cast(self, planes: Any) -> Any:
        return self.lib.cast(planes, self.lib.float64)

    def moments(self, x: Any, y: Any) -> Any:
        return self.lib.stack([x, y, x * x + y * y, x * y])

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.numpy())

    def finite(self, x: Any) -> bool:
        return bool(self.lib.reduce_all(self.lib.math.is_finite(x)))

    def mean(self, x: Any, axes: tuple[int, ...]) -> Any:
        return self.lib.reduce_mean(x, axis=list(axes))

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        return self.lib.reshape(x, shape)

    def map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        return [fn(item) for item in items]

    def filter(self, a: Any, taps: tuple[float, ...]) -> Any:
        tf = self.lib
        k = len(taps)
        kernel = tf.constant(taps, dtype=a.dtype)
        lead, (h, w) = a.shape[:-2], a.shape[-2:]
        flat = tf.reshape(a, (-1, h, w, 1))
        flat = tf.nn.conv2d(flat, tf.reshape(kernel, (1, k, 1, 1)), 1, "VALID")
        flat = tf.nn.conv2d(flat, tf.reshape(kernel, (k, 1, 1, 1)), 1, "VALID")
        return tf.reshape(flat, (*lead, h - k + 1, w - k + 1))

    def pool2(self, a: Any) -> Any:
        tf = self.lib
        lead, (h, w) = a.shape[:-2], a.shape[-2:]
        flat = tf.reshape(a, (-1, h, w, 1))
        if h % 2 or w % 2:
            flat = tf.pad(flat, [[0, 0], [0, h % 2], [0, w % 2], [0, 0]], mode="SYMMETRIC")
        pooled = tf.nn.avg_pool2d(flat, 2, 2, "VALID")
        return tf.reshape(pooled, (*lead, *pooled.shape[1:3]))


@lru_cache(maxsize=1)
def _compiled() -> Callable[..., None] | None:
    """The numba kernel, or None where numba is not installed (or cannot load)."""
    try:
        from gpudoc.metrics._kernel import plane_stats
    except ImportError:
        return None
    return plane_stats


def _engine(name: str) -> Callable[..., None] | None:
    if name not in ENGINES:
        raise MetricInputError(f"engine {name!r} not one of {', '.join(ENGINES)}")
    kernel = _compiled() if name != "numpy" else None
    if name == "numba" and kernel is None:
        raise EnvironmentMissing("engine 'numba' asked for but numba cannot be imported",
                                 "pip install 'gpudoc[fast]'")
    return kernel


_KERNEL_DTYPES = frozenset("?bBhHiIlLqQfd")


def _kernel_input(a: np.ndarray) -> np.ndarray:
    """``a`` as the kernel reads it: its own dtype where numba compiles that, else float64."""
    if a.dtype.char in _KERNEL_DTYPES and a.dtype.isnative:
        return a
    return np.asarray(a, dtype=np.float64)


def _compiled_chunk(kernel: Callable[..., None], p: np.ndarray, t: np.ndarray, data_range: float, win: _Window,
                    y_channel: bool, ssim: bool, ms_ssim: bool, first: int) -> _ChunkStats:
    """One chunk of ``(N, C, H, W)`` images through the compiled kernel."""
    from gpudoc.metrics._kernel import ABS, CS, NONFINITE, SQUARES, SSIM

    if y_channel:
        p = _to_y(p.astype(np.float64), data_range)
        t = _to_y(t.astype(np.float64), data_range)
    p, t = _kernel_input(p), _kernel_input(t)
    taps = np.array(win.taps)
    c1, c2 = _stabilisers(data_range)

    def stats_of(x: np.ndarray, y: np.ndarray, with_ssim: bool) -> np.ndarray:
        out = np.empty((*x.shape[:2], 5))
        kernel(x, y, taps, win.cov_norm, c1, c2, with_ssim, out)
        return out

    stats = stats_of(p, t, ssim or ms_ssim)
    if stats[..., NONFINITE].any():
        bad = first + int(np.flatnonzero(stats[..., NONFINITE].any(axis=1))[0])
        raise MetricInputError(f"inputs contain NaN or infinity (image {bad})")
    pixels = int(np.prod(p.shape[1:]))

    def ssim_cs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scaled = stats_of(x, y, True)
        return scaled[..., SSIM], scaled[..., CS]

    ms = _ms_ssim(ssim_cs, _Numpy.pool2, p, t, (stats[..., SSIM], stats[..., CS])) if ms_ssim else None
    return _ChunkStats(stats[..., ABS].sum(axis=1) / pixels, stats[..., SQUARES].sum(axis=1) / pixels,
                       stats[..., SSIM].copy() if ssim else None, ms)


def _stabilisers(data_range: float) -> tuple[float, float]:
    """SSIM's C1 and C2 (K1 = 0.01, K2 = 0.03) at ``data_range``."""
    return (0.01 * data_range) ** 2, (0.03 * data_range) ** 2


def _ssim_cs(ops: Any, x: Any, y: Any, data_range: float, win: _Window) -> tuple[np.ndarray, np.ndarray]:
    """Mean SSIM and mean contrast-structure term of each ``(H, W)`` plane of ``x`` vs ``y``."""
    c1, c2 = _stabilisers(data_range)
    mx, my, squares, cross = ops.filter(ops.moments(x, y), win.taps)
    mxy = mx * my
    msq = mx * mx
    msq += my * my
    cs = cross
    cs -= mxy
    cs *= 2 * win.cov_norm
    cs += c2
    den = squares
    den -= msq
    den *= win.cov_norm
    den += c2
    cs /= den
    luminance = mxy
    luminance *= 2
    luminance += c1
    msq += c1
    luminance /= msq
    luminance *= cs
    return ops.to_numpy(ops.mean(luminance, (-2, -1))), ops.to_numpy(ops.mean(cs, (-2, -1)))


@dataclass(frozen=True)
class _ChunkStats:
    mae: np.ndarray
    mse: np.ndarray
    ssim: np.ndarray | None
    ms_ssim: np.ndarray | None


def _chunks(n: int, plane_pixels: int) -> Iterator[tuple[int, int]]:
    step = max(1, _CHUNK_PIXELS // max(1, plane_pixels))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _to_y(planes: Any, data_range: float) -> Any:
    r, g, b = planes[:, 0], planes[:, 1], planes[:, 2]
    return ((16.0 * data_range + _BT601[0] * r + _BT601[1] * g + _BT601[2] * b) / 255.0)[:, None]


def _ms_ssim(ssim_cs: Callable[[Any, Any], tuple[np.ndarray, np.ndarray]], pool: Callable[[Any], Any], x: Any,
             y: Any, finest: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """MS-SSIM from the finest scale's ``(ssim, cs)``, already computed, and ``ssim_cs`` of
    each coarser scale that ``pool`` makes of ``x`` and ``y``."""
    factors = [np.maximum(finest[1], 0.0) ** MS_SSIM_WEIGHTS[0]]
    for scale, weight in enumerate(MS_SSIM_WEIGHTS[1:], start=1):
        x, y = pool(x), pool(y)
        ssim, cs = ssim_cs(x, y)
        term = ssim if scale == len(MS_SSIM_WEIGHTS) - 1 else cs
        factors.append(np.maximum(term, 0.0) ** weight)
    return np.prod(factors, axis=0)


def image_metrics(
    pred: Any,
    target: Any,
    *,
    data_range: float | None,
    y_channel: bool = False,
    crop_border: int = 0,
    ssim_preset: str = "wang",
    ssim: bool | None = None,
    ms_ssim: bool = False,
    channels_first: bool | None = None,
    engine: str = "auto",
) -> dict[str, Metric]:
    """MAE, MSE, RMSE, PSNR, SSIM (and MS-SSIM) of ``pred`` against ``target`` at ``data_range``.

    ``data_range`` None infers it by the rule of :func:`infer_range` and warns. ``ssim``
    None computes SSIM when the images are at least as large as its window (11 or 7 pixels)
    and leaves it out otherwise; True requires it. ``channels_first`` None means
    ``(N, C, H, W)`` for torch tensors and ``(N, H, W, C)`` otherwise. Torch and TensorFlow
    tensors are computed on their own device; only per-image results are copied to the host.
    ``engine`` picks the host path: "numba" (the compiled kernel), "numpy" (BLAS), or "auto"
    (numba where it is installed); the values agree to ~1e-15.
    """
    win = window(ssim_preset)
    ops: Any = _Numpy()
    kernel = None
    if is_torch(pred) and is_torch(target):
        ops = _Torch()
    elif is_tensorflow(pred) and is_tensorflow(target):
        ops = _TensorFlow()
    else:
        pred, target = _host(pred), _host(target)
        kernel = _engine(engine)
    p_all, t_all = _planes(pred, channels_first), _planes(target, channels_first)
    if tuple(p_all.shape) != tuple(t_all.shape):
        raise MetricInputError(f"prediction {tuple(p_all.shape)} and target {tuple(t_all.shape)} differ in shape")
    n, channels, height, width = (int(v) for v in p_all.shape)
    if n * channels * height * width == 0:
        raise MetricInputError("no pixels to compare")
    if data_range is None:
        data_range = infer_range(t_all, t_all.dtype)
        warnings.warn(f"data_range not given; inferred {data_range:g} from the target's dtype and values",
                      RangeWarning, stacklevel=2)
    if not data_range > 0:
        raise MetricInputError(f"data_range must be positive, got {data_range}")
    if y_channel and channels != 3:
        raise MetricInputError(f"the Y channel needs RGB images, got {channels} channel(s)")
    if crop_border and 2 * crop_border >= min(height, width):
        raise MetricInputError(f"crop_border {crop_border} leaves no pixels of {(height, width)} images")
    if crop_border:
        p_all = p_all[..., crop_border:-crop_border, crop_border:-crop_border]
        t_all = t_all[..., crop_border:-crop_border, crop_border:-crop_border]
        height, width = height - 2 * crop_border, width - 2 * crop_border
    want_ssim = bool(ssim) or (ssim is None and min(height, width) >= win.size)
    if want_ssim and min(height, width) < win.size:
        raise MetricInputError(f"SSIM needs images of at least {win.size}x{win.size} pixels, got {(height, width)}")
    smallest = (win.size - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1
    if ms_ssim and min(height, width) < smallest:
        raise MetricInputError(f"MS-SSIM needs images of at least {smallest}x{smallest} pixels (5 scales of a "
                               f"{win.size}-pixel window), got {(height, width)}")
    rng = float(data_range)

    def chunk(bounds: tuple[int, int]) -> _ChunkStats:
        start, stop = bounds
        if kernel is not None:
            return _compiled_chunk(kernel, p_all[start:stop], t_all[start:stop], rng, win, y_channel, want_ssim,
                                   ms_ssim, start)
        p, t = ops.cast(p_all[start:stop]), ops.cast(t_all[start:stop])
        if not (ops.finite(p) and ops.finite(t)):
            raise MetricInputError(f"inputs contain NaN or infinity (image {start} to {stop - 1})")
        if y_channel:
            p, t = _to_y(p, rng), _to_y(t, rng)
        diff = p - t
        mae = ops.to_numpy(ops.mean(abs(diff), (-3, -2, -1)))
        diff *= diff
        mse = ops.to_numpy(ops.mean(diff, (-3, -2, -1)))
        del diff
        k = int(p.shape[1])
        planes_p = ops.reshape(p, (-1, *(int(d) for d in p.shape[-2:])))
        planes_t = ops.reshape(t, (-1, *(int(d) for d in t.shape[-2:])))
        if not (want_ssim or ms_ssim):
            return _ChunkStats(mae, mse, None, None)
        finest = _ssim_cs(ops, planes_p, planes_t, rng, win)
        ms = _ms_ssim(lambda a, b: _ssim_cs(ops, a, b, rng, win), ops.pool2, planes_p, planes_t, finest) \
            if ms_ssim else None
        return _ChunkStats(mae, mse, finest[0].reshape(-1, k) if want_ssim else None,
                           ms.reshape(-1, k) if ms is not None else None)

    parts = ops.map(chunk, list(_chunks(n, channels * height * width)))
    mae, mse = np.concatenate([c.mae for c in parts]), np.concatenate([c.mse for c in parts])
    pooled_mse = float(mse.mean())
    psnr = _psnr(mse, rng)
    found = {
        "mae": Metric(tuple(mae.tolist()), float(mae.mean()), float(mae.mean())),
        "mse": Metric(tuple(mse.tolist()), float(mse.mean()), pooled_mse),
        "rmse": Metric(tuple(np.sqrt(mse).tolist()), float(np.sqrt(mse).mean()), math.sqrt(pooled_mse)),
        "psnr": Metric(tuple(psnr.tolist()), float(psnr.mean()), float(_psnr(pooled_mse, rng))),
    }
    for name, wanted in (("ssim", want_ssim), ("ms_ssim", ms_ssim)):
        if wanted:
            per_channel = np.concatenate([getattr(c, name) for c in parts])
            per_image = per_channel.mean(axis=1)
            found[name] = Metric(tuple(per_image.tolist()), float(per_image.mean()), float(per_channel.mean()))
    return found


def _psnr(mse: np.ndarray | float, data_range: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.asarray(10 * np.log10(data_range**2 / np.asarray(mse, dtype=np.float64)))
