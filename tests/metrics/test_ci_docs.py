"""The CI jobs in docs/ci.md: the YAML loads, and the command each job runs writes the JUnit
file the job publishes, valid against the JUnit schema, on a log directory with a finding."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gpudoc.cli import cli

from .agreement import validate_junit
from .test_reports import write_events

DOC = Path(__file__).resolve().parents[2] / "docs" / "ci.md"


def yaml_blocks() -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]


def github_job() -> tuple[str, str]:
    (workflow,) = [b for b in yaml_blocks() if "jobs" in b]
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers == ["push", "pull_request"]
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    (index,) = [i for i, s in enumerate(steps) if "gpudoc metrics-check" in s.get("run", "")]
    command = steps[index]["run"]
    junit = shlex.split(command)[shlex.split(command).index("--junit") + 1]
    later = steps[index + 1:]
    assert later and all(s.get("if") == "always()" for s in later), "the report is published when the check fails"
    assert any(s.get("with", {}).get("report_paths") == junit for s in later)
    assert job["permissions"]["checks"] == "write"
    return command, junit


def gitlab_job() -> tuple[str, str]:
    (pipeline,) = [b for b in yaml_blocks() if "jobs" not in b]
    (job,) = pipeline.values()
    (command,) = [line for line in job["script"] if line.startswith("gpudoc metrics-check")]
    assert job["artifacts"]["when"] == "always"
    return command, job["artifacts"]["reports"]["junit"]


@pytest.mark.parametrize("job", [github_job, gitlab_job])
def test_the_documented_job_runs_and_publishes_a_valid_junit_file(job: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    command, junit = job()
    args = shlex.split(command)
    assert args[:2] == ["gpudoc", "metrics-check"] and "--junit" in args
    monkeypatch.chdir(tmp_path)
    logs = Path(args[2])
    write_events(logs / "train", "train", [{"mse": 0.004, "mae": 0.05}, {"mse": math.nan, "mae": 0.04}])
    write_events(logs / "validation", "val", [{"mse": 150.0, "mae": 9.5}])
    result = CliRunner().invoke(cli, args[1:])
    assert result.exit_code == 1, result.stderr
    suite = validate_junit(Path(junit))
    failed = {(c.get("classname", "").split("/")[1], c.get("name", "").split(":")[0])
              for c in suite.findall("testcase") if c.find("failure") is not None}
    assert failed == {("train", "non-finite"), ("train", "unit-scale")}
    if "--github" in args:
        assert result.stdout.startswith("::error file=runs/train/events.out.tfevents.")
