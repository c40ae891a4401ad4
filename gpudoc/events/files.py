"""The files of a logdir that are not event files — the projector's ``projector_config.pbtxt``
with its ``.tsv`` tensors, metadata and sprite, checkpoints, anything else: trim, merge and
replay copy them byte for byte (unless ``--exclude-files`` names them), since TensorBoard's
projector reads them from the run's directory."""

from __future__ import annotations

import filecmp
import fnmatch
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from gpudoc.errors import InputError
from gpudoc.events.discover import Run, is_event_file, walk
from gpudoc.output import output_target, place, staging_file

# Our own staging names (trim's hidden directory, merge's and replay's temporary files).
_OURS = ".gpudoc-"


class OtherFile(NamedTuple):
    """A non-event file: where it is, and its path below the directory being mirrored."""

    source: Path
    relative: Path


@dataclass
class OtherFiles:
    """The files to copy, and the entries left alone (``(path, why)``): excluded by a pattern,
    or not a regular file (a FIFO, a socket, a broken link)."""

    files: list[OtherFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def copied_json(copied: Iterable[tuple[str, str]], skipped: Iterable[tuple[str, str]]) -> dict[str, object]:
    """The other files copied (``(source, copy)``) and left out (``(path, why)``), as ``--json`` lists them."""
    return {"copied": [{"source": s, "output": d} for s, d in copied],
            "not_copied": [{"path": p, "reason": r} for p, r in skipped]}


def _excluded(relative: Path, patterns: tuple[str, ...]) -> str | None:
    text = relative.as_posix()
    for pattern in patterns:
        if fnmatch.fnmatchcase(text, pattern) or fnmatch.fnmatchcase(relative.name, pattern):
            return pattern
    return None


def other_files(directory: Path, exclude: tuple[str, ...] = (), *, prune_runs: bool = False) -> OtherFiles:
    """Every file below ``directory`` that is no event file, in a stable order, through
    symbolic links to directories as run discovery follows them (a link making a cycle is
    left out). With ``prune_runs``, sub-directories that are runs of their own (they hold
    event files) are left out, with what is below them: merge copies a run's own files only."""
    found = OtherFiles()

    def unlisted(exc: OSError) -> None:
        found.skipped.append((str(exc.filename), f"a directory that cannot be listed ({exc.strerror or 'I/O error'})"))

    for current, subdirs, names in walk(directory, unlisted, found.skipped):
        here = Path(current)
        if prune_runs:
            subdirs[:] = [d for d in subdirs if not any("tfevents" in n for n in _names(here / d))]
        subdirs[:] = [d for d in subdirs if not d.startswith(_OURS)]
        for name in sorted(names):
            path = here / name
            if name.startswith(_OURS) or is_event_file(path) or ("tfevents" in name and path.is_dir()):
                continue
            relative = path.relative_to(directory)
            pattern = _excluded(relative, exclude)
            if pattern is not None:
                found.skipped.append((str(path), f"excluded by --exclude-files {pattern}"))
                continue
            try:
                mode = path.stat().st_mode
            except OSError:
                found.skipped.append((str(path), "a broken symbolic link"))
                continue
            if not stat.S_ISREG(mode):
                named = " named like an event file, not read as one" if "tfevents" in name else ""
                found.skipped.append((str(path), f"not a regular file: a FIFO, socket or device{named}"))
                continue
            found.files.append(OtherFile(path, relative))
    return found


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def for_runs(root: Path, exclude: tuple[str, ...], *, source_is_file: bool) -> OtherFiles:
    """The other files trim and replay copy: everything below ``root`` (mirrored below the
    destination), none when the source given was one event file."""
    if source_is_file:
        return OtherFiles()
    return other_files(root, exclude)


def for_merge(runs: list[Run], exclude: tuple[str, ...]) -> OtherFiles:
    """The other files of the runs being merged (each run's directory, not its sub-runs), by
    their path below their run. The same path in two runs must hold the same bytes: the
    merged run can have only one."""
    merged = OtherFiles()
    chosen: dict[Path, Path] = {}
    for run in runs:
        found = other_files(run.directory, exclude, prune_runs=True)
        merged.skipped.extend(found.skipped)
        for item in found.files:
            earlier = chosen.get(item.relative)
            if earlier is None:
                chosen[item.relative] = item.source
                merged.files.append(item)
            elif earlier.resolve() != item.source.resolve() and not filecmp.cmp(earlier, item.source, shallow=False):
                raise InputError(
                    f"{item.source}: differs from {earlier}; the merged run can hold only one {item.relative}",
                    f"keep one: pass --exclude-files {item.relative.as_posix()} and copy the one you want",
                )
    return merged


def check_free(files: OtherFiles, dest: Path) -> None:
    """Refuse to overwrite a file already at a copy's destination (replay writes into an empty place)."""
    for item in files.files:
        target = dest / item.relative
        if target.exists() or target.is_symlink():
            raise InputError(f"{target}: exists", "replay into an empty directory")


def stage(source: Path, temp: Path) -> None:
    """Copy ``source`` to ``temp`` and check the copy's bytes against it."""
    temp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(source, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"{source}: cannot read it ({exc.strerror or 'I/O error'})",
                         f"leave it out with --exclude-files {source.name}") from None
    try:
        shutil.copyfile(source, temp)
    except OSError as exc:
        raise InputError(f"{temp}: cannot copy {source} there ({exc.strerror or 'I/O error'})",
                         "choose a place you can write to") from None
    if not filecmp.cmp(source, temp, shallow=False):
        raise InputError(f"{temp}: the copy of {source} does not read back intact; nothing was replaced")


def copy_all(files: OtherFiles, dest: Path) -> list[tuple[str, str]]:
    """Copy each file to its path below ``dest`` (staged beside it, checked, renamed into
    place); the ``(source, copy)`` pairs."""
    copied = []
    for item in files.files:
        target = output_target(dest / item.relative)
        if target.stream:
            raise InputError(f"{dest / item.relative}: not a regular file", "copy into a new directory")
        temp = staging_file(target.path)
        try:
            stage(item.source, temp)
            place(temp, target.path)
        finally:
            temp.unlink(missing_ok=True)
        copied.append((str(item.source), str(dest / item.relative)))
    return copied
