"""``gpudoc reap --slurm-epilog``: end what a finished Slurm job left holding the GPUs.

Slurm runs the epilog as root on each node after a job; it must never fail (a failing
epilog drains the node), so every problem is logged to stderr and the exit status is 0.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys
from collections.abc import Iterable

from gpudoc.gpu.backend import GpuBackend
from gpudoc.reap.classify import Verdict
from gpudoc.reap.end import Outcome, Scope, plan
from gpudoc.reap.scan import device_files
from gpudoc.reap.service import end_targets, inspect_holders


def run_epilog(
    backend: GpuBackend | None,
    *,
    device_glob: str,
    timeout: float,
    window: float,
    protect: Iterable[str] = (),
    environ: dict[str, str] | None = None,
) -> int:
    """End the job user's orphans and every holder started by the job; always returns 0."""
    env = os.environ if environ is None else environ
    job, user = env.get("SLURM_JOB_ID", "?"), env.get("SLURM_JOB_USER")

    def log(message: str) -> None:
        print(f"gpudoc reap [slurm job {job}]: {message}", file=sys.stderr, flush=True)

    try:
        if not user:
            log("SLURM_JOB_USER is not set (not run as a Slurm epilog?); nothing done")
            return 0
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            log(f"unknown user {user!r}; nothing done")
            return 0
        if not device_files(device_glob):
            log(f"no device file matches {device_glob}; nothing to do")
            return 0
        report = inspect_holders(
            backend, device_glob=device_glob, protect=protect, window=window,
            slurm_job=None if job == "?" else job,
        )
        actions = plan(report.holders, Scope(uid=uid), signal.SIGTERM)
        targets = [h for h in report.holders if actions[h.pid].outcome is Outcome.WOULD_END]
        for h in report.holders:
            if h.verdict is Verdict.UNCONFIRMED and h.uid == uid:
                log(f"{h.pid} ({h.command}) left alone, not confirmed an orphan: {h.reason}")
        if not targets:
            log(f"no leftover GPU holder of {user}")
            return 0
        result = end_targets(report, targets, backend, timeout=timeout, device_glob=device_glob)
        for target in targets:
            log(f"{target.pid} ({target.command}): {target.reason} → {result.actions[target.pid].action}")
        log(f"freed {sum(result.freed_fds.values())} device descriptor(s)")
    except Exception as exc:  # an epilog must not fail the node
        log(f"error: {type(exc).__name__}: {exc}")
    finally:
        if backend is not None:
            backend.close()
    return 0
