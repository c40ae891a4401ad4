"""Lossless TensorBoard event files: records with verified CRCs, runs, info and trim."""

from typing import Any

from gpudoc.events.discover import Run, discover
from gpudoc.events.model import Kind, peek
from gpudoc.events.records import CorruptRecord, ReadState, RecordReader, RecordWriter, frame, masked_crc
from gpudoc.events.trim import TrimReport, TrimSpec, parse_steps, trim


def __getattr__(name: str) -> Any:
    """``RunInfo`` and ``run_info``, imported on first use (``events trim`` starts without them)."""
    if name in ("RunInfo", "run_info"):
        from gpudoc.events import info

        return getattr(info, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CorruptRecord",
    "Kind",
    "ReadState",
    "RecordReader",
    "RecordWriter",
    "Run",
    "RunInfo",
    "TrimReport",
    "TrimSpec",
    "discover",
    "frame",
    "masked_crc",
    "parse_steps",
    "peek",
    "run_info",
    "trim",
]
