"""The core/UI boundary and the cost of `gpudoc --help`: no textual, torch or TF in core."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import gpudoc

HEAVY = ("textual", "torch", "tensorflow")
ROOT = Path(__file__).resolve().parent.parent


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def core_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(gpudoc.__path__, "gpudoc.")]
    return sorted(n for n in names if not n.startswith("gpudoc.tui"))


def test_every_core_module_imports_without_textual_torch_or_tf() -> None:
    modules = core_modules()
    assert {"gpudoc.cli", "gpudoc.doctor", "gpudoc.gpu.nvml", "gpudoc.host"} <= set(modules)
    for module in modules:
        assert _loaded_after(f"import {module}") == [], module


def test_help_imports_nothing_heavy() -> None:
    code = "from gpudoc.cli import cli\ncli.main(['--help'], standalone_mode=False)"
    assert _loaded_after(code) == []
    code = "from gpudoc.cli import cli\ncli.main(['doctor', '--help'], standalone_mode=False)"
    assert _loaded_after(code) == []


def test_tui_package_is_installed_under_gpudoc_and_lives_in_tui_dir() -> None:
    import gpudoc.tui

    assert Path(gpudoc.tui.__file__).resolve().parent == ROOT / "tui"


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("gpudoc")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"gpudoc {gpudoc.__version__}"
    out = subprocess.run([sys.executable, "-m", "gpudoc", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("gpudoc: error: No such command 'frobnicate'")
