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
    config = _plan(torch="1.13", zero_grad="none", optimizer_impl="fused").config
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


# --- the CUDA of the version's official builds ----------------------------------------------------------

MiB = 1024**2
RESNET = ("estimate", "resnet18", "--input", "3x32x32", "--batch", "8", "--gpu", "V100-32GB", "--no-remedies",
          "--json")


@pytest.mark.parametrize(("version", "cuda", "context_mib", "others"), [
    ("1.10", "11.3", 1343, "pass --cuda 10.2 or 11.1 for its other builds"),  # eager module loading
    ("1.13", "11.7", 300, "pass --cuda 11.6 for its other builds"),  # lazy from 11.7 (set by torch from 1.13)
    ("2.3", "12.1", 300, "pass --cuda 11.8 for its other builds"),
])
def test_cuda_defaults_to_the_newest_official_build_of_the_torch(version: str, cuda: str, context_mib: int,
                                                                 others: str) -> None:
    code, out, err = _run(*RESNET, "--torch", version)
    assert code == 0, err
    data = json.loads(out)
    assert data["cuda"] == cuda and data["breakdown"]["CUDA context"] == context_mib * MiB
    assert any(n.startswith(f"CUDA {cuda} (the newest official build of torch {version}; {others}): ")
               for n in data["notes"])
    given = json.loads(_run(*RESNET, "--torch", version, "--cuda", cuda)[1])
    assert given["total_bytes"] == data["total_bytes"] and given["cuda"] == cuda


def test_a_cuda_no_official_build_of_the_torch_had_is_a_note_not_an_error() -> None:
    code, out, err = _run(*RESNET, "--torch", "1.10", "--cuda", "12.1")
    assert code == 0, err
    data = json.loads(out)
    assert data["cuda"] == "12.1" and data["breakdown"]["CUDA context"] == 300 * MiB  # as given: lazy loading
    assert any(n.endswith("--cuda 12.1: no official build of torch 1.10 had it (its builds: 10.2, 11.1, 11.3); "
                          "taken as given, as for a build from source") for n in data["notes"])
    ok = json.loads(_run(*RESNET, "--torch", "1.10", "--cuda", "11.1")[1])
    assert not any("no official build" in n for n in ok["notes"])


def test_a_torch_whose_builds_are_not_listed_says_so() -> None:
    data = json.loads(_run(*RESNET, "--torch", "2.7")[1])
    assert data["cuda"] == "12.0"
    assert any("(assumed: the official builds of torch 2.7 are not listed here; choose with --cuda)" in n
               for n in data["notes"])


def test_the_build_table_is_ordered_and_has_no_impossible_pairs() -> None:
    from gpudoc.oom.versions import CUDA_BUILDS

    for version, builds in CUDA_BUILDS.items():
        parsed = [tuple(int(x) for x in b.split(".")) for b in builds]
        assert parsed == sorted(parsed), version
        # Lazy loading (CUDA 11.7) came with 1.13's builds: none before had it.
        assert (max(parsed) >= (11, 7)) == (version >= (1, 13)), version


# --- no scaled_dot_product_attention before 2.0 ----------------------------------------------------------

SDPA_MODEL = """import torch
from torch.nn import functional


class Attend(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(64, 192)

    def forward(self, x):
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 4, 16).permute(2, 0, 3, 1, 4)
        return functional.scaled_dot_product_attention(q, k, v, is_causal=True).sum(1)


def build():
    return Attend()
"""


def test_a_user_model_calling_sdpa_before_2_0_is_told_it_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "attend.py"
    path.write_text(SDPA_MODEL)
    base = ("estimate", f"{path}:build", "--input", "128x64", "--batch", "2", "--gpu", "V100", "--no-remedies",
            "--json", "--optimizer", "sgd")
    old, new = (json.loads(_run(*base, "--torch", v)[1]) for v in ("1.12", "2.0"))
    assert list(old["attention_kernels"]) == ["eager"] and list(new["attention_kernels"]) == ["memory-efficient"]
    assert ("attention: the model calls F.scaled_dot_product_attention, which torch 1.12 does not have (added in "
            "2.0): it would fail there; modelled as the eager computation (scores, softmax, dropout, product)"
            in old["notes"])
    # batch x heads x L x L float32: the eager path keeps the probabilities, and its backward makes
    # L x L gradients; the memory-efficient kernel neither.
    square = 2 * 4 * 128 * 128 * 4
    assert old["peak_allocated_bytes"] - new["peak_allocated_bytes"] >= 2 * square


def test_the_eager_path_computes_what_sdpa_does() -> None:
    from gpudoc.oom.kernels import cuda_kernels

    q, k, v = (torch.randn(2, 3, 5, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(5, 5) > 0.3
    mask[:, 0] = True
    for keeps_input in (False, True):
        for kwargs in ({"is_causal": True}, {"attn_mask": mask}, {"scale": 0.5}):
            expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
            chosen: dict[str, str] = {}
            with cuda_kernels((8, 0), chosen, keeps_input, no_sdpa="1.10"):
                got = torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
            assert torch.allclose(got, expected) and list(chosen) == ["eager"]


def test_the_builtin_gpt2_runs_eager_attention_before_2_0() -> None:
    code, out, err = _run("estimate", "gpt2_small", "--input", "tokens:256", "--batch", "2", "--gpu", "T4",
                          "--torch", "1.10", "--json", "--no-remedies")
    assert code == 0, err
    data = json.loads(out)
    why = "torch 1.10 has no scaled_dot_product_attention (added in 2.0): the eager computation (scores, softmax, " \
          "dropout, product)"
    assert data["attention_kernels"] == {"eager": why} and f"attention: {why}" in data["notes"]


def test_hf_models_take_eager_attention_before_2_0(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    tiny = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 128, "vocab_size": 1000, "max_position_embeddings": 128,
            "architectures": ["BertForMaskedLM"]}
    activations = {}
    for attention in ("sdpa", "eager"):
        path = tmp_path / f"{attention}.json"
        path.write_text(json.dumps({**tiny, "attn_implementation": attention}))
        for version in ("1.10", "2.0"):
            code, out, err = _run("estimate", f"hf:{path}", "--batch", "2", "--input", "tokens:128", "--gpu", "V100",
                                  "--no-remedies", "--json", "--torch", version)
            assert code == 0, err
            data = json.loads(out)
            activations[attention, version] = data["breakdown"]["activations"]
            if (attention, version) == ("sdpa", "1.10"):
                assert data["attention_kernels"] == {"eager": "torch 1.10 has no scaled_dot_product_attention "
                                                               "(added in 2.0): transformers' eager attention"}
    assert activations["sdpa", "1.10"] == activations["eager", "1.10"]  # what transformers runs there
    assert activations["sdpa", "2.0"] < activations["eager", "2.0"]


# --- what a version did not have yet ------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "line"), [
    (("--torch", "1.10", "--optimizer-impl", "fused"),
     "--optimizer-impl fused: torch 1.10 has no fused Adam (Adam(fused=True) is from torch 1.13): use "
     "--optimizer-impl for-loop, or --torch 1.13 or newer"),
    (("--torch", "1.13", "--optimizer", "adamw", "--optimizer-impl", "fused"),
     "--optimizer-impl fused: torch 1.13 has no fused AdamW (AdamW(fused=True) is from torch 2.0): use "
     "--optimizer-impl for-loop, or --torch 2.0 or newer"),
    (("--torch", "2.1", "--optimizer", "torch.optim:SGD", "--optimizer-impl", "fused"),
     "--optimizer-impl fused: torch 2.1 has no fused SGD (SGD(fused=True) is from torch 2.2): use "
     "--optimizer-impl for-loop, or --torch 2.2 or newer"),
    (("--torch", "1.5", "--precision", "amp"),
     "--precision amp: torch 1.5 has no CUDA autocast (torch.cuda.amp), which is from torch 1.6: use --precision "
     "fp32, or --torch 1.6 or newer"),
    (("--torch", "1.5", "--precision", "bf16"),
     "--precision bf16: torch 1.5 has no bf16 autocast on CUDA (torch.autocast's dtype), which is from torch 1.10: "
     "use --precision fp32, or --torch 1.10 or newer"),
    (("--torch", "1.9", "--precision", "bf16"),
     "--precision bf16: torch 1.9 has no bf16 autocast on CUDA (torch.autocast's dtype), which is from torch 1.10: "
     "use --precision amp or fp32, or --torch 1.10 or newer"),
])
@pytest.mark.parametrize("command", ["estimate", "max-batch"])
def test_what_the_version_did_not_have_is_refused(softmax_model: str, command: str, args: tuple[str, ...],
                                                  line: str) -> None:
    code, out, err = _run(command, softmax_model, "--input", "16", "--batch", "2", "--gpu", "A100-80GB", *args)
    assert (code, out, err.strip()) == (2, "", f"gpudoc: error: {line}")


@pytest.mark.parametrize("args", [
    ("--torch", "1.13", "--optimizer-impl", "fused"), ("--torch", "2.0", "--optimizer", "adamw", "--optimizer-impl",
                                                       "fused"),
    ("--torch", "1.6", "--precision", "amp"), ("--torch", "1.10", "--precision", "bf16"),
])
def test_what_the_version_had_is_accepted(softmax_model: str, args: tuple[str, ...]) -> None:
    code, _, err = _run("estimate", softmax_model, "--input", "16", "--batch", "2", "--gpu", "A100-80GB",
                        "--no-remedies", "--json", *args)
    assert code == 0, err


@pytest.mark.parametrize(("version", "absent"), [
    ("1.5", {"amp", "bf16", "fused"}), ("1.10", {"fused"}), ("2.3", set()),
])
def test_remedies_the_version_did_not_have_are_not_offered(softmax_model: str, version: str,
                                                           absent: set[str]) -> None:
    code, out, err = _run("estimate", softmax_model, "--input", "16", "--batch", "64", "--gpu", "A100-80GB",
                          "--remedies", "--json", "--torch", version, "--optimizer-impl", "foreach")
    assert code == 0, err
    names = {r["name"] for r in json.loads(out)["remedies"]}
    assert not names & absent and {"amp", "bf16"} - absent <= names
    assert rules_of(version).lacks("adam") == absent
