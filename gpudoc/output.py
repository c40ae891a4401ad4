"""Output helpers shared by every command: JSON on stdout, one-line diagnostics on stderr;
and the cleaning of what other programs wrote to a terminal."""

from __future__ import annotations

import enum
import errno
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import IO, Any, NamedTuple, TextIO

from gpudoc.errors import InputError
from gpudoc.na import NotAvailable


_PLAIN = frozenset({str, int, bool})

# CSI (colours, cursor moves), OSC (titles, hyperlinks), two-character escapes, backspaces.
# The patterns here are compiled on first use (re caches them), not at every start.
_TERMINAL_CODES = r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])|\x08"


def strip_terminal_codes(text: str) -> str:
    """``text`` as a log reader wants it: without terminal control sequences and backspaces
    (carriage returns are left to the caller)."""
    return re.sub(_TERMINAL_CODES, "", text)
_FIELDS: dict[type, tuple[str, ...]] = {}


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, paths, tuples and ``NA`` as plain JSON values (``NA`` → null).

    Non-finite floats become null as well, so the output is always strict JSON.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind in _FIELDS:
        return {name: to_jsonable(getattr(value, name)) for name in _FIELDS[kind]}
    if isinstance(value, NotAvailable) or value is None:
        return None
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(kind, "__dataclass_fields__"):  # a dataclass instance (dataclasses.is_dataclass)
        import dataclasses

        _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
        return to_jsonable(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def format_bytes(n: float) -> str:
    """Binary units as nvidia-smi and nvitop show them: ``512 B``, ``1.5 KiB``, ``23.4 GiB``."""
    value, unit = float(n), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"


def printable(text: str) -> str:
    """``text`` as UTF-8 can hold it: each byte of a name that is not UTF-8 (which Python reads
    as a lone surrogate, e.g. ``os.listdir``'s ``'r\\udcff'``) written ``\\xff``, as
    ``os.fsencode`` shows that byte; any other lone surrogate as ``\\uNNNN``; the rest as is."""
    if text.isascii():
        return text
    return re.sub("[\ud800-\udfff]", _escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def emit_json(value: Any, stream: TextIO | None = None) -> None:
    """Write ``value`` as JSON and a newline to stdout (or ``stream``): indented for a
    person at a terminal, one compact line for a program (several times faster to encode).
    Always UTF-8: a string with lone surrogates (a file name that is not UTF-8) is written as
    :func:`printable` writes it."""
    import json

    out = stream or sys.stdout
    if out is None:
        raise InputError("stdout is closed: nowhere to print the report", "run with stdout open")
    indent = 2 if out.isatty() else None
    text = json.dumps(to_jsonable(value), indent=indent, allow_nan=False, ensure_ascii=False)
    if not text.isascii():  # (a surrogate can only be inside a string: its escape's backslash is escaped)
        text = re.sub("[\ud800-\udfff]", lambda m: _escaped(m).replace("\\", "\\\\"), text)
    out.write(text + "\n")
    out.flush()


_FD_LINK = r"^/(?:proc/(self|\d+)/fd|dev/fd)/(\d+)$"
_MAX_LINKS = 40


class OutputTarget(NamedTuple):
    """Where an output goes: ``stream`` (stdout, a device, a FIFO, an inherited descriptor) is
    written as it comes; otherwise ``path`` is the regular file (or new path) that a temporary
    file beside it replaces by rename — a symlink's final target, so the link survives."""

    path: Path
    stream: bool = False
    fd: int | None = None


def output_target(dest: Path | str) -> OutputTarget:
    """Resolve an output argument: ``-`` is stdout; symlinks are followed to the file they name;
    devices and FIFOs are streamed to; a directory, socket or block device is refused."""
    if str(dest) == "-":
        return OutputTarget(Path("-"), stream=True, fd=1)
    path = Path(os.path.abspath(dest))
    for _ in range(_MAX_LINKS):
        own = re.match(_FD_LINK, str(path))
        if own and own.group(1) in (None, "self", str(os.getpid())):
            return OutputTarget(path, stream=True, fd=int(own.group(2)))
        if own:
            return OutputTarget(path, stream=True)
        try:
            info = path.lstat()
        except FileNotFoundError:
            return OutputTarget(path)
        except NotADirectoryError:
            raise InputError(f"{dest}: a part of the path is not a directory", "name a file in a directory") from None
        if stat.S_ISLNK(info.st_mode):
            # Resolve the link's parent first, so a relative target is read where the link is.
            path = Path(os.path.abspath(Path(os.path.realpath(path.parent)) / os.readlink(path)))
            continue
        if stat.S_ISREG(info.st_mode):
            return OutputTarget(path)
        if stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode):
            return OutputTarget(path, stream=True)
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a socket or block device)"
        raise InputError(f"{dest}: {kind}", "name a file to write, or - for stdout")
    raise InputError(f"{dest}: too many levels of symbolic links", "name the file itself")


def is_stdout(dest: Path | str) -> bool:
    """Whether ``dest`` streams to this process's stdout (``-``, ``/dev/stdout``)."""
    return output_target(dest).fd == 1


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _identity(dest: str | Path) -> tuple[int, int] | None:
    """The (device, inode) of the regular file an output argument writes (``-``: stdout's,
    symlinks followed), or None for a new path, a device, a pipe, or a stdout without a file."""
    try:
        info = os.fstat(sys.stdout.fileno()) if str(dest) == "-" else os.stat(dest)
    except (OSError, ValueError, AttributeError):  # no such file, or a stdout that is not a descriptor
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else None


def refuse_inputs_as_outputs(outputs: Iterable[tuple[str, str | Path]], inputs: Iterable[str | Path],
                             file_of: Callable[[str | Path], str | Path] = str) -> None:
    """Stop before any work when an output (``(option, destination)``; ``-`` is stdout) is the
    same file as one of ``inputs`` (each read from ``file_of(input)``), after symlinks and hard
    links: writing it would destroy what is read."""
    wanted = {}
    for option, dest in outputs:
        identity = _identity(dest)
        if identity is not None:
            wanted.setdefault(identity, (option, dest))
    if not wanted:
        return
    for raw in inputs:
        identity = _identity(file_of(raw))
        if identity in wanted:
            option, dest = wanted[identity]
            where = f"{option} (stdout)" if str(dest) == "-" else f"{option} {dest}"
            raise InputError(f"{where}: the same file as the input {raw}; writing it would destroy what is read",
                             "write the output to another file")


def refuse_shared_outputs(outputs: list[tuple[str, str | Path]]) -> None:
    """Stop before any work when two outputs (``(option, destination)``) are one file, after
    symlinks and hard links: the last written would replace the other."""
    seen: dict[object, str] = {}
    for option, dest in outputs:
        target = output_target(dest)
        if target.stream:  # stdout twice is refused on its own; a device or FIFO takes both
            continue
        try:
            info = target.path.stat()
            key: object = (info.st_dev, info.st_ino)
        except FileNotFoundError:
            key = os.path.realpath(target.path)
        except OSError:
            continue  # refused with its own error when written
        where = f"{option} {dest}"
        if key in seen:
            raise InputError(f"{seen[key]} and {where} name the same file", "give each output its own file")
        seen[key] = where


def place(temp: Path, dest: Path) -> None:
    """Rename the finished ``temp`` onto ``dest`` (a path from ``output_target``) with the
    permissions a plain ``open(dest, "w")`` would have left: the existing file's mode and
    owner, or 0666 less the umask for a new file."""
    try:
        old = dest.stat()
    except FileNotFoundError:
        os.chmod(temp, 0o666 & ~_umask())
    else:
        os.chmod(temp, stat.S_IMODE(old.st_mode))
        if os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0):
            os.chown(temp, old.st_uid, old.st_gid)
    os.replace(temp, dest)


def staging_file(dest: Path) -> Path:
    """A new hidden, empty file beside ``dest`` (a path from ``output_target``) to write into
    and then ``place``."""
    import tempfile  # imported here: with shutil and random it costs ~3 ms at start-up

    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(handle)
    return Path(temp)


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _unwritable(dest: Path | str, exc: OSError) -> InputError:
    return InputError(f"{dest}: cannot write it ({exc.strerror or 'I/O error'})", "choose a place you can write to")


@contextmanager
def _stream_errors(dest: Path | str) -> Iterator[None]:
    """A stream that cannot take more (a full disk, /dev/full, an I/O error) is bad output; a
    reader that went away (``| head``) is left to the caller as BrokenPipeError."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL or exc.errno == errno.EIO:
            raise _unwritable(dest, exc) from None
        raise


@contextmanager
def atomic_file(dest: Path | str, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file that appears at ``dest`` whole or not at all: written to a hidden temporary file
    beside it, renamed into place when the block succeeds, removed when it fails. ``-``,
    devices and FIFOs are written directly; a symlink is written through (see ``output_target``).
    A place that cannot be written (no permission, a read-only or full disk) is bad input."""
    target = output_target(dest)
    text = "b" not in mode
    encoding, newline = ("utf-8", "") if text else (None, None)
    if target.fd == 1:  # through sys.stdout, so it stays in order with what else is printed
        if sys.stdout is None or sys.stdout.closed:
            raise InputError(f"{dest}: stdout is closed", "give -o a file, or run with stdout open")
        stdout = sys.stdout if text else sys.stdout.buffer
        with _stream_errors(dest):
            yield stdout
            stdout.flush()
        return
    if target.stream:
        try:
            if target.fd is not None:
                out = os.fdopen(os.dup(target.fd), "w" if text else "wb", encoding=encoding, newline=newline)
            else:
                out = open(target.path, "w" if text else "wb", encoding=encoding, newline=newline)  # noqa: SIM115
        except OSError as exc:
            raise _unwritable(dest, exc) from None
        with _stream_errors(dest), out:
            yield out
        return
    if not target.path.parent.is_dir():  # as a plain create: no directory is made on the way
        raise InputError(f"{dest}: no such directory {target.path.parent}", "create it first, or write elsewhere")
    try:
        temp = staging_file(target.path)
    except OSError as exc:
        raise _unwritable(dest, exc) from None
    try:
        with open(temp, mode, encoding=encoding, newline=newline) as out:
            yield out
        place(temp, target.path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if exc.errno in _FULL or exc.filename in (str(temp), str(target.path)):
            raise _unwritable(dest, exc) from None
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def format_duration(seconds: float) -> str:
    """``4m07s``, ``2h03m``, ``3d04h``: the two largest units."""
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def print_error(message: str) -> None:
    """``gpudoc: error: message`` on stderr."""
    print(f"gpudoc: error: {printable(message)}", file=sys.stderr, flush=True)


def write_all(stream: IO[bytes], data: bytes) -> None:
    """``data`` whole: a buffered writer can return a short count without raising (sys.stdout's,
    when the pipe's reader goes away mid-write); the next write then raises BrokenPipeError."""
    view = memoryview(data)
    while view:
        view = view[stream.write(view) or 0:]
