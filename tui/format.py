"""Text helpers for the panels: bars, sizes, durations, NA."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from gpudoc.na import NotAvailable
from gpudoc.output import format_bytes, format_duration

NA_TEXT = "N/A"


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


def bar(percent: Any, width: int = 20) -> Text:
    """A horizontal bar coloured by load (green, yellow from 60%, red from 85%)."""
    if isinstance(percent, NotAvailable) or percent is None:
        return Text("·" * width + f" {NA_TEXT:>4}", style="dim")
    value = max(0.0, min(100.0, float(percent)))
    filled = round(value / 100 * width)
    style = "red" if value >= 85 else "yellow" if value >= 60 else "green"
    text = Text("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    text.append(f" {value:3.0f}%")
    return text


_LEVELS = " ▁▂▃▄▅▆▇█"


def history(values: Any, style: str, width: int = 50) -> Text:
    """The last ``width`` percentages as a one-line block chart, oldest first."""
    points = list(values)[-width:]
    chart = "".join(_LEVELS[round(max(0.0, min(100.0, v)) / 100 * (len(_LEVELS) - 1))] for v in points)
    return Text(chart.rjust(width, " "), style=style)
