"""Lossless TensorBoard event files: records with verified CRCs, runs, info and trim."""

from gpudoc.events.discover import Run, discover
from gpudoc.events.info import RunInfo, run_info
from gpudoc.events.model import Kind, peek
from gpudoc.events.records import CorruptRecord, ReadState, RecordReader, RecordWriter, frame, masked_crc
from gpudoc.events.trim import TrimReport, TrimSpec, parse_steps, trim

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
