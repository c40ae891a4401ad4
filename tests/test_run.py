"""``gpudoc run`` and the run view on real processes and real event files (tensorboardX)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gpudoc.runwatch import Check, Checks, EventTail, OutputParser, Point

ROOT = Path(__file__).resolve().parent.parent
TOY = str(ROOT / "examples" / "toy_train.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def gpudoc_run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def toy(*args: str) -> list[str]:
    return ["--", sys.executable, TOY, "--epochs", "3", "--steps", "10", "--step-time", "0", *args]


def python(code: str) -> list[str]:
    return ["--", sys.executable, "-c", textwrap.dedent(code)]


def warnings(stderr: str, rule: str) -> list[str]:
    """The lines of ``rule``'s checks, errors (``gpudoc: error: [rule]``) and warnings alike."""
    return [line for line in stderr.splitlines()
            if line.startswith((f"gpudoc: warning: [{rule}]", f"gpudoc: error: [{rule}]"))]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_file(path: Path, seconds: float) -> None:
    """Wait (polling) until ``path`` exists or ``seconds`` pass; the caller's next step shows which."""
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class Reader:
    """Collects a process's stderr lines as they come."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.05)
        return False

    def text(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


# ---------------------------------------------------------------- how it ends


def test_output_passes_through_and_a_failure_keeps_its_exit_status(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    out = gpudoc_run("--log", str(log), *python("""
        import sys
        print("hello from the run")
        print("to stderr", file=sys.stderr)
        sys.exit(3)
    """))
    assert out.returncode == 3
    assert "hello from the run" in out.stdout and "to stderr" in out.stdout
    assert "gpudoc: the run failed (exit 3) after" in out.stderr
    assert "hello from the run" in log.read_text()


def test_a_successful_toy_run_and_its_json_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    out = gpudoc_run("--logdir", str(tmp_path / "logs"), "--json", str(summary), *toy(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("|####################| 10/10  loss") == 3
    data = json.loads(summary.read_text())
    assert data["state"] == "succeeded" and data["exit_code"] == 0 and data["source"] == "event files"
    assert (data["first_step"], data["last_step"]) == (1, 30)
    scalars = {s["name"]: s for s in data["scalars"]}
    assert set(scalars) == {"train/loss", "val/mae", "val/mse", "val/psnr"}
    assert scalars["train/loss"]["count"] == 30  # every record read once, none twice
    assert scalars["val/psnr"]["count"] == 3 and scalars["val/psnr"]["goal"] == "max"
    assert scalars["val/psnr"]["last_step"] == 30 and 10 < scalars["val/psnr"]["best"] < 60
    assert data["checks"] == [] and "checks: none fired" in out.stderr
    assert "gpudoc:   val/psnr" in out.stderr and "steps 1-30 (from 1 event file(s))" in out.stderr


def test_json_to_stdout_moves_the_run_output_to_stderr(tmp_path: Path) -> None:
    out = gpudoc_run("--json", "-", *python("print('run output')"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "succeeded"
    assert "run output" in out.stderr


def test_a_json_destination_that_is_a_directory_fails_before_the_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = gpudoc_run("--json", str(tmp_path), *python(f"open({str(marker)!r}, 'w')"))
    assert out.returncode == 2 and "a directory" in out.stderr
    assert not marker.exists()


def test_a_log_that_cannot_be_opened_is_bad_input_and_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = gpudoc_run("--log", str(tmp_path / "no" / "dir" / "run.log"), *python(f"open({str(marker)!r}, 'w')"))
    assert out.returncode == 2 and "no such directory" in out.stderr
    assert "Traceback" not in out.stderr and not marker.exists()
    out = gpudoc_run("--log", str(tmp_path), *python("pass"))
    assert out.returncode == 2 and "a directory" in out.stderr.lower()


@pytest.mark.parametrize("link", ["same", "hard", "symbolic"])
def test_outputs_that_are_one_file_are_refused_before_the_run(tmp_path: Path, link: str) -> None:
    marker = tmp_path / "ran"
    first = tmp_path / "out.txt"
    first.write_text("kept\n")
    second = tmp_path / "other"
    if link == "hard":
        os.link(first, second)
    elif link == "symbolic":
        second.symlink_to(first.name)
    else:
        second = first
    run = python(f"open({str(marker)!r}, 'w')")
    for a, b in (("--log", "--json"), ("--json", "--junit"), ("--log", "--junit")):
        out = gpudoc_run(a, str(first), b, str(second), *run)
        assert out.returncode == 2, out.stderr
        assert f"gpudoc: error: {a} {first} and {b} {second} name the same file" in out.stderr
        assert not marker.exists() and first.read_text() == "kept\n"
    new = tmp_path / "new.json"  # a file not made yet, named twice
    out = gpudoc_run("--json", str(new), "--junit", str(tmp_path / "." / "new.json"), *run)
    assert out.returncode == 2 and "name the same file" in out.stderr and not new.exists() and not marker.exists()


def test_a_logdir_that_is_a_dangling_symlink_is_refused_before_the_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    logdir = tmp_path / "logs"
    logdir.symlink_to(tmp_path / "gone")
    out = gpudoc_run("--logdir", str(logdir), *python(f"open({str(marker)!r}, 'w')"))
    assert out.returncode == 2, out.stderr
    assert f"gpudoc: error: {logdir}: no such directory (a symbolic link to {tmp_path / 'gone'}" in out.stderr
    assert not marker.exists()
    out = gpudoc_run("--logdir", str(tmp_path / "made-by-the-run"), *python("pass"))  # a plain new path is fine
    assert out.returncode == 0, out.stderr


def test_out_of_memory_is_in_the_summary(tmp_path: Path) -> None:
    out = gpudoc_run(*toy("--oom-at", "2"), cwd=tmp_path)
    assert out.returncode == 1
    assert "failed (exit 1)" in out.stderr and "out of memory: torch.OutOfMemoryError: CUDA out of memory" in out.stderr


def test_a_sigkill_gpudoc_did_not_send_points_at_the_oom_killer(tmp_path: Path) -> None:
    out = gpudoc_run(*python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), cwd=tmp_path)
    assert out.returncode == 128 + 9
    assert "was killed by SIGKILL" in out.stderr
    assert "likely the kernel's OOM killer" in out.stderr and "dmesg" in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_gpudoc_ends_the_whole_run(tmp_path: Path, sig: signal.Signals) -> None:
    pids = tmp_path / "pids"
    code = f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open({str(pids)!r} + ".tmp", "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        os.rename({str(pids)!r} + ".tmp", {str(pids)!r})
        time.sleep(600)
    """
    proc = subprocess.Popen([sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", "--restarts", "2",
                             *python(code)],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(pids, 30)
        leader, child = map(int, pids.read_text().split())
        assert alive(leader) and alive(child)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert not alive(leader) and not alive(child)
    assert f"gpudoc: {sig.name} received: stopping the run" in stderr
    assert "the run was stopped by gpudoc" in stderr and "starting it again" not in stderr  # a stop is no failure


# ---------------------------------------------------------------- checks as they happen


def test_buggy_scale_raises_the_metric_scale_rules_and_strict_fails(tmp_path: Path) -> None:
    out = gpudoc_run("--logdir", str(tmp_path / "logs"), *toy("--buggy-scale"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    implied = warnings(out.stderr, "implied-range")
    assert len(implied) == 1 and "PSNR used peak 255 on [0,1] data" in implied[0]
    assert implied[0].startswith("gpudoc: error: [implied-range] ") and "warning" not in implied[0].split("]")[0]
    assert all(line.startswith("gpudoc: warning: ") for line in warnings(out.stderr, "psnr-implausible"))
    strict = gpudoc_run("--strict", "--logdir", str(tmp_path / "logs2"), *toy("--buggy-scale"), cwd=tmp_path)
    assert strict.returncode == 1
    assert gpudoc_run("--strict", "--logdir", str(tmp_path / "logs3"), *toy(), cwd=tmp_path).returncode == 0


def test_a_nan_is_reported_once_per_scalar_as_it_happens(tmp_path: Path) -> None:
    out = gpudoc_run("--logdir", str(tmp_path / "logs"), "--json", str(tmp_path / "s.json"), *toy("--nan-at", "15"),
                     cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    nan = warnings(out.stderr, "non-finite")
    loss = [line for line in nan if "train/loss is nan at step 15" in line]
    assert len(loss) == 1 and "diverged" in loss[0]
    assert len(nan) == 4  # loss, mse, mae, psnr: once each although every later value is NaN too
    assert "train/loss  last non-finite (step 30)" in out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["errors"] == 4 and data["rules"] == {"non-finite": "every logged scalar is finite"}
    assert data["check_counts"]["non-finite"] == 16 + 2 * 3  # every NaN counted, each series reported once


def test_github_annotations(tmp_path: Path) -> None:
    out = gpudoc_run("--github", "--logdir", str(tmp_path / "logs"), *toy("--buggy-scale"), cwd=tmp_path)
    assert "::error title=gpudoc implied-range::" in out.stderr
    assert "::warning title=gpudoc psnr-implausible::" in out.stderr
    assert "gpudoc: warning:" not in out.stderr and "gpudoc: error:" not in out.stderr


def test_github_junit_json_and_the_exit_code_agree(tmp_path: Path) -> None:
    """Issue 22: the run's live checks use metrics-check's one mapping — every error annotation
    is a JUnit failure and a JSON error, and --strict fails exactly then; metric-scale rules the
    run logged no numbers for are skipped, not passed."""
    import xmlschema
    from xml.etree import ElementTree

    schema = xmlschema.XMLSchema(str(ROOT / "tests" / "metrics" / "junit.xsd"))
    for name, extra in (("buggy", ("--buggy-scale", "--nan-at", "12")), ("clean", ())):
        junit, summary = tmp_path / f"{name}.xml", tmp_path / f"{name}.json"
        out = gpudoc_run("--strict", "--github", "--junit", str(junit), "--json", str(summary),
                         "--logdir", str(tmp_path / name), *toy(*extra), cwd=tmp_path)
        schema.validate(str(junit))
        suite = ElementTree.parse(junit).getroot()
        errors = [line for line in out.stderr.splitlines() if line.startswith("::error ")]
        assert int(suite.get("failures")) == len({line.split("::")[1] for line in errors})  # one case per rule
        assert json.loads(summary.read_text())["errors"] == len(errors)
        assert out.returncode == (1 if errors else 0), out.stderr
        cases = {c.get("name").split(":")[0]: c for c in suite.iter("testcase")}
        assert cases["non-finite"].find("skipped") is None and cases["stall"].find("skipped") is None
        if name == "buggy":
            assert errors and cases["non-finite"].find("failure") is not None
            assert cases["implied-range"].find("failure") is not None
            assert cases["ssim-out-of-range"].find("skipped") is not None  # the toy logs no SSIM
        else:
            assert not errors and int(suite.get("failures")) == 0 and int(suite.get("skipped")) > 0


def test_a_hung_run_raises_the_stall_check(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", "--stall-min", "0.5",
         "--logdir", str(tmp_path / "logs"),
         *toy("--hang-at", "101", "--steps", "5", "--epochs", "30", "--step-time", "0.02")],
        cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        reader = Reader(proc.stderr)
        assert reader.wait_for("[stall]"), reader.lines
    finally:
        proc.send_signal(signal.SIGTERM)  # gpudoc stops the whole run (a SIGKILL would leave the hung toy)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    stderr = reader.text()
    stall = warnings(stderr, "stall")
    assert len(stall) == 1
    assert re.search(r"no new step for \d+\.\ds after step (?:9[5-9]|100) \(new steps came every", stall[0])
    assert proc.returncode == 130


def test_values_from_output_lines_feed_the_checks_without_event_files(tmp_path: Path) -> None:
    out = gpudoc_run(*python("""
        import math
        for step in range(1, 6):
            loss = math.nan if step == 4 else 1 / step
            print(f"step {step}: loss={loss:.4f} mae: {0.05:.4f} mse: {0.01:.4f} psnr: {20.0:.2f}")
    """), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(warnings(out.stderr, "non-finite")) == 1 and "loss is nan at step 4" in out.stderr
    assert len(warnings(out.stderr, "unit-scale")) == 1  # MSE < MAE: metrics of [0,1] data
    assert "(from its output)" in out.stderr and "loss  last 0.2 (step 5)" in out.stderr


# ---------------------------------------------------------------- where the event files are


def test_event_files_the_run_holds_open_are_found_outside_its_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    work = tmp_path / "work"
    work.mkdir()
    summary = tmp_path / "s.json"
    # The writer keeps its file open while the run lasts: found through /proc/PID/fd.
    out = gpudoc_run("--json", str(summary), *toy("--logdir", str(elsewhere), "--step-time", "0.02"), cwd=work)
    assert out.returncode == 0, out.stderr
    data = json.loads(summary.read_text())
    assert data["source"] == "event files" and len(data["event_files"]) == 1
    assert data["event_files"][0].startswith(str(elsewhere))


WRITE_AND_CLOSE = """
    import sys, time
    sys.modules["torch"] = None
    from tensorboardX import SummaryWriter
    for run, start in (("first", 0), ("second", 5)):
        w = SummaryWriter("logs/" + run)
        for step in range(start, start + 5):
            w.add_scalar("loss", 1.0 / (step + 1), step)
        w.close()  # closed: only the working directory scan can find it
        time.sleep(0.5)
"""


def test_event_files_that_appear_in_the_working_directory_are_found(tmp_path: Path) -> None:
    import tensorboardX

    old = tmp_path / "logs" / "old"
    with tensorboardX.SummaryWriter(str(old)) as w:
        w.add_scalar("loss", 5.0, 0)
    for f in old.iterdir():
        os.utime(f, (time.time() - 3600, time.time() - 3600))
    summary = tmp_path / "s.json"
    out = gpudoc_run("--json", str(summary), *python(WRITE_AND_CLOSE), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(summary.read_text())
    names = {s["name"]: s for s in data["scalars"]}
    assert set(names) == {"logs/first/loss", "logs/second/loss"}  # not the file from before the run
    assert names["logs/first/loss"]["count"] == 5 and names["logs/second/loss"]["last_step"] == 9


def test_a_restarted_writer_going_back_in_steps_is_reported(tmp_path: Path) -> None:
    out = gpudoc_run("--logdir", str(tmp_path / "logs"), *python("""
        import os, sys, time
        sys.modules["torch"] = None
        from tensorboardX import SummaryWriter
        for start in (0, 6):  # the second writer resumes from an older checkpoint: steps 6.. again
            w = SummaryWriter(os.environ["GPUDOC_LOGDIR"], filename_suffix=str(start))
            for step in range(start, 10):
                w.add_scalar("loss", 1.0 / (step + 1), step)
            w.close()
            time.sleep(0.3)
    """), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    back = warnings(out.stderr, "step-backwards")
    assert len(back) == 1 and "loss: step 6 after step 9: a restart or a second writer" in back[0]


# ---------------------------------------------------------------- tailing


def test_tailing_reads_only_new_bytes_waits_for_a_whole_record_and_reports_damage_once(tmp_path: Path) -> None:
    import tensorboardX

    source = tmp_path / "source"
    with tensorboardX.SummaryWriter(str(source)) as w:
        for step in range(4):
            w.add_scalar("loss", 1.0 + step, step)
    data = next(source.iterdir()).read_bytes()
    from gpudoc.events.records import RecordReader

    offsets = [offset for offset, _, _ in RecordReader(next(source.iterdir()))] + [len(data)]
    tailed = tmp_path / "events.out.tfevents.1.test"
    tail = EventTail()
    tail.follow(tailed, ".")
    tailed.write_bytes(data[: offsets[2] + 5])  # file_version, step 0, and 5 bytes of step 1
    points, damage = tail.poll()
    assert [(p.step, p.value) for p in points] == [(0, 1.0)] and damage == []
    assert tail.poll() == ([], [])
    with tailed.open("ab") as f:
        f.write(data[offsets[2] + 5 : offsets[3]] + b"garbage!" * 3 + data[offsets[3] : offsets[4]])
    points, damage = tail.poll()
    assert [(p.step, p.value) for p in points] == [(1, 2.0), (2, 3.0)]
    assert len(damage) == 1 and "skipped" in damage[0].message
    with tailed.open("ab") as f:
        f.write(data[offsets[4] :])
    points, damage = tail.poll()
    assert [(p.step, p.value) for p in points] == [(3, 4.0)] and damage == []
    assert tail.records == 5  # file_version + 4 scalars, each read once


def test_tf_summary_scalars_are_rank_0_tensors(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        for step in range(3):
            tf.summary.scalar("epoch_loss", 0.5 / (step + 1), step=step)
        tf.summary.histogram("weights", [1.0, 2.0], step=0)
    tail = EventTail()
    tail.follow(next(tmp_path.iterdir()), ".")
    points, _ = tail.poll()
    assert [(p.tag, p.step) for p in points] == [("epoch_loss", 0), ("epoch_loss", 1), ("epoch_loss", 2)]
    assert points[1].value == pytest.approx(0.25)


# ---------------------------------------------------------------- output lines and checks


def test_output_parser_reads_keras_tqdm_and_step_lines() -> None:
    parser = OutputParser()
    assert parser.parse("Epoch 3/10") == []
    keras = parser.parse("32/32 ━━━━━━━━━━━━━━━━━━━━ 0s 2ms/step - loss: 0.1234 - mae: 0.0500 - val_loss: 0.2000")
    assert [(p.tag, p.step, p.value) for p in keras] == [("loss", 96, 0.1234), ("mae", 96, 0.05),
                                                        ("val_loss", 96, 0.2)]
    assert keras[0].rounding == pytest.approx(0.00005)
    tqdm = OutputParser().parse("train:  45%|████▌     | 45/100 [00:01<00:01, 30.0it/s, loss=0.123, lr=1e-3]")
    assert [(p.tag, p.value) for p in tqdm] == [("loss", 0.123), ("lr", 0.001)]
    plain = OutputParser()
    assert [(p.tag, p.step) for p in plain.parse("step 120 | loss: 0.5 | acc: 0.9")] == [("loss", 120), ("acc", 120)]
    assert plain.parse("Time: 12:30 usage: 5") == []  # ':' pairs need a step or epoch on the line
    huge = OutputParser().parse("step " + "9" * 5000 + ": loss=0.5 x=1e" + "9" * 5000)  # int() refuses 4300+ digits
    assert [(p.tag, p.step) for p in huge] == [("loss", 1)]


def test_checks_repeat_steps_and_loss_spikes() -> None:
    checks = Checks()
    new = checks.feed([Point(".", "loss", s, 1.0 / (s + 1)) for s in range(10)])
    assert new == []
    new = checks.feed([Point(".", "loss", 9, 0.1)])
    assert [c.rule for c in new] == ["step-repeat"]
    new = checks.feed([Point(".", "loss", 10 + s, 50.0) for s in range(5)])
    assert [c.rule for c in new] == ["loss-spike"] and "running minimum" in new[0].message


def test_keras_train_and_validation_runs_are_followed_together(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    summary = tmp_path / "s.json"
    out = gpudoc_run("--logdir", str(tmp_path / "logs"), "--json", str(summary), *python("""
        import os
        import numpy as np
        import keras
        x = np.random.default_rng(0).uniform(size=(64, 4)).astype("float32")
        y = x.sum(axis=1, keepdims=True)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse", metrics=["mae"])
        model.fit(x, y, epochs=3, validation_split=0.25, verbose=2,
                  callbacks=[keras.callbacks.TensorBoard(os.environ["GPUDOC_LOGDIR"])])
    """), cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Epoch 3/3" in out.stdout  # Keras' own output passed through
    data = json.loads(summary.read_text())
    scalars = {s["name"]: s for s in data["scalars"]}
    assert {"train/epoch_loss", "validation/epoch_loss", "train/epoch_mae", "validation/epoch_mae"} <= set(scalars)
    assert scalars["validation/epoch_loss"]["count"] == 3 and scalars["train/epoch_loss"]["last_step"] == 2
    assert len(data["event_files"]) == 2 and data["checks"] == [], out.stderr


def test_checks_and_the_summary_start_a_line_of_their_own_after_a_progress_bar(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", "--github", *python("""
            import sys, time
            sys.stdout.write("step 1: loss=nan"); sys.stdout.flush()
            time.sleep(1)
            sys.stdout.write("\\r 50%|#####     | 5/10"); sys.stdout.flush()
        """)], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert any(line.startswith("::error title=gpudoc non-finite::") for line in lines), out.stdout
    assert any(line.startswith("gpudoc: the run succeeded") for line in lines), out.stdout


def test_the_supervisor_hears_each_redraw_once_and_bars_ending_in_a_carriage_return() -> None:
    from gpudoc.train import Run

    heard: list[str] = []
    run = Run([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        for i in range(3):
            print(f"{i}0%", end="\\r", flush=True)
            time.sleep(0.05)
        print("done")
        print("bar\\r", flush=True)
        sys.stdout.write("tail")
    """)], on_line=heard.append)
    status = run.wait(30)
    assert status.lines == ("done", "bar", "tail")  # was '00%10%20%done': redraws ending in \\r were joined
    assert heard == ["00%", "10%", "20%", "done", "bar", "tail"]


# ---------------------------------------------------------------- leftovers and restarts

LEAVE_A_WORKER = """
import subprocess, sys
code = "import sys, time; f = open(sys.argv[1], 'rb'); time.sleep(float(sys.argv[2]))"
worker = subprocess.Popen([sys.executable, "-c", code, sys.argv[1], sys.argv[2]],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("worker", worker.pid, flush=True)
"""


def leave_a_worker(tmp_path: Path, seconds: float, *options: str) -> tuple[subprocess.CompletedProcess[str], int]:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").write_bytes(b"")
    out = gpudoc_run("--device-glob", str(dev / "nvidia*"), "--json", str(tmp_path / "s.json"), *options,
                     "--", sys.executable, "-c", LEAVE_A_WORKER, str(dev / "nvidia0"), str(seconds), cwd=tmp_path)
    worker = int(out.stdout.split("worker ")[1].split()[0])
    return out, worker


def test_a_worker_that_outlives_its_leader_holding_a_gpu_is_reported_and_reaped(tmp_path: Path) -> None:
    out, worker = leave_a_worker(tmp_path, 600, "--reap-leftovers")
    assert out.returncode == 0, out.stderr
    left = warnings(out.stderr, "leftover")
    assert len(left) == 1 and f"PID {worker} (" in left[0] and "nvidia0 after the run's leader exited" in left[0]
    assert f"gpudoc: leftover PID {worker}: ended by SIGTERM" in out.stderr
    assert not alive(worker)
    data = json.loads((tmp_path / "s.json").read_text())
    assert [(x["pid"], x["action"]) for x in data["leftovers"]] == [(worker, "ended by SIGTERM")]


def test_a_leftover_gpudoc_ended_is_a_warning_that_strict_does_not_fail(tmp_path: Path) -> None:
    """Nothing was left behind: the check says so as a warning, the summary lists it as ended,
    and --strict keeps the run's own exit status (a leftover still running stays an error)."""
    out, worker = leave_a_worker(tmp_path, 600, "--strict", "--reap-leftovers")
    assert out.returncode == 0, out.stderr
    assert not alive(worker)
    (left,) = warnings(out.stderr, "leftover")
    assert left.startswith("gpudoc: warning: [leftover] ") and f"PID {worker} (" in left
    assert "held " in left and left.endswith(": ended by SIGTERM (fix: join the run's workers before its leader exits)")
    assert "nvidia0: ended by SIGTERM" in out.stderr and "checks: 0 error(s), 1 warning(s): leftover" in out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["exit_code"] == 0 and data["errors"] == 0
    assert [(c["rule"], c["severity"]) for c in data["checks"]] == [("leftover", "warning")]
    assert [(x["pid"], x["action"], x["ended"]) for x in data["leftovers"]] == [(worker, "ended by SIGTERM", True)]


def test_a_leftover_is_only_reported_without_reap_leftovers(tmp_path: Path) -> None:
    out, worker = leave_a_worker(tmp_path, 600)
    try:
        assert len(warnings(out.stderr, "leftover")) == 1
        assert alive(worker) and "left running (--reap-leftovers ends it)" in out.stderr
    finally:
        os.kill(worker, signal.SIGKILL)


def test_a_worker_that_exits_just_after_its_leader_is_no_leftover(tmp_path: Path) -> None:
    out, _ = leave_a_worker(tmp_path, 0.3)
    assert out.returncode == 0 and warnings(out.stderr, "leftover") == []


def test_restarts_start_a_failed_run_again(tmp_path: Path) -> None:
    flaky = python("""
        import os, sys
        count = len(os.listdir("."))
        open(f"attempt{count}", "w").close()
        sys.exit(0 if count == 2 else 4)
    """)
    out = gpudoc_run("--restarts", "3", *flaky, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "the run failed (exit 4): starting it again (attempt 2 of 4)" in out.stderr
    assert "(attempt 3 of 4)" in out.stderr and "(attempt 4" not in out.stderr
    assert "gpudoc: the run succeeded (attempt 3) after" in out.stderr
    again = tmp_path / "again"
    again.mkdir()
    always = gpudoc_run("--restarts", "1", *python("import sys; sys.exit(5)"), cwd=again)
    assert always.returncode == 5 and "the run failed (exit 5) (attempt 2) after" in always.stderr


def test_the_peak_gpu_memory_of_the_runs_processes(tmp_path: Path) -> None:
    from gpudoc.gpu import SimulatedBackend
    from gpudoc.runwatch import LogFinder, Watch
    from gpudoc.train import Run

    run = Run([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gpus = SimulatedBackend({"name": "test", "gpus": [{"name": "Sim GPU", "memory_total_mib": 16384}] * 2,
                                 "processes": [{"pid": run.pid, "gpu": 1, "memory_mib": 1536},
                                               {"pid": 1, "gpu": 0, "memory_mib": 999}]})
        watch = Watch(LogFinder(None, tmp_path, time.time()), Checks(), gpus)
        watch.poll([m.pid for m in run.members()], True, 1)
    finally:
        run.stop(1)
    summary = watch.summary(run.wait(5), 130)
    assert summary.peak_gpu_memory == 1536 * 2**20 and summary.gpus == [1]  # not PID 1's memory on GPU 0
    assert "  peak GPU memory of its processes 1.5 GiB (GPU 1)" in summary.lines()
    # gpudoc run --model: the pre-launch estimate beside the measured peak.
    from dataclasses import replace

    from gpudoc.oom.plan import Fit

    fit = Fit("m", 8, [0, 1], 1, "Sim GPU", 16 * 2**30, 12 * 2**30, 2 * 2**30, "fits", 10 * 2**30)
    assert ("  estimated before the start 2.0 GiB per GPU (fits in 12.0 GiB free on GPU 1), measured peak 1.5 GiB"
            in replace(summary, estimate=fit).lines())


@pytest.mark.parametrize("line", [
    "RuntimeError: CUDA error: an illegal memory access was encountered",
    "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle)`",
    "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error",
])
def test_a_gpu_library_error_is_in_the_summary(tmp_path: Path, line: str) -> None:
    out = gpudoc_run("--json", str(tmp_path / "s.json"),
                     *python(f"import sys; print('step 1'); print({line!r}, file=sys.stderr); sys.exit(1)"))
    assert out.returncode == 1
    assert "gpudoc: the run failed (exit 1) after" in out.stderr and f"; GPU error: {line}\n" in out.stderr
    assert json.loads((tmp_path / "s.json").read_text())["gpu_error"] == line


def test_a_working_directory_too_large_to_search_is_said_not_walked(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import tensorboardX

    from gpudoc import runwatch

    started = time.time() - 1
    for i in range(30):
        (tmp_path / f"file{i}").write_bytes(b"")
    with tensorboardX.SummaryWriter(str(tmp_path / "logs")) as w:
        w.add_scalar("loss", 1.0, 0)
    assert runwatch.LogFinder(None, tmp_path, started).find([]) != []
    monkeypatch.setattr(runwatch, "WALK_LIMIT", 20)
    finder = runwatch.LogFinder(None, tmp_path, started)
    assert finder.find([]) == [] and finder.find([], force=True) == []
    assert finder.note == f"{tmp_path} has more than 20 entries: not searched for event files (give --logdir)"


def test_a_large_file_is_read_over_several_polls_without_a_value_twice(tmp_path: Path) -> None:
    import tensorboardX

    with tensorboardX.SummaryWriter(str(tmp_path)) as w:
        for step in range(10):
            w.add_scalar("loss", float(step), step)
    tail = EventTail(budget=4)
    tail.follow(next(tmp_path.iterdir()), ".")
    polls = [[p.step for p in tail.poll()[0]] for _ in range(4)]
    assert polls == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9], []]  # the first record is the file version
    assert tail.records == 11


def test_intact_records_that_are_not_events_are_reported_once(tmp_path: Path) -> None:
    from gpudoc.events.records import frame

    path = tmp_path / "x.tfevents.1"
    path.write_bytes(frame(b"\xff\xff\xff\xff") * 3)
    tail = EventTail()
    tail.follow(path, ".")
    points, damage = tail.poll()
    assert points == [] and len(damage) == 1 and "record 0 is intact but not a TensorBoard event" in damage[0].message
    with path.open("ab") as f:
        f.write(frame(b"\xff\xff\xff\xff"))
    assert tail.poll() == ([], [])


def test_the_end_reads_every_record_left(tmp_path: Path) -> None:
    import tensorboardX

    from gpudoc import runwatch

    with tensorboardX.SummaryWriter(str(tmp_path / "logs")) as w:
        for step in range(10):
            w.add_scalar("loss", float(step), step)
    watch = runwatch.Watch(runwatch.LogFinder(tmp_path / "logs", tmp_path, time.time()), Checks())
    watch.tail.budget = 3
    watch.poll([], True, 1)
    assert watch.checks.series[(".", "loss")].count == 2
    watch.finish()
    assert watch.checks.series[(".", "loss")].count == 10 and watch.checks.max_step == 9


def test_a_steps_metrics_are_checked_once_a_look_brings_nothing_new_for_it() -> None:
    checks = Checks()
    values = {"val/mse": 0.0125, "val/mae": 0.09, "val/psnr": 67.15}  # [0,1] data, PSNR at peak 255
    assert checks.feed([Point(".", tag, 50, v) for tag, v in values.items()]) == []
    assert checks.settle() == []  # values of step 50 arrived in this look: it may not be complete
    assert sorted(c.rule for c in checks.settle()) == ["implied-range", "psnr-implausible"]
    assert checks.settle() == [] and checks.finish() == []


def test_a_second_signal_while_stopping_kills_at_once(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", "--grace", "600", *python(f"""
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open({str(ready)!r}, "w").close()
            time.sleep(600)
        """)], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        reader = Reader(proc.stderr)
        wait_for_file(ready, 30)
        proc.send_signal(signal.SIGTERM)
        assert reader.wait_for("stopping the run"), reader.lines
        proc.send_signal(signal.SIGINT)  # without it gpudoc waits the whole --grace 600
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = reader.text()
    assert proc.returncode == 130, stderr
    assert "gpudoc: SIGINT again: SIGKILL to the run" in stderr and "stopped by gpudoc" in stderr


def test_a_closed_stdout_only_drops_the_output(tmp_path: Path) -> None:
    out = subprocess.run(["sh", "-c", f'exec "{sys.executable}" -m gpudoc run -- echo hi >&-'], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "gpudoc: the run succeeded" in out.stderr


def test_keras_progress_lines_feed_the_checks_without_event_files(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    summary = tmp_path / "s.json"
    out = gpudoc_run("--json", str(summary), *python("""
        import numpy as np
        import keras
        x = np.random.default_rng(0).uniform(size=(64, 4)).astype("float32")
        y = x.mean(axis=1, keepdims=True)  # targets in [0, 1], predictions from 0: MAE < 1
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, kernel_initializer="zeros")])
        model.compile("sgd", "mse", metrics=["mse", "mae"])
        model.fit(x, y, epochs=3, validation_split=0.25, verbose=2)
    """), cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(summary.read_text())
    scalars = {s["name"]: s for s in data["scalars"]}
    assert data["source"] == "output" and {"loss", "mse", "mae", "val_loss", "val_mse", "val_mae"} <= set(scalars)
    assert scalars["val_mae"]["count"] == 3 and scalars["loss"]["last_step"] == 6  # epoch 3 of 2 batches
    unit = warnings(out.stderr, "unit-scale")
    assert len(unit) == 2 and any(", train)" in u for u in unit) and any(", val)" in u for u in unit)  # once per split


def test_values_from_output_give_way_to_event_files_once_found(tmp_path: Path) -> None:
    out = gpudoc_run("--json", str(tmp_path / "s.json"), *python("""
        import sys, time
        sys.modules["torch"] = None
        from tensorboardX import SummaryWriter
        print("epoch 7: loss=0.5 acc=0.1", flush=True)
        time.sleep(0.5)
        w = SummaryWriter("logs")
        for step in range(3):
            w.add_scalar("loss", 1.0 / (step + 1), step)
        w.flush()
        time.sleep(0.5)
        w.close()
    """), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert [s["name"] for s in data["scalars"]] == ["logs/loss"]  # its directory under the working directory
    assert (data["first_step"], data["last_step"]) == (0, 2)


def test_a_process_left_running_without_a_gpu_device_is_named_not_ended(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    out = gpudoc_run("--device-glob", str(dev / "nvidia*"), "--reap-leftovers", *python("""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdout=subprocess.DEVNULL)
        print("child", child.pid, flush=True)
    """), cwd=tmp_path)
    child = int(out.stdout.split("child ")[1].split()[0])
    try:
        assert out.returncode == 0, out.stderr
        assert warnings(out.stderr, "leftover") == [] and alive(child)
        assert f"PID {child} (" in out.stderr
        assert "still runs after its leader exited (it holds no GPU device)" in out.stderr
    finally:
        os.kill(child, signal.SIGKILL)


def test_torch_summary_writer_found_through_its_open_file(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    work = tmp_path / "work"
    work.mkdir()
    logs = tmp_path / "torch-logs"
    out = gpudoc_run("--json", str(tmp_path / "s.json"), *python(f"""
        import time
        from torch.utils.tensorboard import SummaryWriter
        w = SummaryWriter({str(logs)!r}, flush_secs=1)
        for step in range(5):
            w.add_scalar("Loss/train", 1.0 / (step + 1), step)
            w.add_scalar("PSNR/val", 30.0 + step, step)
        w.flush()
        time.sleep(1)  # the writer holds its file open: found through /proc/PID/fd
        w.close()
    """), cwd=work, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["event_files"] and data["event_files"][0].startswith(str(logs))
    # Outside the working directory, the run is named by its whole directory (as in its checks).
    scalars = {s["name"].removeprefix(f"{logs}/"): s for s in data["scalars"]}
    assert scalars["Loss/train"]["best"] == pytest.approx(0.2) and scalars["PSNR/val"]["goal"] == "max"
    assert scalars["PSNR/val"]["best"] == 34.0 and scalars["PSNR/val"]["count"] == 5


# ---------------------------------------------------------------- new-user trial

def test_steps_that_all_came_in_one_look_still_stall_after_stall_min() -> None:
    checks = Checks(stall_min=2.0, started=100.0)
    assert checks.feed([Point("output", "loss", s, 1.0 / s) for s in range(1, 6)], now=101.0) == []
    assert checks.tick(True, 1, now=102.5) == []  # quiet for 1.5 s: under --stall-min
    stall = checks.tick(True, 1, now=103.5)
    assert [c.rule for c in stall] == ["stall"]
    assert "no new step for 2.5s after step 5 (the steps so far came in one look, 1.0s after the start)" \
        in stall[0].message


def test_a_first_flush_that_came_late_is_waited_for_twice_as_long() -> None:
    checks = Checks(stall_min=2.0, started=0.0)
    for flush in range(1, 4):  # a writer that flushes every 2 minutes
        checks.feed([Point(".", "loss", flush, 1.0)], now=5.0 + 120 * flush)
        assert checks.tick(True, 1, now=5.0 + 120 * flush + 119) == []
    assert [c.rule for c in checks.tick(True, 1, now=365.0 + 2 * 365.0)] == ["stall"]


def test_steps_seen_in_two_looks_in_a_row_stall_after_stall_min() -> None:
    checks = Checks(stall_min=2.0, started=0.0)
    checks.feed([Point("output", "loss", 1, 0.1)], now=0.1)
    checks.feed([Point("output", "loss", s, 0.1) for s in range(2, 6)], now=1.0)  # the next look: 1 s is the polling's
    assert checks.tick(True, 1, now=2.9) == []
    stall = checks.tick(True, 1, now=3.1)
    assert [c.rule for c in stall] == ["stall"] and "(new steps came every 0.9s before)" in stall[0].message


def test_a_run_that_hangs_after_its_first_output_raises_the_stall_check(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", "--stall-min", "0.5", "--",
         "sh", "-c", 'echo "step 1 loss: 0.5"; echo "step 2 loss: 0.4"; exec sleep 600'],
        cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        reader = Reader(proc.stderr)
        assert reader.wait_for("[stall]"), reader.lines
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert re.search(r"no new step for \d+\.\ds after step 2 \(the steps so far came in one look",
                     warnings(reader.text(), "stall")[0])


def test_a_sigkill_gpudoc_sent_on_a_quick_second_signal_is_no_oom_kill(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", "--grace", "600", "--json", "s.json",
         *python(f"""
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open({str(ready)!r}, "w").close()
            time.sleep(600)
        """)], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        reader = Reader(proc.stderr)
        wait_for_file(ready, 30)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the second one comes before gpudoc has begun its SIGTERM to the session
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = reader.text()
    assert proc.returncode == 130, stderr
    assert "gpudoc: SIGTERM again: SIGKILL to the run" in stderr
    assert "the run was stopped by gpudoc (SIGKILL after a second signal)" in stderr
    assert "OOM killer" not in stderr and "killed by SIGKILL" not in stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["ended"] == "was stopped by gpudoc (SIGKILL after a second signal)"
    assert data["oom_killer_likely"] is False


MULTI_LINE_WORKER = """
import subprocess, sys
code = '''import sys, time
f = open(sys.argv[1], "rb")
time.sleep(600)'''
worker = subprocess.Popen(["./py", "-c", code, sys.argv[1]], stdout=subprocess.DEVNULL)
print("worker", worker.pid, flush=True)
"""


@pytest.mark.parametrize("github", [False, True])
def test_a_multi_line_command_is_shown_on_one_line(tmp_path: Path, github: bool) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").write_bytes(b"")
    # the worker runs as ./py so its command line starts the same wherever the checkout lives
    # (a long interpreter path would push the escaped newline past the shown 60 characters)
    (tmp_path / "py").symlink_to(sys.executable)
    out = gpudoc_run("--device-glob", str(dev / "nvidia*"), "--reap-leftovers", "--junit", "j.xml",
                     *(["--github"] if github else []),
                     "--", sys.executable, "-c", MULTI_LINE_WORKER, str(dev / "nvidia0"), cwd=tmp_path)
    worker = int(out.stdout.split("worker ")[1].split()[0])
    assert out.returncode == 0, out.stderr
    assert not alive(worker)
    lines = out.stderr.splitlines()
    mine = [line for line in lines if line.startswith(("gpudoc:", "::"))]
    assert mine == lines  # every line of gpudoc's is whole: no piece of the command on a line of its own
    said = [line for line in lines if f"PID {worker} (" in line]
    assert len(said) == 2  # the check as it happens, the summary's leftover line
    assert all("./py -c 'import sys, time\\nf = open(" in line for line in said)
    if github:
        assert said[0].startswith("::warning title=gpudoc leftover::")  # a GPU held after the leader exited, ended
    assert "import sys, time\n" not in (tmp_path / "j.xml").read_text()


def test_scalars_have_one_name_in_checks_summary_and_json(tmp_path: Path) -> None:
    # The logdir goes to the training only: the run's directory is relative to the working directory.
    out = gpudoc_run("--json", "s.json", *toy("--logdir", "runs/nan", "--nan-at", "5"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    names = {s["name"] for s in data["scalars"]}
    series = {c["series"] for c in data["checks"] if c["rule"] == "non-finite"}
    assert "runs/nan/train/loss" in names and series <= names
    assert "gpudoc: error: [non-finite] runs/nan/train/loss is nan at step 5" in out.stderr
    assert "gpudoc:   runs/nan/train/loss  last" in out.stderr
    # Given to gpudoc, names are relative to it.
    out = gpudoc_run("--logdir", "runs/b", "--json", "b.json", *toy("--nan-at", "5"), cwd=tmp_path)
    data = json.loads((tmp_path / "b.json").read_text())
    assert {c["series"] for c in data["checks"]} <= {s["name"] for s in data["scalars"]}
    assert "train/loss" in {s["name"] for s in data["scalars"]}


# ---------------------------------------------------------------- OOM before and during the run

# The simulated DGX's GPUs are 79.6 GiB H100s with about 10 GiB free each (GPU 0: 9.6 GiB, GPU 7:
# 10.4 GiB); ``big`` needs 10.6 GiB at batch 8 with Adam: it fits the capacity, not the free memory.
MODELS = """
import torch.nn as nn


def small():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))


def big():
    return nn.Sequential(nn.Linear(16384, 16384), nn.ReLU(), nn.Linear(16384, 16384))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "models.py"
    path.write_text(MODELS)
    return path


def dgx_run(*args: str, visible: str | None = None, cwd: Path | None = None,
            merged: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in ENV.items() if k != "CUDA_VISIBLE_DEVICES"}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return subprocess.run([sys.executable, "-m", "gpudoc", "--simulate", "dgx", "run", "--interval", "0.1", *args],
                          cwd=cwd, env=env, stdout=subprocess.PIPE, text=True, timeout=120,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE)


def test_the_verdict_against_free_memory_is_printed_before_the_command_starts(models: Path) -> None:
    out = dgx_run("--model", f"{models}:big", "--batch", "8", "--input", "16384",
                  *python("print('the command started', flush=True)"), merged=True)
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    estimate = next(i for i, line in enumerate(lines) if line.startswith("gpudoc: estimate: "))
    assert estimate < lines.index("the command started")
    # 10.6 GiB of 79.6 GiB would fit; against the 9.6 GiB free on GPU 0 it does not.
    assert re.search(r"needs 10\.\d GiB on GPU 0 \(the tightest of GPUs 0,1,2,3,4,5,6,7\), NVIDIA H100 80GB HBM3 "
                     r"with 9\.6 GiB free of 79\.6 GiB: oom", lines[estimate]), lines[estimate]
    warning = [line for line in lines if line.startswith("gpudoc: warning: [predicted-oom]")]
    assert len(warning) == 1 and "(fix: best remedy: " in warning[0]
    github = dgx_run("--github", "--model", f"{models}:big", "--batch", "8", "--input", "16384", *python("pass"))
    assert "::warning title=gpudoc predicted-oom::the run is estimated not to fit GPU 0" in github.stderr
    assert any(line.startswith("gpudoc:   estimated before the start 10.") for line in lines)


def test_require_fit_refuses_to_start_a_run_predicted_out_of_memory(models: Path, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    out = dgx_run("--require-fit", "--model", f"{models}:big", "--batch", "8", "--input", "16384",
                  *python(f"open({str(marker)!r}, 'w').close()"))
    assert out.returncode == 1, out.stderr
    assert not marker.exists()
    assert ": oom (" in out.stderr and "best remedy: " in out.stderr
    assert "gpudoc: --require-fit: not starting the run" in out.stderr
    fits = dgx_run("--require-fit", "--model", f"{models}:small", "--batch", "8", "--input", "64",
                   *python(f"open({str(marker)!r}, 'w').close()"))
    assert fits.returncode == 0, fits.stderr
    assert marker.exists() and ": fits (" in fits.stderr


@pytest.mark.parametrize(("visible", "shown"), [
    ("7", "on GPU 7, NVIDIA H100 80GB HBM3 with 10.4 GiB free"),
    ("GPU-55b3fcea", "on GPU 3, NVIDIA H100"),  # a UUID prefix, as CUDA takes it
    ("5,2", "on GPU 2 (the tightest of GPUs 5,2)"),
    ("6,x,0", "on GPU 6, NVIDIA"),  # CUDA ignores the list from the first entry that names no GPU
])
def test_cuda_visible_devices_chooses_the_gpus_estimated_against(models: Path, visible: str, shown: str) -> None:
    out = dgx_run("--model", f"{models}:small", "--batch", "8", "--input", "64", *python("pass"), visible=visible)
    assert out.returncode == 0, out.stderr
    assert shown in out.stderr


def test_a_run_that_sees_no_gpu_or_bad_options_is_one_line(models: Path) -> None:
    # No GPU to estimate against: a warning, and the run starts; under --require-fit it does not (exit 3).
    cpu = dgx_run("--model", f"{models}:small", "--batch", "8", "--input", "64", *python("print('ran')"),
                  visible="-1")
    assert cpu.returncode == 0 and cpu.stdout == "ran\n"
    assert cpu.stderr.startswith("gpudoc: warning: no estimate before the start: --model: "
                                 "CUDA_VISIBLE_DEVICES='-1' leaves the run no GPU")
    hidden = dgx_run("--require-fit", "--model", f"{models}:small", "--batch", "8", "--input", "64",
                     *python("print('ran')"), visible="-1")
    assert hidden.returncode == 3 and hidden.stdout == ""
    assert hidden.stderr.startswith("gpudoc: error: --model: CUDA_VISIBLE_DEVICES='-1' leaves the run no GPU")
    alone = dgx_run("--model", f"{models}:small", *python("pass"))
    assert alone.returncode == 2 and "--model and --batch go together" in alone.stderr
    bad = dgx_run("--model", f"{models}:small", "--batch", "9", "--accumulate", "2", "--input", "64", *python("pass"))
    assert bad.returncode == 2 and "does not split into 2 equal micro-batches" in bad.stderr
    assert "Traceback" not in hidden.stderr + alone.stderr + bad.stderr


def test_an_out_of_memory_end_gets_max_batch_in_the_summary_and_json(models: Path, tmp_path: Path) -> None:
    from gpudoc.gpu import SimulatedBackend
    from gpudoc.oom.plan import plan, prelaunch, read_visible

    out = dgx_run("--json", "s.json", "--model", f"{models}:small", "--batch", "8", "--input", "64",
                  *python("print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'); exit(1)"),
                  visible="7", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    estimate = data["estimate"]
    assert estimate["gpus"] == [7] and estimate["gpu"] == 7 and estimate["verdict"] == "fits"
    assert estimate["free_bytes"] < estimate["capacity_bytes"] and "peak_gpu_memory" in data
    # The answer is gpudoc.oom's max-batch for the same spec on the same GPU, read the same way.
    made, fit = prelaunch(lambda device: plan(f"{models}:small", 8, device, "64"),
                          read_visible(SimulatedBackend("dgx"), "7"))
    best, _ = made.max_batch()
    assert best > 8 and estimate["max_batch"] == best and estimate["total_bytes"] == fit.total_bytes
    # It ran out at batch 8 although max-batch takes more: the estimate was contradicted, not repeated.
    assert f"max batch for the same spec: {best}" not in out.stderr
    assert (f"gpudoc:   the estimate put batch 8 within memory (max batch {best}) and the run ran out: the estimate "
            f"is optimistic for this run — try at most batch {max(1, 64 // best)} (8·8/{best})") in out.stderr
    plain_run = dgx_run("--json", "p.json", *python("pass"), cwd=tmp_path)
    assert plain_run.returncode == 0 and json.loads((tmp_path / "p.json").read_text())["estimate"] is None


def test_a_rule_that_warned_fires_again_when_it_becomes_an_error() -> None:
    checks = Checks()

    def look(step: int, values: dict[str, float]) -> list[Check]:
        checks.feed([Point(".", tag, step, v) for tag, v in values.items()])
        assert checks.settle() == []  # this look brought the step: it may not be complete yet
        return checks.settle()

    # step 0: a peak of 1.3 on [0,1] data (MSE < MAE) is a warning (per-image PSNR averaging)
    first = {"val/mse": 0.01, "val/mae": 0.05, "val/psnr": 10 * math.log10(1.3**2 / 0.01)}
    # step 5: PSNR at peak 255 on the same data: an error of the same rule
    later = {**first, "val/psnr": 10 * math.log10(255**2 / 0.01)}
    warned = look(0, first)
    assert [(c.rule, c.severity) for c in warned] == [("implied-range", "warning")]
    assert look(3, first) == []  # the same warning again is not news
    raised = look(5, later)
    assert [(c.rule, c.severity, c.step) for c in raised] == [("implied-range", "error", 5),
                                                              ("psnr-implausible", "warning", 5)]
    assert look(6, later) == [] and checks.counts["implied-range"] == 4  # counted each time


def test_a_file_written_and_closed_between_looks_is_found_after_an_open_one_was(tmp_path: Path) -> None:
    from gpudoc.runwatch import LogFinder

    held = tmp_path / "logs" / "first" / "events.out.tfevents.1.host"
    held.parent.mkdir(parents=True)
    held.write_bytes(b"")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'rb'); "
                               "print(flush=True); time.sleep(60)", str(held)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        holder.stdout.readline()
        finder = LogFinder(None, tmp_path, time.time() - 5)
        assert [path for path, _ in finder.find([holder.pid])] == [held]  # found open (and by the walk)
        closed = tmp_path / "logs" / "second" / "events.out.tfevents.2.host"
        closed.parent.mkdir()
        closed.write_bytes(b"")  # a writer that opened, logged and closed between two looks
        found = {path: run for path, run in finder.find([holder.pid], force=True)}
        assert found == {held: "logs/first", closed: "logs/second"}
    finally:
        holder.kill()
        holder.wait()


def test_event_files_of_an_earlier_run_in_the_logdir_are_left_out(tmp_path: Path) -> None:
    """A --logdir that holds an earlier run's event files: only this run's are judged and
    summarised (the earlier ones are said once); without a command they are followed."""
    from gpudoc.runwatch import LogFinder

    logdir = tmp_path / "logs"
    # In a directory of its own: tensorboardX names a file by the second it opened, and a run
    # started within the same second would replace it.
    assert gpudoc_run("--logdir", str(logdir / "before"), *toy("--buggy-scale"), cwd=tmp_path).returncode == 0
    old = sorted(logdir.rglob("*tfevents*"))
    assert old
    out = gpudoc_run("--strict", "--logdir", str(logdir), "--json", str(tmp_path / "s.json"),
                     "--", sys.executable, TOY, "--epochs", "1", "--steps", "10", "--step-time", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    notes = [line for line in out.stderr.splitlines() if line.startswith("gpudoc: note: [earlier-runs] ")]
    assert len(notes) == 1 and f"{len(old)} event file(s) under {logdir}" in notes[0], out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["checks"] == [] and "checks: none fired" in out.stderr
    assert (data["first_step"], data["last_step"]) == (1, 10) and data["earlier_event_files"] == len(old)
    assert not set(data["event_files"]) & {str(p) for p in old}
    assert {s["name"]: s["count"] for s in data["scalars"]}["train/loss"] == 10
    # gpudoc tui --logdir DIR without a command follows what is there.
    follow = LogFinder(logdir, tmp_path, time.time())
    assert {str(p) for p in old} <= {str(p) for p, _ in follow.find(())} and not follow.earlier


def test_a_leftover_holding_a_device_is_an_error_check_in_every_report(tmp_path: Path) -> None:
    """A worker left holding a GPU is counted: summary, --json, a JUnit failure, --strict exits 1;
    the JUnit properties carry gpudoc's exit code and the command's own."""
    from xml.etree import ElementTree

    junit = tmp_path / "x.xml"
    out, worker = leave_a_worker(tmp_path, 600, "--strict", "--junit", str(junit))
    try:
        assert out.returncode == 1, out.stderr
        left = warnings(out.stderr, "leftover")
        assert len(left) == 1 and left[0].startswith("gpudoc: error: [leftover] ")
        assert "checks: 1 error(s), 0 warning(s): leftover" in out.stderr
        data = json.loads((tmp_path / "s.json").read_text())
        assert [c["rule"] for c in data["checks"]] == ["leftover"] and data["errors"] == 1 and data["exit_code"] == 1
        suite = ElementTree.parse(junit).getroot()
        case = next(c for c in suite.iter("testcase") if c.get("name").startswith("leftover:"))
        failure = case.find("failure")
        assert failure is not None and f"PID {worker} (" in failure.get("message")
        assert "cause:" not in failure.text and "fix: --reap-leftovers" in failure.text
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["exit_code"] == "1" and props["returncode"] == "0" and "exit_status" not in props
    finally:
        os.kill(worker, signal.SIGKILL)


def test_max_batch_after_an_oom_end_says_when_the_run_contradicted_it() -> None:
    from gpudoc.oom.plan import Fit
    from gpudoc.runwatch import max_batch_line

    def fit(batch: int, best: int) -> Fit:
        return Fit("m", batch, [0], 0, "H100", 80 << 30, 10 << 30, 9 << 30, "fits", 1 << 30, None, best)

    assert max_batch_line(fit(64, 84)) == ("the estimate put batch 64 within memory (max batch 84) and the run ran "
                                           "out: the estimate is optimistic for this run — try at most batch 48 "
                                           "(64·64/84)")
    assert max_batch_line(fit(64, 40)).startswith("max batch for the same spec: 40 (as gpudoc oom max-batch")


# ---- the tail's two paths: the compiled scalar decoder and the Python parser

def _value(tag: str, how: str, number: float, metadata: str | None):  # type: ignore[no-untyped-def]
    import struct

    from tensorboard.compat.proto import summary_pb2

    value = summary_pb2.Summary.Value(tag=tag)
    tensor = value.tensor
    if how == "simple":
        value.simple_value = number
    elif how == "float":
        tensor.dtype, tensor.float_val[:] = 1, [number]
    elif how == "float_content":
        tensor.dtype, tensor.tensor_content = 1, struct.pack("<f", number)
    elif how == "double":
        tensor.dtype, tensor.double_val[:] = 2, [number]
    elif how == "int":
        tensor.dtype, tensor.int_val[:] = 3, [int(number) % 1000 if math.isfinite(number) else 7]
    elif how == "vector":
        tensor.dtype, tensor.float_val[:] = 1, [number, number]
        tensor.tensor_shape.dim.add(size=2)
    elif how == "histo":
        value.histo.min, value.histo.num = number, 1.0
    if how in ("float", "float_content", "double", "int"):
        tensor.tensor_shape.SetInParent()
    if metadata is not None:
        value.metadata.plugin_data.plugin_name = metadata
    return value


def _event_file(draw, events: int) -> bytes:  # type: ignore[no-untyped-def]
    from hypothesis import strategies as st
    from tensorboard.compat.proto import event_pb2

    from gpudoc.events.records import frame

    numbers = st.floats(width=32) | st.sampled_from([0.0, 1.5, -2.25, 1e-30, 3e38])
    out = [frame(event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2").SerializeToString())]
    for _ in range(events):
        what = draw(st.sampled_from(["scalar"] * 10 + ["garbage", "damaged", "log"]))
        if what == "garbage":  # intact, but no event
            out.append(frame(b"\xff\xff\xff\xff"))
            continue
        event = event_pb2.Event(wall_time=draw(st.sampled_from([1.7e9 + 0.5, 0.0, float("nan")])),
                                step=draw(st.sampled_from([0, 1, 2, 2, 5, -3, 2**62])))
        if what == "log":
            event.log_message.message = "hi"
        else:
            for _ in range(draw(st.integers(1, 3))):
                event.summary.value.append(_value(
                    draw(st.sampled_from(["loss", "val/mse", "acc", "né"])),
                    draw(st.sampled_from(["simple"] * 4 + ["float", "float_content", "double", "int", "vector",
                                                           "histo"])),
                    draw(numbers), draw(st.sampled_from([None, None, "scalars", "histograms", ""]))))
        framed = frame(event.SerializeToString())
        if what == "damaged":
            framed = framed[:-1] + bytes([framed[-1] ^ 1])
        out.append(framed)
    return b"".join(out)


def _tail_all(path: Path, data: bytes, cuts: list[int], budget: int, compiled: bool) -> list[object]:
    """Every poll's points (as text: NaN compares), checks and record count, the file growing
    to each cut, then to its end, polled until nothing is left."""
    from gpudoc.events import records

    with pytest.MonkeyPatch.context() as patch:
        if not compiled:
            patch.setattr(records, "scalar_decoder", lambda **_: None)
        path.write_bytes(b"")
        tail = EventTail(budget=budget)
        tail.follow(path, "run")
        seen: list[object] = []
        for cut in [*sorted(cuts), len(data), len(data)]:
            with path.open("r+b") as f:
                f.seek(0, 2)
                f.write(data[f.tell():cut] if cut > f.tell() else b"")
            for _ in range(len(data) // max(budget, 1) + 3):
                points, checks = tail.poll()
                seen.append((repr(points), [c.message for c in checks], tail.records))
        return seen


def test_the_tail_gives_the_same_points_and_checks_with_the_compiled_decoder_as_without(tmp_path: Path) -> None:
    """Tensor and simple scalars, metadata first or later, values that are no scalars, intact
    records that are no event, damage, a file that grows mid-record, a budget that stops
    inside a run of scalar records: the compiled decoder and the Python parser agree."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from gpudoc.events.records import scalar_decoder

    assert scalar_decoder() is not None, "the compiled decoder is built here (setup.py)"

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.data(), st.integers(0, 30), st.sampled_from([1, 2, 3, 7, 1000]))
    def same(data, events: int, budget: int) -> None:  # type: ignore[no-untyped-def]
        content = _event_file(data.draw, events)
        cuts = data.draw(st.lists(st.integers(0, len(content)), max_size=3))
        path = tmp_path / "events.out.tfevents.1.x"
        assert _tail_all(path, content, cuts, budget, True) == _tail_all(path, content, cuts, budget, False)

    same()


def test_a_real_writers_scalars_are_decoded_by_the_compiled_decoder(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """tensorboardX's records: only the file's first record and each tag's first value (its
    metadata names the plugin) are parsed in Python; the values are those of the parser."""
    import tensorboardX

    from gpudoc import runwatch

    with tensorboardX.SummaryWriter(str(tmp_path)) as w:
        for step in range(50):
            for tag in ("train/loss", "val/mse"):
                w.add_scalar(tag, 1 / (1 + step), step)
    path = next(tmp_path.glob("*tfevents*"))
    parsed = []
    real = runwatch._scalars
    monkeypatch.setattr(runwatch, "_scalars", lambda data, followed: parsed.append(1) or real(data, followed))
    tail = EventTail()
    tail.follow(path, ".")
    points, _ = tail.poll()
    assert len(points) == 100 and tail.records == 101 and len(parsed) <= 3
    assert [(p.tag, p.step, p.value) for p in points[:2]] == [("train/loss", 0, 1.0), ("val/mse", 0, 1.0)]
    assert points[-1].value == pytest.approx(1 / 50, rel=1e-6) and points[-1].rounding == abs(points[-1].value) * 2**-24


# ---------------------------------------------------------------- outputs, signals, a closed stdout (issue 17.5)


@pytest.mark.parametrize("option", ["--json", "--junit", "--log"])
@pytest.mark.parametrize("where", ["missing", "proc"])
def test_an_output_that_cannot_be_written_is_refused_before_the_run(tmp_path: Path, option: str, where: str) -> None:
    """`--json /nonexist/dir/x.json` ran the whole command and lost its summary at the end."""
    marker = tmp_path / "ran"
    dest = str(tmp_path / "no" / "dir" / "out") if where == "missing" else "/proc/gpudoc-out"
    out = gpudoc_run(option, dest, *python(f"open({str(marker)!r}, 'w')"))
    assert out.returncode == 2 and not marker.exists(), out.stderr
    assert out.stderr.startswith(f"gpudoc: error: {option} {dest}: ") and out.stderr.count("\n") == 1, out.stderr
    assert ("no such directory" if where == "missing" else "cannot write it") in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_json_to_a_closed_stdout_is_refused_and_a_good_output_is_made_only_at_the_end(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = subprocess.run([sys.executable, "-m", "gpudoc", "run", "--json", "-", *python(f"open({str(marker)!r}, 'w')")],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
                         preexec_fn=lambda: os.close(1))
    assert out.returncode == 2 and "--json -: stdout is closed" in out.stderr and not marker.exists()
    summary = tmp_path / "summary.json"
    code = f"import os; print(sorted(os.listdir({str(tmp_path)!r})))"
    out = gpudoc_run("--json", str(summary), "--junit", str(tmp_path / "checks.xml"), *python(code))
    assert out.returncode == 0 and out.stdout == "[]\n"  # nothing created early, not even a temporary file
    assert json.loads(summary.read_text())["exit_code"] == 0 and sorted(os.listdir(tmp_path)) == ["checks.xml",
                                                                                                  "summary.json"]


def test_the_first_signals_notice_comes_at_once_before_a_second_signals(tmp_path: Path) -> None:
    """The notice of the first SIGTERM came only after a second one, and a blank line after
    (the run's progress bar had gone to /dev/null, not to stderr)."""
    ready = tmp_path / "ready"
    code = f"""
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stdout.write("epoch 1: 50%"); sys.stdout.flush()
        open({str(ready)!r}, "w").close()
        time.sleep(600)
    """
    proc = subprocess.Popen([sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", *python(code)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        reader = Reader(proc.stderr)
        wait_for_file(ready, 60)
        proc.send_signal(signal.SIGTERM)
        assert reader.wait_for("SIGTERM received: stopping the run"), reader.text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = reader.text().splitlines()
    assert lines[0].startswith("gpudoc: SIGTERM received: stopping the run"), lines
    assert lines[1] == "gpudoc: SIGTERM again: SIGKILL to the run", lines
    assert "" not in lines and "stopped by gpudoc (SIGKILL after a second signal)" in lines[2]


def test_a_stdout_reader_that_goes_away_stops_only_the_passthrough(tmp_path: Path) -> None:
    """`gpudoc run -- CMD | head -2`: the run goes on, supervised (restarts, --log, the summary,
    its exit status), and stderr says once that its output is no longer passed through."""
    log = tmp_path / "run.log"
    code = """
        import sys
        for i in range(200000):
            print(i)
        print("loss: nan step 5")
        print("the end")
        sys.exit(3)
    """
    proc = subprocess.Popen([sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", "--restarts", "1",
                             "--log", str(log), *python(code)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert [proc.stdout.readline(), proc.stdout.readline()] == ["0\n", "1\n"]
        proc.stdout.close()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr
    gone = [line for line in stderr.splitlines() if "no longer goes to stdout" in line]
    assert gone == [f"gpudoc: warning: the run's output no longer goes to stdout (its reader went away); the run "
                    f"goes on, supervised as before ({log} gets all of it)"], stderr
    assert "(attempt 2)" in stderr and "failed (exit 3)" in stderr and len(warnings(stderr, "non-finite")) == 1
    assert log.read_text().count("the end\n") == 2 and "Traceback" not in stderr and "\n\n" not in stderr


def test_a_hangup_ignored_as_nohup_does_leaves_the_run_going(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    go = tmp_path / "go"
    code = f"""
        import os, time
        open({str(ready)!r}, "w").close()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.05)
        print("finished")
    """
    proc = subprocess.Popen([sys.executable, "-m", "gpudoc", "run", "--interval", "0.1", *python(code)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        wait_for_file(ready, 60)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)  # (10 looks: a hangup heard would have stopped the run by now)
        go.touch()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and stdout == "finished\n", stderr
    assert "SIGHUP" not in stderr and "the run succeeded" in stderr


def test_a_leftover_is_reported_at_the_leaders_exit_and_the_duration_is_the_leaders_own(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").write_bytes(b"")
    began = time.time()
    # --interval 600: the leader's exit is acted on when it happens, not at the next look.
    out = gpudoc_run("--interval", "600", "--device-glob", str(dev / "nvidia*"), "--reap-leftovers",
                     "--json", str(tmp_path / "s.json"), *python("""
        import os, sys, time
        device = open(sys.argv[1], "rb")
        if os.fork() == 0:  # forked just before the leader exits, holding the device
            time.sleep(600)
            os._exit(0)
        with open("ended", "w") as f:
            f.write(repr(time.time()))
        os._exit(3)
    """), str(dev / "nvidia0"), cwd=tmp_path)
    leader_ended = float((tmp_path / "ended").read_text())
    assert out.returncode == 3, out.stderr
    (left,) = warnings(out.stderr, "leftover")
    assert "nvidia0 after the run's leader exited" in left and "ended by SIGTERM" in out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    # The run's duration is its leader's (gpudoc started after `began`), not the leftover's wait and end.
    assert data["duration_s"] <= leader_ended - began, (data["duration_s"], leader_ended - began)
