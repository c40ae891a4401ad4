"""What following a run costs: the tail reads each appended byte once, an unchanged logdir is
not listed again, and the curves panel is not rebuilt when nothing it shows changed."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult

from gpudoc.events import records
from gpudoc.runwatch import EventTail, LogFinder, Point
from gpudoc.tui.runview import CurvesPanel

TAGS = ("train/loss", "val/mse", "val/mae", "val/psnr")


class Counted:
    """A file whose reads are counted into ``total``."""

    def __init__(self, handle: Any, total: list[int]) -> None:
        self.handle, self.total = handle, total

    def __enter__(self) -> Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.total[0] += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


@pytest.fixture
def bytes_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    total = [0]
    monkeypatch.setattr(records, "open", lambda *a, **k: Counted(builtins.open(*a, **k), total),  # noqa: SIM115
                        raising=False)
    return total


@pytest.fixture(autouse=True)
def _no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorboardX without torch (it imports faster), undone after each test: setting it for
    the whole session made the later OOM tests find no torch."""
    if "torch" not in sys.modules:
        monkeypatch.setitem(sys.modules, "torch", None)


def writer(logdir: Path) -> Any:
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(logdir), flush_secs=3600)


def test_the_tail_reads_only_the_bytes_appended_since_the_last_poll(tmp_path: Path, bytes_read: list[int]) -> None:
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import scalar

    log = EventsWriter(str(tmp_path / "events"))  # tensorboardX's own record writer, without its thread
    log.flush()
    path = next(tmp_path.glob("*tfevents*"))
    tail = EventTail()
    tail.follow(path, ".")
    tail.poll()
    size, read = path.stat().st_size, bytes_read[0]
    assert read == size  # the file's first record, once
    got: list[Point] = []
    for batch in range(5):
        for step in range(batch * 20, batch * 20 + 20):
            for i, tag in enumerate(TAGS):
                log.write_event(Event(wall_time=time.time(), step=step, summary=scalar(tag, 1 / (1 + step) + i)))
        log.flush()
        points, _ = tail.poll()
        got += points
        new_size = path.stat().st_size
        assert bytes_read[0] - read == new_size - size > 0  # the new bytes, not the file again
        size, read = new_size, bytes_read[0]
        assert tail.poll() == ([], []) and bytes_read[0] == read  # nothing new: nothing read
    log.close()
    assert [(p.tag, p.step) for p in got] == [(tag, step) for step in range(100) for tag in TAGS]


def test_a_record_cut_off_is_read_again_once_its_rest_arrives_and_nothing_else(
        tmp_path: Path, bytes_read: list[int]) -> None:
    source = tmp_path / "source"
    log = writer(source)
    for step in range(3):
        log.add_scalar("loss", 0.5 / (1 + step), step)
    log.close()
    data = next(source.glob("*tfevents*")).read_bytes()
    path = tmp_path / "run" / "events.out.tfevents.1.host"
    path.parent.mkdir()
    cut = len(data) - 7  # inside the last record
    path.write_bytes(data[:cut])
    tail = EventTail()
    tail.follow(path, ".")
    first, _ = tail.poll()
    waiting = tail.files[path.resolve()].reader.state.partial
    assert [p.step for p in first] == [0, 1] and waiting > 0
    with path.open("ab") as handle:
        handle.write(data[cut:])
    rest, checks = tail.poll()
    assert [p.step for p in rest] == [2] and checks == []
    assert bytes_read[0] == len(data) + waiting  # every byte once, the cut-off record's twice


def test_an_unchanged_logdir_is_not_listed_again_and_a_new_run_in_it_is_found(tmp_path: Path) -> None:
    runs = [tmp_path / f"run{i}" / "train" for i in range(30)]
    old = time.time() - 60
    for i, run in enumerate(runs):
        run.mkdir(parents=True)
        (run / f"events.out.tfevents.{i}.host").write_bytes(b"")
        (run / "notes.txt").write_text("x")
    for directory in [tmp_path, *{p for run in runs for p in (run, run.parent)}]:
        os.utime(directory, (old, old))  # directories last changed a minute ago
    finder = LogFinder(tmp_path, tmp_path, time.time())
    first = finder.find([], force=True)
    assert len(first) == 30 and finder.listings == 61  # the root, 30 runs, 30 train/
    assert finder.find([], force=True) == first and finder.listings == 61  # one stat per directory
    (runs[7] / "events.out.tfevents.99.host").write_bytes(b"")  # a restart: a new file
    found = finder.find([], force=True)
    assert finder.listings == 62  # only the directory that changed
    assert (runs[7] / "events.out.tfevents.99.host", "run7/train") in found and len(found) == 31


def test_a_directory_changed_in_the_last_seconds_is_listed_at_every_look(tmp_path: Path) -> None:
    """Its modification time may not change again for an entry added in the same clock tick."""
    finder = LogFinder(tmp_path, tmp_path, time.time())
    assert finder.find([], force=True) == []
    (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")
    assert [p.name for p, _ in finder.find([], force=True)] == ["events.out.tfevents.1.host"]
    assert finder.listings == 2


class CurvesApp(App[None]):
    def compose(self) -> ComposeResult:
        yield CurvesPanel(id="curves")


async def test_the_curves_panel_is_built_again_only_when_what_it_shows_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []
    build = CurvesPanel.build_lines
    monkeypatch.setattr(CurvesPanel, "build_lines", lambda self: builds.append(1) or build(self))
    app = CurvesApp()
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.query_one(CurvesPanel)
        points = [Point(".", tag, step, 1 / (1 + step) + i, wall_time=float(step))
                  for step in range(50) for i, tag in enumerate(TAGS)]
        panel.take(points, [], "1 event file", True)
        await pilot.pause()
        before = len(builds)
        for _ in range(5):  # polls that read nothing new
            panel.take([], [], "1 event file", True)
        await pilot.pause()
        assert len(builds) == before
        panel.take([Point(".", "train/loss", 50, 0.01, wall_time=50.0)], [], "1 event file", True)
        await pilot.pause()
        assert len(builds) == before + 1
        assert "step 50" in str(panel.lines[0])


def test_once_an_open_event_file_is_found_descriptors_are_read_every_few_seconds_not_every_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpudoc import runwatch

    first, second = tmp_path / "events.out.tfevents.1.host", tmp_path / "late" / "events.out.tfevents.2.host"
    second.parent.mkdir()
    code = (f"import time, pathlib\nf = open({str(first)!r}, 'ab')\nprint('open', flush=True)\n"
            f"input()\ng = open({str(second)!r}, 'ab')\nprint('open', flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "open\n"
        links: list[str] = []
        read_link = runwatch.read_link
        monkeypatch.setattr(runwatch, "read_link", lambda path: links.append(path) or read_link(path))
        finder = LogFinder(None, tmp_path, time.time())
        assert finder.find([child.pid]) == [(first, ".")] and links
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline() == "open\n"
        links.clear()
        assert finder.find([child.pid]) == [] and links == []  # the next look reads no descriptor
        monkeypatch.setattr(runwatch, "_WALK_EVERY", 0.0)  # a few seconds later
        assert sorted(finder.find([child.pid])) == [(first, "."), (second, "late")] and links
    finally:
        child.kill()
        child.wait()
