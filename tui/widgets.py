"""The monitor's panels: one per GPU, the host, and the process table (the run's are in
:mod:`runview`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.content import Content
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import DataTable, Static

from gpudoc.gpu.model import GpuDevice
from gpudoc.host import HostSnapshot
from gpudoc.monitor import ProcessRow
from gpudoc.na import NotAvailable
from gpudoc.reap.classify import Verdict

from .format import MUTED, NA_TEXT, History, bar, clean, duration, na, rate, size

VERDICT_STYLES = {
    Verdict.ORPHAN: "bold red",
    Verdict.UNCONFIRMED: "magenta",
    Verdict.DETACHED: "yellow",
    Verdict.ACTIVE: "green",
    Verdict.PROTECTED: "cyan",
}


def verdict_name(row: ProcessRow) -> str:
    """The row's ``gpudoc reap`` verdict, or ``no verdict`` (it holds no device file seen)."""
    return row.verdict.value if isinstance(row.verdict, Verdict) else "no verdict"


def _percent(used: Any, total: Any) -> float | None:
    if isinstance(used, int) and isinstance(total, int) and total > 0:
        return 100.0 * used / total
    return None


FRAME = "line-panel--frame"
_EDGES = 4  # "│ " and " │" around every line


def _same(a: Content, b: Content) -> bool:
    """Same text and styles (``Content.__eq__`` compares the text only)."""
    return a.plain == b.plain and a.spans == b.spans


class TextPanel(Static):
    """A Static that redraws only when its text changed, and lays out again only when its
    line count did (a monitor redraws every second; layout is the costly part)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: Content | None = None

    def set_text(self, text: Content, *, wraps: bool = False) -> None:
        """Show ``text``; ``wraps`` when a change may change its height without a change in
        its line count (a line that wraps at the panel's width)."""
        shown = self._shown
        if shown is not None and _same(shown, text):
            return
        relayout = wraps or shown is None or shown.plain.count("\n") != text.plain.count("\n")
        self._shown = text
        self.update(text, layout=relayout)


class LinePanel(Widget):
    """Lines of text in a rounded frame, drawn through Textual's line API, for panels redrawn
    every sample.

    A subclass says what to show in ``build_lines`` and calls ``changed`` when its data
    changed. Only the lines whose text or styles changed are marked dirty (the frame and
    unchanged lines keep their cached rendering), and a line becomes segments only when it
    is drawn, without a wrapping pass or per-cell offsets. The panel draws its frame itself,
    coloured by the ``line-panel--frame`` component class: a CSS border and padding would
    triple the cost of every repainted line. A panel out of its container's view (a GPU
    panel scrolled away) builds and repaints nothing, it is only marked stale: ``reveal``
    draws it once it is in view again (repainting hidden widgets would make Textual arrange
    the whole screen again on every frame). Lines wider than the panel wrap.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {FRAME}
    DEFAULT_CSS = """
    LinePanel { height: auto; }
    LinePanel > .line-panel--frame { color: $primary; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._source: tuple[Content, ...] = ()
        self.lines: tuple[Content, ...] = ()
        self.stale = False
        self._strips: dict[int, Strip] = {}
        self._width = 0
        self._styles: dict[str, Style] = {}
        self._background: Color | None = None

    def build_lines(self) -> Sequence[Content]:
        """The lines to show now, each without a newline."""
        raise NotImplementedError

    def changed(self, *, relayout: bool = False) -> None:
        """The data behind the lines changed; ``relayout`` when the line count may have."""
        if self.is_mounted and not relayout and not self._in_view():
            self.stale = True
            return
        self._rebuild()

    def reveal(self) -> None:
        """Draw a stale panel if it is in view now."""
        if self.stale and self._in_view():
            self._rebuild()

    def _rebuild(self) -> None:
        self._source = tuple(self.build_lines())
        self._update(self._wrapped(self.size.width - _EDGES))

    def _in_view(self) -> bool:
        parent = self.parent
        return isinstance(parent, Widget) and self.region.overlaps(parent.region)

    def _wrapped(self, width: int) -> tuple[Content, ...]:
        if width <= 0 or all(line.cell_length <= width for line in self._source):
            return self._source
        return tuple(
            part for line in self._source for part in (line.wrap(width) if line.cell_length > width else [line])
        )

    def _update(self, lines: tuple[Content, ...]) -> None:
        old, self.lines = self.lines, lines
        relayout = len(old) != len(lines) or not self.is_mounted
        if self.stale or relayout:
            self.stale = False
            self._strips.clear()
            self.refresh(layout=relayout)
            return
        changed = [y for y, (before, after) in enumerate(zip(old, lines)) if not _same(before, after)]
        for y in changed:
            self._strips.pop(y + 1, None)
        if changed:
            width = self.size.width
            self.refresh(*(Region(0, y + 1, width, 1) for y in changed))

    def on_resize(self) -> None:
        if not self.stale:
            self._update(self._wrapped(self.size.width - _EDGES))

    def notify_style_update(self) -> None:
        """Styles (a theme switch) changed: every line is drawn again."""
        super().notify_style_update()
        self._strips.clear()
        self._styles.clear()
        self._background = None

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._wrapped(width - _EDGES)) + 2

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return max((line.cell_length for line in self._source), default=0) + _EDGES

    def render(self) -> Content:
        """The panel's text (what ``render_line`` draws)."""
        return Content("\n").join(self.lines)

    def render_lines(self, crop: Region) -> list[Strip]:
        """The rows in ``crop`` from this panel's own cache. Every row is already as wide as
        the panel and carries its background, so Textual's per-line styling pass (no border,
        padding, tint or opacity here) would add nothing but its cost; the app's line
        filters (colour conversion, NO_COLOR) are still applied."""
        width = self.size.width
        strips = [self._row(y, width) for y in crop.line_range]
        filters = self.get_line_filters()
        if filters:
            background = self._background
            if background is None:
                background = self._background = self.background_colors[1]
            for line_filter in filters:
                strips = [strip.apply_filter(line_filter, background) for strip in strips]
        x1, x2 = crop.column_span
        if (x1, x2) != (0, width):
            strips = [strip.crop(x1, x2) for strip in strips]
        return strips

    def render_line(self, y: int) -> Strip:
        return self._row(y, self.size.width)

    def _row(self, y: int, width: int) -> Strip:
        if width != self._width:  # rows are drawn as wide as the panel
            self._strips.clear()
            self._width = width
        strip = self._strips.get(y)
        if strip is None:
            strip = self._strips[y] = self._draw(y, width)
        return strip

    def _draw(self, y: int, width: int) -> Strip:
        """Row ``y``: the frame's top or bottom, or a line between its edges."""
        last = len(self.lines) + 1
        if y > last or width < _EDGES:
            return Strip.blank(width, self._style(""))
        frame = self._style(FRAME)
        if y in (0, last):
            left, right = ("╭", "╮") if y == 0 else ("╰", "╯")
            return Strip([Segment(f"{left}{'─' * (width - 2)}{right}", frame)], width)
        line, plain = self.lines[y - 1], self._style("")
        room = width - _EDGES - line.cell_length
        if room < 0:  # only before a resize has wrapped the lines again
            inner = list(Strip(self._segments(line)).crop(0, width - _EDGES))
        else:
            inner = self._segments(line)
            if room:
                inner.append(Segment(" " * room, plain))
        return Strip([Segment("│ ", frame), *inner, Segment(" │", frame)], width)

    def _segments(self, line: Content) -> list[Segment]:
        """``line`` as segments. Lines built from styled pieces have spans in order and
        without overlap, so each span is one segment in a style resolved once per theme;
        anything else goes through ``Content.render``."""
        text, plain, pos, segments = line.plain, self._style(""), 0, []
        for start, end, style in line.spans:
            if start < pos or not isinstance(style, str):
                base = self.visual_style
                return [
                    Segment(part, part_style.rich_style)
                    for part, part_style in line.render(base, end="", parse_style=self._get_style)
                ]
            if start > pos:
                segments.append(Segment(text[pos:start], plain))
            if end > start:
                segments.append(Segment(text[start:end], self._style(style)))
            pos = end
        if pos < len(text):
            segments.append(Segment(text[pos:], plain))
        return segments

    def _style(self, name: str) -> Style:
        """The Rich style for a Content style name ("" is the panel's own, ``FRAME`` the
        frame's), kept until the styles change (Textual forgets its own on every refresh)."""
        style = self._styles.get(name)
        if style is None:
            if name == FRAME:
                style = self.get_component_rich_style(FRAME)
            elif name:
                style = (self.visual_style + self._get_style(name)).rich_style
            else:
                style = self.visual_style.rich_style
            self._styles[name] = style
        return style


class GpuPanel(LinePanel):
    """One GPU: readings, utilisation and memory bars, and their recent history drawn with
    block characters; on a failed device, its error (the history is kept)."""

    def __init__(self, device: GpuDevice) -> None:
        super().__init__(id=f"gpu-{device.index}", classes="gpu")
        self.index = device.index
        self.util_history = History()
        self.memory_history = History()
        self.device = device
        self.show(device)

    def show(self, device: GpuDevice) -> None:
        """Show ``device``'s readings (or its error, keeping the history)."""
        failed = device.error is not None
        relayout = failed != (self.device.error is not None)
        self.device = device
        self.set_class(failed, "failed")
        if not failed:
            util = device.utilization_gpu
            self.util_history.append(util if isinstance(util, int) else 0.0)
            self.memory_history.append(_percent(device.memory_used, device.memory_total) or 0.0)
        self.changed(relayout=relayout)

    def build_lines(self) -> list[Content]:
        device = self.device
        if device.error is not None:
            return [Content.assemble((f"GPU {self.index}  ", "bold"), (clean(device.error), "$error"))]
        power = (
            f"{device.power_draw:.0f}/{device.power_limit:.0f} W"
            if isinstance(device.power_draw, float) and isinstance(device.power_limit, float)
            else f"{na(device.power_draw, '{:.0f}')} W"
        )
        return [
            Content.assemble(
                (f"GPU {self.index}  {clean(na(device.name))}", "bold"),
                f"   {na(device.temperature, '{}°C')}  fan {na(device.fan_speed, '{}%')}  {power}",
                strip_control_codes=False,
            ),
            Content.assemble(
                "util ", bar(device.utilization_gpu), "   mem ",
                bar(_percent(device.memory_used, device.memory_total)),
                f" {size(device.memory_used)} / {size(device.memory_total)}",
                strip_control_codes=False,
            ),
            Content.styled(
                f"SM {na(device.clock_sm, '{} MHz')}  MEM {na(device.clock_memory, '{} MHz')}  "
                f"PCIe rx {rate(device.pcie_rx)} tx {rate(device.pcie_tx)}  "
                + ("processes N/A" if device.processes_error else f"{len(device.processes)} process(es)"),
                MUTED,
                strip_control_codes=False,
            ),
            Content.assemble(
                ("util ", MUTED), (str(self.util_history), "$success"),
                ("   mem ", MUTED), (str(self.memory_history), "$secondary"),
                strip_control_codes=False,
            ),
        ]


class HostPanel(LinePanel):
    """CPU per core, memory, swap, load, disk and network rates."""

    host: HostSnapshot | None = None

    def show(self, host: HostSnapshot) -> None:
        """Show ``host``; lays out again when the number of cores changed."""
        relayout = self.host is None or len(self.host.cpu_per_core) != len(host.cpu_per_core)
        self.host = host
        self.changed(relayout=relayout)

    def build_lines(self) -> list[Content]:
        host = self.host
        if host is None:
            return []
        load = host.load_average
        load_text = " ".join(f"{v:.2f}" for v in load) if not isinstance(load, NotAvailable) else NA_TEXT
        lines = [
            Content.assemble(
                ("CPU ", "bold"), bar(host.cpu_percent), f"   load {load_text}", strip_control_codes=False
            ),
            Content.assemble(
                ("MEM ", "bold"), bar(_percent(host.memory_used, host.memory_total)),
                f" {size(host.memory_used)} / {size(host.memory_total)}   ",
                ("SWP ", "bold"), bar(_percent(host.swap_used, host.swap_total), 10),
                f" {size(host.swap_used)} / {size(host.swap_total)}",
                strip_control_codes=False,
            ),
            Content.styled(
                f"disk read {rate(host.disk_read_rate)} write {rate(host.disk_write_rate)}   "
                f"net rx {rate(host.net_rx_rate)} tx {rate(host.net_tx_rate)}",
                MUTED,
                strip_control_codes=False,
            ),
        ]
        cores = host.cpu_per_core
        for first in range(0, len(cores), 4):
            parts: list[str | Content] = []
            for i in range(first, min(first + 4, len(cores))):
                parts += ["  " if i > first else "", f"{i:>3} ", bar(cores[i], 10)]
            lines.append(Content.assemble(*parts, strip_control_codes=False))
        return lines


SortKey = Callable[[ProcessRow], Any]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else -1.0


class ProcessTable(DataTable[Any]):
    """Every process on the GPUs, NVML-listed or only holding device files. ``title`` is the
    line above the table that says how it is sorted and filtered, and how many rows it shows."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("PID", "USER", "GPU", "GPU-MEM", "CPU%", "RSS", "AGE", "VERDICT", "COMMAND")
    SORTS: ClassVar[dict[str, tuple[SortKey, bool]]] = {
        "gpu-mem": (lambda r: _number(r.gpu_memory), True),
        "cpu": (lambda r: _number(r.cpu_percent), True),
        "pid": (lambda r: r.pid, False),
        "age": (lambda r: _number(r.age), True),
        "user": (lambda r: str(r.user), False),
    }
    SORT_NAMES: ClassVar[dict[str, str]] = {
        "gpu-mem": "GPU memory", "cpu": "CPU%", "pid": "PID", "age": "age", "user": "user",
    }

    def __init__(self, title: TextPanel) -> None:
        super().__init__(id="processes", cursor_type="row", zebra_stripes=True)
        self.title = title
        self.rows_by_pid: dict[int, ProcessRow] = {}
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._column_keys: list[Any] = []
        self.sort_name = "gpu-mem"
        self.user_filter: str | None = None
        self.gpu_filter: int | None = None
        self._all: tuple[ProcessRow, ...] = ()
        self.run_sid: int | None = None
        self.unlisted = ""
        self._titled: tuple[Any, ...] | None = None

    def on_mount(self) -> None:
        self._column_keys = self.add_columns(*self.COLUMNS)
        self._show_title()

    @property
    def filtered(self) -> bool:
        return self.user_filter is not None or self.gpu_filter is not None

    def show(self, rows: tuple[ProcessRow, ...], run_sid: int | None = None, unlisted: str = "") -> None:
        """Replace the rows, keeping the cursor on the same PID when it is still there;
        processes in session ``run_sid`` (the run gpudoc started) are marked; ``unlisted``
        says whose processes the sample could not list (a GPU not answering)."""
        self._all = rows
        self.run_sid = run_sid
        self.unlisted = unlisted
        self._render_rows()

    def _render_rows(self) -> None:
        selected = self.selected
        rows = [
            r for r in self._all
            if (self.user_filter is None or r.user == self.user_filter)
            and (self.gpu_filter is None or self.gpu_filter in r.gpus)
        ]
        order, reverse = self.SORTS[self.sort_name]
        rows.sort(key=order, reverse=reverse)
        self.rows_by_pid = {r.pid: r for r in rows}
        cells = {str(r.pid): _cells(r, r.sid == self.run_sid) for r in rows}
        if list(cells) == list(self._cells):
            for key, values in cells.items():
                for column, old, new in zip(self._column_keys, self._cells[key], values):
                    if old != new:
                        self.update_cell(key, column, new)
        else:
            self.clear()
            for key, values in cells.items():
                self.add_row(*values, key=key)
            if selected is not None and selected.pid in self.rows_by_pid:
                self.move_cursor(row=self.get_row_index(str(selected.pid)))
        self._cells = cells
        self._show_title()

    def _show_title(self) -> None:
        """Write the title again when what it says changed (not on every sample)."""
        shown = (self.sort_name, self.user_filter, self.gpu_filter, len(self.rows_by_pid), len(self._all),
                 self.unlisted)
        if shown == self._titled:
            return
        self._titled = shown
        self.title.set_text(self.caption(), wraps=True)

    def caption(self) -> Content:
        """``Processes — sorted by GPU memory · user alice · GPU 1 · 3 of 12 shown``."""
        parts: list[str | tuple[str, str]] = [("Processes", "bold"), f" — sorted by {self.SORT_NAMES[self.sort_name]}"]
        if self.user_filter is not None:
            parts += [" · ", (f"user {clean(self.user_filter)}", "bold $accent")]
        if self.gpu_filter is not None:
            parts += [" · ", (f"GPU {self.gpu_filter}", "bold $accent")]
        shown, total = len(self.rows_by_pid), len(self._all)
        if self.filtered:
            parts.append(f" · {shown} of {total} shown" + ("" if shown else ": none matches"))
        elif total:
            parts.append(f" · {total} shown")
        else:
            parts.append(" · none listed" if self.unlisted else " · no process uses a GPU")
        if self.unlisted:
            parts += [" · ", (self.unlisted, "$warning")]
        if self.filtered:
            parts.append(("  (c clears the filters)", MUTED))
        return Content.assemble(*parts)

    @property
    def selected(self) -> ProcessRow | None:
        """The row under the cursor."""
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.rows_by_pid.get(int(key)) if key is not None else None

    def cycle_sort(self) -> str:
        names = list(self.SORTS)
        self.sort_name = names[(names.index(self.sort_name) + 1) % len(names)]
        self._render_rows()
        return self.SORT_NAMES[self.sort_name]

    def cycle_user(self) -> bool:
        """Show the next user's processes (all users after the last one); False when there
        is no user to choose."""
        users: list[str | None] = [None, *sorted({r.user for r in self._all if isinstance(r.user, str)})]
        self.user_filter = _next(users, self.user_filter)
        self._render_rows()
        return len(users) > 1

    def cycle_gpu(self) -> bool:
        """Show the next GPU's processes (all GPUs after the last one); False when no
        process uses a GPU."""
        gpus: list[int | None] = [None, *sorted({g for r in self._all for g in r.gpus})]
        self.gpu_filter = _next(gpus, self.gpu_filter)
        self._render_rows()
        return len(gpus) > 1

    def clear_filters(self) -> None:
        """Show every process again."""
        self.user_filter = self.gpu_filter = None
        self._render_rows()


def _next(options: list[Any], current: Any) -> Any:
    """The option after ``current`` (the first when ``current`` is gone)."""
    return options[(options.index(current) + 1) % len(options)] if current in options else options[0]


def _cells(r: ProcessRow, in_run: bool) -> tuple[Any, ...]:
    verdict = (
        Text(r.verdict.value, style=VERDICT_STYLES.get(r.verdict, ""))
        if isinstance(r.verdict, Verdict) else Text("-", style="dim")
    )
    command = Text.assemble(("run ", "bold magenta"), r.command) if in_run else r.command
    return (
        str(r.pid), na(r.user), ",".join(map(str, r.gpus)) or "-",
        size(r.gpu_memory) if not isinstance(r.gpu_memory, NotAvailable) else "-",
        na(r.cpu_percent, "{:.0f}"), size(r.rss), duration(r.age), verdict, command,
    )
