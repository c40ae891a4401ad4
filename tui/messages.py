"""Messages the collector thread posts to the app; the thread never touches widgets."""

from __future__ import annotations

from textual.message import Message

from gpudoc.monitor import MonitorSample


class Sampled(Message):
    """A fresh sample of GPUs, host and processes."""

    def __init__(self, sample: MonitorSample) -> None:
        super().__init__()
        self.sample = sample


class SampleFailed(Message):
    """The sampler itself failed (a bug or an unexpected OS error); the app keeps running."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ActionFinished(Message):
    """A signal or reap the user confirmed has finished; ``summary`` says what happened."""

    def __init__(self, summary: str, ok: bool) -> None:
        super().__init__()
        self.summary = summary
        self.ok = ok
