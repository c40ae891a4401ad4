"""Reading probability maps and masks (png, tif, npy, npz; files or directories) and
writing masks atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpudoc.errors import InputError
from gpudoc.imagefiles import ARRAY_SUFFIXES, read_array
from gpudoc.output import atomic_file

SUFFIXES = (".png", ".tif", ".tiff", *ARRAY_SUFFIXES)


def expand(paths: list[str]) -> list[Path]:
    """Files as given, and the supported files of directories (sorted by name)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw.split(":", 1)[0] if ".npz:" in raw else raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
            if not inside:
                raise InputError(f"{path}: no png, tif, npy or npz file in this directory")
            found.extend(inside)
        elif not path.exists():
            raise InputError(f"{path}: no such file or directory")
        else:
            found.append(Path(raw))
    return found


def read_truth(path: Path) -> np.ndarray:
    """A ground-truth mask as bool: 0/1 or 0/255 values only."""
    values = read_array(path, single_channel=True)
    present = np.unique(values)
    if set(present.tolist()) <= {0, 1}:
        return values.astype(bool)
    if set(present.tolist()) <= {0, 255}:
        return values == 255
    raise InputError(f"{path}: a mask holds 0/1 or 0/255 only; found values such as {present[:5].tolist()}")


def write_mask(mask: np.ndarray, dest: Path, *, force: bool = False) -> None:
    """A 0/1 mask as a 0/255 PNG or a 0/1 uint8 .npy, written to a temporary file and
    renamed into place; an existing file is replaced only with ``force``."""
    if dest.exists() and not force:
        raise InputError(f"{dest}: exists", "pass --force to replace it")
    with atomic_file(dest) as out:
        if dest.suffix.lower() == ".npy":
            np.save(out, mask.astype(np.uint8))
        else:
            from PIL import Image

            Image.fromarray(mask.astype(np.uint8) * 255).save(out, format="PNG")
