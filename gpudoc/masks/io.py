"""Reading probability maps and masks (png, tif, npy, npz; files or directories) as stacks of
images, checking their scale, and writing masks.

An input file holds one image or a stack of them. Image files: one image (H, W), or one per
page of a multi-page TIFF. Arrays (.npy, .npz): after a trailing axis of length 1 is dropped
((H, W, 1), (N, H, W, 1)), 2-D is one image, 3-D a stack (N, H, W), and (N, 1, H, W)
(channels first) a stack as well; a 1-D array is one row of values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpudoc.errors import InputError
from gpudoc.imagefiles import ARRAY_SUFFIXES, read_array
from gpudoc.masks.rules import Scale, as_scale, infer_scale
from gpudoc.output import atomic_file

SUFFIXES = (".png", ".tif", ".tiff", *ARRAY_SUFFIXES)


@dataclass(frozen=True)
class Stack:
    """One input file: ``values`` as stored and the same values as ``images`` (N, …), a view;
    ``stacked`` when the file holds a stack rather than one image."""

    source: str
    values: np.ndarray
    images: np.ndarray
    stacked: bool

    @property
    def count(self) -> int:
        """How many images the file holds."""
        return int(self.images.shape[0])

    @property
    def stem(self) -> str:
        """The file name without its suffix (and without an npz's ``:NAME``)."""
        return Path(self.source.partition(".npz:")[0]).stem

    def label(self, index: int) -> str:
        """How an error names image ``index``: the file, and the index in a stack."""
        return f"{self.source} image {index}" if self.stacked else self.source


def _file_part(raw: str) -> Path:
    name, sep, _ = raw.partition(".npz:")
    return Path(name + ".npz") if sep else Path(raw)


def expand(paths: list[str]) -> list[str]:
    """Files as given, and the supported files of directories (sorted by name)."""
    found: list[str] = []
    for raw in paths:
        path = _file_part(raw)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
            if not inside:
                raise InputError(f"{path}: no png, tif, npy or npz file in this directory")
            found.extend(str(p) for p in inside)
        elif not path.exists():
            raise InputError(f"{path}: no such file or directory")
        else:
            found.append(raw)
    return found


def as_stack(values: np.ndarray, source: str) -> Stack:
    """``values`` read from ``source`` as one image or a stack (the rules of this module)."""
    shape = values.shape
    if _file_part(source).suffix.lower() not in ARRAY_SUFFIXES:
        return Stack(source, values, values if values.ndim == 3 else values[None], values.ndim == 3)
    images = values
    if images.ndim >= 3 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    dims = "×".join(map(str, shape))
    if images.ndim == 0:
        raise InputError(f"{source}: a single number, not an image", "save an H×W image or an N×H×W stack")
    if images.size == 0:
        raise InputError(f"{source}: shape {dims} holds no values", "save a non-empty array")
    if images.ndim > 3:
        raise InputError(f"{source}: shape {dims} is neither an image (H×W) nor a stack (N×H×W, N×H×W×1, N×1×H×W)",
                         "reshape it to N×H×W")
    stacked = images.ndim == 3
    return Stack(source, values, images if stacked else images[None], stacked)


def read_stack(source: str) -> Stack:
    """The images of one file, checked for NaN."""
    stack = as_stack(read_array(Path(source), single_channel=True, frames=True), source)
    if stack.values.dtype.kind == "f":
        bad = np.isnan(stack.images.reshape(stack.count, -1)).sum(axis=1)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise InputError(f"{stack.label(index)}: {int(bad[index])} NaN value(s)",
                             "replace NaNs before thresholding (a NaN is neither foreground nor background)")
    return stack


def _infer(stack: Stack) -> Scale:
    try:
        return infer_scale(stack.values)
    except InputError as exc:
        raise InputError(f"{stack.source}: {exc.message}", exc.fix) from None


def resolve_scales(stacks: list[Stack], declared: str | None) -> tuple[list[Scale], str | None]:
    """The scale of each stack, and one warning for the whole command when inferred. A
    declared scale is checked image by image: values outside it name the file and image."""
    if declared is None:
        found = [_infer(s) for s in stacks]
        counts = Counter(found)
        if len(counts) == 1:
            which = f"{found[0].value!r}" + (f" for all {len(found)} files" if len(found) > 1 else "")
        else:
            which = ", ".join(
                f"{scale.value!r} for {n} file{'s' if n > 1 else ''} "
                f"({next(s.source for s, f in zip(stacks, found) if f is scale)}{', …' if n > 1 else ''})"
                for scale, n in counts.items())
        return found, (f"scale not declared; inferred {which} from the dtype and value range "
                       "(declare it with --scale to silence this)")
    scale = as_scale(declared)
    if scale is not Scale.LOGITS:
        top = 1 if scale is Scale.UNIT else 255
        for stack in stacks:
            flat = stack.images.reshape(stack.count, -1)
            low, high = flat.min(axis=1), flat.max(axis=1)
            outside = np.flatnonzero((low < 0) | (high > top))
            if outside.size:
                index = int(outside[0])
                raise InputError(f"{stack.label(index)}: values span [{low[index]:g}, {high[index]:g}], outside the "
                                 f"declared scale [0, {top}]",
                                 "declare the scale the data is in (--scale 1|255|logits)")
    return [scale] * len(stacks), None


def as_probabilities(stack: Stack, scale: Scale) -> np.ndarray:
    """The stack's images as float64 probabilities."""
    p = stack.images.astype(np.float64)
    if scale is Scale.BYTE:
        return p / 255
    if scale is Scale.LOGITS:
        return 1 / (1 + np.exp(-p))
    return p


def read_truth(source: str) -> Stack:
    """A ground-truth mask or stack of masks as bool: 0/1 or 0/255 values only (per file)."""
    stack = read_stack(source)
    present = set(np.unique(stack.values).tolist())
    for allowed in ({0, 1}, {0, 255}):
        if present <= allowed:
            top = max(allowed)
            return Stack(source, stack.values == top, stack.images == top, stack.stacked)
    flat = stack.images.reshape(stack.count, -1)
    for index in range(stack.count):
        values = set(np.unique(flat[index]).tolist())
        if not (values <= {0, 1} or values <= {0, 255}):
            odd = sorted(values - {0, 1, 255}) or sorted(values)
            shown = ", ".join(f"{v:g}" for v in odd[:5])
            raise InputError(f"{stack.label(index)}: a mask holds 0/1 or 0/255 only; found values such as {shown}",
                             "give binary masks (0/1 or 0/255) as --truth")
    raise InputError(f"{source}: some images hold 0/1 and others 0/255", "give one kind of mask per file")


def write_mask(mask: np.ndarray, dest: Path | str, fmt: str) -> None:
    """A 0/1 mask as a 0/255 PNG (``fmt`` png, one 2-D image) or a 0/1 uint8 .npy (any
    shape), through ``atomic_file`` (a temporary file renamed into place, or a stream)."""
    with atomic_file(dest) as out:
        if fmt == "npy":
            np.save(out, mask.astype(np.uint8))
        else:
            from PIL import Image

            Image.fromarray(mask.astype(np.uint8) * 255).save(out, format="PNG")


def pair_files(probs_paths: list[str], truth_paths: list[str]) -> tuple[list[tuple[str, str]], str | None]:
    """(probabilities, truth) files, and a warning naming truth files left over: by position
    when each side is one file, else by name."""
    probs_files, truth_files = expand(probs_paths), expand(truth_paths)
    one_file = len(probs_paths) == len(truth_paths) == 1 and len(probs_files) == len(truth_files) == 1
    if one_file and not Path(probs_paths[0]).is_dir() and not Path(truth_paths[0]).is_dir():
        return [(probs_files[0], truth_files[0])], None
    named: list[dict[str, str]] = []
    for files, side in ((probs_files, "--probs"), (truth_files, "--truth")):
        by_stem: dict[str, str] = {}
        for f in files:
            stem = Path(f.partition(".npz:")[0]).stem
            if stem in by_stem:
                raise InputError(f"{side}: {by_stem[stem]} and {f} have the same name",
                                 "files are matched by name: keep one per name")
            by_stem[stem] = f
        named.append(by_stem)
    probs, truth = named
    missing = [f for stem, f in probs.items() if stem not in truth]
    if missing:
        raise InputError(f"{missing[0]}: no truth mask of the same name ({len(missing)} of {len(probs)} unmatched)",
                         "give truth files with the same names, or one file each for --probs and --truth")
    unused = [f for stem, f in truth.items() if stem not in probs]
    warning = None
    if unused:
        warning = (f"{len(unused)} truth file(s) have no probability map of the same name "
                   f"({', '.join(unused[:3])}{', …' if len(unused) > 3 else ''}); they are not scored")
    return [(f, truth[stem]) for stem, f in probs.items()], warning


def _dims(images: np.ndarray) -> str:
    return "×".join(map(str, images.shape[1:]))


def load_pairs(pairs: list[tuple[str, str]], scale: str | None) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Every pair's probabilities (N, H, W, float64) and truth (bool), each image checked
    against its truth, and the scale warning when ``scale`` (1, 255, logits) is inferred."""
    stacks = [read_stack(p) for p, _ in pairs]
    scales, warning = resolve_scales(stacks, scale)
    maps, masks = [], []
    for stack, found, (_, truth_file) in zip(stacks, scales, pairs):
        truth = read_truth(truth_file)
        if truth.count != stack.count:
            raise InputError(f"{stack.source}: {stack.count} image(s) but its truth {truth_file} has {truth.count}",
                             "give one truth mask per probability map, in the same order")
        if truth.images.shape != stack.images.shape:
            raise InputError(f"{stack.label(0)} is {_dims(stack.images)} but its truth {truth.label(0)} is "
                             f"{_dims(truth.images)}", "give truth masks of the maps' size")
        if maps and stack.images.shape[1:] != maps[0].shape[1:]:
            raise InputError(f"{stack.source} has {_dims(stack.images)} images but {stacks[0].source} "
                             f"{_dims(maps[0])}", "sweep images of one size per call")
        maps.append(as_probabilities(stack, found))
        masks.append(truth.images)
    return np.concatenate(maps), np.concatenate(masks), warning
