"""`gpudoc oom estimate|max-batch` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpudoc.cli import cli

pytest.importorskip("torch")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["oom", *args])
    return result.exit_code, result.stdout, result.stderr


def test_estimate_json_and_text() -> None:
    code, out, err = run("estimate", "resnet18", "--batch", "16", "--input", "3x128x128", "--gpu", "T4", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert {"peak_allocated_bytes", "peak_reserved_bytes", "total_bytes", "capacity_bytes", "verdict",
            "breakdown"} <= set(data)
    assert data["verdict"] == "fits" and data["capacity_bytes"] == 15360 * 1024**2
    assert data["peak_allocated_bytes"] <= data["peak_reserved_bytes"] < data["total_bytes"]
    code, out, _ = run("estimate", "resnet18", "--batch", "16", "--input", "3x128x128", "--gpu", "t4")
    assert code == 0 and "verdict         fits" in out and "activations" in out and "[trace]" in out


def test_oom_verdict_exits_one_with_ranked_remedies() -> None:
    code, out, _ = run("estimate", "resnet18", "--batch", "1024", "--gpu", "T4", "--json")
    data = json.loads(out)
    assert code == 1 and data["verdict"] == "oom" and data["headroom_bytes"] < 0
    saved = [r["saved_bytes"] for r in data["remedies"]]
    assert saved == sorted(saved, reverse=True) and all(v > 0 for v in saved)
    # Transfer learning: a frozen backbone keeps no activations for a backward pass through it.
    assert data["remedies"][0]["name"] == "freeze" and data["remedies"][0]["verdict"] == "fits"


def test_max_batch_on_a_user_file(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text("import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(1024, 4096), "
                     "torch.nn.ReLU(), torch.nn.Linear(4096, 10))\n")
    code, out, err = run("max-batch", f"{model}:build", "--input", "1024", "--gpu", "T4", "--optimizer", "sgd",
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["max_batch"] > 1000 and data["total_bytes"] <= 0.9 * data["capacity_bytes"]


def test_bad_specs_exit_two() -> None:
    code, _, err = run("estimate", "no_such_model", "--batch", "4")
    assert code == 2 and "built-in: " in err and "resnet50" in err
    code, _, err = run("estimate", "resnet18", "--batch", "4", "--gpu", "Z9000")
    assert code == 2 and "not a known device" in err
    code, _, err = run("estimate", "resnet18", "--batch", "4", "--input", "3xabc")
    assert code == 2 and "--input" in err
    code, _, err = run("estimate", "resnet18", "--batch", "4", "--freeze", "^nothing", "--gpu", "T4")
    assert code == 2 and "matches no parameter name" in err
    code, _, err = run("estimate", "json:loads", "--batch", "4", "--input", "8", "--gpu", "T4")
    assert code == 2 and "calling the model factory failed: TypeError" in err
    code, _, err = run("estimate", "builtins:dict", "--batch", "4", "--input", "8", "--gpu", "T4")
    assert code == 2 and "not a torch.nn.Module" in err


def test_missing_framework_exits_three(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    code, _, err = run("estimate", "resnet18", "--batch", "4", "--gpu", "T4")
    assert code == 3 and "pip install 'gpudoc[torch]'" in err


def test_keras_file_estimate_remedies_and_max_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keras = pytest.importorskip("keras")
    from gpudoc.oom import analytic

    loads: list[str | None] = []
    real_load = analytic.load_keras

    def counted(source: object, input_spec: str | None) -> object:
        loads.append(input_spec)
        return real_load(source, input_spec)

    monkeypatch.setattr(analytic, "load_keras", counted)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    outputs = keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    path = tmp_path / "m.keras"
    keras.Model(inputs, outputs).save(path)
    code, out, err = run("estimate", str(path), "--batch", "32768", "--gpu", "T4", "--json")
    data = json.loads(out)
    assert code == 1, err
    assert data["verdict"] == "oom" and "analytic Keras estimate" in data["notes"][0]
    names = [r["name"] for r in data["remedies"]]
    assert "checkpointing" not in names and {"amp", "sgd", "smaller-input", "accumulate"} <= set(names)
    assert len(loads) == len(set(loads)) == 2  # its own input size, and the smaller-input remedy's
    loads.clear()
    code, out, err = run("max-batch", str(path), "--gpu", "T4", "--json")
    best = json.loads(out)
    assert code == 0, err
    assert loads == [None]  # one load for every batch size tried
    assert 0 < best["max_batch"] < 32768 and best["total_bytes"] <= 0.9 * best["capacity_bytes"]


def test_optimizer_by_module_and_class() -> None:
    code, out, err = run("estimate", "resnet18", "--batch", "8", "--input", "3x64x64", "--gpu", "T4",
                         "--optimizer", "torch.optim.adagrad:Adagrad", "--json")
    assert code == 0, err
    assert json.loads(out)["breakdown"]["optimizer state"] > 0
    code, _, err = run("estimate", "resnet18", "--batch", "8", "--gpu", "T4", "--optimizer", "json:loads")
    assert code == 2 and "module:OptimizerClass" in err


def test_a_model_hub_that_cannot_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A torchvision/timm build that does not match torch fails on import (e.g. "operator
    # torchvision::nms does not exist"): a model name not in the zoo reports it, exit 3.
    fake = tmp_path / "timm"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("operator timm::fake does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run("estimate", "convnext_atto", "--batch", "8", "--gpu", "T4")
    assert code == 3 and "timm (RuntimeError: operator timm::fake does not exist)" in err
    assert "cannot be imported" in err and "Traceback" not in err
    code, _, err = run("estimate", "resnet18", "--batch", "8", "--input", "3x32x32", "--gpu", "T4")
    assert code == 0, err
