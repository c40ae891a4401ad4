"""`gpudoc oom estimate|max-batch` as a user runs them."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
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
    assert not {"checkpointing", "fused"} & set(names) and {"amp", "sgd", "smaller-input", "accumulate"} <= set(names)
    # Its own input size, and the smaller-input remedy's: the sides shrink, not the channels (HxWxC).
    assert loads == [None, "48x48x3"]
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


TWO_LAYERS = ("import torch\n\n\ndef build():\n"
              "    return torch.nn.Sequential(torch.nn.Linear(100, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))\n")


@pytest.fixture
def two_layers(tmp_path: Path) -> str:
    path = tmp_path / "two_layers.py"
    path.write_text(TWO_LAYERS)
    return f"{path}:build"


def gpudoc_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``gpudoc ARGS`` as its own process, so stderr holds everything torch, TensorFlow and
    absl write there (their loggers and the C++ layer's file descriptor 2)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GPUDOC_DEBUG")}
    return subprocess.run([sys.executable, "-m", "gpudoc", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_an_input_the_model_rejects_names_the_layer_in_one_line(two_layers: str) -> None:
    done = gpudoc_process("oom", "estimate", two_layers, "--input", "3x64x64", "--batch", "4", "--gpu", "T4")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("gpudoc: error: --input 3x64x64"), done.stderr
    assert "at 0 (Linear): got (4, 3, 64, 64), expects (*, 100) [RuntimeError: " in done.stderr
    # The wrong rank for a built-in model: the first convolution says what it takes.
    code, out, err = run("estimate", "resnet18", "--input", "224x224", "--batch", "4", "--gpu", "T4")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "conv1 (Conv2d): got (4, 224, 224), expects (N, 3, H, W)" in err


@pytest.mark.parametrize(("args", "message"), [
    (("--freeze", "("), "--freeze '(': not a regular expression"),
    (("--freeze", "."), "--freeze '.' matches every parameter: nothing to train"),
])
def test_freeze_patterns_that_cannot_work_are_bad_input(two_layers: str, args: tuple[str, ...], message: str) -> None:
    code, _, err = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4", *args)
    assert code == 2 and message in err


def test_keras_prints_no_framework_noise(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten(name="flat")(x)))
    path = tmp_path / "m.keras"
    model.save(path)
    done = gpudoc_process("oom", "estimate", str(path), "--batch", "4", "--gpu", "T4", "--json")
    assert done.returncode == 0 and done.stderr == "" and json.loads(done.stdout)["method"] == "analytic"
    done = gpudoc_process("oom", "estimate", str(path), "--input", "16x16", "--batch", "4", "--gpu", "T4")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("gpudoc: error: --input 16x16: the model "
                                                                    "rejects it at layer conv (Conv2D)"), done.stderr


def test_a_keras_factory_is_pointed_to_a_file_without_tensorflow_noise(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    path = tmp_path / "kmodels.py"
    path.write_text("import keras\n\n\ndef build():\n    inputs = keras.Input((8, 8, 3))\n"
                    "    return keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))\n")
    done = gpudoc_process("oom", "estimate", f"{path}:build", "--input", "8x8x3", "--batch", "2", "--gpu", "T4")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("gpudoc: error: the model factory returned a Keras model (Functional): Keras models are "
                           "estimated from a file: save it with model.save('model.keras') and pass model.keras as "
                           "MODEL\n")


def test_checkpointing_says_what_it_did(two_layers: str) -> None:
    code, out, err = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4", "--checkpointing",
                         "--json")
    data = json.loads(out)
    assert code == 0, err
    assert data["checkpointed_blocks"] == []
    assert any(n.startswith("--checkpointing had no effect: the model has no blocks") for n in data["notes"])
    code, out, _ = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4", "--checkpointing")
    assert "note: --checkpointing had no effect" in out
    code, out, err = run("estimate", "resnet18", "--input", "3x32x32", "--batch", "2", "--gpu", "T4",
                         "--checkpointing", "--json")
    data = json.loads(out)
    assert code == 0, err
    assert data["checkpointed_blocks"] == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert "checkpointing: 8 blocks recomputed in the backward: layer1.0, layer1.1" in " ".join(data["notes"])
    code, out, _ = run("estimate", "resnet18", "--input", "3x32x32", "--batch", "2", "--gpu", "T4",
                       "--checkpointing", "--inference", "--json")
    assert "--checkpointing had no effect: --inference has no backward pass" in json.loads(out)["notes"]
    # Nothing to checkpoint: not offered as a remedy.
    code, out, _ = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4", "--remedies", "--json")
    assert "checkpointing" not in {r["name"] for r in json.loads(out)["remedies"]}


@pytest.mark.parametrize(("gpu", "capability"), [("T4", "7.5"), ("V100-32GB", "7.0")])
def test_bf16_is_refused_and_never_proposed_before_ampere(two_layers: str, gpu: str, capability: str) -> None:
    code, out, err = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", gpu, "--precision", "bf16")
    assert code == 2 and out == ""
    assert f"--precision bf16: {gpu} (compute capability {capability}) has no bf16 support" in err
    code, out, err = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", gpu, "--remedies",
                         "--json")
    names = {r["name"] for r in json.loads(out)["remedies"]}
    assert code == 0 and "amp" in names and "bf16" not in names, err
    code, out, _ = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "A100-40GB", "--remedies",
                       "--json")
    assert "bf16" in {r["name"] for r in json.loads(out)["remedies"]}


def test_verdict_numbers_read_without_signs(two_layers: str) -> None:
    # 2**24 x 100 fp32 inputs are 6.25 GiB alone: far over a T4.
    code, out, err = run("estimate", two_layers, "--input", "100", "--batch", str(2**24), "--gpu", "T4")
    assert code == 1, err
    verdict = next(line for line in out.splitlines() if line.startswith("verdict"))
    found = re.fullmatch(r"verdict\s+oom: [\d.]+ GiB over \(needs (\d+)% of the GPU\)", verdict)
    assert found is not None and int(found.group(1)) > 100, verdict
    assert "-" not in verdict and "saves -" not in out
    code, out, _ = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4")
    assert re.search(r"verdict\s+fits: [\d.]+ GiB headroom \(9\d% free\)", out), out


def test_remedies_that_cost_memory_say_adds(capsys: pytest.CaptureFixture[str]) -> None:
    from gpudoc.cli.oom import _print
    from gpudoc.oom.estimate import Estimate, Remedy
    from gpudoc.oom.trace import TraceConfig

    gib = 1024**3
    est = Estimate("m", TraceConfig(8, "100"), "T4", "trace", 20 * gib, 21 * gib, 24 * gib, 15 * gib, "oom", -9 * gib,
                   {}, [], 10, 10, remedies=[Remedy("amp", "mixed precision", 10 * gib, 14 * gib, "fits"),
                                             Remedy("smaller-input", "smaller", 25 * gib, -gib, "oom")])
    _print(est)
    out = capsys.readouterr().out
    assert "9.0 GiB over (needs 160% of the GPU)" in out
    assert re.search(r"amp\s+saves\s+14.0 GiB ->\s+10.0 GiB \(fits\)", out)
    assert re.search(r"smaller-input\s+adds\s+1.0 GiB ->\s+25.0 GiB \(oom\)", out)


def test_activations_by_module_name_module_paths(two_layers: str) -> None:
    code, out, err = run("estimate", two_layers, "--input", "100", "--batch", "4096", "--gpu", "T4")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("activations by module: "))
    # What backward keeps: the ReLU's output (its own backward and the last Linear's need it).
    assert line.startswith("activations by module: 1 (ReLU) 1.0 MiB"), line


def _on_a_terminal(*args: str) -> tuple[int, str, bytes]:
    """``gpudoc ARGS`` with stderr on a pseudo-terminal: exit code, stdout, what the terminal got."""
    master, slave = pty.openpty()
    with subprocess.Popen([sys.executable, "-m", "gpudoc", *args], stdout=subprocess.PIPE, stderr=slave,
                          stdin=subprocess.DEVNULL, text=True) as process:
        os.close(slave)
        screen: list[bytes] = []

        def drain() -> None:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other side closed
                    return
                if not chunk:
                    return
                screen.append(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        out, _ = process.communicate(timeout=300)
        reader.join()
    os.close(master)
    return process.returncode, out, b"".join(screen)


def test_progress_on_a_terminal_only(two_layers: str) -> None:
    code, out, screen = _on_a_terminal("oom", "estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4",
                                       "--remedies")
    assert code == 0 and "verdict" in out
    for stage in (b"at batch 4: building the model", b"at batch 4: training step 1/2", b"training step 2/2",
                  b"at batch 4: allocator simulation", b"remedy 1/", b": building the model"):
        assert stage in screen, (stage, screen[-2000:])
    code, out, screen = _on_a_terminal("oom", "estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4",
                                       "--json")
    assert code == 0 and json.loads(out)["verdict"] == "fits" and screen == b""
    # Not a terminal: quiet.
    code, _, err = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4", "--remedies")
    assert code == 0 and err == ""


def test_max_batch_of_a_model_too_small_to_move_the_allocator_at_batch_32(two_layers: str) -> None:
    # Batch 1 and 32 of two small Linear layers cost the same (the allocator's first segments):
    # the line through them is flat, and the search must still find the limit.
    code, out, err = run("max-batch", two_layers, "--input", "100", "--gpu", "T4", "--json")
    data = json.loads(out)
    assert code == 0, err
    assert data["max_batch"] > 10**6 and data["total_bytes"] <= 0.9 * data["capacity_bytes"]
    code, out, _ = run("estimate", two_layers, "--input", "100", "--gpu", "T4", "--json",
                       "--batch", str(int(data["max_batch"] * 1.03) + 1))
    assert json.loads(out)["total_bytes"] > 0.9 * json.loads(out)["capacity_bytes"]


def test_accumulation_beyond_the_batch_is_refused(two_layers: str) -> None:
    code, out, err = run("estimate", two_layers, "--input", "100", "--batch", "4", "--accumulate", "8", "--gpu", "T4")
    assert code == 2 and out == "" and "--accumulate 8 is more than --batch 4" in err


@pytest.mark.parametrize(("optimizer", "message"), [
    ("LBFGS", "--optimizer LBFGS: LBFGS.step() cannot train this model (TypeError: "),
    ("SparseAdam", "--optimizer SparseAdam: SparseAdam.step() cannot train this model (RuntimeError: "),
    ("torch.optim:Optimizer", "--optimizer 'torch.optim:Optimizer': cannot be made with default settings"),
    (".x:Y", "--optimizer '.x:Y': '.x' is not a module name"),
])
def test_optimizers_that_cannot_train_are_bad_input(two_layers: str, optimizer: str, message: str) -> None:
    code, out, err = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4", "--optimizer",
                         optimizer)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1, err


def test_an_optimizer_fake_tensors_cannot_run_is_named_in_the_analytic_note(two_layers: str) -> None:
    code, out, err = run("estimate", two_layers, "--input", "100", "--batch", "4", "--gpu", "T4", "--optimizer",
                         "Adafactor", "--json")
    data = json.loads(out)
    assert code == 0 and data["method"] == "analytic", err
    assert "the training step cannot run on fake tensors (in Adafactor.step(): " in data["notes"][0]


def test_gpu_local_reads_the_simulated_machine(two_layers: str) -> None:
    result = CliRunner().invoke(cli, ["--simulate", "dgx", "oom", "estimate", two_layers, "--input", "100", "--batch",
                                      "4", "--gpu", "local", "--precision", "bf16", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0, result.stderr
    assert data["device"] == "NVIDIA H100 80GB HBM3" and data["capacity_bytes"] > 79 * 1024**3
    result = CliRunner().invoke(cli, ["--simulate", "faults", "oom", "estimate", two_layers, "--input", "100",
                                      "--batch", "4", "--gpu", "local"])
    assert result.exit_code == 3 and "--gpu local: cannot read this machine's GPUs (" in result.stderr


def test_cuda_version_sets_the_context(two_layers: str) -> None:
    base = ("estimate", two_layers, "--input", "100", "--batch", "2", "--gpu", "V100", "--json")
    old = json.loads(run(*base, "--cuda", "11.2")[1])
    new = json.loads(run(*base, "--cuda", "12.x")[1])
    assert old["breakdown"]["CUDA context"] == 1343 * 2**20 and new["breakdown"]["CUDA context"] == 300 * 2**20
    assert old["total_bytes"] - new["total_bytes"] == (1343 - 300) * 2**20
    assert any("CUDA 11.2 (--cuda): context 1343 MiB, eager module loading" in n for n in old["notes"])
    default = json.loads(run(*base)[1])  # the local torch is a CPU build: CUDA 12 assumed
    assert default["breakdown"]["CUDA context"] == 300 * 2**20
    assert any("CUDA 12.0 (assumed; choose with --cuda)" in n for n in default["notes"])
    code, _, err = run(*base, "--cuda", "eleven")
    assert code == 2 and err.strip() == "gpudoc: error: --cuda 'eleven': not a CUDA version: e.g. 11.8, 12.4 or 12.x"


def test_optimizer_implementation_and_zero_grad_options(two_layers: str) -> None:
    base = ("estimate", two_layers, "--input", "100", "--batch", "2", "--gpu", "A100", "--no-remedies")
    for impl in ("foreach", "for-loop", "fused"):  # the memory each takes: test_cuda_rules
        data = json.loads(run(*base, "--optimizer-impl", impl, "--zero-grad", "zeros", "--json")[1])
        assert data["config"]["optimizer_impl"] == impl and data["config"]["zero_grad"] == "zeros"
    code, out, _ = run(*base, "--optimizer-impl", "fused", "--zero-grad", "zeros")
    assert code == 0 and "fused optimizer, zero_grad to zeros" in out
    code, _, err = run(*base, "--optimizer", "LBFGS", "--optimizer-impl", "fused")
    assert code == 2 and "LBFGS has no fused implementation" in err


def test_what_the_model_prints_to_stdout_stays_on_stdout_under_the_status(tmp_path: Path) -> None:
    """stderr a terminal (the status shows), stdout a pipe: rich's Live moved sys.stdout into
    its console, so what the model's code printed went to the terminal instead."""
    path = tmp_path / "chatty.py"
    path.write_text(TWO_LAYERS.replace("def build():\n", "def build():\n    print('chatty model built')\n"))
    code, out, screen = _on_a_terminal("oom", "estimate", f"{path}:build", "--input", "100", "--batch", "4",
                                       "--gpu", "T4", "--no-remedies")
    assert code == 0 and "chatty model built" in out and "verdict" in out
    assert b"building the model" in screen and b"model built" not in screen
