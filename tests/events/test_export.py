"""Export against TensorBoard's accumulator, with both restart policies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing import event_accumulator

from gpudoc.cli import cli


def gpudoc(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["events", *args])
    return result.exit_code, result.stdout, result.stderr


def test_purge_matches_tensorboards_view_and_keep_keeps_everything(tbx: Path, tmp_path: Path) -> None:
    code, out, _ = gpudoc("export", str(tbx / "run1"), "-o", str(tmp_path / "purged.jsonl"), "--on-restart", "purge",
                          "--json")
    # A run given directly is named by its directory (TensorBoard would call it ".").
    assert code == 0 and json.loads(out)["purged"]["run1"] > 0
    rows = [json.loads(line) for line in (tmp_path / "purged.jsonl").read_text().splitlines()]
    ours = [(r["step"], r["wall_time"], r["value"]) for r in rows if r["run"] == "run1" and r["tag"] == "loss"]
    accumulator = event_accumulator.EventAccumulator(str(tbx / "run1"), size_guidance={"scalars": 0})
    accumulator.Reload()
    theirs = [(s.step, s.wall_time, s.value) for s in accumulator.Scalars("loss")]
    assert [(s, w) for s, w, _ in ours] == [(s, w) for s, w, _ in theirs]
    assert all(abs(a - b) < 1e-6 for (_, _, a), (_, _, b) in zip(ours, theirs))
    assert len(ours) == 121

    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "all.csv"))
    with open(tmp_path / "all.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    loss = [r for r in table if r["run"] == "run1" and r["tag"] == "loss"]
    assert code == 0 and len(loss) == 142 and {r["kind"] for r in table} == {"scalar"}


def test_other_kinds_and_refusals(tbx: Path, tmp_path: Path) -> None:
    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "h.jsonl"), "--kinds", "histogram,text")
    rows = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert code == 0 and {r["kind"] for r in rows} == {"histogram", "text"}
    assert next(r for r in rows if r["kind"] == "text")["value"] == "step 0"
    assert next(r for r in rows if r["kind"] == "histogram")["value"]["num"] == 100
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "i.csv"), "--kinds", "image")
    assert code == 2 and "cannot be exported" in err and not (tmp_path / "i.csv").exists()
    code, _, err = gpudoc("export", str(tbx), "-o", str(tmp_path / "h.jsonl"))
    assert code == 2 and "exists" in err


@pytest.mark.parametrize(("command", "label"), [
    (["trim", "{src}", "-o", "{out}", "--steps", "1:5"], b"trimming"),
    (["merge", "{src}/run1", "--run", ".", "-o", "{out}", "--overlap", "keep-last"], b"merging"),
    (["replay", "{file}", "-o", "{out}", "--rate", "100000"], b"replaying"),
])
def test_progress_bar_on_a_terminal_only(tbx: Path, tmp_path: Path, command: list[str], label: bytes) -> None:
    import os
    import subprocess
    import sys

    def args(out: str) -> list[str]:
        file = sorted((tbx / "run1").glob("*tfevents*"))[0]
        return [sys.executable, "-m", "gpudoc", "events",
                *(a.format(src=tbx, file=file, out=tmp_path / out) for a in command)]

    main, child = os.openpty()
    proc = subprocess.Popen(args("out"), stdin=child, stdout=subprocess.DEVNULL, stderr=child,
                            env={**os.environ, "TERM": "xterm-256color"})
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    proc.wait(60)
    assert proc.returncode == 0 and label in seen
    quiet = subprocess.run(args("out2"), capture_output=True, timeout=60)
    assert quiet.returncode == 0 and label not in quiet.stderr


def test_parquet_has_the_csv_rows_and_one_type_per_column(tbx: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    assert gpudoc("export", str(tbx), "-o", str(tmp_path / "s.csv"))[0] == 0
    assert gpudoc("export", str(tbx), "-o", str(tmp_path / "s.parquet"), "--format", "parquet")[0] == 0
    with open(tmp_path / "s.csv", newline="") as handle:
        expected = [(r["run"], r["tag"], int(r["step"]), float(r["value"])) for r in csv.DictReader(handle)]
    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert [(r["run"], r["tag"], r["step"], r["value"]) for r in table] == expected
    code, _, _ = gpudoc("export", str(tbx), "-o", str(tmp_path / "m.parquet"), "--format", "parquet",
                        "--kinds", "scalar,histogram")
    mixed = pq.read_table(tmp_path / "m.parquet")
    assert code == 0 and str(mixed.schema.field("value").type) == "string"
    histogram = next(r for r in mixed.to_pylist() if r["kind"] == "histogram")
    assert json.loads(histogram["value"])["num"] == 100
