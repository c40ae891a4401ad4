"""``gpudoc oom estimate|max-batch``: peak GPU memory of training, on a machine with no GPU."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from gpudoc.cli.common import json_option
from gpudoc.errors import ExitCode


if TYPE_CHECKING:
    from gpudoc.oom.plan import Plan

Progress = Callable[[str], None]


@contextmanager
def _status(quiet: bool) -> Iterator[Callable[[str], Progress]]:
    """A one-line status on stderr when it is a terminal (never with ``--json``): ``stage(what)``
    gives the progress callback of one estimate, which shows ``what: step``."""
    if quiet or not sys.stderr.isatty():
        yield lambda _: lambda _: None
        return
    from rich.console import Console
    from rich.live import Live
    from rich.spinner import Spinner

    spinner = Spinner("dots", "estimating")
    with Live(spinner, console=Console(stderr=True), transient=True, refresh_per_second=12.5,
              redirect_stdout=False) as live:  # (what the model prints to stdout stays there)

        def show(what: str, step: str) -> None:
            spinner.update(text=f"{what}: {step}")
            live.refresh()  # every stage shows, however short

        yield lambda what: lambda step: show(what, step)


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("model"),
        click.option("--input", "input_spec", help="Input size without the batch: 3x224x224 (torch, CHW), "
                     "224x224x3 (Keras, HWC) or tokens:1024. Default: the built-in model's."),
        click.option("--precision", type=click.Choice(["fp32", "amp", "bf16"]), default="fp32", show_default=True,
                     help="amp: fp16 autocast (CUDA's rules); bf16: bf16 autocast, which needs compute capability "
                     "8.0 (A100, H100, L4, RTX 30xx/40xx): refused for T4 and V100, and never proposed there."),
        click.option("--optimizer", default="adam", show_default=True,
                     help="sgd, momentum, adam, adamw, a torch.optim class name, or module:OptimizerClass."),
        click.option("--freeze", metavar="REGEX", help="Freeze parameters whose name matches (torch; Keras: layer "
                     "names), e.g. '^backbone\\.'."),
        click.option("--checkpointing", is_flag=True, help="Gradient checkpointing of every block (of an "
                     "nn.Sequential or nn.ModuleList); a note names the blocks, or says why there are none."),
        click.option("--accumulate", type=click.IntRange(1), default=1, show_default=True,
                     help="Gradient accumulation steps: micro-batch = batch / K."),
        click.option("--zero-grad", "zero_grad", type=click.Choice(["none", "zeros"]), default=None,
                     help="none: zero_grad(set_to_none=True) frees the gradients every step; zeros keeps them "
                     "allocated through the next forward. Default: --torch's (none from 2.0, zeros before)."),
        click.option("--optimizer-impl", "optimizer_impl", type=click.Choice(["foreach", "for-loop", "fused"]),
                     default=None, help="foreach: multi-tensor kernels, whose temporaries span all parameters; "
                     "for-loop: one parameter at a time (foreach=False); fused: one kernel, no temporaries (adam, "
                     "adamw, sgd, momentum). Default: --torch's on CUDA (foreach from 2.0, for-loop before)."),
        click.option("--torch", "torch_version", metavar="VERSION", default=None,
                     help="PyTorch version of the training run (1.10, 2.3): softmax's backward keeps its input up "
                     "to 1.10; the --zero-grad and --optimizer-impl defaults change in 2.0; before 2.0 attention is "
                     "eager (no scaled_dot_product_attention); amp needs 1.6, bf16 1.10, fused Adam 1.13, fused "
                     "AdamW 2.0 (exit 2 before). It sets --cuda's default. Default: the local torch's."),
        click.option("--inference", is_flag=True, help="Forward only, no gradients."),
        click.option("--gpu", "gpu_name", default=None,
                     help="Target device (V100-16GB/32GB, A100-40GB/80GB, H100-80GB, H200-141GB, L4, T4, "
                     "RTX-3090, RTX-4090, TPU-v2-core, TPU-v3-core), local (GPU 0, simulated under --simulate) or "
                     "local:N (GPU N, checked against the memory free on it now, as gpudoc run --model). "
                     "Default: local, else A100-80GB."),
        click.option("--cuda", "cuda", metavar="VERSION", default=None,
                     help="CUDA version of the target's PyTorch build (11.2, 11.8, 12.4, 12.x): it sets the "
                     "CUDA context (lazy module loading from 11.7; before, ~1.3 GiB of eagerly loaded kernels). "
                     "Default: the local torch build's (torch.version.cuda) when --torch is the local version, "
                     "else the newest official build of --torch, else 12."),
        json_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _device(name: str | None) -> Any:
    """The device of ``--gpu``; ``local`` (and the default) reads GPU 0, ``local:N`` GPU N and its
    free memory, through the backend of ``--simulate`` when given, else NVML."""
    from gpudoc.cli.common import Settings
    from gpudoc.oom.devices import FALLBACK_DEVICE
    from gpudoc.oom.plan import target_device

    settings = click.get_current_context().find_object(Settings)
    backend = settings.gpu_backend() if settings is not None and settings.simulate else None
    device, fallback = target_device(name, backend)
    if fallback:
        click.echo(f"gpudoc: note: no local GPU; estimating for {FALLBACK_DEVICE} (choose with --gpu)", err=True)
    return device


def _plan(model: str, batch: int, input_spec: str | None, precision: str, optimizer: str, freeze: str | None,
          checkpointing: bool, accumulate: int, inference: bool, gpu_name: str | None, cuda: str | None,
          zero_grad: str | None, optimizer_impl: str | None, torch_version: str | None) -> Plan:
    """The plan of the options (every one checked before anything is built) on ``--gpu``'s device."""
    from gpudoc.oom.plan import plan

    return plan(model, batch, lambda: _device(gpu_name), input_spec, precision, optimizer, freeze, checkpointing,
                accumulate, inference, cuda, zero_grad, optimizer_impl, torch_version)


def _print(est: Any) -> None:
    from gpudoc.oom.plan import estimate_lines

    for line in estimate_lines(est):
        click.echo(line)


@click.group()
def oom() -> None:
    """Predict peak GPU memory of training and the largest batch that fits, without a GPU."""


@oom.command("estimate")
@_options
@click.option("--batch", type=click.IntRange(1), required=True, help="Batch size (global, before accumulation).")
@click.option("--remedies/--no-remedies", "with_remedies", default=None,
              help="Re-estimate with each remedy (default: when the verdict is tight or OOM).")
def estimate_command(model: str, batch: int, input_spec: str | None, precision: str, optimizer: str,
                     freeze: str | None, checkpointing: bool, accumulate: int, inference: bool, gpu_name: str | None,
                     cuda: str | None, zero_grad: str | None, optimizer_impl: str | None, torch_version: str | None,
                     as_json: bool, with_remedies: bool | None) -> int:
    """Peak memory of two training steps of MODEL at --batch, and whether it fits the GPU.

    MODEL: a built-in name (resnet18, resnet50, unet, vit_b16, gpt2_small, efficientnetv2_s,
    efficientnetv2_l), hf:NAME or hf:config.json (a Hugging Face model built from its config,
    no download; hf:bert-large-uncased:BertForSequenceClassification picks the head),
    package.module:factory, path/to/file.py:factory, or a .keras file. A model whose forward
    takes labels gets input_ids, attention_mask and labels, and trains on its own .loss.
    An input the model rejects is exit 2, naming the layer and the shape it takes. Progress
    shows on stderr when it is a terminal (not with --json). Exit 1 when the verdict is OOM.
    """
    made = _plan(model, batch, input_spec, precision, optimizer, freeze, checkpointing, accumulate, inference,
                 gpu_name, cuda, zero_grad, optimizer_impl, torch_version)
    with _status(as_json) as stage:
        est = made.report(stage, with_remedies)
    if as_json:
        from gpudoc.output import emit_json

        emit_json(est)
    else:
        _print(est)
    return ExitCode.FINDINGS if est.verdict == "oom" else ExitCode.OK


@oom.command("max-batch")
@_options
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True,
              help="The second batch size traced to fit the line (the first is 1).")
def max_batch_command(model: str, batch: int, input_spec: str | None, precision: str, optimizer: str,
                      freeze: str | None, checkpointing: bool, accumulate: int, inference: bool,
                      gpu_name: str | None, cuda: str | None, zero_grad: str | None, optimizer_impl: str | None,
                      torch_version: str | None, as_json: bool) -> int:
    """The largest batch of MODEL whose estimate leaves 10% of the GPU free: estimate batch 1
    and --batch, solve, confirm. Exit 1 when not even batch 1 fits."""
    made = _plan(model, batch, input_spec, precision, optimizer, freeze, checkpointing, accumulate, inference,
                 gpu_name, cuda, zero_grad, optimizer_impl, torch_version)
    with _status(as_json) as stage:
        best_batch, est = made.largest(stage)
    if as_json:
        from gpudoc.oom.plan import max_batch_json
        from gpudoc.output import emit_json

        emit_json(max_batch_json(best_batch, est))
    else:
        click.echo(f"max batch       {best_batch}  (leaves at least 10% of {est.device} free)")
        _print(est)
    return ExitCode.FINDINGS if best_batch == 0 else ExitCode.OK
