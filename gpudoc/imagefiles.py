"""Reading one image or array file (png, jpg, tif, bmp, npy, npz) as stored, with errors that
name the file and what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpudoc.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ARRAY_SUFFIXES = (".npy", ".npz")
_SINGLE = ("1", "L", "I", "I;16", "F")
_TO_RGB = ("P", "RGBA", "LA", "CMYK", "YCbCr")


def read_array(path: Path, *, single_channel: bool) -> np.ndarray:
    """One image or array in its stored dtype. ``file.npz:NAME`` picks an array of an npz; an
    npz with several arrays needs it. Image files: with ``single_channel`` only grayscale modes
    are accepted (probability maps, masks); otherwise palette, alpha and CMYK images are read
    as RGB."""
    name, _, key = str(path).partition(".npz:")
    if key:
        name += ".npz"
    file = Path(name)
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(file, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(file, allow_pickle=False) as bundle:
                names = list(bundle.files)
                if key and key not in names:
                    raise InputError(f"{file}: no array {key!r} (it has {', '.join(names)})")
                if not key and len(names) != 1:
                    raise InputError(f"{file}: {len(names)} arrays ({', '.join(names)})", f"choose one as {file}:NAME")
                array = bundle[key or names[0]]
        elif suffix in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(file) as image:
                if single_channel and image.mode not in _SINGLE:
                    raise InputError(f"{file}: a {image.mode} image; a probability map or mask has one channel",
                                     "save a single-channel (grayscale) image")
                array = np.asarray(image.convert("RGB") if image.mode in _TO_RGB else image)
        else:
            raise InputError(f"{file}: unsupported file type {suffix or '(none)'}",
                             "use png, jpg, tif, bmp, npy or npz")
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"{file}: cannot read it ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{file}: {array.dtype} values are not numbers")
    return array
