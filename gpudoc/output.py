"""Output helpers shared by every command: JSON on stdout, one-line diagnostics on stderr."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from pathlib import PurePath
from typing import Any, TextIO

from gpudoc.na import NotAvailable


_PLAIN = frozenset({str, int, bool})
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


def print_error(message: str) -> None:
    """``gpudoc: error: message`` on stderr."""
    print(f"gpudoc: error: {message}", file=sys.stderr, flush=True)


