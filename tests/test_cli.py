"""The gpudoc CLI: version, help, exit codes, the one error path, JSON output."""

from __future__ import annotations

import json
import struct

import pytest
from click.testing import CliRunner

from gpudoc import __version__
from gpudoc.cli import cli
from gpudoc.errors import ExitCode

SKIP_FRAMEWORKS = ["--skip", "torch", "--skip", "tensorflow"]


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_version_and_help() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"gpudoc {__version__}"
    result = invoke("--help")
    assert result.exit_code == 0
    assert "doctor" in result.output and "--simulate" in result.output


@pytest.mark.parametrize("args", [["no-such-command"], ["doctor", "--no-such-flag"], ["doctor", "--skip", "jax"]])
def test_usage_errors_exit_2_with_one_line(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.startswith("gpudoc: error: ")
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_bad_scenario_is_bad_input_and_debug_shows_traceback(tmp_path) -> None:
    result = invoke("--simulate", "nope", "doctor", *SKIP_FRAMEWORKS)
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.strip().startswith("gpudoc: error: no scenario file or built-in scenario named 'nope'")
    assert "Traceback" not in result.stderr
    result = invoke("--debug", "--simulate", "nope", "doctor", *SKIP_FRAMEWORKS)
    assert result.exit_code == ExitCode.USAGE and "Traceback" in result.stderr


def test_internal_error_and_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("kaput")

    monkeypatch.setattr("gpudoc.cli.doctor.diagnose", boom)
    result = invoke("doctor")
    assert result.exit_code == ExitCode.INTERNAL
    assert result.stderr.startswith("gpudoc: error: internal error: RuntimeError: kaput")
    assert "Traceback" not in result.stderr

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("gpudoc.cli.doctor.diagnose", interrupted)
    result = invoke("doctor")
    assert result.exit_code == ExitCode.INTERRUPTED
    assert result.stderr.strip() == "gpudoc: error: interrupted"


def test_doctor_json_on_this_machine() -> None:
    result = invoke("doctor", "--json", *SKIP_FRAMEWORKS)
    report = json.loads(result.stdout)
    assert result.exit_code == report["exit_code"]
    names = [c["name"] for c in report["checks"]]
    assert names[:2] == ["Python", "gpudoc"] and "NVIDIA driver" in names
    assert {c["status"] for c in report["checks"]} <= {"ok", "info", "warn", "problem", "missing"}


def test_doctor_on_simulated_faults_exits_3() -> None:
    result = invoke("--simulate", "faults", "doctor", *SKIP_FRAMEWORKS)
    assert result.exit_code == ExitCode.ENVIRONMENT
    assert "✗ NVIDIA driver  NVIDIA driver/library version mismatch" in result.stdout
    assert "fix: the driver was upgraded" in result.stdout


def test_simulate_from_environment() -> None:
    result = invoke("doctor", "--json", *SKIP_FRAMEWORKS, env={"GPUDOC_SIMULATE": "dgx"})
    report = json.loads(result.stdout)
    gpus = [c for c in report["checks"] if c["name"].startswith("GPU ")]
    assert len(gpus) == 8 and all("H100" in c["detail"] for c in gpus)


@pytest.mark.parametrize(("args", "says"), [
    (["tui", "--demo", "touch", "touch", "gpudoc-tui-ran"], "no scenario file or built-in scenario named 'touch'"),
    (["tui", "--log", "run.log"], "--log needs a command to run"),
    (["tui", "--", "no-such-command-gpudoc"], "cannot run 'no-such-command-gpudoc'"),
])
def test_tui_run_usage_errors_start_nothing(args: list[str], says: str, tmp_path, monkeypatch) -> None:
    """A command mistaken for the demo scenario, --log alone, a command that does not exist."""
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.startswith("gpudoc: error: ") and says in result.stderr
    assert list(tmp_path.iterdir()) == []


def _event_log(directory) -> str:  # type: ignore[no-untyped-def]
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(directory)) as writer:
        for step in range(3000):
            writer.add_scalar("loss", 1 / (step + 1), step)
    return str(directory)


def _gpudoc(*args: str, **kwargs):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "gpudoc", *args], capture_output=True, text=True, timeout=120,
                          **kwargs)


def test_outputs_that_cannot_take_the_data_are_bad_output_not_bugs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A full disk and a closed stdout were exit 70 (OSError, TypeError on a None stdout)."""
    logs = _event_log(tmp_path / "logs")
    full = _gpudoc("events", "export", logs, "-o", "/dev/full")
    assert full.returncode == 2 and full.stderr == (
        "gpudoc: error: /dev/full: cannot write it (No space left on device): choose a place you can write to\n")
    import subprocess
    import sys

    for args in (["events", "export", logs, "-o", "-"], ["events", "info", logs, "--json"]):
        closed = subprocess.run(f'"{sys.executable}" -m gpudoc {" ".join(args)} >&-', shell=True,
                                capture_output=False, stderr=subprocess.PIPE, text=True, timeout=120)
        assert closed.returncode == 2 and closed.stderr.startswith("gpudoc: error: ") and "stdout is closed" in \
            closed.stderr and closed.stderr.count("\n") == 1, closed.stderr


def test_a_reader_that_goes_away_ends_it_quietly_as_sigpipe_would(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`gpudoc events export … -o - | head -1` exited 1 ('problems found'): now 141, nothing on stderr."""
    import subprocess
    import sys

    logs = _event_log(tmp_path / "logs")
    pipe = subprocess.run(f'"{sys.executable}" -m gpudoc events export {logs} -o - | head -1; '
                          'echo "status=${PIPESTATUS[0]}" >&2', shell=True, executable="/bin/bash",
                          capture_output=True, text=True, timeout=120)
    assert pipe.stdout.startswith("run,tag,kind,step,wall_time,value") and pipe.stdout.count("\n") == 1
    assert pipe.stderr == f"status={int(ExitCode.BROKEN_PIPE)}\n"


def test_a_reader_that_goes_away_mid_write_is_a_broken_pipe_not_a_success(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """sys.stdout's writer returned a short count when the reader left during a 200 kB write:
    export reported every row written and exited 0 with most of them lost."""
    import subprocess
    import sys

    logs = _event_log(tmp_path / "logs")  # ~210 kB of CSV: more than a pipe holds
    pipe = subprocess.run(f'"{sys.executable}" -m gpudoc events export {logs} -o - | '
                          '(sleep 0.5; head -c 1000 >/dev/null); echo "status=${PIPESTATUS[0]}" >&2', shell=True,
                          executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert pipe.stderr == f"status={int(ExitCode.BROKEN_PIPE)}\n"


@pytest.mark.parametrize(("args", "says"), [
    (["doctor", "--simulate", "dgx"], "--simulate is a global option: gpudoc --simulate dgx doctor"),
    (["reap", "--json", "--simulate=faults", "-y"],
     "--simulate is a global option: gpudoc --simulate=faults reap --json -y"),
    (["events", "info", "--debug", "a b.tfevents"],
     "--debug is a global option: gpudoc --debug events info 'a b.tfevents'"),
])
def test_a_global_option_after_the_subcommand_says_where_it_goes(args: list[str], says: str) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "gpudoc", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == ExitCode.USAGE and out.stdout == ""
    assert out.stderr.startswith("gpudoc: error: ") and out.stderr.count("\n") == 1
    assert out.stderr.rstrip().endswith(f"({says})")


@pytest.mark.parametrize("width", [30, 60, 80, 100, 200])
def test_the_command_listing_is_the_one_click_makes_from_the_commands(width: int) -> None:
    """`gpudoc --help` lists the commands from COMMANDS' summaries, without importing them
    (doctor's and metrics-check's modules bring NVML, YAML and numpy: 150 ms): the listing
    must stay what click makes from each command's own help, at every terminal width."""
    import click

    with click.Context(cli, info_name="gpudoc", terminal_width=width, max_content_width=100) as ctx:
        ours, clicks = ctx.make_formatter(), ctx.make_formatter()
        cli.format_commands(ctx, ours)
        click.Group.format_commands(cli, ctx, clicks)  # imports every command module
    assert ours.getvalue() == clicks.getvalue()
    assert ours.getvalue().count("\n") >= 10  # a title and each command


# What `gpudoc --help` and a trim must not import: the other commands, and what only other
# paths need (the pure-Python core's CRC, JSON, temporary files, tracebacks, protobuf, and the
# tensor decoding of numpy and TensorBoard's tensor_util, ~100 ms, that no plain scalar needs).
_LAZY = ("gpudoc.cli.doctor", "gpudoc.cli.mask", "gpudoc.cli.metrics", "gpudoc.cli.oom", "gpudoc.cli.reap",
         "gpudoc.cli.run", "gpudoc.cli.serve", "gpudoc.cli.tui", "gpudoc.events.info", "gpudoc.events.export",
         "gpudoc.events.merge", "json", "tempfile", "traceback", "shlex", "numpy", "tensorboard.util.tensor_util",
         "google.protobuf")


def _loaded_by(args: list[str], env: dict[str, str] | None = None) -> set[str]:
    """The modules of ``_LAZY`` (and google_crc32c) that ``gpudoc ARGS`` imported, in a fresh
    interpreter; it must succeed."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom gpudoc.cli import cli\n"
            f"code = cli.main({args!r}, standalone_mode=False)\n"
            f"print(code, sorted(m for m in {(*_LAZY, 'google_crc32c')!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})})
    code, loaded = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert code == "0", out.stderr
    return set(json.loads(loaded.replace("'", '"')))


def test_help_and_a_trim_import_only_what_they_use(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tensorboard.compat.proto import event_pb2, summary_pb2

    from gpudoc.events import RecordWriter, records

    run = tmp_path / "logs" / "run"
    run.mkdir(parents=True)
    with open(run / "events.out.tfevents.1.host", "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        for step in range(100):
            value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
            writer.write(event_pb2.Event(wall_time=2.0 + step, step=step,
                                         summary=summary_pb2.Summary(value=[value])).SerializeToString())
    assert _loaded_by(["--help"]) == set()
    assert _loaded_by(["events", "--help"]) == set()
    trim = ["events", "trim", str(tmp_path / "logs"), "--steps", "10:", "-o"]
    python = _loaded_by([*trim, str(tmp_path / "python")], {"GPUDOC_EVENTS_CORE": "python"})
    assert python == {"google_crc32c"}
    assert (tmp_path / "python" / "run" / "events.out.tfevents.1.host").exists()
    if records.core_active():  # where it is built, the compiled core computes every CRC
        assert _loaded_by([*trim, str(tmp_path / "compiled")]) == set()
    # info and a CSV export of plain scalars: no numpy, no tensor_util (info not even export);
    # with the compiled core, not even protobuf (the pure-Python one parses every record).
    cores = [{"GPUDOC_EVENTS_CORE": "python"}, *([{}] if records.core_active() else [])]
    for number, env in enumerate(cores):
        parsing = set() if env == {} else {"google_crc32c", "google.protobuf"}
        assert _loaded_by(["events", "info", str(tmp_path / "logs")], env) == {"gpudoc.events.info", *parsing}
        table = tmp_path / f"table{number}.csv"
        export = _loaded_by(["events", "export", str(tmp_path / "logs"), "-o", str(table)], env)
        assert export == {"gpudoc.events.export", "json", "tempfile", *parsing}  # (tempfile: the staged output)
        assert table.read_text().count("\n") == 101
    # Scalars as tf.summary and Keras write them (float tensors of shape [], the first with the
    # plugin's metadata) need no numpy or tensor_util either.
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

    tf = tmp_path / "tf" / "run"
    tf.mkdir(parents=True)
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    with open(tf / "events.out.tfevents.1.host.v2", "wb") as handle:
        writer = RecordWriter(handle)
        writer.write(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString())
        for step in range(10):
            tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                            tensor_content=struct.pack("<f", 1.0 / (step + 1)))
            value = summary_pb2.Summary.Value(tag="loss", tensor=tensor, metadata=metadata if step == 0 else None)
            writer.write(event_pb2.Event(wall_time=2.0 + step, step=step,
                                         summary=summary_pb2.Summary(value=[value])).SerializeToString())
    for number, env in enumerate(cores):
        table = tmp_path / f"tf{number}.csv"
        for args in (["info", str(tf)], ["export", str(tf), "-o", str(table)]):
            assert not {"numpy", "tensorboard.util.tensor_util"} & _loaded_by(["events", *args], env), (args, env)
        assert table.read_text().splitlines()[1:3] == ["run,loss,scalar,0,2.0,1.0,number",
                                                       "run,loss,scalar,1,3.0,0.5,number"]


def test_the_console_entry_point_leaves_start_up_objects_out_of_garbage_collection() -> None:
    """`gpudoc` (main()) freezes what is imported before the command runs (gc.freeze): the
    collector's passes, the one at exit included, no longer walk click and the group."""
    import subprocess
    import sys

    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count(), file=sys.stderr))\n"
            "from gpudoc.cli import main\nsys.argv = ['gpudoc', '--version']\nmain()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == f"gpudoc {__version__}\n"
    assert int(out.stderr.split("frozen ")[1]) > 1000  # click's and gpudoc.cli's objects


def test_a_name_that_is_not_utf8_is_shown_with_its_bytes_escaped_in_errors_and_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A path of bytes that are no UTF-8 (Python holds them as lone surrogates): the error line
    showed ``\\udcff`` (stderr's backslashreplace), unlike the ``\\xff`` of every other output;
    and emit_json wrote the raw bytes (invalid UTF-8 JSON) or, on a strict stream, failed."""
    import io
    import os
    import subprocess
    import sys

    from gpudoc.output import emit_json

    missing = str(tmp_path / os.fsdecode(b"gone\xff"))
    done = subprocess.run([sys.executable, "-m", "gpudoc", "events", "info", missing], capture_output=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.decode() == (
        f"gpudoc: error: {tmp_path}{os.sep}gone\\xff: no such file or directory\n")
    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    emit_json({os.fsdecode(b"k\xfe"): [os.fsdecode(b"r\xff"), "\ud800", "ü \\x41"]}, strict)
    strict.seek(0)
    assert json.loads(strict.buffer.read().decode()) == {"k\\xfe": ["r\\xff", "\\ud800", "ü \\x41"]}


@pytest.mark.parametrize("where", ["missing", "proc"])
def test_tui_refuses_a_log_it_could_not_write_before_the_run(where: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Checked before the start: with a predicted OOM the run starts later, inside the app."""
    monkeypatch.chdir(tmp_path)
    log = str(tmp_path / "no" / "run.log") if where == "missing" else "/proc/gpudoc-run.log"
    result = invoke("tui", "--log", log, "--", "touch", "ran")
    assert result.exit_code == ExitCode.USAGE and result.stderr.startswith(f"gpudoc: error: --log {log}: ")
    assert result.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []
