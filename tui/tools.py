"""The toolbox's screens: doctor, metrics-check and oom estimate inside the TUI.

Each screen is a form, a status line and the result. Enter (or ctrl+r) runs the tool on a
worker thread that only posts messages; Escape cancels it (the next progress step stops it;
its result is dropped), or closes the screen when nothing runs. ctrl+s saves the result as
the JSON the CLI's ``--json`` prints. The screens call the CLI's own core functions.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Static

from gpudoc.errors import GpudocError

Progress = Callable[[str], None]


class Cancelled(Exception):
    """Raised in a tool's progress callback once the user cancelled it."""


@dataclass
class Outcome:
    """What a tool found: the object its ``--json`` prints, and the lines to show."""

    json: Any
    text: Content


class ToolProgress(Message):
    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step


class ToolDone(Message):
    def __init__(self, outcome: Outcome | None, error: str | None, cancelled: bool) -> None:
        super().__init__()
        self.outcome = outcome
        self.error = error
        self.cancelled = cancelled


@dataclass(frozen=True)
class Field:
    """One input of a tool's form."""

    name: str
    label: str
    value: str = ""
    placeholder: str = ""


class ToolScreen(Screen[None]):
    """A tool's form and result. A subclass gives ``TOOL``, ``FIELDS`` and ``compute``."""

    TOOL: ClassVar[str] = ""
    TITLE_TEXT: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel_or_close", "Cancel / close"),
        Binding("ctrl+r", "start", "Run"),
        Binding("ctrl+s", "save", "Save JSON"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.outcome: Outcome | None = None
        self.running = False
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Content.from_markup(f"[b]{self.TITLE_TEXT}[/b]"), classes="tool-title")
        for field in self.FIELDS:
            with Horizontal(classes="tool-field"):
                yield Label(field.label, classes="tool-label")
                yield Input(field.value, placeholder=field.placeholder,
                            id=f"field-{field.name}")
        with Horizontal(classes="tool-field"):
            yield Label("save JSON to", classes="tool-label")
            yield Input(f"gpudoc-{self.TOOL}.json", id="save-path")
        yield Static("Enter runs · Escape cancels or closes · ctrl+s saves the JSON", id="tool-status")
        with VerticalScroll(id="tool-result-box"):
            yield Static(id="tool-result")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"gpudoc {self.TOOL}"
        inputs = self.query(Input)
        if inputs:
            inputs.first().focus()

    def on_unmount(self) -> None:
        self._cancel.set()  # closed while it runs (another tool opened): stop at the next step

    def field(self, name: str) -> str:
        return self.query_one(f"#field-{name}", Input).value.strip()

    def compute(self, progress: Progress) -> Outcome:
        """Run the tool (a worker thread): call ``progress`` at each step."""
        raise NotImplementedError

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "save-path":
            self.action_save()
        else:
            self.action_start()

    def action_start(self) -> None:
        if self.running:
            self.notify(f"{self.TOOL} is still running (Escape cancels it)")
            return
        self.running = True
        self._cancel = threading.Event()
        self.outcome = None
        self._status(f"{self.TOOL}: starting…")
        self.query_one("#tool-result", Static).update("")
        self.run_worker(self._work, thread=True, group="tool", exclusive=True)

    def _work(self) -> None:
        """The worker: runs the tool and posts what came of it (it touches no widget)."""
        cancel = self._cancel

        def progress(step: str) -> None:
            if cancel.is_set():
                raise Cancelled
            self.post_message(ToolProgress(step))

        outcome = error = None
        try:
            outcome = self.compute(progress)
        except Cancelled:
            pass
        except GpudocError as exc:
            error = exc.message + (f" ({exc.fix})" if getattr(exc, "fix", None) else "")
        except Exception as exc:  # a bug in a tool must not take the monitor down
            error = f"{type(exc).__name__}: {exc}"
        self.post_message(ToolDone(None if cancel.is_set() else outcome, error, cancel.is_set()))

    def on_tool_progress(self, message: ToolProgress) -> None:
        if self.running and not self._cancel.is_set():
            self._status(f"{self.TOOL}: {message.step}…")

    def on_tool_done(self, message: ToolDone) -> None:
        self.running = False
        if message.cancelled:
            self._status(f"{self.TOOL}: cancelled")
            return
        if message.error is not None:
            self._status(f"{self.TOOL}: {message.error}", error=True)
            return
        self.outcome = message.outcome
        assert message.outcome is not None
        self.query_one("#tool-result", Static).update(message.outcome.text)
        self._status(f"{self.TOOL}: done · ctrl+s saves the JSON")

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#tool-status", Static)
        status.update(Content(text))
        status.set_class(error, "error")

    def action_cancel_or_close(self) -> None:
        if self.running:
            if not self._cancel.is_set():
                self._cancel.set()
                self._status(f"{self.TOOL}: cancelling (stops at its next step)…")
            return
        self.dismiss(None)

    def action_save(self) -> None:
        """Write the result as ``--json`` prints it (one line), staged and renamed into place."""
        from gpudoc.output import atomic_file, emit_json

        if self.outcome is None:
            self.notify("nothing to save yet: run it first", severity="warning")
            return
        dest = self.query_one("#save-path", Input).value.strip()
        if not dest or dest == "-":
            self.notify("give a file to save the JSON to", severity="warning")
            return
        try:
            with atomic_file(Path(dest), "w") as out:
                emit_json(self.outcome.json, out)
        except GpudocError as exc:
            self.notify(exc.message, severity="error")
            return
        self.notify(f"saved {dest}")


_MARKS = {"ok": ("✓", "green"), "info": ("–", "dim"), "warn": ("!", "yellow"),
          "problem": ("✗", "red"), "missing": ("✗", "red")}


class DoctorScreen(ToolScreen):
    """``gpudoc doctor``: the checklist, the frameworks probed in subprocesses."""

    TOOL = "doctor"
    TITLE_TEXT = "Doctor: Python, the driver and GPUs, device files, torch, TensorFlow, numba"
    FIELDS = (Field("skip", "skip frameworks", placeholder="torch tensorflow numba (not probed)"),)

    def __init__(self, backend: Any, simulated: str | None) -> None:
        super().__init__()
        self.backend = backend
        self.simulated = simulated

    def compute(self, progress: Progress) -> Outcome:
        from gpudoc.doctor import FRAMEWORKS, diagnose
        from gpudoc.errors import InputError

        skipped = self.field("skip").replace(",", " ").split()
        unknown = [name for name in skipped if name not in FRAMEWORKS]
        if unknown:
            raise InputError(f"skip: {', '.join(unknown)} is not a framework", f"use {', '.join(FRAMEWORKS)}")
        progress("starting the framework probes")
        report = diagnose(self.backend, frameworks=[f for f in FRAMEWORKS if f not in skipped],
                          progress=progress, simulated=self.simulated)
        width = max(len(c.name) for c in report.checks)
        parts: list[Content] = []
        for check in report.checks:
            mark, style = _MARKS[check.status.value]
            parts.append(Content.assemble((mark, style), f" {check.name:<{width}}  {check.detail}\n"))
            if check.fix and check.status.value != "ok":
                parts.append(Content.assemble(f"  {'':<{width}}  ", ("fix:", "dim"), f" {check.fix}\n"))
        bad = sum(c.status.value in ("problem", "missing") for c in report.checks)
        parts.append(Content(f"\n{bad} problem(s) or missing piece(s)" if bad else "\nno problems found"))
        return Outcome({"checks": report.checks, "exit_code": report.exit_code}, Content.assemble(*parts))


class MetricsScreen(ToolScreen):
    """``gpudoc metrics-check LOG…``: the logged metrics checked for scale errors."""

    TOOL = "metrics-check"
    TITLE_TEXT = "Metrics: check logged metrics (Keras logs, CSVLogger files, event files, JSON lines)"
    FIELDS = (Field("logs", "log files", placeholder="train.log metrics.csv runs/ (shell quoting)"),
              Field("range", "range", "auto", "auto, 1, 2, 255 or 65535"))

    def compute(self, progress: Progress) -> Outcome:
        from gpudoc.errors import InputError
        from gpudoc.metrics.logcheck import lint_json, lint_logs
        from gpudoc.metrics.report import text_lines

        try:
            logs = [Path(p) for p in shlex.split(self.field("logs"))]
        except ValueError as exc:
            raise InputError(f"log files: {exc}", "quote paths as in a shell") from None
        if not logs:
            raise InputError("give the log files to check", "e.g. training.log or a TensorBoard logdir")
        range_ = self.field("range") or "auto"
        if range_ not in ("auto", "1", "2", "255", "65535"):
            raise InputError(f"range {range_!r}: not one of auto, 1, 2, 255, 65535", "use 255 for 8-bit images")
        progress(f"reading {len(logs)} log(s)")
        report, extra = lint_logs(logs, None if range_ == "auto" else float(range_), False)
        return Outcome(lint_json(report, extra), Content("\n".join(text_lines(report))))


class OomScreen(ToolScreen):
    """``gpudoc oom estimate``: peak memory of training MODEL at a batch, and the remedies."""

    TOOL = "oom"
    TITLE_TEXT = "OOM: peak GPU memory of training, and whether it fits (as gpudoc oom estimate)"
    FIELDS = (
        Field("model", "model", placeholder="resnet18, hf:gpt2, path/to/file.py:factory, model.keras"),
        Field("batch", "batch", "32"),
        Field("input", "input", placeholder="3x224x224, tokens:1024 (default: the model's)"),
        Field("precision", "precision", "fp32", "fp32, amp or bf16"),
        Field("optimizer", "optimizer", "adam", "sgd, momentum, adam, adamw…"),
        Field("gpu", "gpu", placeholder="A100-80GB, H100-80GB, T4… (default: local GPU 0, else A100-80GB)"),
        Field("cuda", "cuda", placeholder="12.4 (default: the local torch build's)"),
    )

    def __init__(self, simulated: str | None) -> None:
        super().__init__()
        self.simulated = simulated
        self._fallback = False  # no local GPU: estimated for A100-80GB (the worker sets it)

    def compute(self, progress: Progress) -> Outcome:
        from gpudoc.errors import InputError
        from gpudoc.oom.plan import plan

        model = self.field("model")
        if not model:
            raise InputError("give a model", "e.g. resnet18, or path/to/file.py:factory")
        try:
            batch = int(self.field("batch"))
        except ValueError:
            raise InputError(f"batch {self.field('batch')!r}: not a whole number", "e.g. 32") from None
        if batch < 1:
            raise InputError(f"batch {batch}: must be at least 1", "e.g. 32")
        precision = self.field("precision") or "fp32"
        if precision not in ("fp32", "amp", "bf16"):
            raise InputError(f"precision {precision!r}: not fp32, amp or bf16", "use fp32, amp or bf16")
        made = plan(model, batch, self._device, self.field("input") or None, precision,
                    self.field("optimizer") or "adam", None, False, 1, False, self.field("cuda") or None,
                    "none", "foreach")
        notes = list(made.notes)
        est = made.estimate(progress=self._stage(progress, f"{made.spec.name} at batch {batch}"))
        est.notes = notes + est.notes
        if est.verdict != "fits":
            est.remedies = made.remedies(est, lambda step: self._stage(progress, f"remedy {step}"))
        text = _estimate_text(est)
        if self._fallback:
            text = Content.assemble(("no local GPU: estimated for A100-80GB (give a gpu to choose)\n", "yellow"), text)
        return Outcome(est, text)

    def _device(self) -> Any:
        """``gpu``'s device; the local GPU 0 (the simulated one under --demo) when empty."""
        from gpudoc.oom.devices import device_or_fallback

        name = self.field("gpu") or "local"
        if name.lower() != "local":
            self._fallback = False
            return device_or_fallback(name)[0]
        device, self._fallback = device_or_fallback(None, _backend(self.simulated))
        return device

    @staticmethod
    def _stage(progress: Progress, what: str) -> Progress:
        return lambda step: progress(f"{what}: {step}")


def _backend(simulated: str | None) -> Any:
    """A fresh backend for one look at GPU 0 (the device lookup closes it)."""
    if simulated is None:
        return None
    from gpudoc.gpu import SimulatedBackend

    return SimulatedBackend(simulated)


def _estimate_text(est: Any) -> Content:
    from gpudoc.output import format_bytes

    c = est.config
    style = {"fits": "green", "tight": "yellow"}.get(est.verdict, "red")
    lines = [
        Content(f"{est.model}  batch {c.batch}  {c.input}  {c.precision}, {c.optimizer}  on {est.device} "
                f"({format_bytes(est.capacity_bytes)})  [{est.method}]"),
        Content(f"parameters      {est.parameters:,} ({est.trainable_parameters:,} trainable)"),
        Content(f"peak allocated  {format_bytes(est.peak_allocated_bytes):>11}"),
        Content(f"peak reserved   {format_bytes(est.peak_reserved_bytes):>11}"),
        Content(f"total           {format_bytes(est.total_bytes):>11}  with CUDA context and cuDNN margin"),
        Content.assemble("verdict         ", (est.verdict, f"bold {style}"),
                         f"  headroom {format_bytes(est.headroom_bytes)}"),
        Content("at the peak:"),
        *(Content(f"  {name:42} {format_bytes(value):>11}")
          for name, value in sorted(est.breakdown.items(), key=lambda kv: -kv[1])),
        *(Content(f"note: {note}") for note in est.notes),
    ]
    if est.remedies:
        lines.append(Content("remedies, most memory saved first:"))
        lines.extend(Content(f"  {r.name:14} saves {format_bytes(r.saved_bytes):>11} -> "
                             f"{format_bytes(r.total_bytes):>11} ({r.verdict})  {r.change}") for r in est.remedies)
    return Content("\n").join(lines)


TOOLS: dict[str, tuple[str, str, Callable[[Any], ToolScreen]]] = {
    "doctor": ("doctor", "The environment checklist with a fix for each failed check (d)",
               lambda app: DoctorScreen(app.monitor.backend, app.simulated)),
    "metrics": ("metrics-check", "Check logged metrics for scale errors (m)", lambda app: MetricsScreen()),
    "oom": ("oom estimate", "Peak GPU memory of training a model, and the remedies (o)",
            lambda app: OomScreen(app.simulated)),
}
