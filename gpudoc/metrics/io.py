"""Reading prediction/target images (png, jpg, tif, bmp, npy, npz; files or directories
matched by name) as arrays in their stored dtype."""

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


def load(pred: Path, target: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The matched images stacked into two batches (each file one image, or an npy batch)."""
    names, preds, targets = [], [], []
    for name, pf, tf in pairs(pred, target):
        a, b = read_array(pf, single_channel=False), read_array(tf, single_channel=False)
        if a.shape != b.shape:
            raise InputError(f"{pf} {a.shape} and {tf} {b.shape} differ in shape")
        for file, array in ((pf, a), (tf, b)):
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise InputError(f"{file}: NaN or infinity")
        names.append(name)
        preds.append(a)
        targets.append(b)
    shapes = {a.shape for a in preds}
    if len(shapes) > 1:
        raise InputError(f"{pred}: images of different sizes {sorted(shapes)[:3]}",
                         "compare images of one size per call")
    batch = preds[0].ndim == 4 or (preds[0].ndim == 3 and preds[0].shape[-1] not in (1, 3, 4))
    stack = np.concatenate if batch else np.stack
    return names, stack(preds), stack(targets)
