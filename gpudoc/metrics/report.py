"""One mapping from the findings of a metrics check to every report made of them — the text
report, JSON, JUnit XML, GitHub Actions annotations and the exit code — so that they cannot
disagree, whatever the inputs were.

A :class:`Report` holds the inputs checked (:class:`Subject`: one per log file, event file or
run directory found in a directory, image pair, reported-metrics file), the rules each could
be checked against, and the findings. Each (subject, rule) is one :class:`Case`: ``failed``
when an error was found, ``warning`` when only warnings were, ``passed`` when the rule had
numbers to check and found nothing, ``skipped`` (with the reason) when it had none. The exit
code is 1 exactly when some case failed.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from xml.etree import ElementTree

from gpudoc.errors import ExitCode
from gpudoc.metrics.lint import Finding

PASSED, FAILED, WARNED, SKIPPED = "passed", "failed", "warning", "skipped"


@dataclass
class Subject:
    """One input the rules ran on, named by its file; ``rules`` maps each rule that concerns
    it to None when the rule could be checked, else to why it could not."""

    file: str
    kind: str
    rules: dict[str, str | None]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One (subject, rule): a JUnit test case."""

    file: str
    rule: str
    what: str
    outcome: str
    reason: str | None
    errors: tuple[Finding, ...]
    warnings: tuple[Finding, ...]


@dataclass
class Report:
    """Subjects, rules (id → (severity, what it checks)), findings and run-level properties.
    A finding proves that its rule applied to its file, so it is never lost to a subject
    that did not list it (the subject is added, the rule marked checked)."""

    rules: dict[str, tuple[str, str]]
    subjects: list[Subject]
    findings: list[Finding]
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rules = dict(self.rules)
        by_file = {s.file: s for s in self.subjects}
        for f in self.findings:
            subject = by_file.get(f.file)
            if subject is None:
                subject = by_file[f.file] = Subject(f.file, "input", {})
                self.subjects.append(subject)
            subject.rules[f.rule] = None
            self.rules.setdefault(f.rule, (f.severity, f.rule))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "error"]

    def cases(self) -> list[Case]:
        """Every (subject, rule), in input order then rule order."""
        out = []
        for s in self.subjects:
            for rule, reason in s.rules.items():
                hits = [f for f in self.findings if f.file == s.file and f.rule == rule]
                errors = tuple(f for f in hits if f.severity == "error")
                warnings = tuple(f for f in hits if f.severity != "error")
                outcome = FAILED if errors else WARNED if warnings else SKIPPED if reason else PASSED
                out.append(Case(s.file, rule, self.rules[rule][1], outcome, reason if outcome == SKIPPED else None,
                                errors, warnings))
        return out

    @property
    def exit_code(self) -> ExitCode:
        """1 when an error was found (a failed case), else 0: warnings are reported, not failed."""
        return ExitCode.FINDINGS if self.errors else ExitCode.OK


def _finding_text(f: Finding) -> str:
    times = f" ({f.count} steps)" if f.count > 1 else ""
    fields = "".join(f"\n    {name}: {text}" for name, text in (("cause", f.cause), ("fix", f.fix)) if text)
    return f"{f.where}: {f.severity} [{f.rule}] {f.message}{times}{fields}"


def text_lines(report: Report) -> list[str]:
    """The findings, each with its cause and fix, and a summary line."""
    lines = [line for f in report.findings for line in _finding_text(f).splitlines()]
    lines.append(f"{len(report.subjects)} checked: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return lines


def to_json(report: Report) -> dict[str, Any]:
    """``findings``, ``files`` (each subject with its details and each rule's outcome, the
    reasons for skipped ones under ``not_applicable``), the counts and the exit code."""
    outcomes: dict[str, dict[str, str]] = {}
    for case in report.cases():
        outcomes.setdefault(case.file, {})[case.rule] = case.outcome
    files = []
    for s in report.subjects:
        skipped = {rule: reason for rule, reason in s.rules.items() if reason and outcomes[s.file][rule] == SKIPPED}
        files.append({"file": s.file, "kind": s.kind, **s.details, "rules": outcomes.get(s.file, {}),
                      "not_applicable": skipped})
    return {"findings": [asdict(f) for f in report.findings], "files": files, "errors": len(report.errors),
            "warnings": len(report.warnings), "exit_code": int(report.exit_code)}


def _escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def github_line(f: Finding, *, at_file: bool = True) -> str:
    """A GitHub Actions workflow command for one finding: ``::error``, ``::warning`` (or
    ``::notice`` for a ``note``), at the file (and line) it came from unless ``at_file`` is
    False (a run, not a file)."""
    level = {"error": "error", "note": "notice"}.get(f.severity, "warning")
    props = (f"file={_escape(f.file, True)}" + (f",line={f.line}" if f.line else "") + ",") if at_file else ""
    props += f"title={_escape('gpudoc ' + f.rule, True)}"
    fix = f" — fix: {f.fix}" if f.fix else ""
    return f"::{level} {props}::{_escape(f.message + fix)}"


def github_lines(report: Report) -> list[str]:
    """One GitHub Actions workflow command per finding."""
    return [github_line(f) for f in report.findings]


def junit_xml(report: Report, suite_name: str = "gpudoc metrics-check",
              now: datetime.datetime | None = None) -> bytes:
    """A JUnit XML report (the Ant/Jenkins format GitHub and GitLab read): one ``testsuite``,
    a ``testcase`` per (input file, rule) with the file as ``classname``; errors are
    ``failure`` elements, a rule that could not apply is ``skipped`` with the reason, and
    warnings are ``warning:`` lines in the case's ``system-out`` (the case passes). The
    suite's ``properties`` carry the run's settings and the warning count."""
    cases = report.cases()
    stamp = (now or datetime.datetime.now()).replace(microsecond=0, tzinfo=None).isoformat()
    suite = ElementTree.Element("testsuite", {
        "name": suite_name, "tests": str(len(cases)), "failures": str(sum(c.outcome == FAILED for c in cases)),
        "errors": "0", "skipped": str(sum(c.outcome == SKIPPED for c in cases)), "time": "0",
        "timestamp": stamp, "hostname": socket.gethostname() or "localhost"})
    properties = ElementTree.SubElement(suite, "properties")
    for name, value in _properties(report).items():
        ElementTree.SubElement(properties, "property", name=name, value=value)
    for case in cases:
        element = ElementTree.SubElement(suite, "testcase", classname=case.file, name=f"{case.rule}: {case.what}",
                                         time="0")
        if case.outcome == SKIPPED:
            ElementTree.SubElement(element, "skipped", message=case.reason or "")
        if case.errors:
            failure = ElementTree.SubElement(element, "failure", type=case.rule, message=case.errors[0].message)
            failure.text = "\n".join(_finding_text(f) for f in case.errors)
        if case.warnings:
            ElementTree.SubElement(element, "system-out").text = "\n".join(_finding_text(f) for f in case.warnings)
    ElementTree.SubElement(suite, "system-out").text = text_lines(report)[-1]
    ElementTree.SubElement(suite, "system-err")
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)


def _properties(report: Report) -> Mapping[str, str]:
    from gpudoc import __version__

    return {"gpudoc": __version__, **report.properties, "warnings": str(len(report.warnings))}
