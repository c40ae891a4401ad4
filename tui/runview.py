"""The run view: the run gpudoc started (its state, attempt, GPU memory beside the
pre-launch estimate, last output lines), the curves of its scalars and the checks on them,
and the list of the checks that fired. Below ``COMPACT_BELOW`` rows (an 80x30 terminal) the
panels pack themselves so that the monitor and the run fit without scrolling."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static

from gpudoc.monitor import ProcessRow
from gpudoc.output import format_duration
from gpudoc.runwatch import Check, Point
from gpudoc.train import RunState, RunStatus, describe

from .curves import WEIGHTS, Curve, Curves, plot
from .format import MUTED, clean, size
from .widgets import _EDGES, LinePanel, verdict_name

if TYPE_CHECKING:
    from textual.app import App

    from gpudoc.oom.plan import Fit

COLOURS = ("$accent", "$success", "$warning", "$secondary", "$primary")
CHART_MIN = 30  # cells a chart needs beside another
GAP = 2
COMPACT_BELOW = 40  # screen rows below which the run view packs itself (80x30 must fit)
VERDICT_STYLES = {"fits": "$success", "tight": "$warning", "oom": "bold $error"}


def compact(app: App[object]) -> bool:
    return app.size.height < COMPACT_BELOW


def number(value: float | None, digits: int = 4) -> str:
    """``value`` to ``digits`` significant digits with a compact exponent (``1.2e-9``); "-"
    for no value, "nan" for a NaN."""
    if value is None:
        return "-"
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def fitted(value: float, width: int) -> str:
    """``value`` in at most ``width`` cells: fewer significant digits until it fits (a
    number is never cut)."""
    for digits in (4, 3, 2, 1):
        text = number(value, digits)
        if len(text) <= width:
            return text
    return text


def check_line(check: Check) -> str:
    return f"[{check.rule}] {check.message}"


class MaxBatchFound(Message):
    """max-batch's answer after an out-of-memory end, from the worker thread that found it."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line


class RunPanel(LinePanel):
    """The run gpudoc started: its state (and attempt, under ``--restarts``), the GPUs and
    GPU memory NVML reports for its processes — once it ended, the GPUs it was seen using and
    any process of it still holding one —, its command; with ``--model``, that memory beside
    the pre-launch estimate (and max-batch's answer after an out-of-memory end); then its last
    output lines (the first out-of-memory message it printed in place of the oldest). Lines
    for the estimate take output lines' places; compact, the header is cut to one line and
    one output line is kept."""

    SHOWN = 3
    STATE_STYLES: ClassVar[dict[RunState, str]] = {
        RunState.RUNNING: "$success", RunState.SUCCEEDED: "$success",
        RunState.FAILED: "$error", RunState.STOPPED: "$warning",
    }

    status: RunStatus | None = None
    members: tuple[ProcessRow, ...] = ()
    stopping = False  # gpudoc is stopping it (SIGTERM sent, SIGKILL after the grace)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.used_gpus: set[int] = set()
        self.peak_memory = 0
        self.attempt = ""  # "attempt 2 of 4" under --restarts
        self.estimate: Fit | None = None  # --model: the pre-launch estimate
        self.estimate_note: str | None = None  # --model without an estimate: why
        self.max_batch: str | None = None  # after an out-of-memory end: max-batch's answer (or that it runs)
        self.waiting: str | None = None  # not started yet: why
        self.command: tuple[str, ...] = ()
        # NVML's processes matched by the run's PIDs (the watch's, as gpudoc run measures):
        # the GPUs they are on and their memory now, and its peak.
        self.measured: tuple[tuple[int, ...], int, int] = ((), 0, 0)

    def show(self, status: RunStatus, members: tuple[ProcessRow, ...]) -> None:
        """Show ``status``; ``members`` are the run's rows in the process table (its GPUs)."""
        first = self.status is None
        self.status, self.members, self.waiting = status, members, None
        self._account()
        self.changed(relayout=first)

    def measure(self, gpus: tuple[int, ...], now: int, peak: int | None) -> None:
        """The run's GPU use as the watch found it (NVML's processes by the run's PIDs)."""
        measured = (gpus, now, peak or 0)
        if measured != self.measured:
            self.measured = measured
            self._account()
            self.changed()

    def _account(self) -> None:
        self.used_gpus.update(g for row in self.members for g in row.gpus)
        self.used_gpus.update(self.measured[0])
        self.peak_memory = max(self.peak_memory, self._memory(), self.measured[2])

    def wait_for(self, why: str, command: tuple[str, ...]) -> None:
        """The run is not started yet (``why``)."""
        self.waiting, self.command = why, command
        self.changed(relayout=True)

    def set_info(self, **info: object) -> None:
        """Change ``attempt``, ``estimate``, ``estimate_note`` or ``max_batch`` and draw again."""
        for name, value in info.items():
            setattr(self, name, value)
        self.changed(relayout=True)

    def on_resize(self) -> None:
        """The header is cut to the width: build the lines again."""
        if not self.stale:
            self.changed(relayout=True)

    def _memory(self) -> int:
        """The GPU memory of its processes now: their rows' in the table, or the watch's
        reading (the rows lack the session of simulated processes)."""
        rows = sum(row.gpu_memory for row in self.members if isinstance(row.gpu_memory, int))
        return max(rows, self.measured[1] if self.status is not None and self.status.state is RunState.RUNNING
                   else 0)

    def _held(self) -> str:
        """``GPU 0,1 3.2 GiB``: the GPUs its processes hold now, "" for none."""
        running = self.status is not None and self.status.state is RunState.RUNNING
        gpus = sorted({g for row in self.members for g in row.gpus} | set(self.measured[0] if running else ()))
        if not gpus:
            return ""
        memory = self._memory()
        return f"GPU {','.join(map(str, gpus))}" + (f" {size(memory)}" if memory else "")

    def _gpu_use(self) -> Content:
        assert self.status is not None
        held = self._held()
        if self.status.state is RunState.RUNNING:
            return Content(held or "no GPU yet")
        if self.used_gpus:
            peak = f" (up to {size(self.peak_memory)})" if self.peak_memory else ""
            used = f"used GPU {','.join(map(str, sorted(self.used_gpus)))}{peak}"
        else:
            used = "no GPU use seen"
        if not self.members:
            return Content(used)
        left = len(self.members)
        which = ", ".join(f"{row.pid} {verdict_name(row)}" for row in self.members[:3]) + (
            ", …" if left > 3 else "")
        return Content.assemble(used, "; ", (
            f"{left} process{'es' if left > 1 else ''} of it still hold{'' if left > 1 else 's'} "
            f"{held or 'GPU device files'}: {which} (x stops {'them' if left > 1 else 'it'})", "bold $warning",
        ))

    def _measured(self) -> str:
        """The run's GPU memory as NVML reports it for its processes: now and the peak."""
        now = self._memory()
        running = self.status is not None and self.status.state is RunState.RUNNING
        if self.peak_memory:
            return (f"{size(now)} now, peak {size(self.peak_memory)}" if running
                    else f"peak {size(self.peak_memory)}")
        return "none seen yet" if running else "none seen"

    def _estimate_lines(self, packed: bool) -> list[Content]:
        """With --model: the measured memory beside the estimate, and max-batch's answer."""
        lines = []
        fit = self.estimate
        if fit is not None:
            lines.append(Content.assemble(
                ("memory ", "bold"), "" if packed else "measured ", self._measured() if self.status else "-",
                (" · est. " if packed else " · estimated before the start ", MUTED),
                f"{size(fit.total_bytes)}/GPU: ",
                (fit.verdict, VERDICT_STYLES.get(fit.verdict, "")),
                f" in {size(fit.free_bytes)} free on GPU {fit.gpu}", strip_control_codes=False))
        elif self.estimate_note is not None:
            lines.append(Content.assemble(("memory ", "bold"), "measured ", self._measured(),
                                          (f" · no estimate: {clean(self.estimate_note)}", MUTED)))
        if self.max_batch is not None:
            lines.append(Content.styled(clean(self.max_batch), "bold $warning"))
        return lines

    def build_lines(self) -> list[Content]:
        packed = self.is_mounted and compact(self.app)
        width = max(self.size.width - _EDGES, 40)
        status = self.status
        if status is None:
            if self.waiting is None:
                return []
            return [Content.assemble(("RUN ", "bold"), (f"not started: {clean(self.waiting)}", "bold $warning"),
                                     "  ", clean(shlex.join(self.command))).truncate(width),
                    *self._estimate_lines(packed)]
        header = Content.assemble(
            ("RUN ", "bold"),
            ("stopping, " if self.stopping and status.state is RunState.RUNNING else "", "bold $warning"),
            (describe(status), self.STATE_STYLES[status.state]),
            (f"  {self.attempt}" if self.attempt else "", "bold"),
            "  ", self._gpu_use(), (f"  pid {status.pid}  ", MUTED), clean(shlex.join(status.command)),
            strip_control_codes=False,
        )
        # One line packed (two while processes it left hold a GPU), else two at most: a long
        # command would push the table off the screen.
        first = header.wrap(width)[0] if header.cell_length > width else header  # (wrapping costs)
        left = bool(self.members) and status.state is not RunState.RUNNING
        if (packed and not left) or first.cell_length == header.cell_length:
            lines = [header.truncate(width, ellipsis=True)]
        else:
            start = len(first.plain)
            start += len(header.plain[start:]) - len(header.plain[start:].lstrip(" "))
            lines = [first, header.divide([start])[1].truncate(width, ellipsis=True)]
        estimate = self._estimate_lines(packed)
        if packed:  # one line each, but the out-of-memory lines wrap: their pointers would be cut
            estimate = [line.truncate(width) for line in estimate[:1]] + estimate[1:]
        if status.oom is not None:
            lines.append(Content.assemble(
                ("out of memory: ", "bold $error"), (clean(status.oom), "$error"),
                ("" if self.estimate is not None else "  (gpudoc oom max-batch finds a batch size that fits)", MUTED),
                strip_control_codes=False,
            ))
        lines += estimate
        total = 3 if packed else self.SHOWN + 1
        room = max(total - len(lines), 0)
        shown = status.lines[-room:] if room else ()
        for line in shown:
            text = Content.styled(clean(line), MUTED, strip_control_codes=False)
            lines.append(text.truncate(width) if packed else text)
        lines += [Content("")] * (room - len(shown))
        return lines


class CurvesPanel(LinePanel):
    """The run's scalars as braille charts (raw values as dots, TensorBoard's smoothing as
    the line) with their last, minimum and maximum values, steps/s, and the checks that
    fired. Drawn again only when points arrive, a key changes what is shown, or on resize."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.curves = Curves()
        self.checks: list[Check] = []
        self.selected: tuple[str, str] | None = None  # one series alone; None: the default set
        self.axis = "step"
        self.source = "looking for the run's scalars"
        self.error: str | None = None
        self._height = 0

    # ------------------------------------------------------------ what is shown

    def take(self, points: Sequence[Point], checks: Sequence[Check], source: str, drop_output: bool) -> None:
        """New values and checks from the watch, and where the values come from now."""
        before = (self.curves.version, len(self.checks), self.source, self.error)
        if drop_output:
            self.curves.drop_run("output")
        self.curves.add(points)
        self.checks += checks
        self.source, self.error = source, None
        if before != (self.curves.version, len(self.checks), self.source, self.error):
            self._redraw()

    def failed(self, error: str) -> None:
        if error != self.error:
            self.error = error
            self._redraw()

    def add_check(self, check: Check) -> None:
        self.checks.append(check)
        self._redraw()

    def shown(self) -> list[Curve]:
        if self.selected is not None and self.selected in self.curves.series:
            return [self.curves.series[self.selected]]
        self.selected = None
        return self.curves.default()

    def cycle(self) -> str:
        """Show the next series alone (after the last, the default set again); what is shown."""
        keys = [(c.run, c.tag) for c in self.curves.names()]
        if not keys:
            return "no scalars yet"
        if self.selected in keys:
            index = keys.index(self.selected) + 1
            self.selected = keys[index] if index < len(keys) else None
        else:
            self.selected = keys[0]
        self._redraw()
        return self._what()

    def _what(self) -> str:
        if self.selected is not None:
            return self.curves.label(self.curves.series[self.selected])
        return "losses and metrics" if len(self.curves.default()) < len(self.curves.series) else "every scalar"

    def toggle_axis(self) -> str:
        self.axis = "time" if self.axis == "step" else "step"
        self._redraw()
        return self.axis

    def smoothing(self, direction: int) -> float:
        """The next smoothing weight up or down TensorBoard's range (0 to 0.999)."""
        weight = self.curves.weight
        if direction > 0:
            weight = next((w for w in WEIGHTS if w > weight), WEIGHTS[-1])
        else:
            weight = next((w for w in reversed(WEIGHTS) if w < weight), WEIGHTS[0])
        self.curves.set_weight(weight)
        self._redraw()
        return weight

    # ------------------------------------------------------------ drawing

    def _redraw(self) -> None:
        """Draw again; the first time, lay out too (a panel built out of view, on a small
        screen, would otherwise keep the height of no lines)."""
        self.changed(relayout=not self.lines)

    def on_resize(self) -> None:
        """Charts are laid out for the width: build them again."""
        if not self.stale:
            self.changed(relayout=True)

    def _update(self, lines: tuple[Content, ...]) -> None:
        """Show ``lines``, with the panel's height set to theirs: Textual keeps a widget's
        laid-out height by a key that a second layout request made before the first was
        handled does not change, so an ``auto`` height could keep a count of lines gone by."""
        super()._update(lines)
        height = len(self.lines) + 2
        if height != self._height:
            self._height = height
            self.styles.height = height

    def chart_rows(self) -> int:
        height = self.app.size.height if self.is_mounted else 48
        return 6 if height >= 56 else 4 if height >= 44 else 3 if height >= 40 else 2

    def build_lines(self) -> list[Content]:
        width = max(self.size.width - _EDGES, 40)
        rows = self.chart_rows()
        packed = self.is_mounted and compact(self.app)  # no min/max line: the plot's labels show its range
        lines = [self._header(width), self._checks_line().truncate(width)]
        shown = self.shown()
        if not shown:
            waiting = self.error or "no scalars yet"
            lines.append(Content.styled(clean(waiting), "$error" if self.error else MUTED).truncate(width))
            return lines + [Content("")] * (rows + (1 if packed else 2))
        fit = max(1, min(len(shown), (width + GAP) // (CHART_MIN + GAP)))
        each = (width + GAP) // fit - GAP
        charts = [self._chart(curve, each, rows, COLOURS[i % len(COLOURS)], packed)
                  for i, curve in enumerate(shown[:fit])]
        more = len(shown) - fit
        for y in range(len(charts[0])):
            parts: list[Content] = []
            for i, chart in enumerate(charts):
                if i:
                    parts.append(Content(" " * GAP))
                parts.append(chart[y])
            if y == 0 and more:
                parts.append(Content.styled(f"  +{more} more (v)", MUTED))
            lines.append(Content.assemble(*parts).truncate(width))
        return lines

    def _header(self, width: int) -> Content:
        """The header in ``width`` cells: the keys' states (smoothing first, then the x axis,
        what is shown) are kept before the step and the rate, and the source is cut last."""
        curves = self.curves
        rate = curves.steps_per_second()
        # (priority: lower is dropped later, text), in the order shown
        items: list[tuple[int, str]] = []
        if curves.max_step is not None:
            items.append((3, f" · step {curves.max_step}"))
        if rate is not None:
            items.append((4, f" · {rate:.3g} steps/s"))
        if curves.series:
            items.append((2, f" · {self._what()} (v)"))
        items += [(1, f" · x {self.axis} (a)"), (0, f" · smoothing {curves.weight:g} ([ ])")]
        source = clean(self.source)
        room = width - len("CURVES ")
        while items and len(source) + sum(len(text) for _, text in items) > room and \
                room - sum(len(text) for _, text in items) < 12:
            items.remove(max(items))
        keys = "".join(text for _, text in items)
        if len(source) + len(keys) > room:
            source = source[:max(room - len(keys) - 1, 0)] + "…"
        return Content.assemble(("CURVES ", "bold"), source, keys).truncate(width)

    def _checks_line(self) -> Content:
        if not self.checks:
            return Content.styled("checks: none fired", MUTED)
        errors = sum(1 for c in self.checks if c.severity == "error")
        latest = self.checks[-1]
        style = "bold $error" if errors else "bold $warning"
        count = f"checks: {len(self.checks)}" + (f" ({errors} error{'s' if errors > 1 else ''})" if errors else "")
        return Content.assemble((count, style), ("  (l lists them)  ", MUTED), "latest ",
                                clean(check_line(latest)))

    def _chart(self, curve: Curve, width: int, rows: int, colour: str, packed: bool = False) -> list[Content]:
        """``rows + 3`` lines, each ``width`` cells: name and last value, min and max (not
        when ``packed``), the plot with its value range on the left, the x range."""
        smoothed = curve.smoothed[-1] if curve.smoothed else math.nan
        title = Content.assemble((clean(self.curves.label(curve)), f"bold {colour}"), f"  {number(curve.last)}",
                                 (f" ~{number(smoothed)}" if curve.weight else "", MUTED))
        stats = Content.styled(f"min {number(curve.low)}  max {number(curve.high)}", MUTED)
        if self.axis == "time":
            start = self.curves.first_wall.get(curve.run, 0.0)
            xs: Sequence[float] = [t - start for t in curve.times]
        else:
            xs = curve.steps
        # The axis spans every value received (the min/max line's): the points kept, and the
        # smoothed line (it averages them), lie within it.
        label = max(len(number(curve.low)), len(number(curve.high)), 5)
        bounds = (curve.low, curve.high) if curve.low is not None and curve.high is not None else None
        drawn = plot(xs, curve.values, curve.smoothed, max(1, width - label - 1), rows, bounds)
        lines = [title.truncate(width, pad=True)] + ([] if packed else [stats.truncate(width, pad=True)])
        if drawn is None:
            blank = Content(" " * width)
            lines.append(Content.styled("no finite value yet".ljust(width), MUTED))
            return lines + [blank] * rows
        ends = [fitted(drawn.high, label), fitted(drawn.low, label)]
        labels = [ends[0], *[""] * (rows - 2), ends[1]] if rows > 1 else ends[:1]
        for y in range(rows):
            parts: list[tuple[str, str] | str] = [(f"{labels[y]:>{label}}┤", MUTED)]
            text, strong = drawn.rows[y], drawn.strong[y]
            start = 0
            for x in range(1, len(text) + 1):
                if x == len(text) or strong[x] != strong[start]:
                    parts.append((text[start:x], colour if strong[start] else MUTED))
                    start = x
            lines.append(Content.assemble(*parts).truncate(width, pad=True))
        if self.axis == "time":
            left, right = format_duration(drawn.x0), format_duration(drawn.x1)
        else:
            left, right = f"step {drawn.x0:.0f}", f"{drawn.x1:.0f}"
        room = width - label - 1
        axis = " " * (label + 1) + left + right.rjust(max(room - len(left), 1))
        lines.append(Content.styled(axis, MUTED).truncate(width, pad=True))
        return lines


class ChecksScreen(ModalScreen[None]):
    """Every check that fired, newest first, with its fix."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,l", "close", "Close")]

    def __init__(self, checks: Sequence[Check]) -> None:
        super().__init__()
        self.checks = list(checks)

    def compose(self) -> ComposeResult:
        with Vertical(id="checks"):
            yield Static(Content.styled(f"Checks on the run: {len(self.checks)} fired", "bold"))
            with VerticalScroll():
                yield Static(self.text(), id="checks-list")
            yield Static(Content.styled("Escape closes", MUTED))

    def text(self) -> Content:
        if not self.checks:
            return Content.styled("none fired so far", MUTED)
        parts: list[str | tuple[str, str]] = []
        for check in reversed(self.checks):
            style = "bold $error" if check.severity == "error" else "bold $warning"
            where = f" (step {check.step})" if check.step is not None else ""
            parts += [(f"{check.severity} [{check.rule}]", style), where, "\n  ", clean(check.message), "\n"]
            if check.fix:
                parts += [("  fix: ", MUTED), clean(check.fix), "\n"]
        return Content.assemble(*parts)

    def action_close(self) -> None:
        self.dismiss(None)
