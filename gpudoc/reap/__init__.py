"""Find processes holding GPU device files and end the orphaned ones safely."""

from gpudoc.reap.classify import HolderReport, Inspector, ReapReport, Verdict
from gpudoc.reap.end import Action, Outcome, Scope, end_processes, plan
from gpudoc.reap.scan import DEFAULT_DEVICE_GLOB, DeviceScan, Holder, device_files, scan
from gpudoc.reap.service import ReapResult, end_targets, inspect_holders

__all__ = [
    "DEFAULT_DEVICE_GLOB",
    "Action",
    "DeviceScan",
    "Holder",
    "HolderReport",
    "Inspector",
    "Outcome",
    "ReapReport",
    "ReapResult",
    "Scope",
    "Verdict",
    "device_files",
    "end_processes",
    "end_targets",
    "inspect_holders",
    "plan",
    "scan",
]
