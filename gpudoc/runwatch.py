"""The run view: a supervised run's scalars and the checks on them as values arrive.

This layer composes the modules, which do not know each other: where the run's event files
are (its processes' open descriptors, as reap's scan reads them, or files that appear under its
working directory), tailing them with the events readers' resumable state (only new bytes are
read; an incomplete last record waits; damage is reported once), values parsed from its output
when it writes no event files, the metric-scale rules of ``gpudoc.metrics`` on what it logs, and
the run's own checks: non-finite values, loss spikes, steps that go backwards or repeat, stalls.
:class:`Watch` serves ``gpudoc run``; it keeps no screen state, so the TUI's run pane can use it too.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import shlex
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpudoc.metrics.lint import RULES as METRIC_RULES
from gpudoc.metrics.lint import Finding, check_record
from gpudoc.metrics.logs import Record, Value, canonical, parse_number
from gpudoc.metrics.report import Report, Subject, github_line
from gpudoc.output import format_bytes, format_duration
from gpudoc.reap.classify import HolderReport, Verdict
from gpudoc.reap.end import Outcome, end_processes
from gpudoc.reap.proc import ProcStat, read_cmdline, read_link
from gpudoc.reap.scan import scan

if TYPE_CHECKING:
    from gpudoc.gpu.backend import GpuBackend
    from gpudoc.gpu.model import GpuSnapshot
    from gpudoc.events.model import TagPlugins
    from gpudoc.events.records import RecordReader
    from gpudoc.oom.plan import Fit, Plan, Progress
    from gpudoc.train import RunStatus

# The run's own checks (metric-scale rules keep the ids of ``gpudoc metrics-check``).
RUN_RULES = {
    "non-finite": ("error", "every logged scalar is finite"),
    "loss-spike": ("warning", "the loss stays near its running minimum (smoothed, within 10x)"),
    "step-backwards": ("warning", "steps of a tag only go forward (a restart makes TensorBoard drop or duplicate)"),
    "step-repeat": ("warning", "a tag logs each step once"),
    "stall": ("warning", "new steps keep coming while the run's processes live"),
    "damaged-record": ("warning", "event records are intact"),
    # An error: a process holding a GPU after its leader exited is what gpudoc exists to catch.
    "leftover": ("error", "no process of the run holds a GPU device after its leader exited"),
}
RULES = {**RUN_RULES, **{rule: info for rule, info in METRIC_RULES.items() if rule != "non-finite"}}
SPIKE_FACTOR = 10.0
SPIKE_AFTER = 5
SPIKE_SMOOTHING = 0.9
STALL_FACTOR = 10.0
# Directories never searched for event files that appear under the working directory.
_SKIP_DIRS = frozenset({".git", ".hg", ".venv", "venv", "node_modules", "__pycache__", "site-packages", ".tox"})
_WALK_EVERY = 2.0
POLL_BUDGET = 20_000  # event records read in one look
# A working directory with more entries than this (a home directory) is not searched.
WALK_LIMIT = 20_000
_HIGHER_IS_BETTER = re.compile(r"psnr|ssim|acc|dice|iou|f1|auc|precision|recall|map\b|r2|score|reward", re.I)


@dataclass(frozen=True)
class Point:
    """One logged value: ``run`` is the event file's directory relative to the log root
    (``.`` for the root; ``output`` for values parsed from the output); ``wall_time`` is the
    writer's (seconds since the epoch; for output lines, when the line was parsed)."""

    run: str
    tag: str
    step: int
    value: float
    rounding: float = 0.0
    wall_time: float | None = None


@dataclass(frozen=True)
class Check:
    """A check that fired: the rule, ``error`` or ``warning``, what, the fix, and where."""

    rule: str
    severity: str
    message: str
    fix: str = ""
    series: str | None = None
    step: int | None = None


@dataclass
class Series:
    """What is known of one scalar so far; :attr:`name` (checks, summary, ``--json``) is its
    tag under its run's directory relative to the log root (``--logdir``, else the working
    directory): ``train/loss`` for the tag ``loss`` in ``runs/x/train`` under ``--logdir runs/x``."""

    run: str
    tag: str
    count: int = 0
    last: float = math.nan
    last_step: int | None = None
    best: float | None = None
    best_step: int | None = None
    smoothed: float = 0.0
    smoothed_min: float | None = None

    @property
    def name(self) -> str:
        return self.tag if self.run in (".", "output") else f"{self.run}/{self.tag}"

    @functools.cached_property
    def higher_is_better(self) -> bool:
        return bool(_HIGHER_IS_BETTER.search(self.tag)) and not is_loss(self.tag)

    @functools.cached_property
    def loss(self) -> bool:
        return is_loss(self.tag)


def is_loss(tag: str) -> bool:
    return "loss" in tag.lower()


# ---------------------------------------------------------------- event files


class _Followed:
    """One event file being tailed: its reader (whose state says where reading stopped), the
    plugin of each tag (only a tag's first value names it) and the compiled scalar decoder
    of ``gpudoc.events`` (None without it) with the tag names it has met."""

    def __init__(self, path: Path, run: str) -> None:
        from gpudoc.events.records import RecordReader

        self.path = path
        self.run = run
        self.reader: RecordReader = RecordReader(path, salvage=True)
        self.damage_seen = 0
        self.undecodable = 0
        self.restart()

    def restart(self) -> None:
        """Forget what the file's earlier records taught (it is read again from its start)."""
        from gpudoc.events.model import TagPlugins
        from gpudoc.events.records import scalar_decoder

        self.plugins: TagPlugins = TagPlugins()
        self.decoder: Any = scalar_decoder()
        self.names: list[str] = []  # the decoder's tag names by index

    def learn(self, infos: Iterable[Any]) -> None:
        """Tell the decoder the plugin of each tag whose first metadata a parsed record held
        (it decodes a tag's values with metadata only once the plugin is known)."""
        if self.decoder is None:
            return
        for info in infos:
            if info.has_metadata:
                try:
                    self.decoder.learn(self.decoder.index(info.tag), self.plugins.plugins[info.tag])
                except ValueError:  # a tag the decoder cannot hold: its records stay with Python
                    continue

    def points(self, columns: bytes) -> list[Point]:
        """The values the decoder packed (step, wall time, value, tag, record per value), as
        :func:`_scalars` makes them of the same records."""
        names, decoder, run = self.names, self.decoder, self.run
        while len(names) < len(decoder):
            names.append(decoder.name(len(names)))
        # TensorBoard stores float32: one part in 2^24.
        return [Point(run, names[tag], step, value, abs(value) * 2.0**-24, wall)
                for step, wall, value, tag, _ in _ROW.iter_unpack(columns)]


_ROW = struct.Struct("<qddii")  # a value as gpudoc/events/_scan.c packs it (its Row)


class EventTail:
    """Follows event files; :meth:`poll` reads only the bytes added since the last poll, at
    most ``budget`` records at a time."""

    def __init__(self, budget: int = POLL_BUDGET) -> None:
        self.files: dict[Path, _Followed] = {}
        self.records = 0
        self.budget = budget

    def follow(self, path: Path, run: str) -> bool:
        """Start following ``path`` (once); whether it is new."""
        key = Path(os.path.realpath(path))
        if key in self.files:
            return False
        self.files[key] = _Followed(key, run)
        return True

    def poll(self) -> tuple[list[Point], list[Check]]:
        """New scalar values of the followed files, and damage found in them: at most
        ``budget`` records in one poll (a large existing file is read over several, so a stop
        is not held up); the rest waits for the next. Runs of scalar records are decoded by
        the compiled decoder of ``gpudoc.events`` when it is built (the same values as the
        Python parser gives); any other record, and all of them without it, is parsed."""
        points: list[Point] = []
        checks: list[Check] = []
        budget = self.budget
        for followed in self.files.values():
            if budget <= 0:
                break
            state = followed.reader.state
            try:
                size = os.stat(followed.path).st_size
            except OSError:
                continue
            if size < state.offset:
                checks.append(Check("damaged-record", "warning", f"{followed.path}: shrank to {size} bytes while "
                                    f"being read (it had {state.offset}); reading it again from the start",
                                    "something truncated or replaced the event file"))
                state.offset, state.records, state.partial = 0, 0, 0
                state.damage.clear()
                followed.damage_seen = 0
                followed.restart()
            elif size == state.offset + state.partial:
                continue  # nothing new: no open, no read
            try:
                budget = self._read(followed, budget, points, checks)
            except OSError as exc:
                checks.append(Check("damaged-record", "warning", f"{followed.path}: cannot read: {exc.strerror}"))
            for damage in state.damage[followed.damage_seen:]:
                checks.append(Check(
                    "damaged-record", "warning",
                    f"{followed.path}: bytes {damage.start}-{damage.end} skipped ({damage.reason})",
                    "the values in those bytes are lost; 'gpudoc events info' lists every damaged stretch"))
            followed.damage_seen = len(state.damage)
        return points, checks

    def _read(self, followed: _Followed, budget: int, points: list[Point], checks: list[Check]) -> int:
        """Read ``followed``'s new records into ``points`` (damage into ``checks``), at most
        ``budget`` of them; the budget left."""
        from gpudoc.events.records import Scalars

        reader = followed.reader
        items = reader.scalars(followed.decoder) if followed.decoder is not None else iter(reader)
        over = False
        try:
            for item in items:
                if isinstance(item, Scalars):
                    if item.records > budget:
                        over = True  # left unread (the reader's state is before them): parsed below
                        break
                    budget -= item.records
                    self.records += item.records
                    points += followed.points(item.columns or b"")
                    continue
                if budget <= 0:
                    break  # before using it: this record was not counted as read, the next poll reads it
                budget -= 1
                self._parse(item[1], followed, points, checks)
        finally:
            items.close()  # type: ignore[attr-defined]
        if over:  # a run of scalar records longer than the budget: as many as it allows, one by one
            records = iter(reader)
            try:
                for _, data, _ in records:
                    if budget <= 0:
                        break
                    budget -= 1
                    self._parse(data, followed, points, checks)
            finally:
                records.close()  # type: ignore[attr-defined]
        return budget

    def _parse(self, data: bytes, followed: _Followed, points: list[Point], checks: list[Check]) -> None:
        """One record parsed in Python (:func:`_scalars`); one that is no event is reported once."""
        from google.protobuf.message import DecodeError

        self.records += 1
        try:
            points.extend(_scalars(data, followed))
        except DecodeError:
            if not followed.undecodable:
                checks.append(Check(
                    "damaged-record", "warning",
                    f"{followed.path}: record {followed.reader.state.records} is intact but not a TensorBoard event "
                    "(such records are skipped)", "is this an event file? its name contains 'tfevents'"))
            followed.undecodable += 1


def _scalars(data: bytes, followed: _Followed) -> list[Point]:
    """The scalars of one record: ``simple_value`` (tensorboardX, torch) and rank-0 numeric
    tensors (tf.summary)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    from gpudoc.events.model import Kind

    event = event_pb2.Event.FromString(data)
    if not event.HasField("summary"):
        return []
    found = []
    infos = followed.plugins.values(event)
    followed.learn(infos)
    for value, info in zip(event.summary.value, infos):
        which = value.WhichOneof("value")
        if which == "simple_value":
            number = float(value.simple_value)
        elif which == "tensor" and info.kind in (Kind.SCALAR, Kind.TENSOR) and not value.tensor.tensor_shape.dim:
            try:
                array = tensor_util.make_ndarray(value.tensor)
            except (ValueError, TypeError):
                continue
            if array.dtype.kind not in "fiub":
                continue
            number = float(array.item())
        else:
            continue
        # TensorBoard stores float32: one part in 2^24.
        found.append(Point(followed.run, value.tag, int(event.step), number, abs(number) * 2.0**-24,
                           float(event.wall_time)))
    return found


class LogFinder:
    """Where the run's event files are: under ``logdir`` when given; else the event files its
    processes hold open, else those that appear under its working directory after it started.
    ``skip_earlier`` (a command is run): event files under ``logdir`` last modified before the
    start are an earlier run's and are left out (:attr:`earlier` counts them); without it they
    are followed (``gpudoc tui --logdir DIR`` follows a run started elsewhere)."""

    def __init__(self, logdir: Path | None, cwd: Path, started: float, skip_earlier: bool = False) -> None:
        self.logdir = logdir
        self.cwd = cwd
        self.started = started
        self.skip_earlier = skip_earlier
        self.earlier: set[Path] = set()  # event files under logdir left out as an earlier run's
        self._last_walk = -math.inf
        self._last_fds = -math.inf
        self._open_found = False
        self.note: str | None = None  # why the working directory is not searched
        self._listed: dict[str, _Listing] = {}  # the directories of the last walk
        self.listings = 0  # directories listed so far (an unchanged one is not listed again)

    def find(self, pids: Iterable[int], force: bool = False) -> list[tuple[Path, str]]:
        """``(path, run)`` of event files found now (followed ones included). Directories are
        walked at most every few seconds unless ``force``; ``logdir`` at every look until it
        has event files. The
        processes' descriptors are read at every look until an event file is open, then every
        few seconds (a run's workers can hold hundreds)."""
        now = time.monotonic()
        walk = force or now - self._last_walk >= _WALK_EVERY
        if self.logdir is not None:
            if not walk and self._open_found:
                return []
            self._last_walk = now
            found = list(self._walk(self.logdir, self.logdir, since=self.started if self.skip_earlier else None))
            self._open_found = bool(found)
            return found
        if not force and self._open_found and now - self._last_fds < _WALK_EVERY:
            return []
        self._last_fds = now
        found = [(path, self._run_name(path)) for path in _open_event_files(pids)]
        self._open_found = self._open_found or bool(found)
        if walk and self.note is None:
            # Also once an open file was seen: a writer that opens, logs and closes between two
            # looks (a second run, an evaluation) is found only here, and an unchanged tree
            # costs one stat per directory.
            self._last_walk = now
            known = {path for path, _ in found}
            found += [hit for hit in self._walk(self.cwd, self.cwd, since=self.started, limit=WALK_LIMIT)
                      if hit[0] not in known]
        return found

    def _run_name(self, path: Path) -> str:
        directory = path.parent
        if directory.is_relative_to(self.cwd):
            return str(directory.relative_to(self.cwd)) or "."
        return str(directory)

    def _walk(self, top: Path, root: Path, since: float | None, limit: int | None = None) -> Iterable[tuple[Path, str]]:
        """Event files under ``top``, depth first in name order. A directory is listed again
        only when its modification time changed (an entry was added, removed or renamed):
        a look at an unchanged tree costs one ``stat`` per directory."""
        seen = 0
        listed: dict[str, _Listing] = {}
        stack = [str(top)]
        try:
            while stack:
                directory = stack.pop()
                listing = self._listing(directory)
                if listing is None:
                    continue
                listed[directory] = listing
                seen += listing.entries
                if limit is not None and seen > limit:
                    self.note = f"{top} has more than {limit} entries: not searched for event files (give --logdir)"
                    return
                for name in listing.events:
                    path = Path(directory) / name
                    try:
                        info = path.stat()
                    except OSError:
                        continue
                    if since is None or info.st_mtime >= since:
                        self.earlier.discard(path)  # written again since: it is this run's
                        yield path, os.path.relpath(directory, root)
                    elif top == self.logdir:
                        self.earlier.add(path)
                stack += [os.path.join(directory, d) for d in reversed(listing.descend)]
        finally:
            self._listed = listed

    def _listing(self, directory: str) -> _Listing | None:
        """What ``directory`` holds, from the last look when its modification time is the same
        and was already in the past then (a change within the same clock tick shows no new time)."""
        try:
            mtime = os.stat(directory).st_mtime_ns
        except OSError:
            return None
        known = self._listed.get(directory)
        if known is not None and known.mtime == mtime and known.settled:
            return known
        self.listings += 1
        try:
            with os.scandir(directory) as scan_it:
                found = list(scan_it)
        except OSError:
            return None
        entries, events, descend = 0, [], []
        for entry in found:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                entries += 1
                if "tfevents" in entry.name:
                    events.append(entry.name)
            elif entry.name not in _SKIP_DIRS and not entry.name.startswith("."):
                entries += 1
                if not entry.is_symlink():  # as os.walk: a link to a directory is not followed
                    descend.append(entry.name)
        settled = time.time_ns() - mtime > 2_000_000_000
        return _Listing(mtime, settled, entries, sorted(events), sorted(descend))


@dataclass(frozen=True)
class _Listing:
    """A directory as last listed: its modification time (``settled``: already two seconds
    old then), its entries counted as the walk limit counts them, its event file names and
    the subdirectories searched."""

    mtime: int
    settled: bool
    entries: int
    events: list[str]
    descend: list[str]


def _open_event_files(pids: Iterable[int]) -> list[Path]:
    """Event files (names with ``tfevents``) open in the descriptor tables of ``pids``."""
    found = []
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            target = read_link(f"{fd_dir}/{name}")
            if (isinstance(target, str) and target.startswith("/") and "tfevents" in os.path.basename(target)
                    and not target.endswith(" (deleted)")):
                found.append(Path(target))
    return found


# ---------------------------------------------------------------- output lines

_NUMBER = r"[-+]?(?:nan|inf(?:inity)?|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,4})?)"
_INT = r"(\d{1,18})(?!\d)"  # a step; longer digit runs are no step (and int() refuses 4300+ digits)
_VALUE_END = r"(?=[\s,;\])}|]|$)"
_PAIR = re.compile(r"(?<![\w./-])([A-Za-z_][\w./-]*)\s*(=|:)\s*(" + _NUMBER + r")" + _VALUE_END, re.I)
_STEP = re.compile(r"\b(?:global[_ ]step|step|iter(?:ation)?|it)\b\s*[:=#]?\s*" + _INT, re.I)
_EPOCH = re.compile(r"\bepoch\b\s*[:=#]?\s*" + _INT + r"(?:\s*/\s*" + _INT + ")?", re.I)
_PROGRESS = re.compile(r"(?<![\w./])" + _INT + "/" + _INT + r"(?![\w./])")
_NOT_SCALARS = frozenset({"epoch", "step", "global_step", "iter", "iteration", "it", "eta", "time", "lr_step"})


class OutputParser:
    """Scalars from output lines: Keras progress lines (``Epoch 3/10`` then ``… - loss: 0.1
    - mae: 0.2``), tqdm postfixes (``loss=0.123``) anywhere, and ``name: value`` pairs on a
    line that names a step or epoch. The step is the line's own ``step N``; else the epoch
    and the bar's ``N/M`` (``(epoch-1)·M + N``); else the epoch; else a count of lines."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.lines = 0

    def parse(self, line: str) -> list[Point]:
        self.lines += 1
        epoch = _EPOCH.search(line)
        if epoch:
            self.epoch = int(epoch.group(1))
        step_match = _STEP.search(line)
        pairs = [(n, sep, v) for n, sep, v in _PAIR.findall(line) if n.lower() not in _NOT_SCALARS]
        keras = " - " in line and any(sep == ":" for _, sep, _ in pairs)
        numbered = bool(step_match or epoch or (keras and self.epoch is not None))
        pairs = [(n, v) for n, sep, v in pairs if sep == "=" or numbered]
        if not pairs:
            return []
        if step_match:
            step = int(step_match.group(1))
        elif self.epoch is not None and (progress := _PROGRESS.search(_EPOCH.sub("", line))):
            step = (self.epoch - 1) * int(progress.group(2)) + int(progress.group(1))
        elif self.epoch is not None:
            step = self.epoch
        else:
            step = self.lines
        points = []
        now = time.time()
        for name, text in pairs:
            number = parse_number(text)
            points.append(Point("output", name, step, number.value, number.rounding, now))
        return points


# ---------------------------------------------------------------- checks


_LEVELS = {"warning": 0, "error": 1}


class Checks:
    """The checks on values as they arrive; each fires once per rule and series (again if
    it becomes an error)."""

    def __init__(self, data_range: float | None = None, stall_min: float = 60.0, started: float | None = None) -> None:
        self.data_range = data_range
        self.stall_min = stall_min
        self.started = time.monotonic() if started is None else started  # the stall check's first reference
        self.series: dict[tuple[str, str], Series] = {}
        self.raised: list[Check] = []
        self.counts: dict[str, int] = {}
        self.applied: set[str] = set()  # metric-scale rules that had numbers to check
        self._fired: dict[tuple[str, str | None], int] = {}  # the highest severity fired
        self._pending: dict[tuple[str, str], Record] = {}
        self._touched: set[tuple[str, str]] = set()
        self._canonical: dict[tuple[str, str], tuple[str, str | None]] = {}
        self.max_step: int | None = None
        self.min_step: int | None = None
        self._step_times: deque[float] = deque(maxlen=21)
        self._stalled = False

    def _fire(self, check: Check, key: str | None = None) -> list[Check]:
        """``check``, unless its rule already fired for the series at this severity or above:
        a rule that warned early (a small implied range at step 0) fires again as an error."""
        self.counts[check.rule] = self.counts.get(check.rule, 0) + 1
        once = (check.rule, key if key is not None else check.series)
        level = _LEVELS.get(check.severity, 0)
        if self._fired.get(once, -1) >= level:
            return []
        self._fired[once] = level
        self.raised.append(check)
        return [check]

    def raise_all(self, checks: Iterable[Check]) -> list[Check]:
        """Checks found elsewhere (event file damage), once each by message."""
        return [new for check in checks for new in self._fire(check, check.message)]

    def feed(self, points: Iterable[Point], now: float | None = None, steps_checked: bool = True) -> list[Check]:
        """The checks that fire on new values (``steps_checked``: their steps are a writer's,
        not guessed from output lines)."""
        now = time.monotonic() if now is None else now
        new: list[Check] = []
        advanced = False
        for point in points:
            key = (point.run, point.tag)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = Series(point.run, point.tag)
            new += self._step_checks(series, point, steps_checked)
            new += self._value_checks(series, point)
            new += self._metric_record(point)
            if self.max_step is None or point.step > self.max_step:
                advanced = True
                self.max_step = point.step
            self.min_step = point.step if self.min_step is None else min(self.min_step, point.step)
        if advanced:  # one arrival per look: a writer flushes many steps at once
            self._step_times.append(now)
            self._stalled = False
        return new

    def _step_checks(self, series: Series, point: Point, steps_checked: bool) -> list[Check]:
        previous = series.last_step
        found: list[Check] = []
        # Only the last step is kept (a long run logs millions): a step at or below it is
        # what TensorBoard drops or shows twice.
        if steps_checked and previous is not None and point.step < previous:
            found = self._fire(Check(
                "step-backwards", "warning",
                f"{series.name}: step {point.step} after step {previous}: a restart or a second writer — TensorBoard "
                f"shows the earlier points at steps ≥ {point.step} twice, or drops them after a SessionLog.START",
                "resume from the checkpoint's global step, or 'gpudoc events export --on-restart purge' keeps only "
                "the new points", series.name, point.step))
        elif steps_checked and point.step == previous:
            found = self._fire(Check(
                "step-repeat", "warning", f"{series.name}: step {point.step} logged again",
                "pass the global step (not the epoch's batch index) to the writer", series.name, point.step))
        series.last_step = point.step
        return found

    def _value_checks(self, series: Series, point: Point) -> list[Check]:
        series.count += 1
        series.last = point.value
        if not math.isfinite(point.value):
            what = "the loss" if series.loss else series.name
            return self._fire(Check(
                "non-finite", "error", f"{series.name} is {point.value} at step {point.step}"
                + (" — the training diverged" if what == "the loss" else ""),
                "lower the learning rate, clip gradients, check the data and any division or log in the loss",
                series.name, point.step))
        better = series.best is None or (point.value > series.best if series.higher_is_better
                                         else point.value < series.best)
        if better:
            series.best, series.best_step = point.value, point.step
        if not series.loss:
            return []
        finite = series.count  # debiased EMA over finite values, as TensorBoard smooths
        series.smoothed = SPIKE_SMOOTHING * series.smoothed + (1 - SPIKE_SMOOTHING) * point.value
        smooth = series.smoothed / (1 - SPIKE_SMOOTHING**finite)
        lowest = series.smoothed_min
        series.smoothed_min = smooth if lowest is None else min(lowest, smooth)
        if lowest is not None and finite > SPIKE_AFTER and lowest > 0 and smooth > SPIKE_FACTOR * lowest:
            return self._fire(Check(
                "loss-spike", "warning",
                f"{series.name} jumped to {point.value:.6g} at step {point.step} (smoothed {smooth:.4g}, "
                f"{smooth / lowest:.0f}x its running minimum {lowest:.4g})",
                "lower the learning rate or add warm-up, clip gradients, look for bad samples in this step's batch",
                series.name, point.step))
        return []

    def _metric_record(self, point: Point) -> list[Check]:
        """Values of one run, split and step form a record for the metric-scale rules; it is
        checked when a later step of that split arrives (or at the end)."""
        known = self._canonical.get((point.run, point.tag))
        if known is None:  # a regex pass per value otherwise
            name = point.tag if point.run in (".", "output") else f"{point.run}/{point.tag}"
            known = self._canonical[(point.run, point.tag)] = canonical(name)
        split, metric = known
        if metric is None:
            return []
        key = (point.run, split)
        pending = self._pending.get(key)
        found: list[Check] = []
        if pending is not None and pending.step != point.step:
            found = self._check_record(pending)
            pending = None
        if pending is None:
            pending = self._pending[key] = Record(point.run, split, point.step)
        pending.values[metric] = Value(point.value, point.rounding)
        pending.names[metric] = point.tag
        self._touched.add(key)
        return found

    def _check_record(self, record: Record) -> list[Check]:
        found: list[Check] = []
        key = f"{record.source}:{record.split}"
        for finding in check_record(record, self.data_range, self.applied):
            if finding.rule == "non-finite":
                continue  # every scalar is checked for that already
            if self._fired.get((finding.rule, key), -1) >= _LEVELS.get(finding.severity, 0):
                self.counts[finding.rule] = self.counts.get(finding.rule, 0) + 1  # counted, told once
                continue
            found += self._fire(_from_finding(finding), key)
        return found

    def forget_output(self) -> None:
        """Event files are the record from now on: the values guessed from output lines go
        (the event files are read from their start, so their steps refill the range)."""
        self.series = {k: s for k, s in self.series.items() if s.run != "output"}
        self._pending = {k: r for k, r in self._pending.items() if k[0] != "output"}
        self.min_step = self.max_step = None

    def settle(self) -> list[Check]:
        """Check the records that got no new value since the last call (a writer flushes a
        step's values together, so one quiet look means the step is complete)."""
        quiet = [key for key in self._pending if key not in self._touched]
        self._touched.clear()
        return [c for key in quiet for c in self._check_record(self._pending.pop(key))]

    def finish(self) -> list[Check]:
        """Check the records still waiting for a later step."""
        found = [c for record in self._pending.values() for c in self._check_record(record)]
        self._pending.clear()
        return found

    def tick(self, alive: bool, members: int, now: float | None = None, gpus: str = "") -> list[Check]:
        """The stall check while the run's processes live: no new step for at least
        ``stall_min`` seconds and for ``STALL_FACTOR`` times the recent median interval
        between looks that brought new steps — or, if shorter, twice the time from the start
        to the last new step: early in a run (steps in one look, or a few looks in a row,
        whose interval is only the polling's) a hang is caught after ``stall_min``, while a
        writer that flushes every 2 minutes is never stalled between flushes."""
        now = time.monotonic() if now is None else now
        if not alive or self._stalled or not self._step_times:
            return []
        times = list(self._step_times)
        quiet = now - times[-1]
        since_start = max(times[-1] - self.started, 0.0)
        if len(times) >= 2:
            intervals = sorted(b - a for a, b in itertools.pairwise(times))
            median = intervals[len(intervals) // 2]
            wait = max(min(STALL_FACTOR * median, 2 * since_start), self.stall_min)
            before = f"new steps came every {_seconds(median)} before"
        else:
            wait = max(2 * since_start, self.stall_min)
            before = f"the steps so far came in one look, {_seconds(since_start)} after the start"
        if quiet < wait:
            return []
        self._stalled = True
        return self._fire(Check(
            "stall", "warning",
            f"no new step for {_seconds(quiet)} after step {self.max_step} ({before}) "
            f"while {members} process(es) of the run live{gpus}",
            "a hung collective (NCCL), a dataloader deadlock or a stuck file system: 'py-spy dump --pid PID' "
            "shows where each process waits"), f"stall@{self.max_step}")


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


def _from_finding(finding: Finding) -> Check:
    where = f"step {finding.step}, {finding.split}" if finding.step is not None else str(finding.split)
    return Check(finding.rule, finding.severity, f"{finding.message} ({where}) — {finding.cause}", finding.fix,
                 finding.split, finding.step)


# ---------------------------------------------------------------- the watch


class GpuUse:
    """The GPU memory NVML reports for the run's processes: the peak of their sum, the GPUs
    they used, and at the last sample the sum (``current``), the GPUs they were on
    (``using``) and each one's utilisation and power. After a backend error it stops asking
    (``note`` says why)."""

    def __init__(self, backend: GpuBackend | None) -> None:
        self.backend = backend
        self.peak: int | None = None
        self.gpus: set[int] = set()
        self.now: dict[int, str] = {}
        self.current = 0
        self.using: tuple[int, ...] = ()
        self.note: str | None = None if backend is not None else "no GPU backend"

    def sample(self, pids: Iterable[int]) -> None:
        if self.backend is None or self.note is not None:
            return
        self.take(self.backend.snapshot(), pids)

    def take(self, snapshot: GpuSnapshot, pids: Iterable[int]) -> None:
        """Account a snapshot taken elsewhere (the monitor's) to the run's processes ``pids``."""
        if snapshot.error:
            self.note = snapshot.error.split(": ", 1)[0]  # the what, without the how-to-fix
            return
        wanted = set(pids)
        total = 0
        self.now = {}
        for device in snapshot.devices:
            used = [p.used_memory for p in device.processes if p.pid in wanted]
            if not used:
                continue
            self.gpus.add(device.index)
            total += sum(m for m in used if isinstance(m, int))
            util = f"{device.utilization_gpu}%" if isinstance(device.utilization_gpu, int) else "?%"
            power = f"{device.power_draw:.0f} W" if isinstance(device.power_draw, float | int) else "? W"
            self.now[device.index] = f"GPU {device.index} {util} {power}"
        self.current, self.using = total, tuple(sorted(self.now))
        if self.gpus:
            self.peak = max(self.peak or 0, total)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def beside(self) -> str:
        """``; GPU 0 100% 312 W`` for a message (utilisation reads 100 % on a hung NCCL call)."""
        return "; " + ", ".join(self.now[i] for i in sorted(self.now)) if self.now else ""


class Watch:
    """Everything watched of one run: call :meth:`take_line` from the output thread and
    :meth:`poll` from one place; :meth:`summary` once it has ended. ``on_points`` is called
    (from the polling thread) with the values each poll read, before they are checked: the
    TUI draws them."""

    def __init__(self, finder: LogFinder, checks: Checks, backend: GpuBackend | None = None,
                 on_points: Callable[[list[Point]], None] | None = None) -> None:
        self.finder = finder
        self.on_points = on_points
        self.checks = checks
        self.gpu = GpuUse(backend)
        self.tail = EventTail()
        self.parser = OutputParser()
        self._lines: deque[str] = deque()
        self._lock = threading.Lock()
        self.from_output = True  # until an event file is found
        self._earlier_said = False

    def take_line(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def _follow(self, files: Iterable[tuple[Path, str]]) -> None:
        for path, run in files:
            if self.tail.follow(path, run) and self.from_output:
                self.from_output = False
                self.checks.forget_output()

    def poll(self, pids: list[int], alive: bool, members: int) -> list[Check]:
        """New checks from the event files found so far, the output lines since the last
        poll (only while there are no event files), the run's GPU use and the stall check."""
        with self._lock:
            lines, self._lines = self._lines, deque()
        found: list[Check] = []
        self._follow(self.finder.find(pids))
        found += self._earlier_note()
        points, damage = self.tail.poll()
        parsed = [p for line in lines for p in self.parser.parse(line)] if self.from_output else []
        if self.on_points is not None and (points or parsed):
            self.on_points(points + parsed)
        found += self.checks.raise_all(damage)
        found += self.checks.feed(points)
        if parsed:
            found += self.checks.feed(parsed, steps_checked=False)
        found += self.checks.settle()
        self.gpu.sample(pids)
        found += self.checks.tick(alive, members, gpus=self.gpu.beside())
        return found

    def _earlier_note(self) -> list[Check]:
        """Once: a ``note`` (no check: not counted, not in the report) that event files of an
        earlier run under the logdir are left out."""
        count = len(self.finder.earlier)
        if self._earlier_said or not count:
            return []
        self._earlier_said = True
        return [Check("earlier-runs", "note",
                      f"{count} event file(s) under {self.finder.logdir} last modified before this run started "
                      "are an earlier run's: left out of the checks and the summary",
                      "give each run a --logdir of its own to compare them in TensorBoard")]

    def finish(self) -> list[Check]:
        """The last values (from files found now too) and the checks that wait for the end."""
        self._follow(self.finder.find((), force=True))
        found: list[Check] = self._earlier_note()
        while True:  # every record left, over as many polls as it takes
            read = self.tail.records
            points, damage = self.tail.poll()
            found += self.checks.raise_all(damage) + self.checks.feed(points)
            if self.tail.records == read:
                break
        if self.from_output:
            with self._lock:
                lines, self._lines = self._lines, deque()
            found += self.checks.feed((p for line in lines for p in self.parser.parse(line)), steps_checked=False)
        return found + self.checks.finish()

    def summary(self, status: RunStatus, exit_code: int, attempts: int = 1,
                leftovers: Iterable[Leftover] = (), duration: float | None = None,
                killed: bool = False) -> RunSummary:
        """The end summary; ``duration`` covers every attempt (default: the last one's);
        ``killed``: gpudoc sent the run SIGKILL (a second signal while stopping). Each leftover
        holding a device is a ``leftover`` check (counted, in the report) if not raised yet."""
        ended, killer = how_it_ended(status, killed)
        leftovers = list(leftovers)
        checks = self.checks
        checks.raise_all(leftover_check(left) for left in leftovers if left.devices)
        return RunSummary(
            command=list(status.command), state=status.state.value, ended=ended, returncode=status.returncode,
            exit_code=exit_code, duration_s=round(status.elapsed if duration is None else duration, 3),
            oom=status.oom, gpu_error=status.gpu_error, oom_killer_likely=killer,
            first_step=checks.min_step, last_step=checks.max_step,
            source="output" if self.tail.files == {} else "event files",
            event_files=[str(p) for p in self.tail.files],
            scalars=sorted((ScalarSummary(s.name, s.count, _finite(s.last), s.last_step,
                                          s.best, s.best_step, "max" if s.higher_is_better else "min")
                            for s in checks.series.values()), key=lambda s: s.name),
            checks=list(checks.raised), check_counts=dict(checks.counts), attempts=attempts,
            leftovers=leftovers, peak_gpu_memory=self.gpu.peak, gpus=sorted(self.gpu.gpus),
            gpu_note=self.gpu.note, logs_note=self.finder.note, earlier_event_files=len(self.finder.earlier),
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- nothing left behind


@dataclass(frozen=True)
class Leftover:
    """A process of the run's session alive after the leader exited, the GPU device files it
    holds (none: it is only reported); ``action`` says what ``--reap-leftovers`` did to it
    (None: left running), ``ended``: whether it is gone by gpudoc's hand."""

    pid: int
    command: str
    devices: tuple[str, ...]
    start_ticks: int
    action: str | None = None
    ended: bool = False


def find_leftovers(members: Iterable[ProcStat], device_glob: str) -> list[Leftover]:
    """Each member, with the files ``device_glob`` matches that it holds (the same process:
    same start time; none for a member that holds no device)."""
    alive = {m.pid: m for m in members}
    if not alive:
        return []
    held = {h.pid: h.devices for h in scan(device_glob).holders
            if h.pid in alive and alive[h.pid].start_ticks == h.stat.start_ticks}
    found = []
    for pid, member in sorted(alive.items()):
        cmdline = read_cmdline(pid)
        command = shlex.join(cmdline) if isinstance(cmdline, tuple) and cmdline else member.comm
        found.append(Leftover(pid, command, held.get(pid, ()), member.start_ticks))
    return found


def leftover_check(leftover: Leftover) -> Check:
    """The ``leftover`` check: an error while the process still runs, a warning once gpudoc
    ended it (nothing is left behind: the run's own outcome stands, even under --strict)."""
    shown = f"PID {leftover.pid} ({one_line(leftover.command)})"
    if leftover.ended:
        return Check("leftover", "warning",
                     f"{shown} held {', '.join(leftover.devices)} after the run's leader exited: {leftover.action}",
                     "join the run's workers before its leader exits",
                     str(leftover.pid))
    return Check("leftover", RULES["leftover"][0],
                 f"{shown} still holds {', '.join(leftover.devices)} after the run's leader exited",
                 "--reap-leftovers ends such processes; 'gpudoc reap' finds them later", str(leftover.pid))


def end_leftovers(leftovers: list[Leftover], grace: float) -> list[Leftover]:
    """SIGTERM, then SIGKILL after ``grace`` seconds, with reap's identity checks."""
    targets = [HolderReport(pid=left.pid, verdict=Verdict.ORPHAN, reason="outlived the run's leader",
                            start_ticks=left.start_ticks) for left in leftovers]
    actions = end_processes(targets, timeout=grace)
    return [replace(left, action=actions[left.pid].action, ended=actions[left.pid].outcome is Outcome.ENDED)
            for left in leftovers]


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # what ends or garbles a line
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(command: str | Iterable[str], limit: int | None = 60) -> str:
    """``command`` (a string, or argv quoted as a shell would take it) on one line: control
    characters escaped (a newline reads ``\\n``), shortened to ``limit`` characters with ``…``."""
    text = command if isinstance(command, str) else shlex.join(command)
    text = _CONTROL.sub(lambda m: _ESCAPES.get(m.group()) or f"\\u{ord(m.group()):04x}", text)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------- OOM before and after


Stage = Callable[[str], "Progress | None"]  # a stage's name -> the progress callback of its steps


@dataclass(frozen=True)
class ModelRun:
    """What the run trains, for its pre-launch estimate: ``--model SPEC --batch N`` with
    ``gpudoc oom estimate``'s options (the same :func:`gpudoc.oom.plan.plan`)."""

    model: str
    batch: int
    input_spec: str | None = None
    precision: str = "fp32"
    optimizer: str = "adam"
    freeze: str | None = None
    checkpointing: bool = False
    accumulate: int = 1

    def estimate(self, backend: GpuBackend, visible_env: str | None, stage: Stage | None = None) -> tuple[Plan, Fit]:
        """The estimate against the GPUs the run will see (``CUDA_VISIBLE_DEVICES``, None: all)
        and the memory free on them now, read through ``backend`` (closed after); bad options
        raise :class:`InputError` even with no GPU to read (then :class:`EnvironmentMissing`)."""
        from gpudoc.errors import EnvironmentMissing
        from gpudoc.oom.devices import FALLBACK_DEVICE, Device, find_device
        from gpudoc.oom.plan import plan, prelaunch, read_visible

        def build(device: Callable[[], Device]) -> Plan:
            return plan(self.model, self.batch, device, self.input_spec, self.precision, self.optimizer,
                        self.freeze, self.checkpointing, self.accumulate)

        try:
            seen = read_visible(backend, visible_env)
        except EnvironmentMissing:
            build(lambda: find_device(FALLBACK_DEVICE))  # a bad spec or option is still bad input
            raise
        return prelaunch(build, seen, (lambda step: stage(f"{self.model} at batch {self.batch}: {step}"))
                         if stage else None)


def with_max_batch(made: Plan, fit: Fit, stage: Stage | None = None) -> Fit:
    """``fit`` with max-batch's answer for the same spec on the same GPU (after an out-of-memory end)."""
    best, _ = made.max_batch((lambda size: stage(f"max batch: batch {size}")) if stage else None)
    return replace(fit, max_batch=best)


def max_batch_line(fit: Fit) -> str:
    """After an out-of-memory end: ``max batch for the same spec: 48 (as gpudoc oom max-batch:
    leaves 10% of …)``, or, when that answer takes the batch that ran out, that the run
    contradicted the estimate and a batch smaller by the same ratio."""
    if not fit.max_batch:
        return f"max batch for the same spec: none, not even batch 1 fits GPU {fit.gpu}'s free memory"
    if fit.max_batch >= fit.batch:
        smaller = max(1, fit.batch * fit.batch // fit.max_batch)
        return (f"the estimate put batch {fit.batch} within memory (max batch {fit.max_batch}) and the run ran out: "
                f"the estimate is optimistic for this run — try at most batch {smaller} "
                f"({fit.batch}·{fit.batch}/{fit.max_batch})")
    return (f"max batch for the same spec: {fit.max_batch} (as gpudoc oom max-batch: leaves 10% of the "
            f"{format_bytes(fit.free_bytes)} free on GPU {fit.gpu})")


# ---------------------------------------------------------------- the end


@dataclass(frozen=True)
class ScalarSummary:
    """A scalar at the end: its last value and its best (``goal`` says min or max)."""

    name: str
    count: int
    last: float | None
    last_step: int | None
    best: float | None
    best_step: int | None
    goal: str


@dataclass(frozen=True)
class RunSummary:
    """How the run ended and what it logged (``gpudoc run``'s end summary and ``--json``)."""

    command: list[str]
    state: str
    ended: str
    returncode: int | None
    exit_code: int
    duration_s: float
    oom: str | None
    gpu_error: str | None
    oom_killer_likely: bool
    first_step: int | None
    last_step: int | None
    source: str
    event_files: list[str]
    scalars: list[ScalarSummary]
    checks: list[Check]
    check_counts: dict[str, int]
    attempts: int = 1
    leftovers: list[Leftover] = field(default_factory=list)
    peak_gpu_memory: int | None = None
    gpus: list[int] = field(default_factory=list)
    gpu_note: str | None = None
    logs_note: str | None = None
    earlier_event_files: int = 0  # under --logdir, an earlier run's: left out
    estimate: Fit | None = None  # gpudoc run --model: the pre-launch estimate (and max-batch after an OOM)

    @property
    def errors(self) -> int:
        return sum(1 for c in self.checks if c.severity == "error")

    def lines(self) -> list[str]:
        """The summary as text lines for stderr."""
        oom = f"; out of memory: {self.oom}" if self.oom else ""
        oom += f"; GPU error: {self.gpu_error}" if self.gpu_error else ""
        attempt = f" (attempt {self.attempts})" if self.attempts > 1 else ""
        out = [f"the run {self.ended}{attempt} after {format_duration(self.duration_s)}{oom}"]
        if self.oom_killer_likely:
            out.append("  SIGKILL was not sent by gpudoc: likely the kernel's OOM killer — check `dmesg` or "
                       "`journalctl -k` for 'Out of memory: Killed process'")
        if self.last_step is not None:
            where = f"{len(self.event_files)} event file(s)" if self.event_files else "its output"
            out.append(f"  steps {self.first_step}-{self.last_step} (from {where})")
        else:
            why = f"; {self.logs_note}" if self.logs_note else ""
            out.append(f"  no scalars seen (no event files found, no values in the output{why})")
        width = max((len(s.name) for s in self.scalars), default=0)
        for s in self.scalars:
            best = f"{s.best:.6g} (step {s.best_step})" if s.best is not None else "-"
            last = f"{s.last:.6g}" if s.last is not None else "non-finite"
            out.append(f"  {s.name:<{width}}  last {last} (step {s.last_step})  {s.goal} {best}")
        if self.peak_gpu_memory is not None:
            on = ",".join(str(i) for i in self.gpus)
            out.append(f"  peak GPU memory of its processes {format_bytes(self.peak_gpu_memory)} (GPU {on})")
        else:
            out.append(f"  GPU memory of its processes: none seen ({self.gpu_note or 'no GPU use'})")
        if self.estimate is not None:
            est = self.estimate
            out.append(f"  estimated before the start {format_bytes(est.total_bytes)} per GPU ({est.verdict} in "
                       f"{format_bytes(est.free_bytes)} free on GPU {est.gpu}), measured peak "
                       + (format_bytes(self.peak_gpu_memory) if self.peak_gpu_memory is not None else "none seen"))
            if est.max_batch is not None:
                out.append("  " + max_batch_line(est))
        for left in self.leftovers:
            if left.devices:
                out.append(f"  leftover PID {left.pid} ({one_line(left.command)}) "
                           + ("held" if left.ended else "holding") + f" {', '.join(left.devices)}: "
                           + (left.action or "left running (--reap-leftovers ends it)"))
            else:
                out.append(f"  PID {left.pid} ({one_line(left.command)}) still runs after its leader exited "
                           "(it holds no GPU device)")
        if self.checks:
            errors = self.errors
            warnings = len(self.checks) - errors
            rules = ", ".join(sorted({c.rule for c in self.checks}))
            out.append(f"  checks: {errors} error(s), {warnings} warning(s): {rules}")
        else:
            out.append("  checks: none fired")
        return out


def how_it_ended(status: RunStatus, killed: bool = False) -> tuple[str, bool]:
    """``succeeded``, ``failed (exit 3)``, ``killed by SIGSEGV``, ``stopped``; and whether a
    SIGKILL that gpudoc did not send makes the kernel's OOM killer the likely cause
    (``killed``: gpudoc sent the run SIGKILL on a second signal)."""
    code = status.returncode
    if killed and status.state.value != "succeeded":
        return "was stopped by gpudoc (SIGKILL after a second signal)", False
    if status.state.value == "stopped":
        return "was stopped by gpudoc", False
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}", -code == signal.SIGKILL
    if code:
        return f"failed (exit {code})", False
    return ("succeeded" if code == 0 else "is running"), False


def as_finding(check: Check, subject: str) -> Finding:
    """``check`` as a metrics-check finding of the run ``subject``, for the shared reports."""
    where = f"{subject} (step {check.step})" if check.step is not None else subject
    return Finding(check.rule, check.severity, where, check.message, "", check.fix, subject, step=check.step,
                   split=check.series)


def annotation(check: Check) -> str:
    """A GitHub Actions workflow command for ``check`` (the same as metrics-check's)."""
    return github_line(as_finding(check, "run"), at_file=False)


def run_report(checks: Checks, subject: str, properties: dict[str, str] | None = None) -> Report:
    """The checks of a run as one report (JUnit, exit code) by the mapping metrics-check uses:
    one subject, the run; its own rules always apply, a metric-scale rule only when the run
    logged numbers it checks (else it is skipped, with why)."""
    rules: dict[str, str | None] = {
        rule: None if rule in RUN_RULES or rule in checks.applied else "the run logged no metric this rule checks"
        for rule in RULES
    }
    findings = [as_finding(check, subject) for check in checks.raised]
    return Report(dict(RULES), [Subject(subject, "run", rules)], findings, properties or {})


def plain(check: Check) -> str:
    """``gpudoc: error: [rule] message (fix: …)`` for stderr (``warning:``, ``note:`` by severity)."""
    fix = f" (fix: {check.fix})" if check.fix else ""
    return f"gpudoc: {check.severity}: [{check.rule}] {check.message}{fix}"


def jsonable_summary(summary: RunSummary) -> dict[str, Any]:
    from gpudoc.output import to_jsonable

    data: dict[str, Any] = to_jsonable(summary)
    data["errors"] = summary.errors
    data["rules"] = {c.rule: RULES[c.rule][1] for c in summary.checks if c.rule in RULES}
    return data

