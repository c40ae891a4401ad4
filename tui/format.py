"""Text helpers for the panels: bars, sizes, durations, NA.

Panels are built as Textual ``Content`` (no conversion from Rich text at draw time) with the
theme's semantic colours, so they read on dark and light themes alike.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.content import Content

from gpudoc.na import NotAvailable
from gpudoc.output import format_bytes, format_duration

NA_TEXT = "N/A"
MUTED = "dim"


def clean(text: str) -> str:
    """``text`` without control characters (text from the driver or the OS, drawn as is)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def na(value: Any, fmt: str = "{}") -> str:
    """``value`` formatted, or N/A when it is not available."""
    if isinstance(value, NotAvailable) or value is None:
        return NA_TEXT
    return fmt.format(value)


def size(value: Any) -> str:
    return NA_TEXT if isinstance(value, NotAvailable) or value is None else format_bytes(value)


def rate(value: Any) -> str:
    return NA_TEXT if isinstance(value, NotAvailable) or value is None else f"{format_bytes(value)}/s"


def duration(seconds: Any) -> str:
    return NA_TEXT if isinstance(seconds, NotAvailable) or seconds is None else format_duration(seconds)


def bar(percent: Any, width: int = 20) -> Content:
    """A horizontal bar coloured by load (green, yellow from 60%, red from 85%)."""
    if isinstance(percent, NotAvailable) or percent is None:
        return Content.styled("·" * width + f" {NA_TEXT:>4}", MUTED)
    value = max(0.0, min(100.0, float(percent)))
    filled = round(value / 100 * width)
    style = "$error" if value >= 85 else "$warning" if value >= 60 else "$success"
    return Content.assemble(
        ("█" * filled, style), ("░" * (width - filled), MUTED), f" {value:3.0f}%", strip_control_codes=False
    )


class History:
    """The last ``width`` percentages as a one-line block chart, oldest first, kept as its
    characters so that drawing it is a single join."""

    LEVELS = " ▁▂▃▄▅▆▇█"

    def __init__(self, width: int = 50) -> None:
        self._chars: deque[str] = deque(" " * width, maxlen=width)

    def append(self, percent: float) -> None:
        top = len(self.LEVELS) - 1
        self._chars.append(self.LEVELS[round(max(0.0, min(100.0, percent)) / 100 * top)])

    def __str__(self) -> str:
        return "".join(self._chars)
