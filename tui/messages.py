"""Messages the collector thread posts to the app; the thread never touches widgets."""

from __future__ import annotations

from textual.message import Message

from gpudoc.monitor import MonitorSample
from gpudoc.runwatch import Check, Point
from gpudoc.train import RunStatus


class Sampled(Message):
    """A fresh sample of GPUs, host and processes; ``run_status``: the run's, read just before
    the sample (its rows are then of the run as that status says: a row of a run that
    ended after the sample is not one of its leftovers)."""

    def __init__(self, sample: MonitorSample, run_status: RunStatus | None = None) -> None:
        super().__init__()
        self.sample = sample
        self.run_status = run_status


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


class Watched(Message):
    """What one look at the run's scalars found: new values, new checks, where the values
    come from now, and whether the values parsed from the output are superseded (event
    files were found)."""

    def __init__(self, points: list[Point], checks: list[Check], source: str, from_output: bool) -> None:
        super().__init__()
        self.points = points
        self.checks = checks
        self.source = source
        self.from_output = from_output


class WatchFailed(Message):
    """Reading the run's scalars failed (a bug or an unexpected OS error); the app keeps running."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error
