"""The parsers of ``gpudoc oom``'s inputs, fuzzed with hypothesis: --input specs, --batch,
--gpu names, --freeze patterns and MODEL specs give a value or one InputError (exit 2),
never anything else (exit 70). The models are tiny, so no example builds anything real."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpudoc.cli import cli
from gpudoc.errors import ExitCode, InputError
from gpudoc.oom.devices import CATALOG, check_precision, find_device
from gpudoc.oom.models import resolve
from gpudoc.oom.trace import compile_freeze, parse_input

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

SPEC_TEXT = st.one_of(st.text(max_size=20), st.text(alphabet="0123456789xX,:-+. tokens\x00٣", max_size=20))
ANY_INT = st.one_of(st.integers(-5, 5), st.integers(min_value=-(2**70), max_value=2**70))


@FUZZ
@given(spec=SPEC_TEXT, batch=st.integers(1, 2**64))
def test_input_specs_parse_or_are_refused(spec: str, batch: int) -> None:
    try:
        shape, tokens = parse_input(spec, batch)
    except InputError as exc:
        assert str(exc).startswith("--input ")
        return
    assert shape[0] == batch and all(d > 0 for d in shape) and (not tokens or len(shape) == 2)


@FUZZ
@given(name=st.one_of(st.text(max_size=16), st.sampled_from([d.name for d in CATALOG] + ["a100", " T4 ", "h100"])))
def test_gpu_names_are_found_or_refused(name: str) -> None:
    if name.strip().lower() == "local":
        return  # NVML, not parsing
    try:
        device = find_device(name)
    except InputError as exc:
        assert "not a known device" in str(exc)
        return
    for precision in ("fp32", "amp", "bf16"):
        try:
            check_precision(device, precision)
        except InputError as exc:
            assert device.name in str(exc)


@FUZZ
@given(pattern=st.text(alphabet="()[]{}*+?.\\^$|ab0", max_size=10))
@example(pattern="a{4294967296}")  # OverflowError, not re.error
def test_freeze_patterns_compile_or_are_refused(pattern: str) -> None:
    try:
        compiled = compile_freeze(pattern)
    except InputError as exc:
        assert "not a regular expression" in str(exc)
        return
    assert compiled is not None and compiled.pattern == pattern


# MODEL specs: module parts that exist ("json", "gpudoc.oom"), that cannot ("no_such_gpudoc_mod"),
# or garbage; never a random identifier (importing an arbitrary module runs its code).
MODULES = st.one_of(st.sampled_from(["json", "os.path", "gpudoc.oom", "no_such_gpudoc_mod", "gpudoc.no_such", ""]),
                    st.text(alphabet=".:/\\-x \x00٣", max_size=8))
ATTRS = st.one_of(st.sampled_from(["loads", "build", "", "sep", "nosuch", "__name__"]), st.text(max_size=6))


@FUZZ
@given(module=MODULES, attr=ATTRS, suffix=st.sampled_from(["", ".py", ".keras", ".h5"]))
def test_model_specs_resolve_or_are_refused(module: str, attr: str, suffix: str) -> None:
    try:
        spec = resolve(f"{module}{suffix}:{attr}" if attr or suffix != ".keras" else f"{module}{suffix}")
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert spec.framework in ("torch", "keras") and callable(spec.source)  # e.g. json:loads


TINY = '''
import torch


class Scale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.w


def scale():
    return Scale()


def linear():
    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("oom-fuzz") / "tiny.py"
    path.write_text(TINY)
    return path


# Mostly well-formed (so most examples reach the trace), sometimes not.
DIMS = st.lists(st.one_of(st.integers(1, 64), st.integers(1, 2**40)), min_size=1, max_size=5)
SPECS = st.one_of(DIMS.map(lambda d: "x".join(map(str, d))), DIMS.map(lambda d: ",".join(map(str, d))),
                  st.integers(-3, 2**70).map(lambda n: f"tokens:{n}"), st.just("8"), st.just("3x8x8"), SPEC_TEXT)
BATCHES = st.one_of(st.integers(1, 64).map(str), st.integers(1, 64).map(str), ANY_INT.map(str), st.text(max_size=4))
GPUS = st.one_of(st.sampled_from([d.name for d in CATALOG]), st.sampled_from(["v100", "a100", "nosuch", ""]),
                 st.text(max_size=6))


@FUZZ
@given(factory=st.sampled_from(["scale", "scale", "linear", "nosuch"]), spec=SPECS, batch=BATCHES, gpu=GPUS,
       precision=st.sampled_from(["fp32", "amp", "bf16"]),
       extra=st.lists(st.sampled_from(["--checkpointing", "--inference", "--json", "--remedies"]), unique=True,
                      max_size=2),
       optimizer=st.one_of(st.sampled_from(["adam", "sgd", "LBFGS", "SparseAdam", "torch.optim:Optimizer", ".x:Y",
                                            "no_such_gpudoc_mod:Opt", "RMSprop", ""]), st.text(max_size=5)),
       command=st.sampled_from(["estimate", "max-batch"]))
def test_the_cli_answers_every_combination_with_a_verdict_or_one_error(
        tiny: Path, factory: str, spec: str, batch: str, gpu: str, precision: str, extra: list[str],
        optimizer: str, command: str) -> None:
    if gpu.strip().lower() == "local" or (command == "max-batch" and "--remedies" in extra):
        return
    result = CliRunner().invoke(cli, ["oom", command, f"{tiny}:{factory}", "--input", spec, "--batch", batch,
                                      "--gpu", gpu, "--precision", precision, "--optimizer", optimizer, *extra])
    assert result.exit_code in (ExitCode.OK, ExitCode.FINDINGS, ExitCode.USAGE), result.stderr
    if result.exit_code == ExitCode.USAGE:
        assert result.stderr.startswith("gpudoc: error: ") and result.stderr.count("\n") == 1, result.stderr
