"""The run's scalar curves: the points kept per series, TensorBoard's smoothing, and a
braille plot.

Renderer: a small braille plotter of our own rather than a plotting library. The monitor
redraws its panels through the line API with cached rows (see ``LinePanel``); a chart has to
be a handful of ``Content`` lines it can compare and cache, drawn only when new points
arrive. textual-plotext renders a whole widget through plotext's own canvas and string
parsing on every refresh, which would cost more CPU than the rest of the monitor, and adds
two dependencies. Braille cells give 2x4 dots per character, enough for a trend line, and
the per-column binning below is a few numpy operations per chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gpudoc.metrics.logs import canonical
from gpudoc.runwatch import Point, is_loss

# TensorBoard's scalar dashboard keeps a sample of 1000 points per tag (its reservoir);
# a series here keeps at most KEEP points: every second one once full, then every fourth…
KEEP = 1000
DEFAULT_WEIGHT = 0.6  # TensorBoard's default smoothing
WEIGHTS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
RATE_WINDOW = 64  # arrivals the steps/s figure is measured over


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing of a scalar chart: an exponential moving average debiased
    like Adam's (``last = last·w + (1-w)·v``, shown as ``last / (1 - w^n)`` after ``n``
    finite values); a non-finite value is shown as is and does not enter the average, and a
    series whose values are all equal is not smoothed."""
    return _Smoother(weight).extend(values, constant=all(v == values[0] for v in values))


class _Smoother:
    """The running state of :func:`smooth`, so that new points cost one step each."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.last = 0.0
        self.count = 0

    def extend(self, values: Sequence[float], constant: bool = False) -> list[float]:
        out = []
        weight = self.weight
        for value in values:
            if constant or not math.isfinite(value):
                out.append(value)
                continue
            self.last = self.last * weight + (1 - weight) * value
            self.count += 1
            debias = 1.0 - weight**self.count if weight != 1 else 1.0
            out.append(self.last / debias)
        return out


@dataclass
class Curve:
    """One scalar: the points kept (``steps``, ``times``: the writer's wall time, ``values``,
    ``smoothed``), and over every point received its count, last value, minimum and maximum."""

    run: str
    tag: str
    weight: float = DEFAULT_WEIGHT
    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    count: int = 0
    last: float = math.nan
    last_step: int | None = None
    low: float | None = None
    high: float | None = None
    stride: int = 1
    _smoother: _Smoother | None = None
    _constant: bool = False

    def add(self, point: Point, wall: float) -> None:
        self.count += 1
        value = point.value
        self.last, self.last_step = value, point.step
        if math.isfinite(value):
            self.low = value if self.low is None else min(self.low, value)
            self.high = value if self.high is None else max(self.high, value)
        if (self.count - 1) % self.stride:
            return
        self.steps.append(point.step)
        self.times.append(wall)
        self.values.append(value)
        if len(self.values) > KEEP:
            self.steps, self.times, self.values = self.steps[::2], self.times[::2], self.values[::2]
            self.stride *= 2
            self.resmooth()
        elif self._smoother is None or (self._constant and value != self.values[0]):
            self.resmooth()  # TensorBoard smooths a series once its values differ: all of it
        elif self._constant:
            self.smoothed.append(value)
        else:
            self.smoothed += self._smoother.extend([value])

    def resmooth(self, weight: float | None = None) -> None:
        if weight is not None:
            self.weight = weight
        self._smoother = _Smoother(self.weight)
        values = self.values
        self._constant = bool(values) and all(v == values[0] for v in values)
        self.smoothed = self._smoother.extend(values, constant=self._constant)

    @property
    def name(self) -> str:
        if self.run in (".", "output"):
            return self.tag
        return f"{self.run.rstrip('/').rsplit('/', 1)[-1]}/{self.tag}"


class Curves:
    """Every series of the run, as the UI thread receives them."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Curve] = {}
        self.weight = DEFAULT_WEIGHT
        self.first_wall: dict[str, float] = {}
        self._arrivals: list[tuple[float, int]] = []
        self.max_step: int | None = None
        self.version = 0  # bumped when anything drawn changed
        self._ranks: dict[str, int] = {}

    def add(self, points: Sequence[Point]) -> None:
        if not points:
            return
        for point in points:
            key = (point.run, point.tag)
            curve = self.series.get(key)
            if curve is None:
                curve = self.series[key] = Curve(point.run, point.tag, self.weight)
            wall = point.wall_time if point.wall_time is not None else 0.0
            self.first_wall.setdefault(point.run, wall)
            curve.add(point, wall)
            if self.max_step is None or point.step > self.max_step:
                self.max_step = point.step
                self._arrivals.append((wall, point.step))
        del self._arrivals[:-RATE_WINDOW]
        self.version += 1

    def drop_run(self, run: str) -> None:
        """Forget a run's series (values parsed from the output, once event files are found)."""
        if any(key[0] == run for key in self.series):
            self.series = {k: c for k, c in self.series.items() if k[0] != run}
            self.first_wall.pop(run, None)
            self._arrivals.clear()
            self.max_step = max((c.last_step for c in self.series.values() if c.last_step is not None), default=None)
            self.version += 1

    def set_weight(self, weight: float) -> None:
        self.weight = weight
        for curve in self.series.values():
            curve.resmooth(weight)
        self.version += 1

    def steps_per_second(self) -> float | None:
        """New steps per second of the writer's time over the recent arrivals."""
        if len(self._arrivals) < 2:
            return None
        (t0, s0), (t1, s1) = self._arrivals[0], self._arrivals[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else None

    def label(self, curve: Curve) -> str:
        """The tag alone while the series all come from one run, else ``run/tag``."""
        return curve.tag if len(self.first_wall) <= 1 else curve.name

    def names(self) -> list[Curve]:
        """Every series: losses first, then the metrics gpudoc knows, then the rest, by name."""
        return sorted(self.series.values(), key=lambda c: (self._rank(c), c.name))

    def _rank(self, curve: Curve) -> int:
        rank = self._ranks.get(curve.tag)
        if rank is None:  # a regex pass: once per tag, not on every redraw
            rank = self._ranks[curve.tag] = _rank(curve)
        return rank

    def default(self) -> list[Curve]:
        """Losses and the metrics gpudoc knows (all series when there is none of those)."""
        every = self.names()
        known = [c for c in every if self._rank(c) < 2]
        return known or every


def _rank(curve: Curve) -> int:
    if is_loss(curve.tag):
        return 0
    return 1 if canonical(curve.tag)[1] is not None else 2


# Braille dot bits, by (row within the cell 0-3, column 0-1).
_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int32)


@dataclass(frozen=True)
class Plot:
    """A chart as text rows: ``rows[y]`` is a string of braille characters and ``strong[y]``
    marks the cells that carry the smoothed line (drawn bright; the others hold raw points
    only); ``low``/``high`` are the value range shown, ``x0``/``x1`` the x range."""

    rows: tuple[str, ...]
    strong: tuple[tuple[bool, ...], ...]
    low: float
    high: float
    x0: float
    x1: float


def plot(xs: Sequence[float], raw: Sequence[float], smoothed: Sequence[float], width: int, height: int,
         bounds: tuple[float, float] | None = None) -> Plot | None:
    """Raw values as dots and the smoothed values as a connected line, in ``width`` x ``height``
    braille cells, over the values' range widened to ``bounds`` (the range of every value
    received, when the points given are a sample); None when no value is finite."""
    x = np.asarray(xs, dtype=np.float64)
    r = np.asarray(raw, dtype=np.float64)
    s = np.asarray(smoothed, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(s) & np.isfinite(x)
    if not ok.any() or width < 1 or height < 1:
        return None
    x, r, s = x[ok], r[ok], s[ok]
    low, high = float(min(r.min(), s.min())), float(max(r.max(), s.max()))
    if bounds is not None:
        low, high = min(low, bounds[0]), max(high, bounds[1])
    x0, x1 = float(x.min()), float(x.max())
    cols, rows = width * 2, height * 4
    span_y = high - low if high > low else 1.0
    span_x = x1 - x0 if x1 > x0 else 1.0
    cx = np.rint((x - x0) / span_x * (cols - 1)).astype(np.int64)
    raw_y = rows - 1 - np.rint((r - low) / span_y * (rows - 1)).astype(np.int64)
    smooth_y = rows - 1 - np.rint((s - low) / span_y * (rows - 1)).astype(np.int64)
    dots = np.zeros((rows, cols), dtype=bool)
    dots[raw_y, cx] = True
    # The smoothed line: in each dot column the span of its points, joined to the column
    # before with points by a straight line across the empty ones (rounded half to even, as
    # Python's round), each column filled from where the line before it reached.
    top = np.full(cols, rows, dtype=np.int64)
    bottom = np.full(cols, -1, dtype=np.int64)
    np.minimum.at(top, cx, smooth_y)
    np.maximum.at(bottom, cx, smooth_y)
    first = np.full(cols, -1, dtype=np.int64)
    last = np.full(cols, -1, dtype=np.int64)
    last[cx] = smooth_y  # numpy assigns in order: the last point of a column wins
    first[cx[::-1]] = smooth_y[::-1]
    used = np.flatnonzero(bottom >= 0)
    was, col = used[:-1], used[1:]
    row = last[was]  # where the line leaves each column with points
    gaps = col - was - 1  # empty columns between each pair of columns with points
    filled = gaps > 0
    opens = np.cumsum(gaps) - gaps  # where each pair's empty columns start in ``at``
    pair = np.repeat(np.arange(len(col)), gaps)  # each empty column's pair
    gap = was[pair] + 1 + np.arange(len(pair)) - opens[pair]
    start, end = row[pair], first[col][pair]
    at = np.rint(start + (end - start) * (gap - was[pair]) / (col[pair] - was[pair])).astype(np.int64)
    # Where the line stood before each empty column (the empty column before it, or the row
    # it left its pair's first column at) and before each column with points.
    before = np.empty_like(at)
    before[1:] = at[:-1]
    before[opens[filled]] = row[filled]
    reached = row.copy()
    reached[filled] = at[(opens + gaps - 1)[filled]]
    columns = np.concatenate([used, gap])
    low_row = np.concatenate([top[used[:1]], np.minimum(top[col], reached), np.minimum(at, before)])
    high_row = np.concatenate([bottom[used[:1]], np.maximum(bottom[col], reached), np.maximum(at, before)])
    line = np.zeros((rows, cols), dtype=bool)
    ys = np.arange(rows)[:, np.newaxis]
    line[:, columns] = (ys >= low_row) & (ys <= high_row)
    every = dots | line
    bits = _BITS[np.newaxis, :, np.newaxis, :]
    codes = (every.reshape(height, 4, width, 2) * bits).sum(axis=(1, 3)) + 0x2800
    strong = line.reshape(height, 4, width, 2).any(axis=(1, 3))
    text = tuple(cells.tobytes().decode("utf-32-le") for cells in codes.astype("<u4"))
    return Plot(text, tuple(tuple(cells) for cells in strong.tolist()), low, high, x0, x1)
