"""The monitor's panels: one per GPU, the host, and the process table."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.widgets import DataTable, Static

from gpudoc.gpu.model import GpuDevice
from gpudoc.host import HostSnapshot
from gpudoc.monitor import ProcessRow
from gpudoc.na import NotAvailable
from gpudoc.reap.classify import Verdict

from .format import NA_TEXT, bar, duration, history, na, rate, size

HISTORY = 50
VERDICT_STYLES = {
    Verdict.ORPHAN: "bold red",
    Verdict.DETACHED: "yellow",
    Verdict.ACTIVE: "green",
    Verdict.PROTECTED: "cyan",
}


def _percent(used: Any, total: Any) -> float | None:
    if isinstance(used, int) and isinstance(total, int) and total > 0:
        return 100.0 * used / total
    return None


class TextPanel(Static):
    """A Static that redraws only when its text changed, and lays out again only when its
    line count did (a monitor redraws every second; layout is the costly part)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: tuple[str, tuple[Any, ...]] | None = None

    def set_text(self, text: Text) -> None:
        key = (text.plain, tuple(text.spans))
        if key == self._shown:
            return
        relayout = self._shown is None or self._shown[0].count("\n") != text.plain.count("\n")
        self._shown = key
        self.update(text, layout=relayout)


class GpuPanel(TextPanel):
    """One GPU: readings, utilisation and memory bars, and their recent history drawn with
    block characters (one text widget per GPU keeps a redraw cheap)."""

    def __init__(self, device: GpuDevice) -> None:
        super().__init__(id=f"gpu-{device.index}", classes="gpu")
        self.index = device.index
        self.util_history: deque[float] = deque(maxlen=HISTORY)
        self.memory_history: deque[float] = deque(maxlen=HISTORY)
        self._first = device

    def on_mount(self) -> None:
        self.show(self._first)

    def show(self, device: GpuDevice) -> None:
        """Show ``device``'s readings (or its error, keeping the history)."""
        self.set_class(device.error is not None, "failed")
        if device.error is not None:
            self.set_text(Text.assemble((f"GPU {self.index}  ", "bold"), (device.error, "red")))
            return
        memory_percent = _percent(device.memory_used, device.memory_total)
        util = device.utilization_gpu if isinstance(device.utilization_gpu, int) else None
        self.util_history.append(float(util or 0))
        self.memory_history.append(memory_percent or 0.0)
        power = (
            f"{device.power_draw:.0f}/{device.power_limit:.0f} W"
            if isinstance(device.power_draw, float) and isinstance(device.power_limit, float)
            else f"{na(device.power_draw, '{:.0f}')} W"
        )
        self.set_text(Text.assemble(
            (f"GPU {self.index}  ", "bold"), (na(device.name), "bold"),
            f"   {na(device.temperature, '{}°C')}  fan {na(device.fan_speed, '{}%')}  {power}\n",
            "util ", bar(device.utilization_gpu), "   mem ", bar(memory_percent),
            f" {size(device.memory_used)} / {size(device.memory_total)}\n",
            (
                f"SM {na(device.clock_sm, '{} MHz')}  MEM {na(device.clock_memory, '{} MHz')}  "
                f"PCIe rx {rate(device.pcie_rx)} tx {rate(device.pcie_tx)}  "
                f"{len(device.processes)} process(es)\n",
                "dim",
            ),
            ("util ", "dim"), history(self.util_history, "green"),
            ("   mem ", "dim"), history(self.memory_history, "magenta"),
        ))


class HostPanel(TextPanel):
    """CPU per core, memory, swap, load, disk and network rates."""

    def show(self, host: HostSnapshot) -> None:
        cores = Text()
        for i, percent in enumerate(host.cpu_per_core):
            cores.append(f"{i:>3} ")
            cores.append_text(bar(percent, 10))
            cores.append("\n" if i % 4 == 3 else "  ")
        load = host.load_average
        load_text = " ".join(f"{v:.2f}" for v in load) if not isinstance(load, NotAvailable) else NA_TEXT
        summary = Text.assemble(
            ("CPU ", "bold"), bar(host.cpu_percent), f"   load {load_text}\n",
            ("MEM ", "bold"), bar(_percent(host.memory_used, host.memory_total)),
            f" {size(host.memory_used)} / {size(host.memory_total)}   ",
            ("SWP ", "bold"), bar(_percent(host.swap_used, host.swap_total), 10),
            f" {size(host.swap_used)} / {size(host.swap_total)}\n",
            (
                f"disk read {rate(host.disk_read_rate)} write {rate(host.disk_write_rate)}   "
                f"net rx {rate(host.net_rx_rate)} tx {rate(host.net_tx_rate)}",
                "dim",
            ),
        )
        summary.append("\n")
        summary.append_text(cores)
        self.set_text(summary)


SortKey = Callable[[ProcessRow], Any]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else -1.0


class ProcessTable(DataTable[Any]):
    """Every process on the GPUs, NVML-listed or only holding device files."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("PID", "USER", "GPU", "GPU-MEM", "CPU%", "RSS", "AGE", "VERDICT", "COMMAND")
    SORTS: ClassVar[dict[str, tuple[SortKey, bool]]] = {
        "gpu-mem": (lambda r: _number(r.gpu_memory), True),
        "cpu": (lambda r: _number(r.cpu_percent), True),
        "pid": (lambda r: r.pid, False),
        "age": (lambda r: _number(r.age), True),
        "user": (lambda r: str(r.user), False),
    }

    def __init__(self) -> None:
        super().__init__(id="processes", cursor_type="row", zebra_stripes=True)
        self.rows_by_pid: dict[int, ProcessRow] = {}
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._column_keys: list[Any] = []
        self.sort_name = "gpu-mem"
        self.user_filter: str | None = None
        self.gpu_filter: int | None = None
        self._all: tuple[ProcessRow, ...] = ()

    def on_mount(self) -> None:
        self._column_keys = self.add_columns(*self.COLUMNS)

    def show(self, rows: tuple[ProcessRow, ...]) -> None:
        """Replace the rows, keeping the cursor on the same PID when it is still there."""
        self._all = rows
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
        cells = {str(r.pid): _cells(r) for r in rows}
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
        return self.sort_name

    def cycle_user(self) -> str:
        """Show the next user's processes (all users after the last one)."""
        users: list[str | None] = [None, *sorted({r.user for r in self._all if isinstance(r.user, str)})]
        self.user_filter = _next(users, self.user_filter)
        self._render_rows()
        return self.user_filter or "all users"

    def cycle_gpu(self) -> str:
        """Show the next GPU's processes (all GPUs after the last one)."""
        gpus: list[int | None] = [None, *sorted({g for r in self._all for g in r.gpus})]
        self.gpu_filter = _next(gpus, self.gpu_filter)
        self._render_rows()
        return "all GPUs" if self.gpu_filter is None else f"GPU {self.gpu_filter}"


def _next(options: list[Any], current: Any) -> Any:
    """The option after ``current`` (the first when ``current`` is gone)."""
    return options[(options.index(current) + 1) % len(options)] if current in options else options[0]


def _cells(r: ProcessRow) -> tuple[Any, ...]:
    verdict = (
        Text(r.verdict.value, style=VERDICT_STYLES.get(r.verdict, ""))
        if isinstance(r.verdict, Verdict) else Text("-", style="dim")
    )
    return (
        str(r.pid), na(r.user), ",".join(map(str, r.gpus)) or "-",
        size(r.gpu_memory) if not isinstance(r.gpu_memory, NotAvailable) else "-",
        na(r.cpu_percent, "{:.0f}"), size(r.rss), duration(r.age), verdict, r.command,
    )
