"""Reading prediction/target images (png, jpg, tif, bmp, npy, npz; files or directories
matched by name) as arrays in their stored dtype.

An image file is one image. Arrays: (H, W) and (H, W, C) with C = 1, 3 or 4 are one image,
(N, H, W) and (N, H, W, C) stacks of N; channels first, (N, 1, H, W) and (N, 3, H, W) — as torch
saves them — are stacks too when the last axis is not 1, 3 or 4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpudoc.errors import InputError
from gpudoc.imagefiles import ARRAY_SUFFIXES, IMAGE_SUFFIXES, read_array

SUFFIXES = (*IMAGE_SUFFIXES, *ARRAY_SUFFIXES)


def _files(path: Path) -> dict[str, Path]:
    if path.is_dir():
        found = {p.stem: p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in SUFFIXES}
        if not found:
            raise InputError(f"{path}: no image or array file in this directory")
        return found
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    return {path.stem: path}


def pairs(pred: Path, target: Path) -> list[tuple[str, Path, Path]]:
    """``(name, prediction file, target file)``: two files, or two directories whose files are
    matched by name without suffix (every name must be in both)."""
    p, t = _files(pred), _files(target)
    if len(p) == 1 and len(t) == 1 and not pred.is_dir() and not target.is_dir():
        return [(next(iter(p)), next(iter(p.values())), next(iter(t.values())))]
    missing = sorted(set(p) ^ set(t))
    if missing:
        side = [f"{n} ({'prediction' if n in p else 'target'} only)" for n in missing[:5]]
        raise InputError(f"{pred} and {target}: {len(missing)} names are not in both: {', '.join(side)}",
                         "give matching file names, or one file each")
    return [(name, p[name], t[name]) for name in sorted(p)]


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) or "()"


def as_batch(array: np.ndarray, file: Path) -> np.ndarray:
    """``array`` read from ``file`` as an (N, H, W, C) batch, by the rule in the module docstring."""
    last = array.shape[-1] if array.ndim else 0
    if array.ndim < 2:
        what = "a single number" if array.ndim == 0 else f"1-D values (shape {_dims(array.shape)})"
        raise InputError(f"{file}: {what}, not an image", "save an H×W[×C] image or an N×H×W[×C] stack")
    if array.size == 0:
        raise InputError(f"{file}: shape {_dims(array.shape)} holds no values", "save a non-empty array")
    if array.ndim > 4:
        raise InputError(f"{file}: shape {_dims(array.shape)} has {array.ndim} axes; images have at most 4 "
                         "(N×H×W×C)", "reshape it to N×H×W×C or N×C×H×W")
    if array.ndim == 2:
        return array[None, ..., None]
    if array.ndim == 3:
        return array[None] if last in (1, 3, 4) else array[..., None]
    if last not in (1, 3, 4) and array.shape[1] in (1, 3):
        return array.transpose(0, 2, 3, 1)
    return array


def _check_finite(batch: np.ndarray, file: Path, stacked: bool) -> None:
    if batch.dtype.kind != "f":
        return
    flat = batch.reshape(batch.shape[0], -1)
    nan, inf = np.isnan(flat).sum(axis=1), np.isinf(flat).sum(axis=1)
    bad = np.flatnonzero(nan + inf)
    if bad.size:
        index = int(bad[0])
        counts = [f"{int(n)} {kind}" for n, kind in ((nan[index], "NaN value(s)"), (inf[index], "infinite value(s)"))
                  if n]
        where = f"{file} image {index}" if stacked else str(file)
        more = f" ({bad.size} of {batch.shape[0]} images have some)" if bad.size > 1 else ""
        raise InputError(f"{where}: {' and '.join(counts)}{more}",
                         "replace NaNs and infinities before computing metrics (np.nan_to_num, or drop the image)")


def load(pred: Path, target: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The matched images as two (N, H, W, C) batches (each file one image or a stack), checked
    for NaN and infinity."""
    names, preds, targets = [], [], []
    for name, pf, tf in pairs(pred, target):
        a, b = read_array(pf, single_channel=False), read_array(tf, single_channel=False)
        if a.shape != b.shape:
            raise InputError(f"{pf} {_dims(a.shape)} and {tf} {_dims(b.shape)} differ in shape",
                             "give predictions and targets of one shape")
        for file, array, batches in ((pf, a, preds), (tf, b, targets)):
            batch = as_batch(array, file)
            _check_finite(batch, file, array.ndim == 4 or batch.shape[0] > 1)
            batches.append(batch)
        names.append(name)
    shapes = {a.shape[1:] for a in preds}
    if len(shapes) > 1:
        raise InputError(f"{pred}: images of different sizes {[_dims(s) for s in sorted(shapes)[:3]]}",
                         "compare images of one size per call")
    return names, np.concatenate(preds), np.concatenate(targets)
