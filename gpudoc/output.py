"""Output helpers shared by every command: JSON on stdout, one-line diagnostics on stderr;
and the cleaning of what other programs wrote to a terminal."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import IO, Any, TextIO

from gpudoc.na import NotAvailable


_PLAIN = frozenset({str, int, bool})

# CSI (colours, cursor moves), OSC (titles, hyperlinks), two-character escapes, backspaces.
_TERMINAL_CODES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])|\x08")


def strip_terminal_codes(text: str) -> str:
    """``text`` as a log reader wants it: without terminal control sequences and backspaces
    (carriage returns are left to the caller)."""
    return _TERMINAL_CODES.sub("", text)
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
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
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


def emit_json(value: Any, stream: TextIO | None = None) -> None:
    """Write ``value`` as JSON and a newline to stdout (or ``stream``): indented for a
    person at a terminal, one compact line for a program (several times faster to encode)."""
    out = stream or sys.stdout
    indent = 2 if out.isatty() else None
    out.write(json.dumps(to_jsonable(value), indent=indent, allow_nan=False, ensure_ascii=False) + "\n")
    out.flush()


@contextmanager
def atomic_file(dest: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file that appears at ``dest`` whole or not at all: written to a hidden temporary file
    beside it, renamed into place when the block succeeds, removed when it fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        text = "b" not in mode
        with os.fdopen(handle, mode, encoding="utf-8" if text else None, newline="" if text else None) as out:
            yield out
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
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
    print(f"gpudoc: error: {message}", file=sys.stderr, flush=True)


