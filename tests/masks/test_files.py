"""gpudoc.imagefiles.read_array on damaged and mislabelled files: one line naming the file and
what is wrong, in gpudoc's words — never numpy's, Pillow's or zipfile's own message."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gpudoc.cli import cli
from gpudoc.errors import InputError
from gpudoc.imagefiles import read_array

LIBRARY_WORDS = ("pickle", "allow_pickle", "Failed to read", "cannot identify", "image file is truncated",
                 "BytesIO", "Errno", "zip file", "Traceback")


def _png(values: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(values).save(out, format="PNG")
    return out.getvalue()


def _npy(values: np.ndarray, **kwargs: object) -> bytes:
    out = io.BytesIO()
    np.save(out, values, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def _zip(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        bundle.writestr(name, data)
    return out.getvalue()


GRID = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
CASES = {
    "text.npy": (b"0.1 0.2 0.3\n0.4 0.5 0.6\n", "not a numpy .npy array (it looks like text)"),
    "objects.npy": (_npy(np.array([None, 1], dtype=object), allow_pickle=True), "Python objects"),
    "complex.npy": (_npy(np.array([1 + 2j])), "complex128 values, not real numbers"),
    "strings.npy": (_npy(np.array(["a", "b"])), "<U1 values, not real numbers"),
    "record.npy": (_npy(np.zeros(2, dtype=[("a", "f4")])), "not real numbers"),
    "cut.npy": (_npy(np.zeros((4, 32, 32), np.float32))[:300], "cut off: a 4×32×32 float32 array needs 16384 bytes"),
    "header.npy": (_npy(np.zeros(3))[:20], "damaged or cut-off .npy header"),
    "empty.npy": (b"", "an empty file (0 bytes)"),
    "png-named.npy": (_png(GRID), "not a numpy .npy array (it looks like a PNG image)"),
    "text.npz": (b"a,b\n1,2\n", "not a numpy .npz archive (it looks like text)"),
    "cut.npz": (_npz(a=np.zeros((8, 8)))[:-40], "a damaged or cut-off .npz archive"),
    "member.npz": (_zip("a.npy", b"hello"), "member.npz:a: a damaged or cut-off .npy header"),
    "objects.npz": (_zip("a.npy", _npy(np.array([None], dtype=object), allow_pickle=True)), "Python objects"),
    "none.npz": (_npz(), "holds no arrays"),
    "empty.png": (b"", "an empty file (0 bytes)"),
    "cut.png": (_png(GRID)[:100], "the image data is damaged or cut off"),
    "header.png": (b"\x89PNG\r\n\x1a\n garbage", "a PNG image, damaged or cut off"),
    "text.png": (b"not an image at all\n", "not an image (it looks like text)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_damaged_files_are_named_in_gpudocs_words(tmp_path: Path, name: str) -> None:
    data, message = CASES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError) as caught:
        read_array(path, single_channel=True)
    text = str(caught.value)
    assert text.startswith(f"{path}") and message in text, text
    assert not any(word in text for word in LIBRARY_WORDS), text
    result = CliRunner().invoke(cli, ["mask", "audit", str(path), "--scale", "1"])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_directory_or_missing_file_given_to_the_reader(tmp_path: Path) -> None:
    (tmp_path / "x.png").mkdir()
    with pytest.raises(InputError, match=r"x\.png: a directory, not a png file"):
        read_array(tmp_path / "x.png", single_channel=True)
    with pytest.raises(InputError, match=r"y\.npy: no such file"):
        read_array(tmp_path / "y.npy", single_channel=True)
    with pytest.raises(InputError, match=r"unsupported file type \.txt"):
        read_array(tmp_path / "z.txt", single_channel=True)


def test_good_files_still_read_as_stored(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", values)
    np.savez(tmp_path / "b.npz", probs=values, other=values[:1])
    (tmp_path / "c.png").write_bytes(_png(GRID))
    assert np.array_equal(read_array(tmp_path / "a.npy", single_channel=True), values)
    assert np.array_equal(read_array(Path(f"{tmp_path / 'b.npz'}:probs"), single_channel=True), values)
    assert np.array_equal(read_array(tmp_path / "c.png", single_channel=True), GRID)
    assert read_array(tmp_path / "c.png", single_channel=False).dtype == np.uint8


def test_a_multi_page_tiff_is_a_stack_only_when_asked(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((4, 5), v, np.float32), mode="F") for v in (0.1, 0.6, 0.9)]
    pages[0].save(tmp_path / "s.tif", save_all=True, append_images=pages[1:])
    stack = read_array(tmp_path / "s.tif", single_channel=True, frames=True)
    assert stack.shape == (3, 4, 5) and stack[:, 0, 0].tolist() == pytest.approx([0.1, 0.6, 0.9])
    assert read_array(tmp_path / "s.tif", single_channel=True).shape == (4, 5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".npy", ".npz", ".png", ".tif", ".bmp", ".jpg"]),
       prefix=st.sampled_from([b"", b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"\x89PNG\r\n\x1a\n", b"II*\x00"]))
def test_any_bytes_read_or_fail_with_an_input_error(tmp_path: Path, data: bytes, suffix: str, prefix: bytes) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(prefix + data)
    try:
        read_array(path, single_channel=False, frames=True)
    except InputError as exc:
        assert str(exc).startswith(str(path)) and not any(word in str(exc) for word in LIBRARY_WORDS), str(exc)
