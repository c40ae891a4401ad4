"""Exit codes and the small exception tree every gpudoc module raises from."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes shared by every command."""

    OK = 0
    FINDINGS = 1
    USAGE = 2
    ENVIRONMENT = 3
    INTERNAL = 70
    INTERRUPTED = 130
    BROKEN_PIPE = 141  # 128 + SIGPIPE, what a tool killed by SIGPIPE reports


class GpudocError(Exception):
    """Base of every error gpudoc reports to the user as one line: what is wrong, and the fix."""

    exit_code: ExitCode = ExitCode.FINDINGS

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}: {self.fix}" if self.fix else self.message


class InputError(GpudocError):
    """A file, argument or value the user gave cannot be used."""

    exit_code = ExitCode.USAGE


class EnvironmentMissing(GpudocError):
    """A piece of the environment is absent or broken (no NVML, no torch, …)."""

    exit_code = ExitCode.ENVIRONMENT
