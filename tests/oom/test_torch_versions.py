"""The PyTorch version an estimate models (``--torch``): the version rules, one by one, and the
option as a user gives it."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gpudoc.cli import cli
from gpudoc.errors import InputError
from gpudoc.oom.versions import parse_torch, rules_of

torch = pytest.importorskip("torch")

BATCH, WIDTH = 64, 1024  # one softmax input: 64 x 1024 float32 = 256 KiB
LOGITS = BATCH * 16 * 4  # the (N, 16) output, which the loss (cross entropy) keeps up to 1.10 too


# --- parsing --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "version"), [
    ("1.10", (1, 10)), ("2.3", (2, 3)), ("2.1.0+cu118", (2, 1)), (" 1.13 ", (1, 13)), ("2.4.0rc1", (2, 4)),
    ("1.0", (1, 0)), ("9.1", (9, 1)), ("2.99", (2, 99)),  # newer than any known: taken as it is
])
def test_versions_that_parse(text: str, version: tuple[int, int]) -> None:
    assert parse_torch(text) == version


@pytest.mark.parametrize(("text", "message"), [
    ("2", "not a PyTorch version"), ("", "not a PyTorch version"), ("x", "not a PyTorch version"),
    ("2.x", "not a PyTorch version"), ("v2.0", "not a PyTorch version"), ("١.١٠", "not a PyTorch version"),
    ("1.14", "no such PyTorch release"), ("0.4", "no such PyTorch release"), ("1.99", "no such PyTorch release"),
])
def test_versions_that_are_refused(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_torch(text)


# --- softmax / log_softmax keep their input up to 1.10 ------------------------------------------------

def _live_when_backward_starts(factory: Callable[[], Any], version: str, **changes: Any) -> int:
    """Bytes of the forward's tensors (activations and loss) still held when the backward starts."""
    from gpudoc.oom.trace import TraceConfig, trace_training

    trace = trace_training(factory, TraceConfig(BATCH, "16", optimizer="sgd", torch=version, **changes))
    live: dict[int, int] = {}
    for event in trace.events:
        if event.phase == "backward":
            return sum(live.values())
        if event.nbytes and event.phase == "activations":
            live[event.handle] = event.nbytes
        elif not event.nbytes:
            live.pop(event.handle, None)
    raise AssertionError("the trace has no backward")


class SoftmaxBetween(torch.nn.Module):
    """Linear → softmax (or log_softmax) → Linear: the second Linear saves softmax's output, so
    nothing but softmax's own rule can keep its input (the first Linear's output)."""

    def __init__(self, log: bool = False, call: str = "functional") -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, WIDTH), torch.nn.Linear(WIDTH, 16)
        self.log, self.call = log, call

    def forward(self, x: Any) -> Any:
        h = self.a(x)
        if self.call == "method":
            h = h.log_softmax(-1) if self.log else h.softmax(-1)
        elif self.call == "torch":
            h = torch.log_softmax(h, -1) if self.log else torch.softmax(h, -1)
        else:
            h = torch.nn.functional.log_softmax(h, -1) if self.log else torch.nn.functional.softmax(h, -1)
        return self.b(h)


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("call", ["functional", "method", "torch"])
def test_softmax_keeps_its_input_up_to_1_10(log: bool, call: str) -> None:
    """Up to 1.10 the input of softmax (log_softmax) stays alive until its backward: exactly one
    more float32 batch x width tensor at the start of the backward (and the loss's logits);
    from 1.11 none."""
    def model() -> Any:
        return SoftmaxBetween(log, call)

    old, new = (_live_when_backward_starts(model, v) for v in ("1.10", "1.11"))
    assert old - new == BATCH * WIDTH * 4 + LOGITS
    assert _live_when_backward_starts(model, "2.13") == new


def test_an_fp16_softmax_under_amp_keeps_its_fp16_input() -> None:
    """Autocast gives softmax dtype=float32 (no float32 copy); CUDA's half-to-float kernel then
    keeps the fp16 input: 2 bytes an element."""
    def model() -> Any:
        return SoftmaxBetween()

    old, new = (_live_when_backward_starts(model, v, precision="amp") for v in ("1.10", "2.0"))
    assert old - new == BATCH * WIDTH * 2 + LOGITS  # the loss takes float32 logits (autocast's copy)


def test_cross_entropy_keeps_the_logits_up_to_1_10() -> None:
    """cross_entropy is log_softmax and nll_loss: up to 1.10 the logits stay alive too."""
    def model() -> Any:
        return torch.nn.Sequential(torch.nn.Linear(16, WIDTH))  # (N, classes) logits: cross entropy

    old, new = (_live_when_backward_starts(model, v) for v in ("1.10", "2.3"))
    assert old - new == BATCH * WIDTH * 4


@pytest.mark.parametrize("log", [False, True])
def test_the_kept_input_softmax_computes_what_torch_does(log: bool) -> None:
    from gpudoc.oom.kernels import legacy_softmax

    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 5, dtype=torch.float64)
    expected = torch.log_softmax(x, 1) if log else torch.softmax(x, 1)
    (grad,) = torch.autograd.grad((expected * weights).sum(), x)
    got = legacy_softmax(x, 1, None, log)
    assert torch.allclose(got, expected)
    assert torch.allclose(torch.autograd.grad((got * weights).sum(), x)[0], grad)


def test_the_softmax_rule_also_holds_in_checkpointed_recomputation() -> None:
    from gpudoc.oom.trace import TraceConfig, trace_training

    def model() -> Any:
        return torch.nn.Sequential(SoftmaxBetween(), SoftmaxBetween())

    for version in ("1.10", "2.3"):  # the recomputed tensors match the saved ones: no error
        trace = trace_training(model, TraceConfig(BATCH, "16", optimizer="sgd", checkpointing=True, torch=version))
        assert len(trace.checkpointed) == 2


# --- the defaults that changed in 2.0 ------------------------------------------------------------------

def _plan(**options: Any) -> Any:
    from gpudoc.oom.devices import find_device
    from gpudoc.oom.plan import plan

    return plan("resnet18", 2, lambda: find_device("A100-80GB"), "3x32x32", **options)


@pytest.mark.parametrize(("version", "zero_grad", "impl"), [
    ("1.10", "zeros", "for-loop"), ("1.13", "zeros", "for-loop"), ("2.0", "none", "foreach"),
    ("2.3", "none", "foreach"), ("9.0", "none", "foreach"),
])
def test_zero_grad_and_optimizer_defaults_follow_the_version(version: str, zero_grad: str, impl: str) -> None:
    config = _plan(torch=version).config
    assert (config.zero_grad, config.optimizer_impl, config.torch) == (zero_grad, impl, version)
    assert (rules_of(version).zero_grad_default, rules_of(version).optimizer_impl_default) == (zero_grad, impl)


def test_given_zero_grad_and_optimizer_impl_win_over_the_versions_defaults() -> None:
    config = _plan(torch="1.10", zero_grad="none", optimizer_impl="fused").config
    assert (config.zero_grad, config.optimizer_impl) == ("none", "fused")


def test_the_default_version_is_the_local_torchs() -> None:
    local = ".".join(importlib.metadata.version("torch").split(".")[:2])
    made = _plan()
    assert made.config.torch == local
    assert made.torch_note.startswith(f"torch {local} (the local torch's): ")


# --- the option ------------------------------------------------------------------------------------

def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["oom", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def softmax_model(tmp_path: Path) -> str:
    path = tmp_path / "softmax_model.py"
    path.write_text("import torch\n\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(16, 1024), "
                    "torch.nn.Softmax(-1), torch.nn.Linear(1024, 16))\n")
    return f"{path}:build"


def test_torch_option_in_json_and_text(softmax_model: str) -> None:
    base = ("estimate", softmax_model, "--input", "16", "--batch", "64", "--gpu", "A100-80GB", "--no-remedies")
    code, out, err = _run(*base, "--torch", "1.10", "--json")
    assert code == 0, err
    old = json.loads(out)
    assert old["config"]["torch"] == "1.10"
    assert (old["config"]["zero_grad"], old["config"]["optimizer_impl"]) == ("zeros", "for-loop")
    assert "softmax/log_softmax backward keeps its input (torch <= 1.10)" in old["torch_rules"]
    assert any(n.startswith("torch 1.10 (--torch): softmax/log_softmax backward keeps its input")
               for n in old["notes"])
    new = json.loads(_run(*base, "--torch", "2.3", "--json")[1])
    assert new["config"]["torch"] == "2.3" and "keeps its output only" in new["torch_rules"][0]
    code, out, _ = _run(*base, "--torch", "1.10")
    assert code == 0 and "for-loop optimizer, zero_grad to zeros, torch 1.10  on A100-80GB" in out
    code, out, _ = _run("max-batch", softmax_model, "--input", "16", "--gpu", "A100-80GB", "--torch", "1.10",
                        "--json")
    assert code == 0 and json.loads(out)["config"]["torch"] == "1.10"


def test_a_torch_newer_than_the_local_one_is_taken_with_the_newest_rules(softmax_model: str) -> None:
    code, out, _ = _run("estimate", softmax_model, "--input", "16", "--batch", "2", "--gpu", "A100-80GB",
                        "--no-remedies", "--torch", "9.0", "--json")
    data = json.loads(out)
    assert code == 0 and data["config"]["torch"] == "9.0" and data["config"]["zero_grad"] == "none"
    assert any("(--torch; newer than the local torch " in n for n in data["notes"])


@pytest.mark.parametrize(("version", "line"), [
    ("abc", "gpudoc: error: --torch 'abc': not a PyTorch version: give MAJOR.MINOR, e.g. 1.10 or 2.3"),
    ("1.14", "gpudoc: error: --torch '1.14': no such PyTorch release (gpudoc models 1.0 to 1.13 and 2.0 on): "
             "give MAJOR.MINOR, e.g. 1.10 or 2.3"),
])
def test_a_malformed_or_unknown_torch_is_one_line_exit_two(softmax_model: str, version: str, line: str) -> None:
    code, out, err = _run("estimate", softmax_model, "--input", "16", "--batch", "2", "--torch", version)
    assert (code, out, err.strip()) == (2, "", line)


def test_the_analytic_estimate_assumes_no_version_rule(softmax_model: str) -> None:
    """An optimizer the fake tensors cannot run gets the analytic estimate: no rule applied, and
    the kept softmax inputs of --torch 1.10 are said to be left out."""
    code, out, err = _run("estimate", softmax_model, "--input", "16", "--batch", "4", "--gpu", "T4", "--optimizer",
                          "Adafactor", "--torch", "1.10", "--json")
    data = json.loads(out)
    assert code == 0 and data["method"] == "analytic", err
    assert data["torch_rules"] == []
    assert "torch 1.10's kept softmax inputs are not modelled by the analytic estimate" in data["notes"]
