"""Image and regression metrics at an explicit data range, batched.

Inputs are cast to float64 before anything is subtracted (no uint8 wrap-around). Batches are
``(N, H, W)`` or ``(N, H, W, C)``; a single ``(H, W[, C])`` image is a batch of one. Every
metric is reported per image, as the mean of the per-image values, and pooled (computed
once over all pixels: PSNR of the pooled MSE differs from the mean of per-image PSNRs).

SSIM follows Wang et al. (2004) by default: an 11-tap Gaussian window with sigma = 1.5,
K1 = 0.01, K2 = 0.03, population covariances — or scikit-image's defaults with
``preset="skimage"`` (7x7 uniform window, sample covariances); both crop ``(win - 1) / 2``
pixels from each border before averaging the SSIM map, and average over channels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpudoc.errors import InputError

SSIM_PRESETS = ("wang", "skimage")
_BT601 = np.array([65.481, 128.553, 24.966])


class RangeWarning(UserWarning):
    """The data range was inferred, not declared."""


class MetricInputError(InputError, ValueError):
    """Inputs that cannot be compared: shapes, NaN, empty, unknown range."""


def as_batch(x: Any) -> np.ndarray:
    """A float64 ``(N, H, W, C)`` array from a numpy array, torch tensor or TF tensor. A 3-D
    input is one ``(H, W, C)`` image when its last axis has 1, 3 or 4 entries, else a
    ``(N, H, W)`` batch of grey images."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    array = np.asarray(x)
    if array.ndim == 2:
        array = array[None, :, :, None]
    elif array.ndim == 3:
        array = array[None] if array.shape[-1] in (1, 3, 4) else array[..., None]
    if array.ndim != 4:
        raise MetricInputError(f"expected images (H, W[, C]) or a batch (N, H, W[, C]), got shape {array.shape}")
    return array.astype(np.float64)


def infer_range(x: np.ndarray, dtype: np.dtype[Any]) -> float:
    """The stated rule: uint8 → 255, uint16 → 65535, floats within [0, 1] → 1, other
    floats within [0, 255] → 255; anything else cannot be guessed."""
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    low, high = float(np.min(x)), float(np.max(x))
    if low >= 0 and high <= 1:
        return 1.0
    if low >= 0 and high <= 255:
        return 255.0
    raise MetricInputError(f"cannot infer the data range of values in [{low:g}, {high:g}]", "declare data_range")


def to_y(batch: np.ndarray, data_range: float) -> np.ndarray:
    """BT.601 luma (Y of YCbCr, 16..235 at 8 bits) of RGB images, at the same range."""
    if batch.shape[-1] != 3:
        raise MetricInputError(f"the Y channel needs RGB images, got {batch.shape[-1]} channel(s)")
    unit = batch / data_range
    y = (16.0 + unit @ _BT601) / 255.0
    return (y * data_range)[..., None]


def _prepare(pred: Any, target: Any, data_range: float | None, y_channel: bool, crop_border: int
             ) -> tuple[np.ndarray, np.ndarray, float]:
    p_raw, t_raw = np.asarray(pred) if isinstance(pred, np.ndarray) else pred, target
    p, t = as_batch(p_raw), as_batch(t_raw)
    if p.shape != t.shape:
        raise MetricInputError(f"prediction {p.shape} and target {t.shape} differ in shape")
    if p.size == 0:
        raise MetricInputError("no pixels to compare")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise MetricInputError("inputs contain NaN or infinity")
    if data_range is None:
        dtype = np.asarray(t_raw).dtype if isinstance(t_raw, np.ndarray) else np.dtype(np.float64)
        data_range = infer_range(t, dtype)
        warnings.warn(f"data_range not given; inferred {data_range:g} from the target's dtype and values",
                      RangeWarning, stacklevel=3)
    if data_range <= 0:
        raise MetricInputError(f"data_range must be positive, got {data_range}")
    if y_channel:
        p, t = to_y(p, data_range), to_y(t, data_range)
    if crop_border:
        if 2 * crop_border >= min(p.shape[1:3]):
            raise MetricInputError(f"crop_border {crop_border} leaves no pixels of {p.shape[1:3]} images")
        p = p[:, crop_border:-crop_border, crop_border:-crop_border]
        t = t[:, crop_border:-crop_border, crop_border:-crop_border]
    return p, t, float(data_range)


@dataclass(frozen=True)
class Metric:
    """One metric: per image, the mean of those, and pooled over every pixel."""

    per_image: tuple[float, ...]
    mean: float
    pooled: float


def _psnr(mse: np.ndarray | float, data_range: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.asarray(10 * np.log10(data_range**2 / np.asarray(mse, dtype=np.float64)))


def _gaussian_taps(sigma: float, radius: int) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def ssim_maps(p: np.ndarray, t: np.ndarray, data_range: float, preset: str = "wang") -> tuple[np.ndarray, int]:
    """The SSIM maps of ``(K, H, W)`` planes (images times channels, contiguous), and the border
    width to crop from them."""
    from scipy import ndimage

    if preset == "wang":
        radius = int(3.5 * 1.5 + 0.5)
        taps = _gaussian_taps(1.5, radius)

        def smooth(a: np.ndarray) -> np.ndarray:
            return ndimage.correlate1d(ndimage.correlate1d(a, taps, axis=-2, mode="reflect"), taps, axis=-1,
                                       mode="reflect")

        win, norm = 2 * radius + 1, 1.0
    elif preset == "skimage":
        win = 7

        def smooth(a: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter1d(ndimage.uniform_filter1d(a, win, axis=-2, mode="reflect"), win, axis=-1,
                                            mode="reflect")

        norm = win * win / (win * win - 1.0)
    else:
        raise MetricInputError(f"SSIM preset {preset!r} not one of {', '.join(SSIM_PRESETS)}")
    if min(p.shape[-2:]) < win:
        raise MetricInputError(f"SSIM needs images of at least {win}x{win} pixels, got {p.shape[-2:]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = smooth(p), smooth(t)
    vx = norm * (smooth(p * p) - mx * mx)
    vy = norm * (smooth(t * t) - my * my)
    vxy = norm * (smooth(p * t) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s, (win - 1) // 2


def image_metrics(
    pred: Any,
    target: Any,
    *,
    data_range: float | None,
    y_channel: bool = False,
    crop_border: int = 0,
    ssim_preset: str = "wang",
    ssim: bool | None = None,
) -> dict[str, Metric]:
    """MAE, MSE, RMSE, PSNR and SSIM of ``pred`` against ``target`` at ``data_range``.

    ``data_range`` None infers it by the rule of :func:`infer_range` and warns. ``ssim``
    None computes SSIM when the images are at least as large as its window (11 or 7 pixels)
    and leaves it out otherwise; True requires it.
    """
    p, t, rng = _prepare(pred, target, data_range, y_channel, crop_border)
    diff = p - t
    axes = (1, 2, 3)
    mae = np.mean(np.abs(diff), axis=axes)
    mse = np.mean(diff * diff, axis=axes)
    pooled_mse = float(np.mean(diff * diff))
    psnr = _psnr(mse, rng)
    found = {
        "mae": Metric(tuple(mae.tolist()), float(mae.mean()), float(np.mean(np.abs(diff)))),
        "mse": Metric(tuple(mse.tolist()), float(mse.mean()), pooled_mse),
        "rmse": Metric(tuple(np.sqrt(mse).tolist()), float(np.sqrt(mse).mean()), math.sqrt(pooled_mse)),
        "psnr": Metric(tuple(psnr.tolist()), float(psnr.mean()), float(_psnr(pooled_mse, rng))),
    }
    window = 11 if ssim_preset == "wang" else 7
    if ssim or (ssim is None and min(p.shape[1:3]) >= window):
        # One image at a time, as contiguous channel planes: its maps stay in cache, which
        # beats one pass over the whole batch.
        sums = []
        for i in range(p.shape[0]):
            planes_p = np.ascontiguousarray(p[i].transpose(2, 0, 1))
            planes_t = np.ascontiguousarray(t[i].transpose(2, 0, 1))
            s, pad = ssim_maps(planes_p, planes_t, rng, ssim_preset)
            sums.append(s[:, pad : s.shape[1] - pad, pad : s.shape[2] - pad].mean(axis=(1, 2)))
        per_channel = np.array(sums)
        per_image = per_channel.mean(axis=1)
        found["ssim"] = Metric(tuple(per_image.tolist()), float(per_image.mean()), float(per_channel.mean()))
    return found
