"""Reading one image or array file (png, jpg, tif, bmp, npy, npz) as stored, with errors that
name the file and what is wrong with it — never a library's own message; and refusing an
output that is one of a command's inputs."""

from __future__ import annotations

import math
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np

from gpudoc.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ARRAY_SUFFIXES = (".npy", ".npz")
_SINGLE = ("1", "L", "I", "I;16", "F")
_TO_RGB = ("P", "RGBA", "LA", "CMYK", "YCbCr")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_KINDS = ((_NPY_MAGIC, "a .npy array"), (b"PK\x03\x04", "a zip archive (.npz)"), (b"\x89PNG", "a PNG image"),
          (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
          (b"\xff\xd8", "a JPEG image"), (b"BM", "a BMP image"))
_NUMERIC = "biuf"
_SAVE_NUMBERS = "save a real-valued array (bool, int, uint or float) with np.save"


def _looks_like(head: bytes) -> str:
    """What the first bytes of a file suggest it is, for an error message."""
    for magic, kind in _KINDS:
        if head.startswith(magic):
            return kind
    if all(32 <= byte < 127 or byte in b"\t\n\r" for byte in head):
        return "text"
    return "binary data of another kind"


def _head(file: Path, size: int = 16) -> bytes:
    with open(file, "rb") as handle:
        return handle.read(size)


def _check_header(fp: IO[bytes], size: int, label: str) -> None:
    """Check an .npy stream's header: a numeric dtype, and as many data bytes as its shape
    needs (``size`` is the stream's length)."""
    try:
        version = np.lib.format.read_magic(fp)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fp)
    except (ValueError, EOFError, OSError, SyntaxError):
        raise InputError(f"{label}: a damaged or cut-off .npy header", "write the array again with np.save") from None
    if dtype.hasobject:
        raise InputError(f"{label}: holds Python objects (an object array), not numbers", _SAVE_NUMBERS)
    if dtype.kind not in _NUMERIC:
        raise InputError(f"{label}: holds {dtype} values, not real numbers", _SAVE_NUMBERS)
    need = math.prod(shape) * dtype.itemsize
    have = size - fp.tell()
    if have < need:
        dims = "×".join(map(str, shape)) or "scalar"
        raise InputError(f"{label}: cut off: a {dims} {dtype} array needs {need} bytes of data, the file has {have}",
                         "write the array again (was the file still being written?)")


def _read_npy(file: Path) -> np.ndarray:
    head = _head(file)
    if not head.startswith(_NPY_MAGIC):
        raise InputError(f"{file}: not a numpy .npy array (it looks like {_looks_like(head)})", _SAVE_NUMBERS)
    with open(file, "rb") as handle:
        _check_header(handle, file.stat().st_size, str(file))
    try:
        return np.load(file, allow_pickle=False)  # type: ignore[no-any-return]
    except (ValueError, EOFError):
        raise InputError(f"{file}: a damaged .npy array", "write the array again with np.save") from None


def _read_npz(file: Path, key: str) -> np.ndarray:
    head = _head(file)
    if not head.startswith(_ZIP_MAGIC):
        raise InputError(f"{file}: not a numpy .npz archive (it looks like {_looks_like(head)})",
                         "save the arrays with np.savez")
    try:
        with zipfile.ZipFile(file) as bundle:
            members = {info.filename.removesuffix(".npy"): info for info in bundle.infolist()}
            names = list(members)
            if not names:
                raise InputError(f"{file}: an .npz archive that holds no arrays", "save the arrays with np.savez")
            if key and key not in members:
                raise InputError(f"{file}:{key}: no such array (it has {', '.join(names)})",
                                 f"choose one as {file}:NAME")
            if not key and len(names) != 1:
                raise InputError(f"{file}: {len(names)} arrays ({', '.join(names)})", f"choose one as {file}:NAME")
            info = members[key or names[0]]
            label = f"{file}:{key or names[0]}"
            with bundle.open(info) as member:
                _check_header(member, info.file_size, label)
            with bundle.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False)  # type: ignore[no-any-return]
    except InputError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError):
        raise InputError(f"{file}: a damaged or cut-off .npz archive", "write the arrays again with np.savez") from None


def _read_image(file: Path, single_channel: bool, frames: bool) -> np.ndarray:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on damaged metadata gpudoc does not use
        try:
            image = Image.open(file)
        except Image.DecompressionBombError:
            raise InputError(f"{file}: too many pixels to decode safely", "split the image into tiles") from None
        except (PermissionError, FileNotFoundError):
            raise
        except Exception:  # not an image, or a header any decoder fails on: the file's fault
            kind = _looks_like(_head(file))
            if kind.endswith(" image"):
                raise InputError(f"{file}: {kind}, damaged or cut off (its header cannot be read)",
                                 "write the image again") from None
            raise InputError(f"{file}: not an image (it looks like {kind})",
                             "give a png, jpg, tif or bmp file") from None
        with image:
            if single_channel and image.mode not in _SINGLE:
                raise InputError(f"{file}: a {image.mode} image; a probability map or mask has one channel",
                                 "save a single-channel (grayscale) image")
            count = getattr(image, "n_frames", 1) if frames else 1
            pages = []
            for index in range(count):
                try:
                    image.seek(index)
                    pages.append(np.asarray(image.convert("RGB") if image.mode in _TO_RGB else image))
                except Exception:  # any decoder failure is the file's damage
                    raise InputError(f"{file}: the image data is damaged or cut off", "write the image again") from None
                if pages[-1].shape != pages[0].shape or pages[-1].dtype != pages[0].dtype:
                    raise InputError(f"{file}: page {index} is {pages[-1].shape} {pages[-1].dtype}, page 0 "
                                     f"{pages[0].shape} {pages[0].dtype}", "give pages of one size and mode")
    return pages[0] if count == 1 else np.stack(pages)


def read_array(path: Path, *, single_channel: bool, frames: bool = False) -> np.ndarray:
    """One image or array in its stored dtype. ``file.npz:NAME`` picks an array of an npz; an
    npz with several arrays needs it. Image files: with ``single_channel`` only grayscale modes
    are accepted (probability maps, masks); otherwise palette, alpha and CMYK images are read
    as RGB. With ``frames`` every page of a multi-page image (a TIFF stack) is read, as an
    N, H, W array; else the first page only."""
    name, sep, key = str(path).partition(".npz:")
    if sep:
        name += ".npz"
    file = Path(name)
    suffix = file.suffix.lower()
    if suffix not in IMAGE_SUFFIXES + ARRAY_SUFFIXES:
        raise InputError(f"{file}: unsupported file type {suffix or '(none)'}", "use png, jpg, tif, bmp, npy or npz")
    try:
        if file.is_dir():
            raise InputError(f"{file}: a directory, not a {suffix[1:]} file", "name the file itself")
        if not file.exists():
            raise InputError(f"{file}: no such file")
        if file.stat().st_size == 0:
            raise InputError(f"{file}: an empty file (0 bytes)", "write it again")
        if suffix == ".npy":
            return _read_npy(file)
        if suffix == ".npz":
            return _read_npz(file, key)
        return _read_image(file, single_channel, frames)
    except PermissionError:
        raise InputError(f"{file}: permission denied", "make it readable") from None
    except (IsADirectoryError, NotADirectoryError, FileNotFoundError):
        raise InputError(f"{file}: no such file") from None
    except OSError as exc:
        raise InputError(f"{file}: cannot read it ({exc.strerror or 'I/O error'})") from None


def refuse_inputs_as_outputs(outputs: Iterable[tuple[str, str | Path]], inputs: Iterable[str | Path]) -> None:
    """:func:`gpudoc.output.refuse_inputs_as_outputs` for image inputs, where ``file.npz:NAME``
    names its archive."""
    from gpudoc.output import refuse_inputs_as_outputs as refuse

    def archive(raw: str | Path) -> str:
        name, sep, _ = str(raw).partition(".npz:")
        return name + ".npz" if sep else name

    refuse(outputs, inputs, file_of=archive)
