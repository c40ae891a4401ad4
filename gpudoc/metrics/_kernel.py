"""The compiled kernel of the host path (numba, the ``fast`` extra): MAE, MSE, SSIM and SSIM's
contrast-structure term of every ``(H, W)`` plane in one pass over its pixels.

Each input row is read once, in its own dtype (no float64 copy of the batch): its four moments
``x, y, x² + y², xy`` are filtered along the row into a ring of ``k`` rows, and each output row
is the window's taps over that ring followed by the SSIM formula. The arithmetic is float64
throughout, in the order scikit-image uses (moments filtered, then E[x²] - E[x]²), so the values
agree with it and with the BLAS path to ~1e-15. Compiled once per input dtype and layout, cached
on disk (``cache=True``), and run without the GIL so the caller's threads run it in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

ABS, SQUARES, SSIM, CS, NONFINITE = range(5)


@numba.njit(cache=True, nogil=True)
def plane_stats(x: np.ndarray, y: np.ndarray, taps: np.ndarray, cov_norm: float, c1: float, c2: float,
                want_ssim: bool, out: np.ndarray) -> None:
    """Fill ``out[n, c]`` with ``[Σ|x-y|, Σ(x-y)², mean SSIM, mean CS, non-finite count]`` of the
    ``(N, C, H, W)`` planes of ``x`` and ``y``; the SSIM means are over the valid window positions."""
    n_images, channels, height, width = x.shape
    k = taps.shape[0]
    oh, ow = height - k + 1, width - k + 1
    moments = np.empty((4, width))
    ring = np.empty((k, 4, max(ow, 1)))
    window = np.empty((4, max(ow, 1)))
    col_abs = np.empty(width)
    col_sq = np.empty(width)
    col_bad = np.empty(width)
    for n in range(n_images):
        for c in range(channels):
            col_abs[:] = 0.0
            col_sq[:] = 0.0
            col_bad[:] = 0.0
            ssim_sum = 0.0
            cs_sum = 0.0
            for i in range(height):
                for j in range(width):
                    a = np.float64(x[n, c, i, j])
                    b = np.float64(y[n, c, i, j])
                    d = a - b
                    col_abs[j] += abs(d)
                    col_sq[j] += d * d
                    col_bad[j] += d * 0.0
                    moments[0, j] = a
                    moments[1, j] = b
                    moments[2, j] = a * a + b * b
                    moments[3, j] = a * b
                if not want_ssim:
                    continue
                slot = ring[i % k]
                for m in range(4):
                    for j in range(ow):
                        slot[m, j] = taps[0] * moments[m, j]
                    for t in range(1, k):
                        w = taps[t]
                        for j in range(ow):
                            slot[m, j] += w * moments[m, j + t]
                if i < k - 1:
                    continue
                first = i - k + 1
                for m in range(4):
                    rows = ring[first % k]
                    for j in range(ow):
                        window[m, j] = taps[0] * rows[m, j]
                    for t in range(1, k):
                        w = taps[t]
                        rows = ring[(first + t) % k]
                        for j in range(ow):
                            window[m, j] += w * rows[m, j]
                for j in range(ow):
                    mx = window[0, j]
                    my = window[1, j]
                    mxy = mx * my
                    msq = mx * mx + my * my
                    num = (window[3, j] - mxy) * (2.0 * cov_norm) + c2
                    den = (window[2, j] - msq) * cov_norm + c2
                    cs = num / den
                    cs_sum += cs
                    ssim_sum += cs * ((2.0 * mxy + c1) / (msq + c1))
            bad = col_bad.sum()
            out[n, c, ABS] = col_abs.sum()
            out[n, c, SQUARES] = col_sq.sum()
            out[n, c, SSIM] = ssim_sum / (oh * ow) if want_ssim else 0.0
            out[n, c, CS] = cs_sum / (oh * ow) if want_ssim else 0.0
            out[n, c, NONFINITE] = 0.0 if bad == 0.0 else 1.0
