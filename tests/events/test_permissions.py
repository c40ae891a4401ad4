"""Unreadable inputs and unwritable outputs, as a user who is not root (nobody, when the
suite runs as root): one line naming the path, exit 2, never an internal error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534


def as_user(*args: str) -> subprocess.CompletedProcess[str]:
    """gpudoc in a child process run as nobody (through setpriv) when we are root, who reads
    and writes everything, else as ourselves."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: no way to run as a user permissions apply to")
        prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run([*prefix, sys.executable, "-m", "gpudoc", "events", *args], capture_output=True,
                          text=True, timeout=120, cwd="/")


@pytest.fixture
def shared(tbx: Path) -> Iterator[Path]:
    """A directory anyone may write in (pytest's own are private to root) holding a copy of a run."""
    top = Path(tempfile.mkdtemp(prefix="gpudoc-perm-"))
    top.chmod(0o777)
    shutil.copytree(tbx / "run1", top / "logs" / "run1")
    yield top
    for path in (top, *top.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(top)


def _one_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("gpudoc: error: ") and "internal error" not in line
    assert all(n in line for n in needles), line


@pytest.mark.parametrize("command", [["info", "{top}/logs"], ["export", "{top}/logs", "-o", "-"],
                                     ["trim", "{top}/logs", "-o", "{top}/t"],
                                     ["merge", "{top}/logs/run1", "--run", ".", "-o", "{top}/m"],
                                     ["replay", "{top}/logs", "-o", "{top}/r", "--rate", "0"]])
def test_an_unreadable_event_file_is_bad_input_naming_it(shared: Path, command: list[str]) -> None:
    event = sorted((shared / "logs" / "run1").glob("*tfevents*"))[-1]  # the others read, then this one
    event.chmod(0)
    args = [c.format(top=shared) for c in command]
    result = as_user(*args)
    _one_line(result, str(event), "cannot read it", "Permission denied")
    assert result.stdout == "" and not any((shared / n).exists() for n in "tmr")


def test_an_output_in_a_directory_that_cannot_be_written_is_bad_input(shared: Path) -> None:
    locked = shared / "locked"
    locked.mkdir(mode=0o755)
    for command in (["trim", str(shared / "logs"), "-o", str(locked / "out")],
                    ["merge", str(shared / "logs" / "run1"), "--run", ".", "-o", str(locked / "out")],
                    ["replay", str(shared / "logs"), "-o", str(locked / "out"), "--rate", "0"],
                    ["export", str(shared / "logs"), "-o", str(locked / "out.csv")]):
        if os.geteuid() != 0:
            locked.chmod(0o555)
        _one_line(as_user(*command), str(locked / "out"), "cannot write it")
        assert list(locked.iterdir()) == []


def test_a_directory_that_cannot_be_listed_is_named(shared: Path) -> None:
    hidden = shared / "logs" / "hidden"
    shutil.copytree(shared / "logs" / "run1", hidden)
    hidden.chmod(0)
    result = as_user("info", str(shared / "logs"), "--json")
    runs = [r["run"] for r in json.loads(result.stdout)]
    assert result.returncode == 0 and runs and all(r.split("/")[0] == "run1" for r in runs)
    assert result.stderr == f"gpudoc: warning: {hidden}: cannot list the directory (Permission denied); " \
                            "its event files, if any, are left out\n"
    result = as_user("trim", str(shared / "logs"), "-o", str(shared / "t"), "--json")
    assert result.returncode == 0 and {"path": str(hidden), "reason": "a directory that cannot be listed "
                                       "(Permission denied)"} in json.loads(result.stdout)["not_copied"]
    _one_line(as_user("info", str(hidden.parent / "hidden")), str(hidden), "cannot list the directory")
    shutil.rmtree(shared / "logs" / "run1")
    _one_line(as_user("export", str(shared / "logs"), "-o", "-"), "no event files", str(hidden),
              "Permission denied")
