"""Resolving a MODEL argument: a zoo name, ``hf:NAME`` or ``hf:config.json`` (Hugging Face, built
from its config), ``package.module:factory``, ``path/to/file.py:factory``, a ``.keras`` file, or
a torchvision/timm model name when those are installed."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpudoc.errors import EnvironmentMissing, InputError
from gpudoc.oom.quiet import quiet_frameworks
from gpudoc.oom.zoo import ZOO


@dataclass(frozen=True)
class ModelSpec:
    """What to build: the framework, a factory (or a .keras path), its default input and backbone."""

    name: str
    framework: str
    source: Callable[..., Any] | str
    default_input: str | None
    backbone: str | None


def require(framework: str) -> None:
    """Exit 3 with the install line when the framework is missing."""
    module = {"torch": "torch", "keras": "keras"}[framework]
    if importlib.util.find_spec(module) is None:
        extra = "torch" if framework == "torch" else "tensorflow"
        raise EnvironmentMissing(f"{framework} is not installed: the {framework} estimator needs it",
                                 f"pip install 'gpudoc[{extra}]'")


def _kind(path: Path) -> str:
    """``file``, ``directory`` or ``missing`` (also for a name the OS cannot take)."""
    try:
        return "file" if path.is_file() else "directory" if path.is_dir() else "missing"
    except OSError:  # e.g. a name too long
        return "missing"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _from_file(path: Path, attr: str) -> Callable[..., Any]:
    kind = _kind(path)
    if kind != "file":
        raise InputError(f"{path}: a directory, not a Python file" if kind == "directory" else f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(f"gpudoc_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        with quiet_frameworks():  # a model file that imports TensorFlow
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's file: report its error in one line
        raise InputError(f"{path}: importing it failed: {_first_line(exc)}") from None
    return _attribute(module, attr, str(path))


def _attribute(module: Any, attr: str, where: str) -> Callable[..., Any]:
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{where}: no callable {attr!r}", "MODEL is module:factory or file.py:factory")
    return factory


def _framework_of(factory: Callable[..., Any]) -> str:
    module = getattr(factory, "__module__", "") or ""
    return "keras" if module.startswith(("keras", "tensorflow")) else "torch"


def _hub_factory(module: Any, package: str, name: str) -> Callable[[], Any]:
    if package == "timm":
        return lambda: module.create_model(name, pretrained=False)
    return lambda: module.get_model(name, weights=None)


def resolve(model: str) -> ModelSpec:
    """The :class:`ModelSpec` of a MODEL argument; bad specs raise :class:`InputError` (exit 2)."""
    if model.startswith("hf:"):
        from gpudoc.oom.hf import hf_factory

        label, factory, tokens, backbone = hf_factory(model.removeprefix("hf:"))
        return ModelSpec(label, "torch", factory, tokens, backbone)
    key = model.strip().lower().replace("-", "_").replace("/", "")
    if key in ZOO:
        entry = ZOO[key]
        return ModelSpec(entry.name, entry.framework, entry.factory, entry.input, entry.backbone or None)
    if model.endswith(".keras") or model.endswith(".h5"):
        if _kind(Path(model)) != "file":
            raise InputError(f"{model}: no such file")
        return ModelSpec(model, "keras", model, None, None)
    if ":" in model:
        where, _, attr = model.rpartition(":")
        if where.endswith(".py"):
            factory = _from_file(Path(where), attr)
        else:
            if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", where):
                raise InputError(f"MODEL {model!r}: {where!r} is not a module name",
                                 "MODEL is package.module:factory or path/to/file.py:factory")
            try:
                with quiet_frameworks():  # a model module that imports TensorFlow
                    module = importlib.import_module(where)
            except (Exception, SystemExit) as exc:  # the user's module: its import error, in one line
                raise InputError(f"{model}: cannot import {where!r} ({_first_line(exc)})") from None
            factory = _attribute(module, attr, where)
        return ModelSpec(model, _framework_of(factory), factory, None, None)
    broken: list[str] = []
    for package in ("torchvision.models", "timm"):
        if importlib.util.find_spec(package.split(".")[0]) is None:
            continue
        try:
            found = importlib.import_module(package)
        except Exception as exc:  # a build that does not match torch fails with anything
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            broken.append(f"{package.split('.')[0]} ({type(exc).__name__}: {first})")
            continue
        if model in found.list_models():
            return ModelSpec(model, "torch", _hub_factory(found, package, model), "3x224x224", None)
    names = ", ".join(sorted(ZOO))
    if broken:
        raise EnvironmentMissing(
            f"MODEL {model!r} is not built in, and {' and '.join(broken)} is installed but cannot be imported",
            "install the build that matches your torch (e.g. from the same index), or name the model as "
            "module:factory")
    raise InputError(f"MODEL {model!r}: not a built-in model, module:factory, file.py:factory or .keras file",
                     f"built-in: {names}")
