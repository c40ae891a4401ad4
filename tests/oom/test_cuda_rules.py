"""CUDA's rules that the CPU trace does not follow by itself: module layering, dropout masks,
SDPA backend selection, CUDA context by version, optimizer implementations, zero_grad."""

from __future__ import annotations

import ast
from pathlib import Path

import gpudoc.oom

OOM = Path(gpudoc.oom.__file__).parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_imports_are_one_way() -> None:
    """estimate may call analytic (the fallback); analytic never imports estimate; the shared
    types live in result, which imports neither."""
    assert "gpudoc.oom.estimate" not in _imports(OOM / "analytic.py")
    assert not {"gpudoc.oom.estimate", "gpudoc.oom.analytic"} & _imports(OOM / "result.py")
    from gpudoc.oom import analytic, estimate, result

    assert analytic.Estimate is estimate.Estimate is result.Estimate
    assert analytic.verdict is estimate.verdict is result.verdict
