"""The live monitor: GPU panels, host panel and process table over a :class:`Monitor`.

Sampling runs on one long-lived thread that only posts messages, so NVML or /proc
stalls never freeze the screen, and the UI thread does nothing between samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header

from gpudoc.errors import InputError
from gpudoc.monitor import Monitor, MonitorSample, ProcessRow
from gpudoc.output import format_bytes
from gpudoc.reap.end import Action, Outcome
from gpudoc.runwatch import Check, Point, Watch, how_it_ended, max_batch_line, with_max_batch
from gpudoc.train import LEFTOVER_WAIT, Attempts, Run, RunState, RunStatus, describe

from .messages import ActionFinished, SampleFailed, Sampled, Watched, WatchFailed
from .runview import ChecksScreen, CurvesPanel, MaxBatchFound, RunPanel, check_line, compact
from .screens import ConfirmScreen, HelpScreen
from .tools import TOOLS, ToolScreen
from .widgets import GpuPanel, HostPanel, LinePanel, ProcessTable, TextPanel, verdict_name

if TYPE_CHECKING:
    from gpudoc.oom.plan import Fit, Plan

_ACTIONS = ("terminate", "kill", "reap", "stop_run")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_CURVE_ACTIONS = ("cycle_curves", "curve_axis", "smoothing", "checks")
_OVER_TOOLS = ("quit", "help", "tool")  # the app's actions that a tool screen on top keeps
_DONE = (Outcome.ENDED, Outcome.GONE)  # the process is gone: the action did its job
FIRST_SAMPLE_WAIT = 0.5
NOTIFY_AT_ONCE = 3  # checks that fire in one look: each notified up to this many
STOP_GRACE = 10.0


class Looked(Message):
    """A sample (``Sampled`` or ``SampleFailed``) and what the look at the run after it found
    (``Watched`` or ``WatchFailed``), posted together by the sampler thread."""

    def __init__(self, sampled: Message, found: Message) -> None:
        super().__init__()
        self.sampled = sampled
        self.found = found


class GpudocApp(App[None]):
    """``monitor`` is sampled every ``interval`` seconds; ``readonly`` removes every action
    that signals a process; ``host_name`` titles the screen (this machine's by default).
    With a ``run`` (a command gpudoc started), its panel shows how it goes, its processes are
    marked in the table, ``x`` stops it, and quitting stops it first (after asking). With a
    ``watch`` (of that run, or of a logdir alone), the curves panel follows its scalars and
    the checks on them; the watch is polled on the sampler's thread after each sample.
    ``attempts`` runs the command instead of ``run``: a failed attempt is started again (under
    ``--restarts``), and one not started yet is started after asking whether to, when the
    pre-launch ``estimate`` (``--model``) predicts out of memory (the answer no exits the app;
    ``start_error``: it could not start). ``estimate_note`` says why there is no estimate."""

    CSS_PATH = "app.tcss"
    TITLE = "gpudoc"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("s", "sort", "Sort"),
        Binding("u", "filter_user", "User"),
        Binding("g", "filter_gpu", "GPU"),
        Binding("c", "clear_filters", "Clear filters"),
        Binding("t", "terminate", "Terminate"),
        Binding("k", "kill", "Kill"),
        Binding("r", "reap", "Reap orphans"),
        Binding("x", "stop_run", "Stop run"),
        Binding("d", "tool('doctor')", "Doctor", show=False),
        Binding("m", "tool('metrics')", "Metrics", show=False),
        Binding("o", "tool('oom')", "OOM", show=False),
        Binding("b", "tool('max-batch')", "Max batch", show=False),
        Binding("e", "tool('events')", "Events", show=False),
        Binding("M", "tool('masks')", "Masks", show=False),
        Binding("v", "cycle_curves", "Curves"),
        Binding("l", "checks", "Checks"),
        Binding("a", "curve_axis", "Step/time", show=False),
        Binding("left_square_bracket", "smoothing(-1)", "Less smoothing", show=False),
        Binding("right_square_bracket", "smoothing(1)", "More smoothing", show=False),
    ]

    def __init__(
        self,
        monitor: Monitor,
        *,
        interval: float = 1.0,
        readonly: bool = False,
        host_name: str | None = None,
        run: Run | None = None,
        watch: Watch | None = None,
        simulated: str | None = None,
        attempts: Attempts | None = None,
        estimate: tuple[Plan, Fit] | None = None,
        estimate_note: str | None = None,
    ) -> None:
        super().__init__()
        self.simulated = simulated
        self.attempts = attempts
        self.training_run = run if run is not None or attempts is None else attempts.run
        self.estimate = estimate
        self.estimate_note = estimate_note
        self.start_error: InputError | None = None
        self.signalled: signal.Signals | None = None  # SIGTERM/SIGHUP that ended the app
        self.max_batch: str | None = None  # after an out-of-memory end: max-batch's answer
        self._ended_at: float | None = None  # when this attempt was first seen ended
        self._stopped_by_user = False  # x (or quitting) stopped the run or what it left: no restart
        self.run_watch = watch
        self._points: list[Point] = []  # what the watch read in one poll (sampler thread only)
        if watch is not None:
            watch.on_points = self._points.extend
        self._left_told: set[int] = set()  # leftovers already notified
        self._run_state = RunState.RUNNING
        self._run_left: tuple[ProcessRow, ...] = ()  # processes of an ended run still on a GPU
        self._end_scanned: Run | None = None  # the run whose end the holder scan has followed
        self._stoppable = self.training_run is not None
        self._stop_pending = False
        self.host_name = host_name or socket.gethostname()
        self.monitor = monitor
        self.interval = interval
        self.readonly = readonly
        self.sample: MonitorSample | None = None
        self.samples = 0
        self._sampling = threading.Lock()
        self._stopped = threading.Event()
        self._first_taken = threading.Event()
        self._gpu_panels: dict[int, GpuPanel] = {}
        self._table = ProcessTable(TextPanel(id="processes-title"))
        self._own_actions = {b.action.split("(")[0] for b in self.BINDINGS if isinstance(b, Binding)}

    def on_load(self) -> None:
        """Start sampling, and give the first sample a moment: when it is in the queue before
        the screen is first drawn, the GPU panels are laid out and painted once, not twice."""
        threading.Thread(target=self._sample_periodically, name="gpudoc-sampler", daemon=True).start()
        self._first_taken.wait(FIRST_SAMPLE_WAIT)

    def compose(self) -> ComposeResult:
        yield Header()
        yield TextPanel(id="status")
        yield VerticalScroll(id="gpus")
        yield HostPanel(id="host")
        if self.training_run is not None or self.attempts is not None:
            yield RunPanel(id="run")
        if self.run_watch is not None:
            yield CurvesPanel(id="curves")
        yield self._table.title
        yield self._table
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.host_name + ("  [read-only]" if self.readonly else "")
        self.screen.set_class(self.run_watch is not None, "watching")
        self._pack()
        self.query_one(ProcessTable).focus()
        self.watch(self.query_one("#gpus", VerticalScroll), "scroll_y", self._reveal_panels_soon, init=False)
        if self.query(RunPanel):
            self._mount_run()
        with contextlib.suppress(ValueError, RuntimeError):  # not on the main thread: no handlers there
            for sig in _STOP_SIGNALS:
                if sig is signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # under nohup SIGHUP stays ignored, as in gpudoc run
                asyncio.get_running_loop().add_signal_handler(sig, self._on_stop_signal, sig)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        """SIGTERM or SIGHUP (the terminal closed): stop the run as x does, without asking
        (what it left on the GPUs too), then quit; a second signal quits at once."""
        first = self.signalled is None
        self.signalled = sig
        run = self.training_run
        if first and run is not None and (run.running or self._run_left) and not self._stop_pending:
            self._stop_run(quit_after=True)
        else:
            self.exit()

    def _mount_run(self) -> None:
        """The run panel's estimate and attempt; a run not started yet is started after
        asking when its estimate predicts out of memory."""
        panel = self.query_one(RunPanel)
        fit = self.estimate[1] if self.estimate is not None else None
        panel.set_info(estimate=fit, estimate_note=self.estimate_note,
                       attempt=self.attempts.label() if self.attempts is not None else "")
        if self.training_run is not None or self.attempts is None:
            return
        assert fit is not None, "a run is started before the app unless its estimate predicts out of memory"
        panel.wait_for("estimated out of memory: start it anyway?", self.attempts.command)
        remedy = fit.remedy_line()
        command = shlex.join(self.attempts.command)[:200]
        question = (f"The run is estimated not to fit the GPU memory free now:\n{fit.line()}\n"
                    + (f"{remedy}\n" if remedy else "") + f"\nStart it anyway?\n{command}")

        def answered(yes: bool | None) -> None:
            if yes:
                self._start_attempt()
            else:
                self.exit()

        self.push_screen(ConfirmScreen(question, yes="Start anyway (y)", no="Don't start (n)"), answered)

    def _start_attempt(self) -> None:
        """Start the next attempt of the run (the first after asking, or a restart)."""
        assert self.attempts is not None
        try:
            self.training_run = self.attempts.start()
        except InputError as exc:  # the command cannot run (any more): said once gpudoc tui exits
            self.start_error = exc
            self.exit()
            return
        self._run_state, self._ended_at = RunState.RUNNING, None
        self._stoppable = True
        panel = self.query_one(RunPanel)
        panel.set_info(attempt=self.attempts.label())
        panel.show(self.training_run.status(), ())
        self.refresh_bindings()
        self.poll()

    def _pack(self) -> None:
        """Below ``COMPACT_BELOW`` rows, a run's view packs itself (app.tcss hides the host
        panel, whose summary joins the status line, and gives the GPUs less room)."""
        packed = compact(self) and (self.training_run is not None or self.attempts is not None
                                    or self.run_watch is not None)
        screen = self.screen_stack[0]
        if packed != screen.has_class("compact"):
            screen.set_class(packed, "compact")
            for panel in (*self.query(RunPanel), *self.query(CurvesPanel)):
                panel.changed(relayout=True)
            if self.sample is not None:
                self._show_status(self.sample)

    def on_unmount(self) -> None:
        self._stopped.set()
        with contextlib.suppress(ValueError, RuntimeError):
            for sig in _STOP_SIGNALS:
                asyncio.get_running_loop().remove_signal_handler(sig)

    def on_resize(self) -> None:
        self._pack()
        self._reveal_panels_soon()

    def _reveal_panels_soon(self) -> None:
        self.call_after_refresh(self._reveal_panels)

    def _reveal_panels(self) -> None:
        """Draw the panels that changed while out of view and are in view now (called once
        a scroll or resize is laid out)."""
        for panel in self.query(LinePanel):
            panel.reveal()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Signal actions do not exist in read-only mode, nor "stop run" without a run or
        once it ended (and left no process on a GPU), nor "clear filters" without a filter
        (hidden from the footer too)."""
        if isinstance(self.screen, ToolScreen) and action in self._own_actions and action not in _OVER_TOOLS:
            return False  # the monitor's keys act on the monitor's screen only
        if action == "stop_run" and (not self._stoppable or self._stop_pending):
            return False
        if action == "clear_filters" and not self._table.filtered:
            return False
        if action in _CURVE_ACTIONS and self.run_watch is None:
            return False
        return not (self.readonly and action in _ACTIONS)

    def _sample_periodically(self) -> None:
        """The sampler thread: a sample every ``interval`` seconds until the app exits."""
        due = time.monotonic()
        while True:
            self._sample()
            due = max(due + self.interval, time.monotonic())
            if self._stopped.wait(due - time.monotonic()):
                return

    @work(thread=True, group="poll")
    def poll(self) -> None:
        """Take one sample now, on a worker thread (after an action)."""
        self._sample()

    def _sample(self) -> None:
        """Take a sample and post it (one at a time: every backend call is bounded), then
        look at the run's scalars."""
        with self._sampling:
            sample = None
            run = self.training_run
            status = run.status() if run is not None else None  # before the sample: see Sampled
            if run is not None and status is not None and status.state is not RunState.RUNNING \
                    and (self._end_scanned is not run or self._run_left):
                # The holder scan runs every few seconds: the last one may predate what the
                # leader forked or opened just before it exited. Scanned again at the first
                # sample after its end (exact then: the status above says it ended) and while
                # it left processes on a GPU (so the panel drops them as they exit).
                self.monitor.rescan_holders()
                self._end_scanned = run
            try:
                sample = self.monitor.sample()
                sampled: Message = Sampled(sample, status)
            except Exception as exc:  # the monitor must survive anything a sample meets
                sampled = SampleFailed(f"{type(exc).__name__}: {exc}")
            # With a run, the sample and the look's findings go in one message (the first
            # sample at once: the first paint waits for it): the UI handles both in one go,
            # so they are painted in one frame a second (two messages were painted apart
            # whenever the screen's refresh timer fired between them).
            later = self.run_watch is not None and self._first_taken.is_set()
            if not later:
                self.post_message(sampled)
                self._first_taken.set()
            if self.run_watch is not None:
                self._look(self.run_watch, sample, sampled if later else None)

    def _look(self, watch: Watch, sample: MonitorSample | None, sampled: Message | None = None) -> None:
        """Poll the watch (sampler thread): the run's processes for its open event files, the
        stall check and its GPU use (from the monitor's sample, not a second NVML call); post
        what it found, with ``sampled`` in the same message."""
        run = self.training_run
        try:
            members = run.members() if run is not None else []
            pids = [m.pid for m in members]
            if sample is not None:
                watch.gpu.take(sample.gpus, pids)
            checks = watch.poll(pids, run is not None and run.running, len(members))
            files = len(watch.tail.files)
            if files:
                source = f"{files} event file{'s' if files > 1 else ''}"
            elif watch.checks.series:
                source = "the run's output"
            else:
                where = watch.finder.logdir
                source = (f"no event file in {where} yet" if where is not None
                          else watch.finder.note or "no event file or value in the output yet")
            found: Message = Watched(list(self._points), checks, source, watch.from_output)
        except Exception as exc:  # reading the logs must not take the monitor down
            found = WatchFailed(f"reading the run's scalars failed: {type(exc).__name__}: {exc}")
        finally:
            self._points.clear()
        self.post_message(found if sampled is None else Looked(sampled, found))

    def on_looked(self, message: Looked) -> None:
        """A sample and the look at the run after it, handled in one go (one frame)."""
        for part in (message.sampled, message.found):
            if isinstance(part, Sampled):
                self.on_sampled(part)
            elif isinstance(part, SampleFailed):
                self.on_sample_failed(part)
            elif isinstance(part, Watched):
                self.on_watched(part)
            elif isinstance(part, WatchFailed):
                self.on_watch_failed(part)

    def on_watched(self, message: Watched) -> None:
        for note in (c for c in message.checks if c.severity == "note"):  # told, not counted as a check
            self.notify(check_line(note), title="note", severity="information", timeout=10)
        checks = [c for c in message.checks if c.severity != "note"]
        self.query_one(CurvesPanel).take(message.points, checks, message.source, not message.from_output)
        # (the run's panel is there as compose made it: a query would walk the screen each look)
        if self.run_watch is not None and (self.training_run is not None or self.attempts is not None):
            gpu = self.run_watch.gpu
            self.query_one(RunPanel).measure(gpu.using, gpu.current, gpu.peak)
        told = checks if len(checks) <= NOTIFY_AT_ONCE else checks[: NOTIFY_AT_ONCE - 1]
        for check in told:
            self._tell(check)
        if len(told) < len(checks):  # a damaged or restarted logdir: not a toast for each
            self.notify(f"{len(checks) - len(told)} more checks fired (l lists them)", title="checks fired",
                        severity="warning", timeout=10)

    def on_watch_failed(self, message: WatchFailed) -> None:
        self.query_one(CurvesPanel).failed(message.error)

    def _tell(self, check: Check) -> None:
        text = check_line(check)
        self.notify(text if len(text) <= 300 else text[:299] + "…", title="check fired",
                    severity="error" if check.severity == "error" else "warning", timeout=10)

    def on_sampled(self, message: Sampled) -> None:
        self.sample = sample = message.sample
        self.samples += 1
        unlisted = self._show_status(sample)
        self._show_gpus(sample)
        self.query_one(HostPanel).show(sample.host)
        run = self.training_run
        self.query_one(ProcessTable).show(sample.processes, run.pid if run else None, unlisted)
        if run is not None:
            members = tuple(row for row in sample.processes if row.sid == run.pid)
            status = message.run_status
            # The status as the sample saw it: a leader that exited after the sample was
            # taken is not a leftover of itself (nor a worker that exited with it).
            self._show_run(status if status is not None and status.pid == run.pid else run.status(), members)

    def _show_status(self, sample: MonitorSample) -> str:
        """The status line (with the host's summary while its panel is hidden, packed); what
        the process table may be missing."""
        gpus = sample.gpus
        failed = ",".join(str(d.index) for d in gpus.devices if d.error is not None)
        status = self.query_one("#status", TextPanel)
        host = sample.host
        packed = self.screen_stack[0].has_class("compact")
        summary = (f"  host CPU {host.cpu_percent:.0f}%  MEM {format_bytes(host.memory_used)} / "
                   f"{format_bytes(host.memory_total)}" if packed and isinstance(host.cpu_percent, float | int)
                   and isinstance(host.memory_used, int) and isinstance(host.memory_total, int) else "")
        if gpus.error:
            status.set_text(Content.assemble(("No GPU shown: ", "bold"), gpus.error, summary), wraps=True)
            unlisted = "no GPU answering: only processes holding device files are listed"
        else:
            used = sum(d.memory_used for d in gpus.devices if isinstance(d.memory_used, int))
            status.set_text(Content(
                f"{len(gpus.devices)} GPU(s) via {gpus.backend}  driver {gpus.driver.driver_version}  "
                f"CUDA {gpus.driver.cuda_version}  {format_bytes(used)} in use"
                + (f" (GPU {failed} not answering, not counted)" if failed else "") + summary
            ), wraps=bool(summary))
            notes = [f"GPU {failed} not answering: processes on it may be missing"] if failed else []
            unread = ",".join(str(d.index) for d in gpus.devices if d.error is None and d.processes_error)
            if unread:
                notes.append(f"GPU {unread} process list N/A: processes on it may be missing")
            unlisted = " · ".join(notes)
        status.set_class(bool(gpus.error), "error")
        return unlisted

    def _show_run(self, status: RunStatus, members: tuple[ProcessRow, ...]) -> None:
        self.query_one(RunPanel).show(status, members)
        ended = status.state is not RunState.RUNNING
        self._run_left = members if ended else ()
        stoppable = not ended or bool(members)
        if stoppable != self._stoppable:
            self._stoppable = stoppable
            self.refresh_bindings()
        if status.state is not self._run_state:
            self._run_state = status.state
            self._ended_at = time.monotonic()
            ok = status.state is RunState.SUCCEEDED
            self.notify(f"the run {describe(status)}", severity="information" if ok else "warning", timeout=10)
            if status.oom is not None and self.estimate is not None and self.max_batch is None:
                self._find_max_batch()
        new = [row for row in self._run_left if row.pid not in self._left_told and not self._stop_pending]
        if new:
            self._left_told.update(row.pid for row in new)
            self._leftovers_found(new)
        attempts = self.attempts
        # As gpudoc run: the processes of its session (read now, not the sample's rows, which
        # lack a worker that holds no GPU yet) get LEFTOVER_WAIT seconds to exit with it —
        # those that do not were told above as leftovers — before the next attempt starts.
        if (attempts is not None and attempts.again(status) and not self._stopped_by_user
                and self._ended_at is not None and self.training_run is not None
                and (time.monotonic() - self._ended_at >= LEFTOVER_WAIT or not self.training_run.members())):
            self.notify(attempts.restarting(how_it_ended(status)[0]), severity="warning", timeout=10)
            self._start_attempt()

    def _find_max_batch(self) -> None:
        """After an out-of-memory end: max-batch's answer for the same spec on the same GPU."""
        self.max_batch = "max batch for the same spec: estimating…"
        self.query_one(RunPanel).set_info(max_batch=self.max_batch)
        self._max_batch_worker()

    @work(thread=True, group="estimate")
    def _max_batch_worker(self) -> None:
        assert self.estimate is not None
        made, fit = self.estimate
        try:
            line = max_batch_line(with_max_batch(made, fit))
        except Exception as exc:  # the estimate must not take the monitor down
            line = f"max batch for the same spec: failed ({type(exc).__name__}: {exc})"
        self.post_message(MaxBatchFound(line))  # dropped if the app has exited meanwhile

    def on_max_batch_found(self, message: MaxBatchFound) -> None:
        self.max_batch = message.line
        self.query_one(RunPanel).set_info(max_batch=message.line)
        self.notify(message.line, title="out of memory", severity="warning", timeout=15)

    def _leftovers_found(self, rows: list[ProcessRow]) -> None:
        """The run's leader exited and these processes of it still hold a GPU: say so at once,
        with their verdicts, as a notification and a ``leftover`` check."""
        for row in rows:
            gpus = ",".join(map(str, row.gpus)) or "a GPU device"
            check = Check("leftover", "warning",
                          f"PID {row.pid} ({verdict_name(row)}, {row.command[:60]}) still holds GPU {gpus} after "
                          "the run's leader exited", "x ends the run's processes left (after asking); "
                          "'gpudoc reap' finds them later", str(row.pid))
            if self.run_watch is not None:
                self.query_one(CurvesPanel).add_check(check)
            self._tell(check)

    def _show_gpus(self, sample: MonitorSample) -> None:
        panels = self._gpu_panels
        wanted = {d.index for d in sample.gpus.devices}
        for index in set(panels) - wanted:
            panels.pop(index).remove()
        new = []
        for device in sample.gpus.devices:
            if device.index in panels:
                panels[device.index].show(device)
            else:
                panels[device.index] = panel = GpuPanel(device)
                new.append(panel)
        if new:
            self.query_one("#gpus", VerticalScroll).mount_all(new)

    def on_sample_failed(self, message: SampleFailed) -> None:
        """Say so in the status line's error colour: what the panels show is the last sample."""
        status = self.query_one("#status", TextPanel)
        shown = "; the panels show the last sample" if self.sample is not None else ""
        status.set_text(Content.assemble(("sampling failed: ", "bold"), f"{message.error} (retrying{shown})"))
        status.set_class(True, "error")

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Textual's commands, and one per tool screen ("gpudoc: doctor"…)."""
        yield from super().get_system_commands(screen)
        for name, (title, help_text, _) in TOOLS.items():
            yield SystemCommand(f"gpudoc: {title}", help_text, lambda name=name: self.action_tool(name))

    def action_tool(self, name: str) -> None:
        """Open a tool's screen (over the monitor, which keeps sampling below it)."""
        if isinstance(self.screen, ToolScreen):
            self.screen.dismiss(None)
        self.push_screen(TOOLS[name][2](self))

    def action_cycle_curves(self) -> None:
        """Show the next scalar alone (after the last, losses and metrics together)."""
        self.query_one(CurvesPanel).cycle()

    def action_curve_axis(self) -> None:
        self.query_one(CurvesPanel).toggle_axis()

    def action_smoothing(self, direction: int) -> None:
        self.query_one(CurvesPanel).smoothing(direction)

    def action_checks(self) -> None:
        self.push_screen(ChecksScreen(self.query_one(CurvesPanel).checks))

    def action_sort(self) -> None:
        """Sort by the next key (the title above the table says which)."""
        self.query_one(ProcessTable).cycle_sort()

    def action_filter_user(self) -> None:
        if not self.query_one(ProcessTable).cycle_user():
            self.notify("no process to filter by user")
        self.refresh_bindings()

    def action_filter_gpu(self) -> None:
        if not self.query_one(ProcessTable).cycle_gpu():
            self.notify("no process on a GPU to filter by")
        self.refresh_bindings()

    def action_clear_filters(self) -> None:
        self.query_one(ProcessTable).clear_filters()
        self.refresh_bindings()

    def action_terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def action_kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        row = self.query_one(ProcessTable).selected
        if row is None:
            self.notify("no process selected", severity="warning")
            return
        verdict = getattr(row.verdict, "value", "-")
        question = f"Send {sig.name} to {row.pid} ({row.user}, {verdict})?\n{row.command[:200]}"

        def answered(yes: bool | None) -> None:
            if yes:
                self._send(row, sig)

        self.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, group="action")
    def _send(self, row: ProcessRow, sig: signal.Signals) -> None:
        action = self.monitor.signal(row, sig)
        self.post_message(ActionFinished(f"{row.pid}: {action.action}", action.outcome in _DONE))

    def action_reap(self) -> None:
        sample = self.sample
        orphans = self.monitor.orphans(sample) if sample else []
        if not orphans:
            self.notify("no orphaned GPU holder of yours in the last scan")
            return
        listing = "\n".join(f"  {r.pid} {r.user} {r.command[:60]}" for r in orphans[:10])
        def answered(yes: bool | None) -> None:
            if yes:
                self._reap(orphans)

        self.push_screen(
            ConfirmScreen(f"End {len(orphans)} orphan(s) you own (SIGTERM, then SIGKILL)?\n{listing}"), answered
        )

    @work(thread=True, group="action")
    def _reap(self, confirmed: list[ProcessRow]) -> None:
        result = self.monitor.reap_orphans(confirmed)
        if result is None:
            self.post_message(ActionFinished("nothing of yours to reap", True))
            return
        ended = [pid for pid, a in result.actions.items() if a.outcome is Outcome.ENDED]
        self._report(f"ended {len(ended)}, freed {sum(result.freed_fds.values())} descriptor(s)", result.actions)

    def _left_behind(self) -> str:
        """What an ended run left on the GPUs, for a question (its processes in the last sample)."""
        left = self._run_left
        return f"The run ended, but {len(left)} of its processes still use the GPUs:\n" + "\n".join(
            f"  {r.pid} {verdict_name(r)} {r.command[:60]}" for r in left[:10]
        )

    def _left_now(self, run: Run) -> str | None:
        """What an ended run's session holds now (read at once, not the last sample's rows,
        which may predate the leader's exit), for a question; None when nothing. Without a
        device glob to check, any process still in the session counts."""
        from gpudoc.runwatch import find_leftovers, one_line

        members = run.members()
        glob = self.monitor.device_glob
        left = [(m.pid, one_line(m.comm), ()) for m in members] if glob is None else [
            (x.pid, one_line(x.command), x.devices) for x in find_leftovers(members, glob) if x.devices]
        if not left:
            return None
        return f"The run ended, but {len(left)} of its processes still hold GPU devices:\n" + "\n".join(
            f"  {pid} {command} {', '.join(devices)}".rstrip() for pid, command, devices in left[:10])

    def action_stop_run(self) -> None:
        run = self.training_run
        if run is None or not (run.running or self._run_left):
            self.notify("the run has ended")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop_run(quit_after=False)

        what = (
            f"Stop the run and every process it started (SIGTERM, then SIGKILL after {STOP_GRACE:g} s)?\n"
            f"{shlex.join(run.command)[:200]}"
            if run.running else f"{self._left_behind()}\nStop them (SIGTERM, then SIGKILL after {STOP_GRACE:g} s)?"
        )
        self.push_screen(ConfirmScreen(what), answered)

    async def action_quit(self) -> None:
        """Quit; a run still going, or the processes an ended run left on the GPUs, are
        stopped first (after asking), not left behind."""
        run = self.training_run
        left_now = None
        if run is not None and not run.running and not self._run_left and not self._stop_pending:
            left_now = self._left_now(run)  # the last sample may predate the leader's exit
        if run is None or not (run.running or self._run_left or left_now):
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop_run(quit_after=True)

        what = "The run is still going." if run.running else left_now or self._left_behind()
        self.push_screen(ConfirmScreen(f"{what}\nStop {'it' if run.running else 'them'} and quit?"), answered)

    def _stop_run(self, quit_after: bool) -> None:
        """Stop the run on a worker thread; until that is done, the panel says it is
        stopping and x is not offered again. A run stopped (or whose leftovers were) is not
        started again."""
        self._stopped_by_user = True
        self._set_stopping(True)
        self._stop_run_worker(quit_after)

    def _set_stopping(self, stopping: bool) -> None:
        """Show the run as being stopped, or as it is once stopped (its processes as gone
        until the next sample, which follows at once, says otherwise)."""
        self._stop_pending = stopping
        panel = self.query_one(RunPanel)
        panel.stopping = stopping
        assert self.training_run is not None
        self._show_run(self.training_run.status(), panel.members if stopping else ())
        self.refresh_bindings()

    @work(thread=True, group="action")
    def _stop_run_worker(self, quit_after: bool) -> None:
        assert self.training_run is not None
        self.call_from_thread(self.notify, "stopping the run…")
        actions = self.training_run.stop(STOP_GRACE)
        self.call_from_thread(self._set_stopping, False)
        if quit_after:
            self.call_from_thread(self.exit)
            return
        self._report(f"stopped {len(actions)} process(es) of the run", actions)

    def _report(self, summary: str, actions: dict[int, Action]) -> None:
        """Post ``summary`` and every action that did not end its process."""
        failed = [f"{pid}: {a.action}" for pid, a in actions.items() if a.outcome not in _DONE]
        self.post_message(ActionFinished("; ".join([summary, *failed]), not failed))

    def on_action_finished(self, message: ActionFinished) -> None:
        self.notify(message.summary, severity="information" if message.ok else "error")
        self.poll()
