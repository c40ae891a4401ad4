"""``gpudoc oom estimate|max-batch``: peak GPU memory of training, on a machine with no GPU."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from gpudoc.cli.common import json_option
from gpudoc.errors import ExitCode


@contextmanager
def _status(quiet: bool) -> Iterator[Callable[[str], None]]:
    """A one-line status on stderr when it is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield lambda _: None
        return
    from rich.console import Console

    with Console(stderr=True).status("estimating") as status:
        yield lambda text: status.update(text)


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("model"),
        click.option("--input", "input_spec", help="Input size without the batch: 3x224x224 (torch, CHW), "
                     "224x224x3 (Keras, HWC) or tokens:1024. Default: the built-in model's."),
        click.option("--precision", type=click.Choice(["fp32", "amp", "bf16"]), default="fp32", show_default=True,
                     help="amp: fp16 autocast (CUDA's rules); bf16: bf16 autocast."),
        click.option("--optimizer", default="adam", show_default=True,
                     help="sgd, momentum, adam, adamw, a torch.optim class name, or module:OptimizerClass."),
        click.option("--freeze", metavar="REGEX", help="Freeze parameters whose name matches (torch; Keras: layer "
                     "names), e.g. '^backbone\\.'."),
        click.option("--checkpointing", is_flag=True, help="Gradient checkpointing of every block."),
        click.option("--accumulate", type=click.IntRange(1), default=1, show_default=True,
                     help="Gradient accumulation steps: micro-batch = batch / K."),
        click.option("--inference", is_flag=True, help="Forward only, no gradients."),
        click.option("--gpu", "gpu_name", default=None,
                     help="Target device (V100-16GB/32GB, A100-40GB/80GB, H100-80GB, H200-141GB, L4, T4, "
                     "RTX-3090, RTX-4090, TPU-v2-core, TPU-v3-core) or local. Default: local, else A100-80GB."),
        json_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _device(name: str | None) -> Any:
    from gpudoc.errors import EnvironmentMissing
    from gpudoc.oom.devices import find_device

    if name is not None:
        return find_device(name)
    try:
        return find_device("local")
    except EnvironmentMissing:
        click.echo("gpudoc: note: no local GPU; estimating for A100-80GB (choose with --gpu)", err=True)
        return find_device("A100-80GB")


def _run(model: str, batch: int, input_spec: str | None, precision: str, optimizer: str, freeze: str | None,
         checkpointing: bool, accumulate: int, inference: bool, gpu_name: str | None
         ) -> tuple[Any, Any, Any, Callable[[Any], Any]]:
    from gpudoc.errors import InputError
    from gpudoc.oom.models import require, resolve
    from gpudoc.oom.trace import TraceConfig

    spec = resolve(model)
    require(spec.framework)
    device = _device(gpu_name)
    shape = input_spec or spec.default_input
    if shape is None and spec.framework == "torch":
        raise InputError(f"{model}: --input is required for this model (e.g. 3x224x224 or tokens:1024)")
    keras_models: dict[str, Any] = {}  # by input size: remedies and max-batch estimate many times
    if shape is None:
        from gpudoc.oom.analytic import load_keras

        loaded = load_keras(spec.source, None)
        dims = loaded.input_shape[1:]
        if any(d is None for d in dims):
            raise InputError(f"{model}: its input size is open ({dims})", "give one with --input, e.g. 224x224x3")
        shape = "x".join(str(d) for d in dims)
        keras_models[shape] = loaded
    config = TraceConfig(batch, shape or "", precision, optimizer, freeze, checkpointing, accumulate, inference)

    def run(cfg: TraceConfig) -> Any:
        if spec.framework == "keras":
            from gpudoc.oom.analytic import keras_estimate, load_keras

            if cfg.input not in keras_models:
                keras_models[cfg.input] = load_keras(spec.source, cfg.input or None)
            return keras_estimate(spec.name, keras_models[cfg.input], cfg, device)
        from gpudoc.oom.estimate import estimate

        assert callable(spec.source)
        return estimate(spec.name, spec.source, cfg, device)

    return spec, device, config, run


def _print(est: Any) -> None:
    from gpudoc.output import format_bytes

    c = est.config
    extras = [c.precision, c.optimizer] + (["checkpointing"] if c.checkpointing else []) + (
        [f"accumulate {c.accumulate}"] if c.accumulate > 1 else []) + ([f"freeze {c.freeze}"] if c.freeze else []) + (
        ["inference"] if c.inference else [])
    click.echo(f"{est.model}  batch {c.batch}  {c.input}  {', '.join(extras)}  on {est.device} "
               f"({format_bytes(est.capacity_bytes)})  [{est.method}]")
    click.echo(f"parameters      {est.parameters:,} ({est.trainable_parameters:,} trainable)")
    click.echo(f"peak allocated  {format_bytes(est.peak_allocated_bytes):>11}  tensors (max_memory_allocated)")
    click.echo(f"peak reserved   {format_bytes(est.peak_reserved_bytes):>11}  caching allocator (max_memory_reserved)")
    click.echo(f"total           {format_bytes(est.total_bytes):>11}  with CUDA context and cuDNN margin (nvidia-smi)")
    share = 100 * est.headroom_bytes / est.capacity_bytes if est.capacity_bytes else 0
    click.echo(f"verdict         {est.verdict}: {format_bytes(abs(est.headroom_bytes))} "
               f"{'headroom' if est.headroom_bytes >= 0 else 'over'} ({share:.0f}%)")
    click.echo("at the peak:")
    for name, value in sorted(est.breakdown.items(), key=lambda kv: -kv[1]):
        click.echo(f"  {name:42} {format_bytes(value):>11}")
    if est.top_modules:
        click.echo("activations by module: " + ", ".join(f"{n} {format_bytes(v)}" for n, v in est.top_modules[:5]))
    for note in est.notes:
        click.echo(f"note: {note}")
    if est.remedies:
        click.echo("remedies, most memory saved first:")
        for r in est.remedies:
            click.echo(f"  {r.name:14} saves {format_bytes(r.saved_bytes):>11} -> {format_bytes(r.total_bytes):>11} "
                       f"({r.verdict})  {r.change}")


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
                     as_json: bool, with_remedies: bool | None) -> int:
    """Peak memory of two training steps of MODEL at --batch, and whether it fits the GPU.

    MODEL: a built-in name (resnet18, resnet50, unet, vit_b16, gpt2_small, efficientnetv2_s,
    efficientnetv2_l), package.module:factory, path/to/file.py:factory, or a .keras file.
    Exit 1 when the verdict is OOM.
    """
    spec, _, config, run = _run(model, batch, input_spec, precision, optimizer, freeze, checkpointing,
                                accumulate, inference, gpu_name)
    with _status(as_json) as status:
        status(f"tracing {spec.name} at batch {batch}")
        est = run(config)
        if with_remedies or (with_remedies is None and est.verdict != "fits"):
            from gpudoc.oom.estimate import remedies

            # The analytic Keras estimate does not model checkpointing.
            skip = frozenset({"checkpointing"}) if spec.framework == "keras" else frozenset()
            est.remedies = remedies(est, run, spec.backbone, lambda r: status(f"re-estimating with {r}"), skip)
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
                      gpu_name: str | None, as_json: bool) -> int:
    """The largest batch of MODEL whose estimate leaves 10% of the GPU free: estimate batch 1
    and --batch, solve, confirm. Exit 1 when not even batch 1 fits."""
    from gpudoc.oom.estimate import max_batch

    _, device, config, run = _run(model, batch, input_spec, precision, optimizer, freeze, checkpointing,
                                  accumulate, inference, gpu_name)
    with _status(as_json) as status:
        best_batch, est = max_batch(config, device, run, lambda b: status(f"estimating batch {b}"))
    if as_json:
        from gpudoc.output import emit_json, to_jsonable

        emit_json({**to_jsonable(est), "max_batch": best_batch})
    else:
        click.echo(f"max batch       {best_batch}  (leaves at least 10% of {est.device} free)")
        _print(est)
    return ExitCode.FINDINGS if best_batch == 0 else ExitCode.OK
