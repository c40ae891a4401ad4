"""``gpudoc events info|trim|export|merge|replay``: lossless TensorBoard event-file tools."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gpudoc.cli.common import json_option
from gpudoc.errors import ExitCode, InputError

if TYPE_CHECKING:
    from gpudoc.events.discover import Run
    from gpudoc.events.records import Damage

KIND_NAMES = ["scalar", "histogram", "image", "audio", "text", "pr_curve", "tensor", "hparams", "custom_scalars",
              "graph",
              "run_metadata", "session_log", "file_version", "log_message", "source_metadata", "metadata"]


def _time(text: str | None, option: str) -> float | None:
    """Seconds since the epoch, or an ISO date/time (local time unless it has a zone)."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise InputError(f"{option} {text!r}: give seconds since the epoch or an ISO date/time") from None


def _patterns(values: tuple[str, ...], option: str) -> tuple[re.Pattern[str], ...]:
    try:
        return tuple(re.compile(v) for v in values)
    except (re.error, OverflowError, RecursionError) as exc:
        raise InputError(f"{option}: bad regular expression ({exc})") from None


@contextmanager
def _progress(label: str, runs: Sequence[Run], *, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over the bytes of ``runs``' files, on stderr when it is a terminal (and
    the output is not JSON)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    total = sum(f.stat().st_size for run in runs for f in run.files)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    # rich would otherwise route sys.stdout (the table of ``export -o -``) and sys.stderr
    # into its console, i.e. onto the terminal, between redraws of the bar.
    with Progress(*columns, console=Console(stderr=True), transient=True, redirect_stdout=False,
                  redirect_stderr=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.advance(task, done)


def _echo(message: str, *, err: bool = False) -> None:
    """A line of text output: a name that is not UTF-8 with its bytes as ``\\xff`` (as JSON and
    the exported tables write it; raw, it would fail a strict UTF-8 stdout)."""
    from gpudoc.output import printable

    click.echo(printable(message), err=err)


class _EventsGroup(click.Group):
    """Any file error an events command meets on its inputs or outputs (one it did not name
    itself) is bad input: one line naming the path and why, exit 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.filename is None or isinstance(exc, BrokenPipeError):
                raise
            raise InputError(f"{exc.filename}: {exc.strerror or 'I/O error'}",
                             "check that it exists and that you may read it (or write into its directory)") from None


def _discover(path: str) -> tuple[Path, list[Run]]:
    """:func:`discover`, warning on stderr of each directory below ``path`` that cannot be listed."""
    from gpudoc.events import discover

    unreadable: list[str] = []
    found = discover(path, unreadable)
    _warn_unreadable(unreadable)
    return found


def _warn_unreadable(unreadable: Sequence[str]) -> None:
    for entry in unreadable:
        _echo(f"gpudoc: warning: {entry}; its event files, if any, are left out", err=True)


@click.group(cls=_EventsGroup)
def events() -> None:
    """Inspect, trim and export TensorBoard event files without losing anything."""


@events.command()
@click.argument("paths", nargs=-1, required=True)
@json_option
def info(paths: tuple[str, ...], as_json: bool) -> int:
    """Per run: files, records, steps, wall time, tags by kind, restarts, duplicates, damage.

    Each tag's kind says how TensorBoard uses it (scalar, image, …, custom_scalars for the
    layout, hparams, graph); tags TensorBoard shows per run, not per step, are marked.

    PATH is an event file, a run directory or a logdir. Exit 1 when a file is damaged or ends
    in an incomplete record.
    """
    from gpudoc.events.info import describe, info_json
    from gpudoc.output import emit_json

    unreadable: list[str] = []
    infos = describe(paths, unreadable=unreadable)
    _warn_unreadable(unreadable)
    if as_json:
        emit_json(info_json(infos))
    else:
        for path, item in infos:
            _print_info(path, item)
    return ExitCode.FINDINGS if any(i.problems for _, i in infos) else ExitCode.OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _print_info(path: str, item: object) -> None:
    from gpudoc.events.info import RunInfo
    from gpudoc.output import format_bytes

    assert isinstance(item, RunInfo)
    span = ""
    if item.wall_start is not None and item.wall_end is not None:
        try:
            start = datetime.fromtimestamp(item.wall_start).isoformat(timespec="seconds")
        except (OverflowError, OSError, ValueError):  # no date: beyond the platform's range, or NaN
            start = f"wall time {item.wall_start!r} s"
        length = item.wall_end - item.wall_start
        span = f", {start} + {length:.0f} s" if abs(length) < 1e12 else f", {start} + {length:.6g} s"
    steps = "no steps" if item.step_min is None else f"steps {item.step_min}..{item.step_max}"
    _echo(f"run {item.run} ({path}): {_count(len(item.files), 'file')}, {_count(item.records, 'record')}, "
          f"{format_bytes(item.bytes)}, {steps}{span}")
    if item.records_by_kind:
        _echo("  records: " + ", ".join(f"{k} {n}" for k, n in item.records_by_kind.items()))
    if item.values_by_kind:
        _echo("  values: " + ", ".join(f"{k} {n}" for k, n in item.values_by_kind.items()))
    for tag in item.tags:
        duplicates = f", {tag.duplicate_steps} duplicated step(s)" if tag.duplicate_steps else ""
        shown = "" if tag.shown == "per step" else f" ({tag.shown})"
        _echo(f"  {tag.kind:<14} {tag.tag:<40} {_count(tag.count, 'value'):>14}, "
              f"steps {tag.step_min}..{tag.step_max}{duplicates}{shown}")
    for restart in item.restarts:
        where = f" ({restart.tag})" if restart.tag else ""
        _echo(f"  restart at step {restart.step}{where}, {restart.file} record {restart.record}: "
              f"{restart.resolution}")
    for file in item.files:
        for damage in file.damage:
            _echo(f"  DAMAGED {file.path} bytes {damage.start}..{damage.end}: {damage.reason}")
        if file.partial_bytes:
            _echo(f"  INCOMPLETE {file.path}: the last {file.partial_bytes} bytes (from byte "
                  f"{file.bytes - file.partial_bytes}) are a partial record (cut off, or still being written)")


def _damage_lines(damage: Sequence[tuple[str, Damage]]) -> None:
    """What ``--salvage`` skipped, on stderr."""
    for file, item in damage:
        _echo(f"skipped damaged bytes {item.start}..{item.end} of {file}: {item.reason}", err=True)


_SALVAGE = click.option("--salvage", is_flag=True,
                        help="Skip damaged records and a cut-off last record (listed on stderr) instead of failing.")
_EXCLUDE_FILES = click.option(
    "--exclude-files", multiple=True, metavar="GLOB",
    help="Do not copy the non-event files (projector config, .tsv, sprites, anything else) matching this "
    "glob, on their path below the run or logdir or their name (repeatable).")


def _copied_lines(copied: Sequence[tuple[str, str]], skipped: Sequence[tuple[str, str]], *, dry_run: bool = False,
                  err: bool = False) -> None:
    """The non-event files copied (or that a dry run would copy) and those left out."""
    verb = "would copy" if dry_run else "copied"
    for source, dest in copied:
        _echo(f"{verb} {source} → {dest}", err=err)
    for path, why in skipped:
        _echo(f"not copied: {path} ({why})", err=err)


def _removed_lines(removed: Sequence[str], *, dry_run: bool = False) -> None:
    verb = "would remove" if dry_run else "removed"
    for path in removed:
        _echo(f"{verb} {path} (an earlier event file in a run directory written; --force)")


@events.command("trim")
@click.argument("src")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Destination logdir (mirrors SRC's layout); not inside SRC's runs.")
@click.option("--steps", help="Inclusive step range A:B; open ends allowed (80:, :100).")
@click.option("--tags", multiple=True, help="Keep only tags matching this regular expression (repeatable).")
@click.option("--exclude-tags", multiple=True, help="Drop tags matching this regular expression (repeatable).")
@click.option("--kinds", help=f"Keep only these kinds, comma-separated ({', '.join(KIND_NAMES[:7])}, …).")
@click.option("--start", help="Drop records before this wall time (epoch seconds or ISO time).")
@click.option("--end", help="Drop records after this wall time.")
@click.option("--drop-run-level", is_flag=True,
              help="Filter run-level data (graphs, hparams sessions and their metrics) like the rest; the "
              "file version and restart markers are always kept (TensorBoard reads restarts by them).")
@click.option("--dry-run", is_flag=True,
              help="Print what would be kept, per kind and tag; write nothing (what the trim refuses is refused).")
@_EXCLUDE_FILES
@_SALVAGE
@click.option("--force", is_flag=True,
              help="Write into a DST that is not empty: the event files already in the run directories written "
              "are removed once the new ones are in place (other files and runs are kept). Never replaces a --backup.")
@click.option("--in-place", is_flag=True, help="Rewrite SRC's files (needs --backup).")
@click.option("--backup", type=click.Path(path_type=Path),
              help="With --in-place: copy the originals here first (refused if a copy would replace a file).")
@json_option
def trim_command(src: str, output: Path | None, steps: str | None, tags: tuple[str, ...], exclude_tags: tuple[str, ...],
                 kinds: str | None, start: str | None, end: str | None, drop_run_level: bool, dry_run: bool,
                 exclude_files: tuple[str, ...], salvage: bool, force: bool, in_place: bool, backup: Path | None,
                 as_json: bool) -> int:
    """Keep part of a run, losslessly: a step range, tags, kinds or a time window.

    Kept records are copied byte for byte (wall times, every value kind, metadata); a tag
    whose first value (which carries its metadata) is cut gets that metadata on its first
    kept value. Run-level data (what TensorBoard shows per run: graphs, Keras's model, run
    metadata, hparams experiments, sessions and each session metric's last value, the
    custom-scalars layout) is kept, and the non-event files below SRC (the projector's config,
    .tsv files and sprite, anything else) are copied as they are unless --exclude-files. DST
    must be outside SRC. Output is verified before it replaces anything; a damaged or cut-off
    input is an error (exit 2) unless --salvage. A step or time trim (no --tags, --exclude-tags
    or --kinds) checks both CRCs of each record and decides it by its step, wall time and kind:
    one kept whole is copied unparsed, so TensorBoard reads the copy exactly as the input
    (--dry-run decides alike). Linked run directories are followed, as TensorBoard does.
    """
    from gpudoc.events import TrimSpec, parse_steps, trim
    from gpudoc.events.discover import output_directory
    from gpudoc.events.files import for_runs
    from gpudoc.events.model import Kind
    from gpudoc.events.trim import check_destination, trim_json
    from gpudoc.output import emit_json

    first, last = parse_steps(steps) if steps else (None, None)
    kind_set = None
    if kinds is not None:
        names = [k.strip() for k in kinds.split(",") if k.strip()]
        unknown = [n for n in names if n not in KIND_NAMES]
        if unknown or not names:
            what = f"unknown kind {unknown[0]!r}" if unknown else f"no kind in {kinds!r}"
            raise InputError(f"--kinds: {what}", f"choose from {', '.join(KIND_NAMES)}")
        kind_set = frozenset(Kind(n) for n in names)
    begin, finish = _time(start, "--start"), _time(end, "--end")
    if begin is not None and finish is not None and begin > finish:
        raise InputError(f"--start {start} is after --end {end}", "give the earlier time as --start")
    spec = TrimSpec(first, last, _patterns(tags, "--tags"), _patterns(exclude_tags, "--exclude-tags"), kind_set,
                    begin, finish, keep_run_level=not drop_run_level)
    root, runs = _discover(src)
    if in_place:
        if output is not None:
            raise click.UsageError("--in-place and --output exclude each other")
        if backup is None:
            raise click.UsageError("--in-place needs --backup DIR (the originals are copied there first)")
        if backup.resolve() == root.resolve() or root.resolve() in backup.resolve().parents:
            raise InputError(f"{backup}: inside the source; TensorBoard would read the backups",
                             "choose another --backup")
        output_directory(backup)
    elif output is None:
        # A dry run refuses what the run itself refuses: without -o it would "write" onto SRC.
        raise click.UsageError("give -o/--output DIR (or --in-place --backup DIR)")
    else:
        check_destination(root, runs, output_directory(output), force=force)
    others = None if in_place else for_runs(root, exclude_files, source_is_file=Path(src).is_file())
    with _progress("trimming", runs, quiet=as_json) as advance:
        report = trim(root, runs, None if in_place else output, spec, salvage=salvage, dry_run=dry_run,
                      backup=backup if in_place else None, progress=advance, others=others)
    if as_json:
        emit_json(trim_json(report, dry_run))
        return 0
    rows = [(run, kind, tag or "-", str(n), str(report.after.get((run, kind, tag), 0)))
            for (run, kind, tag), n in sorted(report.before.items())]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
    for run, kind, tag, before, after in rows:
        _echo(f"{run:<{widths[0]}}  {kind:<{widths[1]}}  {tag:<{widths[2]}}  {before:>{widths[3]}} → {after}")
    for source, dest, records_in, records_out in report.files:
        verb = "would write" if dry_run else "wrote"
        where = f"in place (the original kept in {backup})" if in_place else f"to {dest}"
        _echo(f"{source}: {records_in} records → {verb} {records_out} {where}")
    _copied_lines(report.copied, report.skipped, dry_run=dry_run)
    _removed_lines(report.removed, dry_run=dry_run)
    _echo(f"{report.reencoded} event(s) re-encoded, {report.reattached} tag metadata re-attached")
    _damage_lines(report.damage)
    return 0


@events.command("export")
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", required=True,
              help="Table file to write; - (or /dev/stdout) streams it to stdout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet"]), default=None,
              help="Default: from the output's suffix (.csv, .jsonl, .parquet); csv for - or a name "
              "without a suffix; any other suffix needs --format.")
@click.option("--kinds", default="scalar", show_default=True,
              help="Comma-separated: scalar, histogram, tensor, text, pr_curve.")
@click.option("--on-restart", type=click.Choice(["keep", "purge"]), default="keep", show_default=True,
              help="keep: every value as written; purge: drop values a restarted writer superseded (what "
              "TensorBoard drops at a SessionLog.START, and a tag's earlier points when its steps go back "
              "without one, which TensorBoard shows twice).")
@_SALVAGE
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@json_option
def export_command(paths: tuple[str, ...], output: str, fmt: str | None, kinds: str, on_restart: str,
                   salvage: bool, force: bool, as_json: bool) -> int:
    """Every value as a long table: run, tag, kind, step, wall_time, value — never sampled.

    CSV adds a value_type column: number, string (the text as is) or json (a list or object
    JSON-encoded, e.g. a histogram or a non-scalar tensor), so a string never passes for a list.
    JSON has no NaN or infinity: a jsonl row writes such a number as null and names it in
    not_finite ({"value": "nan"}, {"wall_time": "inf"}, {"value.max": "-inf"}); inside CSV's and
    Parquet's JSON text it is the string "nan", "inf" or "-inf", as CSV writes the number.

    A damaged or cut-off input file, a record that is no Event, or a scalar tensor that does
    not decode is an error naming the byte offset (exit 2) unless --salvage. When the table
    goes to stdout, the summary (and --json) goes to stderr, and (without --salvage) every
    file is read and decoded before the first row, so bad input writes no row.
    """
    from gpudoc.events.export import export, export_json, format_for
    from gpudoc.events.model import Kind
    from gpudoc.output import emit_json, is_stdout, output_target, refuse_inputs_as_outputs

    target = output_target(output)
    if not target.stream and target.path.exists() and not force:
        raise InputError(f"{output}: exists", "pass --force to replace it")
    chosen = format_for(output, fmt)
    names = [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = [n for n in names if n not in KIND_NAMES]
    if unknown or not names:
        what = f"unknown kind {unknown[0]!r}" if unknown else f"no kind in {kinds!r}"
        raise InputError(f"--kinds: {what}", "choose from scalar, histogram, tensor, text, pr_curve")
    runs = _distinct_runs([run for path in paths for run in _discover(path)[1]])
    refuse_inputs_as_outputs([("-o", output)], [f for run in runs for f in run.files])
    with _progress("exporting", runs, quiet=as_json or _on_stderrs_terminal(output)) as advance:
        report = export(runs, Path(output), fmt=chosen, kinds=frozenset(Kind(n) for n in names),
                        purge=on_restart == "purge", salvage=salvage, progress=advance)
    to_stderr = is_stdout(output)
    if as_json:
        emit_json(export_json(output, chosen, report), sys.stderr if to_stderr else None)
        return 0
    _echo(f"{report.rows} rows → {output} ({chosen})", err=to_stderr)
    for run, count in report.purged.items():
        _echo(f"run {run}: {count} value(s) superseded by a restart left out (--on-restart purge)", err=to_stderr)
    _damage_lines(report.damage)
    return 0


def _on_stderrs_terminal(output: str) -> bool:
    """Whether the table is streamed to the terminal the progress bar would be drawn on (the
    rows then show the progress; a bar drawn among them would be left on the screen)."""
    import os
    import stat

    from gpudoc.output import output_target

    target = output_target(output)
    if not target.stream:
        return False
    try:
        shown = os.fstat(target.fd) if target.fd is not None else os.stat(target.path)
        bar = os.fstat(2)
    except OSError:
        return False
    # (/dev/tty, device 5:0, is the controlling terminal: stderr's, when that is a terminal)
    return stat.S_ISCHR(shown.st_mode) and shown.st_rdev in (bar.st_rdev, os.makedev(5, 0))


def _distinct_runs(runs: list[Run]) -> list[Run]:
    """Each run once (PATHs may overlap: a run whose files were all met already is left out),
    and named apart: when runs under different PATHs share a name, each is named by its
    directory instead."""
    seen: set[Path] = set()
    distinct = []
    for run in runs:
        files = {f.resolve() for f in run.files}
        if not files <= seen:
            seen |= files
            distinct.append(run)
    labels = [run.label for run in distinct]
    if len(set(labels)) < len(labels):
        return [run._replace(name=str(run.directory)) for run in distinct]
    return distinct


def _merge_inputs(paths: tuple[str, ...], names: tuple[str, ...]) -> list[Run]:
    """The runs to merge, in order: each PATH must be one run, unless ``--run`` names the runs
    (by their names under the PATHs, as ``events info`` shows them)."""

    found = [(path, _discover(path)[1]) for path in paths]
    if names:
        everything = [run for _, runs in found for run in runs]
        chosen = []
        for name in names:
            matching = [run for run in everything if name in (run.name, run.label)]
            if not matching:
                listed = ", ".join(run.name for run in everything)
                raise InputError(f"--run {name!r}: no such run under {', '.join(paths)}", f"the runs are: {listed}")
            chosen.extend(matching)
        return chosen
    for path, runs in found:
        if len(runs) > 1:
            listed = ", ".join(run.name for run in runs[:12]) + (", …" if len(runs) > 12 else "")
            raise InputError(
                f"{path}: a logdir of {len(runs)} runs ({listed}); merging them all would mix unrelated runs",
                "give the run directories to merge, in order, or name them with --run NAME (repeatable; "
                "--run . is the files directly in PATH)",
            )
    return [run for _, runs in found for run in runs]


@events.command("merge")
@click.argument("runs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Destination run directory (one merged event file is written there).")
@click.option("--run", "run_names", multiple=True, metavar="NAME",
              help="Merge this run of the RUNS paths (its name as 'events info' shows it; repeatable, in "
              "order). Needed when a path holds several runs.")
@click.option("--overlap", type=click.Choice(["keep-last", "keep-first", "error"]), default="error",
              show_default=True, help="Which run's value wins where runs share a (tag, step).")
@_EXCLUDE_FILES
@_SALVAGE
@click.option("--force", is_flag=True,
              help="Write into a DST that is not empty: its event files are removed once the merged one is in "
              "place (other files are kept).")
@json_option
def merge_command(runs: tuple[str, ...], output: Path, run_names: tuple[str, ...], overlap: str,
                  exclude_files: tuple[str, ...], salvage: bool, force: bool, as_json: bool) -> int:
    """Merge runs (e.g. a training run and its resumption) into one, in the order given.

    Each RUN is a run directory (or event file); a logdir of several runs is refused unless
    --run names the ones to merge. Overlapping (tag, step) pairs are refused (exit 2) unless
    --overlap chooses; a damaged or cut-off input is an error (exit 2) unless --salvage.
    Each run's own non-event files (projector config and assets, …) are copied once; the same
    file with different bytes in two runs is refused unless --exclude-files leaves it out.
    """
    from gpudoc.events.discover import output_directory
    from gpudoc.events.files import copied_json, copy_all, for_merge
    from gpudoc.events.merge import merge
    from gpudoc.events.records import damage_json
    from gpudoc.events.trim import check_outside, remove_stale, stale_event_files
    from gpudoc.output import emit_json

    found = _merge_inputs(runs, run_names)
    files = [f.resolve() for run in found for f in run.files]
    twice = sorted({f for f in files if files.count(f) > 1})
    if twice:
        raise InputError(f"{twice[0]}: given twice (the same run or file named more than once)",
                         "name each run once")
    output_directory(output)
    check_outside(found, output, what="merged run")
    if output.exists() and any(output.iterdir()) and not force:
        raise InputError(f"{output}: exists and is not empty", "pass --force to write into it")
    name = f"events.out.tfevents.{int(min(f.stat().st_mtime for r in found for f in r.files))}.gpudoc-merge"
    # An event file given by itself brings no other files (as in trim and replay).
    given_files = {Path(p).resolve() for p in runs if Path(p).is_file()}
    others = for_merge([run for run in found if not {f.resolve() for f in run.files} <= given_files], exclude_files)
    created = not output.exists()
    try:
        with _progress("merging", found, quiet=as_json) as advance:
            report = merge(found, output / name, overlap=overlap, salvage=salvage, progress=advance)
        copied = copy_all(others, output)
        stale = stale_event_files([output / name], found)
        remove_stale(stale)
    except BaseException:
        if created and output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        raise
    if as_json:
        emit_json({"output": str(output / name), "records_in": report.records_in, "records_out": report.records_out,
                   "overlaps_dropped": report.overlaps, "repeated_run_level_dropped": report.repeated_run_level,
                   **copied_json(copied, others.skipped), "damage": damage_json(report.damage),
                   "removed": [str(path) for path in stale]})
        return 0
    _echo(f"{report.records_in} records from {len(found)} run(s) → {report.records_out} in {output / name}")
    _copied_lines(copied, others.skipped)
    _removed_lines([str(path) for path in stale])
    for directory, count in report.overlaps.items():
        if count:
            _echo(f"run {directory}: {count} overlapping value(s) dropped ({overlap})")
    _damage_lines(report.damage)
    return 0


@events.command("replay")
@click.argument("src")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Destination run directory.")
@click.option("--speed", type=float,
              help="Replay wall-time gaps this many times faster (10 = ten times); a gap is at most a day.")
@click.option("--rate", type=float, help="Instead, a fixed number of records per second.")
@click.option("--steps", help="Inclusive step range A:B to replay: what trim --steps keeps (run-level data too).")
@_EXCLUDE_FILES
@_SALVAGE
@json_option
def replay_command(src: str, output: Path, speed: float | None, rate: float | None, steps: str | None,
                   exclude_files: tuple[str, ...], salvage: bool, as_json: bool) -> int:
    """Re-emit a recorded run (or every run of a logdir, mirrored, interleaved by wall time)
    into a new directory in real time, byte for byte, so a dashboard (or gpudoc's own tailing
    reader) watches it as if it were live. Non-event files (the projector's config and assets,
    …) are copied first, unless --exclude-files. DST must be outside SRC (its runs and logdir).

    A damaged or cut-off input is an error before anything is written (exit 2) unless --salvage.
    """
    from gpudoc.events import parse_steps
    from gpudoc.events.discover import output_directory
    from gpudoc.events.files import copied_json, for_runs
    from gpudoc.events.merge import replay
    from gpudoc.events.records import damage_json
    from gpudoc.events.trim import check_outside
    from gpudoc.output import emit_json

    if speed is None and rate is None:
        speed = 1.0
    first, last = parse_steps(steps) if steps else (None, None)
    root, found = _discover(src)
    check_outside(found, output_directory(output), root, what="replay")
    others = for_runs(root, exclude_files, source_is_file=Path(src).is_file())
    with _progress("replaying", found, quiet=as_json) as advance:
        report = replay(found, output, speed=speed, rate=rate, first_step=first, last_step=last,
                        salvage=salvage, progress=advance, others=others)
    if as_json:
        emit_json({"output": str(output), "runs": [run.label for run in found], "records": report.records,
                   **copied_json(report.copied, report.skipped), "damage": damage_json(report.damage)})
    else:
        _copied_lines(report.copied, report.skipped, err=True)
        _echo(f"replayed {report.records} records from {len(found)} run(s) into {output}", err=True)
    _damage_lines(report.damage)
    return 0
