"""Event files under a path, grouped into runs as TensorBoard groups them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from gpudoc.errors import InputError


def is_event_file(path: Path) -> bool:
    """TensorBoard reads files whose name contains ``tfevents``."""
    return "tfevents" in path.name and path.is_file()


class Run(NamedTuple):
    """A directory's event files in TensorBoard's (lexicographic) order. ``name`` is the
    directory relative to the root that was given (``.`` for the root itself)."""

    name: str
    directory: Path
    files: tuple[Path, ...]

    @property
    def label(self) -> str:
        """The name to show: ``name``, or for the root itself its directory's own name."""
        if self.name != ".":
            return self.name
        resolved = self.directory.resolve()
        return resolved.name or str(resolved)


def _readable(path: Path) -> Path:
    """``path``, once it opens for reading; else the one-line error naming it."""
    try:
        with open(path, "rb"):
            return path
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or 'I/O error'})",
                         "make it readable (chmod, or run as its owner), or leave it out") from None


def walk(root: Path, onerror: Callable[[OSError], None], cycles: list[tuple[str, str]]) -> Iterator[
        tuple[str, list[str], list[str]]]:
    """:func:`os.walk` below ``root`` (sub-directories sorted; the caller may prune them),
    following symbolic links to directories as TensorBoard does, except one to a directory
    the walk is already in (itself or one above it, which TensorBoard follows until the
    path is too long): that cycle is told to ``cycles`` as ``(link, why)`` and not entered."""
    for current, subdirs, names in os.walk(root, onerror=onerror, followlinks=True):
        subdirs.sort()
        links = [d for d in subdirs if os.path.islink(os.path.join(current, d))]
        if links:
            here = Path(current)
            within = {root.resolve(), *((root / p).resolve() for p in here.relative_to(root).parents),
                      here.resolve()}
            for name in links:
                target = (here / name).resolve()
                if target in within:
                    cycles.append((str(here / name), f"a symbolic link to {target}, a directory it is in, "
                                                     "not followed (a cycle)"))
                    subdirs.remove(name)
        yield current, subdirs, names


def discover(path: str | Path, unreadable: list[str] | None = None) -> tuple[Path, list[Run]]:
    """The root and its runs: a file is a one-file run; a directory contributes every
    directory below it (itself included) that holds event files, through symbolic links to
    directories as TensorBoard does (:func:`walk`). An event file that cannot be opened is
    bad input; a directory below the root that cannot be listed, or a link that would make
    a cycle, is left out and told to ``unreadable`` (``path: why``), and named if no run is
    found."""
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or directory")
    if root.is_file():
        if not is_event_file(root):
            raise InputError(f"{root}: not an event file (the name has no 'tfevents')")
        return root.parent, [Run(".", root.parent, (_readable(root),))]
    if not root.is_dir():
        raise InputError(f"{root}: not an event file or a directory (a device, FIFO or socket)",
                         "give an event file, a run directory or a logdir")
    skipped: list[str] = []

    def left_out(exc: OSError) -> None:
        if exc.filename is None or Path(exc.filename) == root:
            raise InputError(f"{root}: cannot list the directory ({exc.strerror or 'I/O error'})",
                             "make it readable (chmod, or run as its owner)")
        skipped.append(f"{exc.filename}: cannot list the directory ({exc.strerror or 'I/O error'})")

    runs = []
    cycles: list[tuple[str, str]] = []
    for directory, _, names in walk(root, left_out, cycles):
        files = sorted(Path(directory) / n for n in names if "tfevents" in n)
        files = [_readable(f) for f in files if f.is_file()]
        if files:
            rel = os.path.relpath(directory, root)
            runs.append(Run(rel, Path(directory), tuple(files)))
    skipped += [f"{link}: {why}" for link, why in cycles]
    if unreadable is not None:
        unreadable.extend(skipped)
    if not runs:
        also = f" (left out: {'; '.join(skipped)})" if skipped else ""
        raise InputError(f"{root}: no event files (names containing 'tfevents') under it{also}")
    return root, runs



def staging_beside(dest: Path) -> Path:
    """A new empty hidden file beside ``dest`` to write an event file into and then rename
    onto it; its name has no 'tfevents', so a TensorBoard watching the directory ignores it."""
    import tempfile  # only here: a trim that stages into its own directory never needs it

    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".gpudoc-", suffix=".tmp", dir=dest.parent)
    os.close(handle)
    return Path(temp)


def output_directory(path: Path) -> Path:
    """A destination directory argument, checked before anything is written: a symlink to a
    directory is followed; ``-``, a file, a device or a FIFO (or a path below a file) is
    refused as bad usage."""
    if str(path) == "-":
        raise InputError("-: this command writes event files into a directory, not a stream",
                         "name a new or empty directory")
    for candidate in (path, *path.parents):
        if candidate.is_symlink() and not candidate.exists():
            raise InputError(f"{path}: {candidate} is a symbolic link to nothing", "name a new or empty directory")
        if candidate.exists():
            if not candidate.is_dir():
                where = "" if candidate == path else f" ({candidate} is not a directory)"
                raise InputError(f"{path}: not a directory{where}", "name a new or empty directory")
            if not os.access(candidate, os.W_OK | os.X_OK):
                where = "" if candidate == path else f" in {candidate}"
                raise InputError(f"{path}: cannot write it (permission denied{where})",
                                 "choose a place you can write to")
            break
    return path
