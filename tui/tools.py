"""The toolbox's screens: doctor, metrics-check (logs or images) and oom estimate / max-batch.

Each screen is a form, a status line and the result. Enter in a text field (or ctrl+r) runs
the tool on a worker thread that only posts messages; Escape cancels it (the next progress
step stops it; its result is dropped), or closes the screen when nothing runs; ``q`` closes it.
ctrl+s saves the result as the JSON the CLI's ``--json`` prints: never over a file the tool
read, never two outputs to one file, and an existing file only after asking. A form keeps its
values for the app's lifetime. Errors name the form's fields, not the CLI's flags. The screens
call the CLI's own core functions.
"""

from __future__ import annotations

import os
import re
import shlex
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Checkbox, Footer, Header, Input, Label, Select, Static
from textual.widgets._select import NoSelection

from gpudoc.errors import GpudocError
from gpudoc.metrics.compute import RANGES
from gpudoc.oom.devices import CATALOG

Progress = Callable[[str], None]
Form = dict[str, str | bool]
_FORMS: weakref.WeakKeyDictionary[App[Any], dict[str, Form]] = weakref.WeakKeyDictionary()  # per app, per tool
_FLAG = re.compile(r"(?<![\w-])--([a-z][\w-]*)")
_CLI_ONLY = (("name a file to write, or - for stdout", "name a file to write"),)  # the screens refuse stdout


class Cancelled(Exception):
    """Raised in a tool's progress callback once the user cancelled it."""


@dataclass
class Outcome:
    """What a tool found: the object its ``--json`` prints, the lines to show, and the files
    it read (never saved over; a directory stands for every file under it)."""

    json: Any
    text: Content
    inputs: list[Path] = field(default_factory=list)


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
    """One input of a tool's form: a text field, a picker of ``choices`` (``value`` chosen
    first and then always one chosen; without ``value``, none chosen is the default, which
    ``placeholder`` names) or, with ``flag``, a checkbox. ``wide`` spans both columns of a
    two-column form."""

    name: str
    label: str
    value: str = ""
    placeholder: str = ""
    choices: tuple[str, ...] = ()
    flag: bool = False
    wide: bool = False


class GpusRead(Message):
    """This machine's GPUs with their free memory, read for the device picker."""

    def __init__(self, gpus: list[Any]) -> None:
        super().__init__()
        self.gpus = gpus


class ToolScreen(Screen[None]):
    """A tool's form and result. A subclass gives ``TOOL``, ``FIELDS`` and ``compute``;
    ``FIXES`` rewrites the core's advice that names the CLI's flags into the form's words."""

    TOOL: ClassVar[str] = ""
    FIXES: ClassVar[tuple[tuple[str, str], ...]] = ()
    SAVE_NAME: ClassVar[str] = ""
    TITLE_TEXT: ClassVar[str] = ""
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    COLUMNS: ClassVar[int] = 1
    DEFAULT_CSS = """
    ToolScreen #tool-form { layout: grid; grid-size: 1; grid-rows: 1; grid-gutter: 0 2; height: auto; }
    ToolScreen #tool-form.columns-2 { grid-size: 2; }
    ToolScreen .tool-field.wide { column-span: 2; }
    ToolScreen .tool-field Select { width: 1fr; height: 1; }
    ToolScreen .tool-field SelectCurrent { border: none; height: 1; padding: 0 1; background: $boost; }
    ToolScreen .tool-field Select:focus > SelectCurrent { background: $primary 30%; }
    ToolScreen .tool-field Checkbox { border: none; height: 1; width: 1fr; padding: 0; background: $boost; }
    ToolScreen .tool-field Checkbox:focus { background: $primary 30%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel_or_close", "Cancel / close"),
        Binding("q", "close", "Close"),
        Binding("ctrl+r", "start", "Run"),
        Binding("ctrl+s", "save", "Save JSON"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.outcome: Outcome | None = None
        self.running = False
        self._cancel = threading.Event()

    def defaults(self) -> Form:
        """Initial values that differ from the fields' own (e.g. the run's logdir)."""
        return {}

    def form(self) -> Form:
        """Every widget's value, by id without ``field-`` (the save fields' too)."""
        values: Form = {}
        for widget in self.query("#tool-form Input, #tool-form Select, #tool-form Checkbox"):
            if widget.id is None:
                continue
            key = widget.id.removeprefix("field-")
            if isinstance(widget, Select):
                values[key] = "" if widget.is_blank() else str(widget.value)
            elif isinstance(widget, Input | Checkbox):
                values[key] = widget.value
        return values

    def compose(self) -> ComposeResult:
        initial: Form = {**self.defaults(), **_FORMS.get(self.app, {}).get(self.TOOL, {})}
        yield Header()
        yield Static(Content.from_markup(f"[b]{self.TITLE_TEXT}[/b]"), classes="tool-title")
        wide = " wide" if self.COLUMNS == 2 else ""
        with Grid(id="tool-form", classes=f"columns-{self.COLUMNS}"):
            for field in self.FIELDS:
                with Horizontal(classes="tool-field" + (wide if field.wide else "")):
                    yield Label(field.label, classes="tool-label")
                    yield _widget(field, initial.get(field.name))
            with Horizontal(classes="tool-field" + wide):
                yield Label("save JSON to", classes="tool-label")
                saved = initial.get("save-path")
                yield Input(saved if isinstance(saved, str) else
                            self.SAVE_NAME or f"gpudoc-{self.TOOL.replace(' ', '-')}.json", id="save-path")
        yield Static("Enter runs (ctrl+r in a picker) · Escape cancels · q closes · ctrl+s saves the JSON",
                     id="tool-status")
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

    def on_screen_suspend(self) -> None:
        self._keep_form()

    def _keep_form(self) -> None:
        """Remember the form for the next time this tool opens in this app."""
        if self.is_mounted:
            _FORMS.setdefault(self.app, {})[self.TOOL] = self.form()

    def explain(self, exc: GpudocError) -> str:
        """The error as one line in the form's words: ``--name`` of a field becomes its label,
        the known CLI advice is rewritten (``FIXES``), and advice still naming a flag the form
        does not have is left out."""
        fix = self.own_words(getattr(exc, "fix", None) or "")
        return self.own_words(exc.message) + (f" ({fix})" if fix and not _FLAG.search(fix) else "")

    def own_words(self, text: str) -> str:
        for cli, ours in (*self.FIXES, *_CLI_ONLY):
            text = text.replace(cli, ours)
        labels = {f.name: f.label for f in self.FIELDS}
        return _FLAG.sub(lambda m: labels.get(m.group(1), m.group(0)), text)

    def field(self, name: str) -> str:
        """A field's value: its text, the choice picked ("" for none) or "yes"/"" for a checkbox."""
        widget = self.query_one(f"#field-{name}")
        if isinstance(widget, Checkbox):
            return "yes" if widget.value else ""
        if isinstance(widget, Select):
            return "" if widget.is_blank() else str(widget.value)
        assert isinstance(widget, Input)
        return widget.value.strip()

    def number(self, name: str, low: int, default: int) -> int:
        """A whole-number field (``default`` when empty), at least ``low``; bad input otherwise."""
        from gpudoc.errors import InputError

        text = self.field(name)
        try:
            value = int(text) if text else default
        except ValueError:
            raise InputError(f"{name} {text!r}: not a whole number", f"e.g. {default}") from None
        if value < low:
            raise InputError(f"{name} {value}: must be at least {low}", f"e.g. {default}")
        return value

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
            error = self.explain(exc)
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
        self.action_close()

    def action_close(self) -> None:
        """Back to the monitor (a tool still running is cancelled); the form is kept."""
        self._keep_form()
        self.dismiss(None)

    def saves(self) -> list[tuple[str, str, Any]]:
        """What ctrl+s writes: (field label, destination, the JSON), for each field filled in."""
        assert self.outcome is not None
        dest = self.query_one("#save-path", Input).value.strip()
        return [("save JSON to", os.path.expanduser(dest), self.outcome.json)] if dest else []

    def outputs(self) -> list[tuple[str, str]]:
        """The screen's other outputs (label, destination): never the same file as a save."""
        return []

    def read_files(self) -> list[Path]:
        """The files the tool read: its outcome's inputs, a directory as every file under it."""
        assert self.outcome is not None
        files: list[Path] = []
        for path in self.outcome.inputs:
            if not path.is_dir():
                files.append(path)
                continue
            for folder, _, names in os.walk(path):  # an unreadable folder is skipped, not an error
                files += [Path(folder, name) for name in names]
        return files

    def check_saves(self, saves: list[tuple[str, str, Any]]) -> None:
        """Bad input if a save goes to stdout, is no file to write, is one file with another
        output, or is a file the tool read."""
        from gpudoc.errors import InputError
        from gpudoc.output import output_target, refuse_inputs_as_outputs, refuse_shared_outputs

        named = [(label, dest) for label, dest, _ in saves]
        for label, dest in named:
            if dest == "-":
                raise InputError(f"{label} -: stdout, and the screen is on the terminal", "give a file")
            if output_target(dest).stream:
                raise InputError(f"{label} {dest}: a stream, not a file", "give a file")
        refuse_shared_outputs([*named, *((label, os.path.expanduser(dest)) for label, dest in self.outputs() if dest)])
        refuse_inputs_as_outputs(named, self.read_files())

    def action_save(self) -> None:
        """Write the result as ``--json`` prints it (one line), staged and renamed into place,
        each output to its own file; an existing file is replaced only after asking."""
        from .screens import ConfirmScreen

        if self.outcome is None:
            self.notify("nothing to save yet: run it first", severity="warning")
            return
        saves = self.saves()
        if not self.query_one("#save-path", Input).value.strip():
            self._status(f"{self.TOOL}: give a file to save the JSON to", error=True)
            return
        try:
            self.check_saves(saves)
        except GpudocError as exc:
            self._status(f"{self.TOOL}: {self.explain(exc)} · nothing saved", error=True)
            return
        existing = [dest for _, dest, _ in saves if os.path.isfile(dest)]
        if not existing:
            self._write(saves)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._write(saves)
            else:
                self._status(f"{self.TOOL}: nothing saved ({' and '.join(existing)} kept)")

        self.app.push_screen(ConfirmScreen(f"{' and '.join(existing)} exists.\nReplace it with the JSON?",
                                           yes="Replace (y)", no="Keep it (n)"), answered)

    def _write(self, saves: list[tuple[str, str, Any]]) -> None:
        from gpudoc.output import atomic_file, emit_json

        for _, dest, data in saves:
            try:
                with atomic_file(Path(dest), "w") as out:
                    emit_json(data, out)
            except GpudocError as exc:
                self._status(f"{self.TOOL}: {self.explain(exc)}", error=True)
                return
        done = f"saved {', '.join(dest for _, dest, _ in saves)}"
        self._status(f"{self.TOOL}: {done}")
        self.notify(done)


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
    """``gpudoc metrics-check``: logged metrics checked for scale errors (LOG…), or metrics
    computed from predicted and target images at the range and checked (--pred --target)."""

    TOOL = "metrics-check"
    TITLE_TEXT = "Metrics: check logged metrics, or compute them from prediction/target images"
    COLUMNS = 2
    FIELDS = (Field("logs", "log files", placeholder="train.log metrics.csv runs/ (shell quoting)", wide=True),
              Field("pred", "or pred", placeholder="predicted images: a file (.npy, .npz, .png…) or a directory",
                    wide=True),
              Field("target", "target", placeholder="target images, matched to pred by name", wide=True),
              Field("reported", "reported", placeholder="with pred/target: a log or JSON of the reported metrics",
                    wide=True),
              Field("range", "range", "auto", choices=RANGES),
              Field("ssim-preset", "ssim preset", "wang", choices=("wang", "skimage")),
              Field("crop-border", "crop border", "0"),
              Field("y-channel", "Y channel", flag=True),
              Field("ms-ssim", "MS-SSIM", flag=True),
              Field("salvage", "salvage", flag=True))

    def compute(self, progress: Progress) -> Outcome:
        from gpudoc.errors import InputError
        from gpudoc.metrics.compute import check_images, report_lines
        from gpudoc.metrics.logcheck import lint_json, lint_logs

        try:
            logs = [Path(p).expanduser() for p in shlex.split(self.field("logs"))]
        except ValueError as exc:
            raise InputError(f"log files: {exc}", "quote paths as in a shell") from None
        pred, target, reported = (Path(self.field(n)).expanduser() if self.field(n) else None
                                  for n in ("pred", "target", "reported"))
        if (pred is None) != (target is None):
            raise InputError("give both pred and target images", "or clear both to check log files")
        if pred is not None and logs:
            raise InputError("give either log files or pred/target images, not both", "clear one of them")
        if pred is None and not logs:
            raise InputError("give the log files to check, or pred and target images",
                             "e.g. training.log, a TensorBoard logdir, or pred.npy and target.npy")
        if reported is not None and pred is None:
            raise InputError("reported compares with images: give pred and target too", "or clear reported")
        range_ = self.field("range") or "auto"
        declared = None if range_ == "auto" else float(range_)
        salvage = bool(self.field("salvage"))
        if pred is None:
            progress(f"reading {len(logs)} log(s)")
            report, extra = lint_logs(logs, declared, salvage)
            return Outcome(lint_json(report, extra), Content("\n".join(report_lines(report, {}))), logs)
        assert target is not None
        crop = self.number("crop-border", 0, 0)
        progress(f"reading {pred} and {target}")
        notes: list[str] = []
        report, extra = check_images(pred, target, reported, declared, salvage, notes.append,
                                     y_channel=bool(self.field("y-channel")), crop_border=crop,
                                     ssim_preset=self.field("ssim-preset") or "wang",
                                     ms_ssim=bool(self.field("ms-ssim")))
        printed = extra.pop("printed")
        text = Content.assemble(*((f"{note}\n", "yellow" if note.startswith("warning") else "dim")
                                  for note in notes), "\n".join(report_lines(report, printed)))
        return Outcome(lint_json(report, extra), text, [pred, target, *([reported] if reported else [])])


class OomScreen(ToolScreen):
    """``gpudoc oom estimate``: peak memory of training MODEL at a batch, and the remedies."""

    TOOL = "oom"
    TITLE_TEXT = "OOM: peak GPU memory of training, and whether it fits (as gpudoc oom estimate)"
    COLUMNS = 2
    BATCH = Field("batch", "batch", "32")
    FIELDS = (
        Field("model", "model", placeholder="resnet18, hf:gpt2, path/to/file.py:factory, model.keras", wide=True),
        Field("gpu", "gpu", placeholder="local GPU 0, else A100-80GB (reading this machine's GPUs…)",
              choices=tuple(d.name for d in CATALOG), wide=True),
        BATCH,
        Field("input", "input", placeholder="3x224x224, tokens:1024"),
        Field("precision", "precision", "fp32", choices=("fp32", "amp", "bf16")),
        Field("optimizer", "optimizer", "adam", "sgd, momentum, adam, adamw…"),
        Field("freeze", "freeze", placeholder="regex, e.g. ^backbone\\."),
        Field("accumulate", "accumulate", "1"),
        Field("checkpointing", "checkpointing", flag=True),
        Field("inference", "inference", flag=True),
        Field("zero-grad", "zero_grad", placeholder="torch's default", choices=("none", "zeros")),
        Field("optimizer-impl", "optimizer impl", placeholder="torch's default",
              choices=("foreach", "for-loop", "fused")),
        Field("cuda", "cuda", placeholder="e.g. 12.4"),
        Field("torch", "torch", placeholder="e.g. 2.3"),
    )

    def __init__(self, simulated: str | None) -> None:
        super().__init__()
        self.simulated = simulated
        self.FIELDS = tuple(replace(f, placeholder=_version_default(f.name)) if f.name in ("cuda", "torch") else f
                            for f in self.FIELDS)
        self._fallback = False  # no local GPU: estimated for A100-80GB (the worker sets it)

    def on_mount(self) -> None:
        super().on_mount()
        self.run_worker(self._read_gpus, thread=True, group="gpus")
        self._cuda_placeholder()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "field-torch":
            self._cuda_placeholder()

    def _cuda_placeholder(self) -> None:
        """The cuda field names the default for the torch modelled (it follows the torch field)."""
        self.query_one("#field-cuda", Input).placeholder = _version_default("cuda", self.field("torch"))

    def _read_gpus(self) -> None:
        """The worker listing this machine's GPUs for the picker (it touches no widget)."""
        from gpudoc.oom.plan import local_gpus

        self.post_message(GpusRead(local_gpus(_backend(self.simulated))))

    def on_gpus_read(self, message: GpusRead) -> None:
        """The local GPUs with their free memory first in the picker, then the catalog; the
        first local GPU is chosen unless another device already was."""
        from gpudoc.output import format_bytes

        picker = self.query_one("#field-gpu", Select)
        chosen = picker.value
        local = [(f"GPU {g.index} · {str(g.name).removeprefix('NVIDIA ')} · {format_bytes(g.memory_free)} free of "
                  f"{format_bytes(g.memory_total)}", f"local:{g.index}") for g in message.gpus
                 if isinstance(g.memory_free, int) and isinstance(g.memory_total, int)]
        picker.set_options([*local, *_catalog()])
        if not picker.is_blank() or chosen is Select.NULL:
            chosen = local[0][1] if local else Select.NULL
        if chosen is not Select.NULL:
            picker.value = chosen
        if not local:
            picker.prompt = "no local GPU: A100-80GB, or pick one"

    def plan(self) -> Any:
        """The form's plan (every field checked first, as the CLI's options are)."""
        from gpudoc.errors import InputError
        from gpudoc.oom.plan import plan

        model = self.field("model")
        if not model:
            raise InputError("give a model", "e.g. resnet18, or path/to/file.py:factory")
        return plan(model, self.number("batch", 1, int(self.BATCH.value)), self._device,
                    input_spec=self.field("input") or None, precision=self.field("precision") or "fp32",
                    optimizer=self.field("optimizer") or "adam", freeze=self.field("freeze") or None,
                    checkpointing=bool(self.field("checkpointing")), accumulate=self.number("accumulate", 1, 1),
                    inference=bool(self.field("inference")), cuda=self.field("cuda") or None,
                    zero_grad=self.field("zero-grad") or None, optimizer_impl=self.field("optimizer-impl") or None,
                    torch=self.field("torch") or None)

    def compute(self, progress: Progress) -> Outcome:
        est = self.plan().report(lambda what: self._stage(progress, what))
        return Outcome(est, self._text(_estimate_text(est)), self._inputs())

    def _text(self, text: Content) -> Content:
        if self._fallback:
            return Content.assemble(("no local GPU: estimated for A100-80GB (pick a gpu to choose)\n", "yellow"), text)
        return text

    def _inputs(self) -> list[Path]:
        """The model file the spec names (path/to/file.py:factory, a .keras file), if any."""
        spec = self.field("model")
        return [Path(spec.rpartition(":")[0] if spec.rpartition(":")[0].endswith(".py") else spec).expanduser()]

    def _device(self) -> Any:
        """The picked device (``local:N``: GPU N and its free memory now); the local GPU 0 (the
        simulated one under --demo), else A100-80GB, when none is picked."""
        from gpudoc.oom.plan import target_device

        device, self._fallback = target_device(self.field("gpu") or None, _backend(self.simulated))
        return device

    @staticmethod
    def _stage(progress: Progress, what: str) -> Progress:
        return lambda step: progress(f"{what}: {step}")


class MaxBatchScreen(OomScreen):
    """``gpudoc oom max-batch``: the largest batch whose estimate leaves 10% of the GPU free."""

    TOOL = "oom max-batch"
    TITLE_TEXT = "OOM: the largest batch that leaves 10% of the GPU free (as gpudoc oom max-batch)"
    BATCH = Field("batch", "2nd batch", "32")  # the second batch traced to fit the line (the first is 1)
    FIELDS = tuple(Field("batch", "2nd batch", "32") if f.name == "batch" else f for f in OomScreen.FIELDS)

    def compute(self, progress: Progress) -> Outcome:
        from gpudoc.oom.plan import max_batch_json

        best, est = self.plan().largest(lambda what: self._stage(progress, what))
        head = Content.assemble("max batch       ", (str(best), "bold green" if best else "bold red"),
                                f"  (leaves at least 10% of {est.device} free)\n")
        return Outcome(max_batch_json(best, est), self._text(Content.assemble(head, _estimate_text(est))),
                       self._inputs())


def _widget(spec: Field, kept: str | bool | None) -> Input | Select[str] | Checkbox:
    """The form's widget for one field, with the value ``kept`` from the last time if any."""
    if spec.flag:
        return Checkbox("", kept if isinstance(kept, bool) else spec.value == "yes", id=f"field-{spec.name}")
    if spec.choices:
        value: str | NoSelection = (kept if isinstance(kept, str) and kept in spec.choices
                                    else spec.value or Select.NULL)
        return Select([(c, c) for c in spec.choices], prompt=spec.placeholder or "default", value=value,
                      allow_blank=not spec.value, id=f"field-{spec.name}")
    return Input(kept if isinstance(kept, str) else spec.value, placeholder=spec.placeholder, id=f"field-{spec.name}")


def _version_default(name: str, torch: str = "") -> str:
    """The cuda or torch field's placeholder: the version the estimate takes when the field is
    empty (``oom.plan.versions_modelled``; a torch field it cannot read counts as empty)."""
    from gpudoc.oom.plan import versions_modelled

    try:
        modelled = versions_modelled(torch or None, None)
    except GpudocError:
        modelled = versions_modelled(None, None)
    if name == "torch":
        fallback = versions_modelled(None, None)
        why = "the local torch's" if fallback.torch_source.startswith("the local") else "assumed"
        return f"e.g. 2.3 (default: {fallback.torch}, {why})"
    major, minor = modelled.cuda
    why = ("the local torch's" if modelled.cuda_source.startswith("the local") else
           f"torch {modelled.torch}'s newest build" if modelled.cuda_source.startswith(("the newest", "the official"))
           else "assumed")
    return f"e.g. 12.4 (default: {major}.{minor}, {why})"


def _catalog() -> list[tuple[str, str]]:
    return [(d.name, d.name) for d in CATALOG]


def _backend(simulated: str | None) -> Any:
    """A fresh backend for one look at GPU 0 (the device lookup closes it)."""
    if simulated is None:
        return None
    from gpudoc.gpu import SimulatedBackend

    return SimulatedBackend(simulated)


def _estimate_text(est: Any) -> Content:
    """``gpudoc oom estimate``'s text report, its verdict coloured."""
    from gpudoc.oom.plan import estimate_lines

    style = {"fits": "green", "tight": "yellow"}.get(est.verdict, "red")
    lines = []
    for line in estimate_lines(est):
        if line.startswith("verdict "):
            head, _, rest = line.partition(est.verdict)
            lines.append(Content.assemble(head, (est.verdict, f"bold {style}"), rest))
        else:
            lines.append(Content(line))
    return Content("\n").join(lines)


def _toolbox(module: str) -> Callable[[Any], ToolScreen]:
    """The screen of one of the toolbox's own modules (imported when opened: they import this one)."""
    return lambda app: import_module(f"{__package__}.{module}").for_app(app)


TOOLS: dict[str, tuple[str, str, Callable[[Any], ToolScreen]]] = {
    "doctor": ("doctor", "The environment checklist with a fix for each failed check (d)",
               lambda app: DoctorScreen(app.monitor.backend, app.simulated)),
    "metrics": ("metrics-check", "Check logged metrics for scale errors (m)", lambda app: MetricsScreen()),
    "oom": ("oom estimate", "Peak GPU memory of training a model, and the remedies (o)",
            lambda app: OomScreen(app.simulated)),
    "max-batch": ("oom max-batch", "The largest batch of a model that fits the GPU (b)",
                  lambda app: MaxBatchScreen(app.simulated)),
    "events": ("events", "TensorBoard runs, tags, restarts and damage; trim and export (e)",
               _toolbox("events_screen")),
    "masks": ("mask sweep", "Dice/IoU against the mask threshold, the best one and Otsu's; the audit (M)",
              _toolbox("masks_screen")),
}
