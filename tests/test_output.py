"""Where gpudoc's outputs go: regular files replaced atomically, links written through,
streams streamed, anything else refused — with the permissions a plain create gives."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpudoc.errors import InputError
from gpudoc.output import atomic_file, is_stdout, output_target


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_symlinked_output_keeps_its_link_and_the_target_gets_the_data(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to("data/real.csv")  # relative, resolved where the link is
    with atomic_file(link, "w") as out:
        out.write("new\n")
    assert link.is_symlink()
    assert real.read_text() == "new\n"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["real.csv"]  # no temp left


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "made.csv")
    with atomic_file(link, "w") as out:
        out.write("x")
    assert link.is_symlink() and (tmp_path / "made.csv").read_text() == "x"


def test_a_link_loop_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(InputError, match="symbolic links"):
        output_target(tmp_path / "a")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_a_new_file_gets_0666_less_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_file(tmp_path / "new.csv", "w") as out:
            out.write("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new.csv") == 0o666 & ~umask


def test_a_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    dest = tmp_path / "kept.csv"
    dest.write_text("old")
    dest.chmod(0o640)
    with atomic_file(dest, "w") as out:
        out.write("new")
    assert _mode(dest) == 0o640 and dest.read_text() == "new"


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "kept.csv"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(dest, "w") as out:
        out.write("half")
        raise RuntimeError("boom")
    assert dest.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.csv"]


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a directory"):
        output_target(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        output_target(tmp_path / "file" / "x.csv")


def test_a_fifo_is_streamed_to(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with atomic_file(fifo, "w") as out:
        out.write("streamed\n")
    reader.join(10)
    assert got == [b"streamed\n"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still the FIFO, not a file put in its place


def test_dev_null_and_stdout_are_streams() -> None:
    assert output_target("/dev/null").stream
    assert output_target("-").fd == 1
    assert is_stdout("-") and is_stdout("/dev/stdout") and not is_stdout("/dev/null")


def test_dev_stdout_is_written_through_the_descriptor_and_stays_a_link(tmp_path: Path) -> None:
    """The bug: a --force export to /dev/stdout replaced the system's /dev/stdout link."""
    before = os.readlink("/dev/stdout")
    sink = tmp_path / "captured.txt"
    code = (
        "import sys\nfrom gpudoc.output import atomic_file\n"
        "print('before', flush=True)\n"
        "with atomic_file('/dev/stdout', 'w') as out: out.write('table\\n')\n"
        "print('after')\n"
    )
    with open(sink, "w") as handle:
        subprocess.run([sys.executable, "-c", code], stdout=handle, check=True)
    assert sink.read_text() == "before\ntable\nafter\n"  # one stream, in order, nothing truncated
    assert os.readlink("/dev/stdout") == before


def test_a_place_that_cannot_be_written_is_bad_input(tmp_path: Path) -> None:
    """Was exit 70 for every command: an OSError from creating the temporary file."""
    with pytest.raises(InputError, match="cannot write it"), atomic_file("/proc/version", "w") as out:
        out.write("x")
    with pytest.raises(InputError, match="cannot write it"), atomic_file("/proc/gpudoc-new.csv", "w") as out:
        out.write("x")


def test_a_missing_directory_is_not_made(tmp_path: Path) -> None:
    """As a plain create: '-o /nonexistent/x.json' used to create /nonexistent."""
    with pytest.raises(InputError, match="no such directory"), atomic_file(tmp_path / "no" / "x.json", "w"):
        pass
    assert not (tmp_path / "no").exists()


def test_write_all_writes_what_a_short_write_left() -> None:
    import io

    from gpudoc.output import write_all

    class Short(io.RawIOBase):
        """A writer that takes at most 7 bytes a call (as a pipe's writer can)."""

        def __init__(self) -> None:
            self.got = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:  # type: ignore[no-untyped-def,override]
            self.got += bytes(data[:7])
            return min(7, len(data))

    out = Short()
    write_all(out, b"0123456789" * 5)
    assert bytes(out.got) == b"0123456789" * 5
