"""metrics-check on logs: read each log, check its records against the rules, one :class:`Report`
(shared by ``gpudoc metrics-check LOG…`` and the TUI's Metrics screen)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpudoc.errors import InputError

if TYPE_CHECKING:
    from gpudoc.metrics.logs import Record
    from gpudoc.metrics.report import Report


def read_records(path: Path, salvage: bool) -> tuple[list[Record], list[tuple[str, str]]]:
    """A log's records and, with ``salvage``, what was skipped of its event files; a damaged
    or cut-off event file is unreadable input (exit 2) otherwise."""
    from gpudoc.events.records import CorruptRecord
    from gpudoc.metrics.logs import read_log

    damage: list[tuple[str, str]] = []
    try:
        return read_log(path, salvage, damage), damage
    except CorruptRecord as exc:
        raise InputError(exc.message, exc.fix) from None


def log_rules(path: Path, records: list[Record], source: str, checked: set[str], damage: list[tuple[str, str]],
              findings: list[Any]) -> dict[str, str | None]:
    """Each log rule: None when ``checked``, else why it could not apply; for event files also
    ``log-damaged``, whose findings (what --salvage skipped of ``source``) join ``findings``."""
    from gpudoc.metrics.lint import DAMAGE_RULE, NOT_APPLICABLE, RULES, damage_finding

    rules: dict[str, str | None] = {r: None if r in checked else NOT_APPLICABLE[r] for r in RULES}
    if records and records[0].line is None and (path.is_dir() or "tfevents" in path.name):
        rules.update(dict.fromkeys(DAMAGE_RULE))
        findings.extend(damage_finding(s, skipped) for s, skipped in damage if s == source)
    return rules


def lint_logs(logs: list[Path], declared: float | None, salvage: bool) -> tuple[Report, dict[str, Any]]:
    """Each log's records, grouped by the file they came from (a directory gives its event
    files or runs), checked against the rules; a file given twice is checked once. The report
    and what ``--json`` adds to it."""
    from gpudoc.metrics.lint import DAMAGE_RULE, RULES, check_records
    from gpudoc.metrics.report import Report, Subject

    findings, subjects, seen = [], [], set()
    for path in logs:
        records, damage = read_records(path, salvage)
        if not records:
            raise InputError(f"{path}: no metric values found (mae, mse, rmse, psnr, ssim, loss…)",
                             "is this a Keras log, a CSVLogger file, event files or JSON lines?")
        by_source: dict[str, list[Record]] = {}
        for record in records:
            by_source.setdefault(record.source, []).append(record)
        for source, group in by_source.items():
            if os.path.realpath(source) in seen:
                continue
            seen.add(os.path.realpath(source))
            checked: set[str] = set()
            findings.extend(check_records(group, declared, checked))
            names = sorted({n for r in group for n in r.values})
            subjects.append(Subject(source, "log", log_rules(path, group, source, checked, damage, findings),
                                    {"input": str(path), "records": len(group), "metrics": names}))
    range_text = f"{declared:g} (declared)" if declared is not None else "auto: none declared"
    return Report({**RULES, **DAMAGE_RULE}, subjects, findings, {"range": range_text}), {"range": declared}


def lint_json(report: Report, extra: dict[str, Any]) -> dict[str, Any]:
    """The object ``gpudoc metrics-check LOG… --json`` prints."""
    from gpudoc.metrics.report import to_json

    return {**extra, **to_json(report)}
