"""Run ``gpudoc metrics-check`` once per report format and check that the reports agree with
each other and with the exit code; the JUnit file is validated against ``junit.xsd``."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import xmlschema
from click.testing import CliRunner

from gpudoc.cli import cli

SCHEMA = Path(__file__).with_name("junit.xsd")
_ANNOTATION = re.compile(r"^::(error|warning) file=([^,]*)(?:,line=\d+)?,title=gpudoc ([\w-]+)::")


@functools.cache
def _schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SCHEMA))


def validate_junit(path: Path) -> ElementTree.Element:
    """The report's root, after checking it against the schema and its counts against its cases."""
    _schema().validate(str(path))
    suite = ElementTree.parse(path).getroot()
    cases = suite.findall("testcase")
    assert int(suite.get("tests", -1)) == len(cases)
    assert int(suite.get("failures", -1)) == sum(c.find("failure") is not None for c in cases)
    assert int(suite.get("skipped", -1)) == sum(c.find("skipped") is not None for c in cases)
    assert int(suite.get("errors", -1)) == sum(c.find("error") is not None for c in cases)
    return suite


def _unescape(text: str) -> str:
    return text.replace("%2C", ",").replace("%3A", ":").replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%")


@dataclass
class Reports:
    code: int
    data: dict
    suite: ElementTree.Element
    errors: set[tuple[str, str]]
    warnings: set[tuple[str, str]]


def reports(args: list[str], junit: Path) -> Reports:
    """Every report of one check, asserted to agree: the JSON findings, the JUnit failures and
    warning lines, the annotations, the text summary and the exit code."""
    runner = CliRunner()
    result = runner.invoke(cli, ["metrics-check", *args, "--json", "--junit", str(junit)])
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr, result.exception)
    code, data = result.exit_code, json.loads(result.stdout)
    errors = {(f["file"], f["rule"]) for f in data["findings"] if f["severity"] == "error"}
    warnings = {(f["file"], f["rule"]) for f in data["findings"] if f["severity"] != "error"}
    assert code == (1 if errors else 0) == data["exit_code"]
    assert data["errors"] == sum(f["severity"] == "error" for f in data["findings"])
    assert data["warnings"] == len(data["findings"]) - data["errors"]

    suite = validate_junit(junit)
    cases = {(c.get("classname"), c.get("name", "").split(":")[0]): c for c in suite.findall("testcase")}
    assert len(cases) == len(suite.findall("testcase")), "one test case per (file, rule)"
    failed = {key for key, c in cases.items() if c.find("failure") is not None}
    warned = {key for key, c in cases.items() if "warning [" in (c.findtext("system-out") or "")}
    skipped = {key for key, c in cases.items() if c.find("skipped") is not None}
    assert failed == errors and warned == warnings
    assert not skipped & (failed | warned), "a rule that found something applied"
    outcomes = {(f["file"], rule): outcome for f in data["files"] for rule, outcome in f["rules"].items()}
    assert set(outcomes) == set(cases)
    assert {k for k, o in outcomes.items() if o == "failed"} == failed
    assert {k for k, o in outcomes.items() if o == "skipped"} == skipped

    annotated = runner.invoke(cli, ["metrics-check", *args, "--github"])
    assert annotated.exit_code == code
    lines = annotated.stdout.splitlines()
    assert len(lines) == len(data["findings"])
    parsed = [_ANNOTATION.match(line) for line in lines]
    assert all(parsed), lines
    assert {(_unescape(m.group(2)), m.group(3)) for m in parsed if m and m.group(1) == "error"} == errors
    assert {(_unescape(m.group(2)), m.group(3)) for m in parsed if m and m.group(1) == "warning"} == warnings

    text = runner.invoke(cli, ["metrics-check", *args])
    assert text.exit_code == code
    assert text.stdout.splitlines()[-1] == (f"{len(data['files'])} checked: {data['errors']} error(s), "
                                            f"{data['warnings']} warning(s)")
    return Reports(code, data, suite, errors, warnings)
