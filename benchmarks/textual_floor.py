"""The Textual framework's own CPU floor on this machine: an app that redraws one line once
a second and does nothing else. ``tui_cpu.py`` runs it next to the monitors as a calibration
row (how busy this machine makes an idle Textual app)."""

from __future__ import annotations

import time

from textual.app import App, ComposeResult
from textual.widgets import Static


class OneLine(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("floor", id="line")

    def on_mount(self) -> None:
        self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        self.query_one("#line", Static).update(f"floor {time.time():.0f}")


if __name__ == "__main__":
    OneLine().run()
