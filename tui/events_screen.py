"""The events screen: ``gpudoc events info`` on a logdir, and its trim and export.

Enter shows the runs (``events info``). ctrl+t trims and ctrl+o exports: the first press is
a dry run that shows what would be kept and dropped (trim) or how many rows would be written
(export) and writes nothing; pressing it again with the same form writes, through the same
``gpudoc.events`` functions as the CLI (staged output checked before it is renamed into
place, the inputs untouched, a destination inside the source refused).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.content import Content

from gpudoc.errors import InputError

from .tools import Field, Outcome, Progress, ToolDone, ToolScreen

_Job = tuple[str, bool, tuple[str, ...]]  # (info, trim or export; whether it writes; the form's values)


def for_app(app: Any) -> EventsScreen:
    """The screen, on the app's run's logdir."""
    return EventsScreen(run_logdir(app))


def run_logdir(app: Any) -> str:
    """The logdir of the app's run: its ``--logdir``, else the directory holding the event
    files it follows; empty when there is none."""
    watch = getattr(app, "run_watch", None)
    if watch is None:
        return ""
    if watch.finder.logdir is not None:
        return str(watch.finder.logdir)
    files = list(watch.tail.files)
    return os.path.commonpath([str(f.parent) for f in files]) if files else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class EventsScreen(ToolScreen):
    """``gpudoc events info|trim|export`` on one event file, run directory or logdir."""

    TOOL = "events"
    TITLE_TEXT = "Events: TensorBoard runs, tags, restarts and damage; trim and export (as gpudoc events)"
    COLUMNS = 2
    FIELDS = (
        Field("path", "logdir", placeholder="an event file, a run directory or a logdir", wide=True),
        Field("output", "output", placeholder="trim: a new directory outside the logdir; export: FILE.csv, "
              ".jsonl or .parquet", wide=True),
        Field("steps", "trim steps", placeholder="A:B inclusive, 80:, :100"),
        Field("kinds", "kinds", placeholder="trim: all; export: scalar"),
        Field("tags", "trim tags", placeholder="regexes, space-separated"),
        Field("exclude", "exclude tags", placeholder="regexes, space-separated"),
        Field("restart", "export restarts", "keep", choices=("keep", "purge")),
        Field("salvage", "salvage", flag=True),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        *ToolScreen.BINDINGS,
        Binding("ctrl+t", "act('trim')", "Trim"),
        Binding("ctrl+o", "act('export')", "Export"),
    ]

    FIXES = (("pass --force to write into it", "give a new or empty output directory"),
             ("write to another directory, or use --in-place with --backup", "write to another directory"),
             ("name the file .csv, .jsonl or .parquet, or pass --format csv|jsonl|parquet",
              "name the output .csv, .jsonl or .parquet"),
             ("pip install pyarrow, or use --format csv|jsonl",
              "pip install pyarrow, or name the output .csv or .jsonl"))

    def __init__(self, logdir: str = "") -> None:
        super().__init__()
        self.logdir = logdir
        self._job: _Job = ("info", False, ())
        self._preview: tuple[str, tuple[str, ...]] | None = None  # the dry run a second press confirms

    def defaults(self) -> dict[str, str | bool]:
        return {"path": self.logdir} if self.logdir else {}

    def outputs(self) -> list[tuple[str, str]]:
        return [("output", self.field("output"))]

    def _values(self) -> tuple[str, ...]:
        return tuple(self.field(f.name) for f in self.FIELDS)

    def action_start(self) -> None:
        self.action_act("info")

    def action_act(self, what: str) -> None:
        if self.running:
            self.notify(f"{self.TOOL} is still running (Escape cancels it)")
            return
        values = self._values()
        self._job = (what, what != "info" and self._preview == (what, values), values)
        super().action_start()

    def compute(self, progress: Progress) -> Outcome:
        what, write, values = self._job
        form = dict(zip((f.name for f in self.FIELDS), values))
        for name in ("path", "output"):
            form[name] = os.path.expanduser(form[name])
        if not form["path"]:
            raise InputError("give a logdir, a run directory or an event file", "e.g. runs/ or runs/exp1")
        salvage = form["salvage"] == "yes"
        if what == "info":
            return self._info(form["path"], progress)
        if what == "trim":
            return self._trim(form, write, salvage, progress)
        return self._export(form, write, salvage, progress)

    # ------------------------------------------------------------------ info

    def _info(self, path: str, progress: Progress) -> Outcome:
        from gpudoc.events import discover
        from gpudoc.events.info import describe, info_json

        infos = describe([path], progress=lambda run: progress(f"reading run {run}"))
        _, runs = discover(path)
        lines: list[Content] = []
        for _, info in infos:
            lines += _info_lines(info)
        bad = sum(i.problems for _, i in infos)
        lines.append(Content.styled(f"{_count(bad, 'damaged or incomplete stretch')} (exit 1 in the CLI)", "bold red")
                     if bad else Content.styled(f"{_count(len(infos), 'run')}, nothing damaged", "green"))
        lines.append(Content.styled("ctrl+t trims, ctrl+o exports (a dry run first; again to write)", "dim"))
        return Outcome(info_json(infos), Content("\n").join(lines), [f for run in runs for f in run.files])

    # ------------------------------------------------------------------ trim

    def _trim(self, form: dict[str, str], write: bool, salvage: bool, progress: Progress) -> Outcome:
        from gpudoc.events import TrimSpec, discover, parse_steps, trim
        from gpudoc.events.discover import output_directory
        from gpudoc.events.files import for_runs
        from gpudoc.events.trim import check_destination, trim_json

        first, last = parse_steps(form["steps"]) if form["steps"] else (None, None)
        spec = TrimSpec(first, last, _patterns(form["tags"], "trim tags"), _patterns(form["exclude"], "exclude tags"),
                        _kinds(form["kinds"], None))
        output = Path(form["output"]) if form["output"] else None
        if output is None:  # before the dry run too: it checks the destination
            raise InputError("give the output directory to write the trimmed copy to",
                             "a new directory outside the logdir")
        root, runs = discover(form["path"])
        if output is not None:
            check_destination(root, runs, output_directory(output), force=False)
        others = for_runs(root, (), source_is_file=Path(form["path"]).is_file())
        report = trim(root, runs, output, spec, salvage=salvage, dry_run=not write,
                      progress=_bytes(runs, "trimming", progress), others=others)
        return Outcome(trim_json(report, not write), _trim_text(report, output, write),
                       [f for run in runs for f in run.files])

    # ------------------------------------------------------------------ export

    def _export(self, form: dict[str, str], write: bool, salvage: bool, progress: Progress) -> Outcome:
        from gpudoc.events import discover
        from gpudoc.events.export import export, export_json, format_for
        from gpudoc.output import output_target, refuse_inputs_as_outputs

        output = form["output"]
        if not output:
            raise InputError("give the output file of the export", "e.g. scalars.csv, values.jsonl or values.parquet")
        target = output_target(output)
        if target.stream:
            raise InputError(f"{output}: a stream; the screen is on the terminal", "give a file to export to")
        if target.path.exists():
            raise InputError(f"{output}: exists", "give a new file")
        fmt = format_for(output, None)
        kinds = _kinds(form["kinds"], "scalar")
        assert kinds is not None
        _, runs = discover(form["path"])
        refuse_inputs_as_outputs([("output", output)], [f for run in runs for f in run.files])
        # The dry run is the export itself, into /dev/null: the same rows, restarts and damage.
        dest = Path(output) if write else Path(os.devnull)
        report = export(runs, dest, fmt=fmt, kinds=kinds, purge=form["restart"] == "purge", salvage=salvage,
                        progress=_bytes(runs, "exporting", progress))
        verb = "wrote" if write else "would write"
        lines = [Content.assemble((f"{verb} {report.rows} rows", "bold"), f" to {output} ({fmt})")]
        lines += [Content(f"run {run}: {n} value(s) superseded by a restart left out (purge)")
                  for run, n in report.purged.items()]
        lines += _damage_lines(report.damage)
        if not write:
            lines.append(Content.styled("dry run: nothing written · ctrl+o again writes it", "bold yellow"))
        return Outcome(export_json(output, fmt, report) if write else None, Content("\n").join(lines),
                       [f for run in runs for f in run.files])

    # ------------------------------------------------------------------ results

    def on_tool_done(self, message: ToolDone) -> None:
        what, write, values = self._job
        super().on_tool_done(message)
        done = message.outcome is not None
        self._preview = (what, values) if done and what != "info" and not write else None
        if self._preview is not None:
            key = "ctrl+t" if what == "trim" else "ctrl+o"
            self._status(f"{what}: dry run, nothing written · {key} again writes it (the same form)")
        elif done and write:
            self._status(f"{what}: written · ctrl+s saves the JSON")
        message.prevent_default()  # ToolScreen's handler ran above: not again

    def action_save(self) -> None:
        if self.outcome is not None and self.outcome.json is None:
            self.notify("an export's dry run has no --json: ctrl+o again exports, then ctrl+s saves",
                        severity="warning")
            return
        super().action_save()


def _patterns(text: str, label: str) -> tuple[re.Pattern[str], ...]:
    try:
        return tuple(re.compile(p) for p in text.split())
    except (re.error, OverflowError, RecursionError) as exc:
        raise InputError(f"{label}: bad regular expression ({exc})", "e.g. ^train/ or loss$") from None


def _kinds(text: str, default: str | None) -> frozenset[Any] | None:
    from gpudoc.events.model import Kind

    names = [k.strip() for k in (text or default or "").split(",") if k.strip()]
    if not names:
        return None
    known = [k.value for k in Kind]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"kinds: unknown kind {unknown[0]!r}", f"choose from {', '.join(known)}")
    return frozenset(Kind(n) for n in names)


def _bytes(runs: list[Any], verb: str, progress: Progress) -> Any:
    """A core ``progress`` (bytes per file done) that reports the share read, and cancels."""
    total = sum(f.stat().st_size for run in runs for f in run.files) or 1
    done = 0

    def advance(size: int) -> None:
        nonlocal done
        done += size
        progress(f"{verb}: {done * 100 // total}% of {_count(total, 'byte')}")

    progress(f"{verb}: reading {_count(len(runs), 'run')}")
    return advance


def _info_lines(info: Any) -> list[Content]:
    from gpudoc.output import format_bytes

    span = ""
    if info.wall_start is not None and info.wall_end is not None:
        start = datetime.fromtimestamp(info.wall_start, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        span = f", {start} + {info.wall_end - info.wall_start:.0f} s"
    steps = "no steps" if info.step_min is None else f"steps {info.step_min}..{info.step_max}"
    lines = [Content.assemble(("run ", "bold"), (info.run, "bold $accent"),
                              f": {_count(len(info.files), 'file')}, {_count(info.records, 'record')}, "
                              f"{format_bytes(info.bytes)}, {steps}{span}")]
    if info.records_by_kind:
        lines.append(Content.styled("  records: " + ", ".join(f"{k} {n}" for k, n in info.records_by_kind.items()),
                                    "dim"))
    if info.values_by_kind:
        lines.append(Content.styled("  values: " + ", ".join(f"{k} {n}" for k, n in info.values_by_kind.items()),
                                    "dim"))
    width = max((len(t.tag) for t in info.tags), default=0)
    for tag in info.tags:
        duplicates = f", {tag.duplicate_steps} duplicated step(s)" if tag.duplicate_steps else ""
        shown = "" if tag.shown == "per step" else f" ({tag.shown})"
        lines.append(Content(f"  {tag.kind:<14} {tag.tag:<{width}}  {_count(tag.count, 'value'):>11}, "
                             f"steps {tag.step_min}..{tag.step_max}{duplicates}{shown}"))
    for restart in info.restarts:
        where = f" ({restart.tag})" if restart.tag else ""
        lines.append(Content.assemble(("  restart", "bold yellow"), f" at step {restart.step}{where}, "
                                      f"{restart.file} record {restart.record}: {restart.resolution}"))
    for file in info.files:
        for damage in file.damage:
            lines.append(Content.assemble(("  DAMAGED", "bold red"),
                                          f" {file.path} bytes {damage.start}..{damage.end}: {damage.reason}"))
        if file.partial_bytes:
            lines.append(Content.assemble(("  INCOMPLETE", "bold red"),
                                          f" {file.path}: the last {file.partial_bytes} bytes (from byte "
                                          f"{file.bytes - file.partial_bytes}) are a partial record (cut off, "
                                          "or still being written)"))
    return lines


def _trim_text(report: Any, output: Path | None, write: bool) -> Content:
    rows = [(run, kind, tag or "-", n, report.after.get((run, kind, tag), 0))
            for (run, kind, tag), n in sorted(report.before.items())]
    lines: list[Content] = []
    if rows:
        widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
        lines.append(Content.styled(f"{'run':<{widths[0]}}  {'kind':<{widths[1]}}  {'tag':<{widths[2]}}  "
                                    f"{'before':>{max(widths[3], 6)}} → kept  dropped", "bold"))
        for run, kind, tag, before, after in rows:
            dropped = before - after
            lines.append(Content.assemble(
                f"{run:<{widths[0]}}  {kind:<{widths[1]}}  {tag:<{widths[2]}}  {before:>{max(widths[3], 6)}} → "
                f"{after:<4}  ", (f"{dropped}" if dropped else "0", "yellow" if dropped else "dim")))
        tagged = [r for r in rows if r[2] != "-"]  # values, not the file version and restart records
        kept, total = sum(r[4] for r in tagged), sum(r[3] for r in tagged)
        lines.append(Content.assemble(("values: ", "bold"), f"{kept} of {total} kept, {total - kept} dropped"))
    verb = "wrote" if write else "would write"
    for source, dest, records_in, records_out in report.files:
        lines.append(Content(f"{source}: {records_in} records → {verb} {records_out}"
                             + (f" to {dest}" if output is not None else "")))
    copy = "copied" if write else "would copy"
    lines += [Content(f"{copy} {s} → {d}") for s, d in report.copied]
    lines += [Content(f"not copied: {p} ({why})") for p, why in report.skipped]
    lines.append(Content(f"{report.reencoded} event(s) re-encoded, {report.reattached} tag metadata re-attached"))
    lines += _damage_lines(report.damage)
    if not write:
        where = f"to {output}" if output is not None else "(give the output directory first)"
        lines.append(Content.styled(f"dry run: nothing written · ctrl+t again writes it {where}", "bold yellow"))
    return Content("\n").join(lines)


def _damage_lines(damage: list[tuple[str, Any]]) -> list[Content]:
    return [Content.assemble(("skipped", "bold red"), f" damaged bytes {d.start}..{d.end} of {f}: {d.reason}")
            for f, d in damage]
