"""One model, batch and training configuration checked against one device: what ``gpudoc oom
estimate|max-batch`` and ``gpudoc run --model`` share (:func:`plan`), and the pre-launch check
of a run against the GPUs it will see and the memory free on them now (:func:`prelaunch`)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gpudoc.errors import EnvironmentMissing, InputError
from gpudoc.oom.devices import Device, device_or_fallback, read_gpus
from gpudoc.oom.result import Estimate, Remedy
from gpudoc.oom.trace import TraceConfig

if TYPE_CHECKING:
    from gpudoc.gpu import GpuBackend
    from gpudoc.gpu.model import GpuDevice
    from gpudoc.oom.models import ModelSpec

Progress = Callable[[str], None]


@dataclass
class Plan:
    """A resolved model on a device with its configuration; ``notes`` go with every estimate."""

    spec: ModelSpec
    device: Device
    config: TraceConfig
    notes: list[str]
    context_note: str | None
    keras_models: dict[str, Any] = field(default_factory=dict)  # by input size: built once each
    torch_note: str | None = None  # the PyTorch version modelled and its rules (torch models)
    cuda: str = ""  # the CUDA version modelled (MAJOR.MINOR; "" for a TPU)

    def estimate(self, cfg: TraceConfig | None = None, progress: Progress | None = None) -> Estimate:
        """The estimate of ``cfg`` (default: the plan's configuration) on the plan's device."""
        cfg = cfg or self.config
        say = progress or (lambda _: None)
        if self.spec.framework == "keras":
            from gpudoc.oom.analytic import keras_estimate, load_keras

            if cfg.input not in self.keras_models:
                say("building the Keras model" if "keras" in sys.modules else "importing TensorFlow")
                self.keras_models[cfg.input] = load_keras(self.spec.source, cfg.input or None)
            say("counting layer outputs")
            est = keras_estimate(self.spec.name, self.keras_models[cfg.input], cfg, self.device)
        else:
            from gpudoc.oom.estimate import estimate

            if "torch" not in sys.modules:
                say("importing torch")
            assert callable(self.spec.source)
            est = estimate(self.spec.name, self.spec.source, cfg, self.device, progress)
        est.notes.extend(note for note in (self.torch_note, self.context_note) if note)
        est.cuda = self.cuda
        return est

    def remedies(self, est: Estimate, progress: Callable[[str], Progress | None] | None = None) -> list[Remedy]:
        """Each remedy re-estimated, largest saving first; ``progress(step)`` gives the progress
        callback of the remedy ``step`` (``i/n name``)."""
        from gpudoc.oom.estimate import remedies
        from gpudoc.oom.versions import rules_of

        # The analytic Keras estimate models neither checkpointing nor optimizer kernels; a torch
        # model gets none that its PyTorch version did not have (fused Adam before 1.13, AMP before 1.6).
        skip = frozenset({"checkpointing", "fused"}) if self.spec.framework == "keras" else \
            rules_of(est.config.torch).lacks(est.config.optimizer)
        current = [""]  # "i/n name", set before each remedy's estimate runs
        return remedies(est, lambda cfg: self.estimate(cfg, progress(current[0]) if progress else None),
                        self.spec.backbone, lambda step: current.__setitem__(0, step), skip, self.device,
                        channels_last=self.spec.framework == "keras")

    def max_batch(self, progress: Callable[[int], Progress | None] | None = None) -> tuple[int, Estimate]:
        """The largest batch that leaves 10% of the device free, and its estimate."""
        from gpudoc.oom.estimate import max_batch

        return max_batch(self.config, self.device,
                         lambda cfg: self.estimate(cfg, progress(cfg.batch) if progress else None))

    def report(self, stage: Callable[[str], Progress], with_remedies: bool | None = None) -> Estimate:
        """``gpudoc oom estimate``'s estimate: the plan's notes first, and the remedies when asked
        (None: when the verdict is tight or OOM). ``stage(what)`` gives each stage's progress."""
        est = self.estimate(progress=stage(f"{self.spec.name} at batch {self.config.batch}"))
        est.notes = self.notes + est.notes
        if with_remedies or (with_remedies is None and est.verdict != "fits"):
            est.remedies = self.remedies(est, lambda step: stage(f"remedy {step}"))
        return est

    def largest(self, stage: Callable[[str], Progress]) -> tuple[int, Estimate]:
        """``gpudoc oom max-batch``'s answer: the largest batch and its estimate, with the plan's notes."""
        best, est = self.max_batch(lambda size: stage(f"batch {size}"))
        est.notes = self.notes + est.notes
        return best, est


def max_batch_json(best: int, est: Estimate) -> dict[str, Any]:
    """The object ``gpudoc oom max-batch --json`` prints."""
    from gpudoc.output import to_jsonable

    return {**to_jsonable(est), "max_batch": best}


def headroom(est: Estimate) -> str:
    """``2.0 GiB headroom (13% free)`` or ``9.0 GiB over (needs 160% of the GPU)``: no signs."""
    from gpudoc.output import format_bytes

    if not est.capacity_bytes:
        return f"{format_bytes(abs(est.headroom_bytes))} {'headroom' if est.headroom_bytes >= 0 else 'over'}"
    if est.headroom_bytes >= 0:
        free = 100 * est.headroom_bytes / est.capacity_bytes
        return f"{format_bytes(est.headroom_bytes)} headroom ({free:.0f}% free)"
    return (f"{format_bytes(-est.headroom_bytes)} over (needs {100 * est.total_bytes / est.capacity_bytes:.0f}% "
            f"of the {'TPU core' if est.device.startswith('TPU') else 'GPU'})")


def estimate_lines(est: Estimate) -> list[str]:
    """The text report of an estimate (``gpudoc oom estimate``'s, the TUI's OOM screen's)."""
    from gpudoc.output import format_bytes

    c = est.config
    extras = [c.precision, c.optimizer] + (["checkpointing"] if c.checkpointing else []) + (
        [f"accumulate {c.accumulate}"] if c.accumulate > 1 else []) + ([f"freeze {c.freeze}"] if c.freeze else []) + (
        ["inference"] if c.inference else []) + ([f"{c.optimizer_impl} optimizer"] if c.optimizer_impl != "foreach"
                                                  else []) + (["zero_grad to zeros"] if c.zero_grad == "zeros" else [])
    extras += [f"torch {c.torch}"] if c.torch else []
    lines = [
        f"{est.model}  batch {c.batch}  {c.input}  {', '.join(extras)}  on {est.device} "
        f"({format_bytes(est.capacity_bytes)})  [{est.method}]",
        f"parameters      {est.parameters:,} ({est.trainable_parameters:,} trainable)",
        f"peak allocated  {format_bytes(est.peak_allocated_bytes):>11}  tensors (max_memory_allocated)",
        f"peak reserved   {format_bytes(est.peak_reserved_bytes):>11}  caching allocator (max_memory_reserved)",
        f"total           {format_bytes(est.total_bytes):>11}  with CUDA context and cuDNN margin (nvidia-smi)",
        f"verdict         {est.verdict}: {headroom(est)}",
        "at the peak:",
        *(f"  {name:42} {format_bytes(value):>11}"
          for name, value in sorted(est.breakdown.items(), key=lambda kv: -kv[1])),
    ]
    if est.top_modules:
        lines.append("activations by module: " + ", ".join(f"{n} {format_bytes(v)}" for n, v in est.top_modules[:5]))
    lines.extend(f"note: {note}" for note in est.notes)
    if est.remedies:
        lines.append("remedies, most memory saved first:")
        for r in est.remedies:
            effect = f"saves {format_bytes(r.saved_bytes):>11}" if r.saved_bytes >= 0 else \
                f"adds  {format_bytes(-r.saved_bytes):>11}"
            lines.append(f"  {r.name:14} {effect} -> {format_bytes(r.total_bytes):>11} ({r.verdict})  {r.change}")
    return lines


def target_device(name: str | None, backend: GpuBackend | None = None) -> tuple[Device, bool]:
    """``--gpu``'s device and whether it fell back to the default device: ``local:N`` is GPU N of
    this machine (through ``backend``, NVML when None) checked against the memory free on it now,
    as ``gpudoc run --model`` does; any other name (or none) as :func:`device_or_fallback`."""
    found = re.fullmatch(r"\s*local:(\d+)\s*", name or "", re.IGNORECASE)
    if found is None:
        return device_or_fallback(name, backend)
    from gpudoc.gpu import NvmlBackend

    index = int(found.group(1))
    gpus = read_gpus(backend or NvmlBackend(), f"--gpu {name.strip()}", "name a device such as A100-80GB").devices
    chosen = [d for d in gpus if d.index == index]
    if not chosen:
        raise InputError(f"--gpu {name.strip()}: this machine has no GPU {index}",
                         f"use local:N with N one of {', '.join(str(d.index) for d in gpus)}" if gpus
                         else "name a device such as A100-80GB")
    return tightest(chosen, f"--gpu {name.strip()}")[1], False


def local_gpus(backend: GpuBackend | None = None) -> list[GpuDevice]:
    """This machine's GPUs with their memory now (through ``backend``, NVML when None); none
    when they cannot be read."""
    from gpudoc.gpu import NvmlBackend

    try:
        return list(read_gpus(backend or NvmlBackend(), "--gpu local", "").devices)
    except EnvironmentMissing:
        return []


@dataclass(frozen=True)
class Versions:
    """The PyTorch and CUDA versions an estimate models, and where each came from."""

    torch: str
    torch_source: str
    cuda: tuple[int, int]
    cuda_source: str


def versions_modelled(torch: str | None, cuda: str | None) -> Versions:
    """``--torch``, else the installed torch's version (2.0 without one); ``--cuda``, else the
    local build's when it is the version modelled, else the newest official build of that
    torch, else 12. Malformed versions are :class:`InputError`."""
    from gpudoc.oom.devices import local_torch_cuda, parse_cuda
    from gpudoc.oom.versions import cuda_default, local_torch_version, parse_torch

    installed = local_torch_version()
    if torch is not None:
        major, minor = parse_torch(torch)
        torch_version, torch_source = f"{major}.{minor}", "--torch"
    else:
        torch_version = installed or "2.0"
        torch_source = "the local torch's" if installed else "assumed; choose with --torch"
    local = None if cuda or torch_version != installed else local_torch_cuda()
    official = None if cuda or local else cuda_default(torch_version)
    version = parse_cuda(cuda or local or (official[0] if official else "12"))
    source = "--cuda" if cuda else "the local torch build's" if local else official[1] if official else \
        "assumed; choose with --cuda" if torch is None else \
        f"assumed: the official builds of torch {torch_version} are not listed here; choose with --cuda"
    return Versions(torch_version, torch_source, version, source)


def plan(model: str, batch: int, device: Callable[[], Device], input_spec: str | None = None,
         precision: str = "fp32", optimizer: str = "adam", freeze: str | None = None, checkpointing: bool = False,
         accumulate: int = 1, inference: bool = False, cuda: str | None = None, zero_grad: str | None = None,
         optimizer_impl: str | None = None, torch: str | None = None) -> Plan:
    """The plan of MODEL at ``batch`` on the device ``device()`` gives, every option checked
    (bad input: :class:`InputError`) before the device is read or anything is built.
    ``torch``: the PyTorch version modelled (default: the installed one's); ``zero_grad`` and
    ``optimizer_impl`` default to that version's defaults."""
    from gpudoc.oom.devices import check_precision, cuda_note, for_cuda
    from gpudoc.oom.models import require, resolve
    from gpudoc.oom.trace import compile_freeze, parse_input
    from gpudoc.oom.versions import cuda_build_note, local_torch_version, rules_of, torch_note

    if input_spec is not None:
        parse_input(input_spec, batch)
    if accumulate > batch:
        raise InputError(f"--accumulate {accumulate} is more than --batch {batch}: a micro-batch would be empty",
                         f"use at most --accumulate {batch}")
    if batch % accumulate:
        raise InputError(f"--batch {batch} does not split into {accumulate} equal micro-batches",
                         f"give a --batch that {accumulate} divides (e.g. {batch - batch % accumulate})")
    compile_freeze(freeze)
    installed = local_torch_version()
    modelled = versions_modelled(torch, cuda)
    torch_version, torch_source, version, source = (modelled.torch, modelled.torch_source, modelled.cuda,
                                                    modelled.cuda_source)
    rules = rules_of(torch_version)
    zero_grad = zero_grad or rules.zero_grad_default
    optimizer_impl = optimizer_impl or rules.optimizer_impl_default
    target = for_cuda(device(), version)
    precision_note = check_precision(target, precision)
    notes = [precision_note] if precision_note else []
    build_note = cuda_build_note(torch_version, version) if cuda and torch is not None else None
    context_note = cuda_note(target, version, source)
    if build_note and target.kind == "gpu":
        context_note = f"{context_note}; {build_note}"
    spec = resolve(model)
    require(spec.framework)
    missing = rules.missing(precision, optimizer, optimizer_impl) if spec.framework == "torch" else None
    if missing is not None:
        raise InputError(*missing)
    version_note = torch_note(torch_version, torch_source, installed) if spec.framework == "torch" else None
    if spec.framework != "torch" and torch is not None:
        notes.append(f"--torch {torch} has no effect on a Keras model")
    shape = input_spec or spec.default_input
    if shape is None and spec.framework == "torch":
        raise InputError(f"{model}: --input is required for this model (e.g. 3x224x224 or tokens:1024)")
    keras_models: dict[str, Any] = {}
    if shape is None:
        from gpudoc.oom.analytic import load_keras

        loaded = load_keras(spec.source, None)
        dims = loaded.input_shape[1:]
        if any(d is None for d in dims):
            raise InputError(f"{model}: its input size is open ({dims})", "give one with --input, e.g. 224x224x3")
        shape = "x".join(str(d) for d in dims)
        keras_models[shape] = loaded
    config = TraceConfig(batch, shape or "", precision, optimizer, freeze, checkpointing, accumulate, inference,
                         zero_grad, optimizer_impl, torch_version if spec.framework == "torch" else "")
    return Plan(spec, target, config, notes, context_note, keras_models, version_note,
                f"{version[0]}.{version[1]}" if target.kind == "gpu" else "")


# ---------------------------------------------------------------- before a run starts


@dataclass(frozen=True)
class Fit:
    """The pre-launch estimate of a run: checked against the visible GPU with the least memory
    free now (``gpu``; ``gpus``: all it will see), whose ``free_bytes`` the estimate must fit."""

    model: str
    batch: int
    gpus: list[int]
    gpu: int
    device: str
    capacity_bytes: int
    free_bytes: int
    total_bytes: int
    verdict: str
    headroom_bytes: int
    remedy: Remedy | None = None
    max_batch: int | None = None  # filled after an out-of-memory end

    def line(self) -> str:
        """``estimate: m at batch 64 needs 9.1 GiB on GPU 7, H100 with 10.3 GiB free of 79.6 GiB: fits (…)``."""
        from gpudoc.output import format_bytes

        shown = f"GPU {self.gpu}" + (f" (the tightest of GPUs {','.join(map(str, self.gpus))})"
                                     if len(self.gpus) > 1 else "")
        room = (f"{format_bytes(self.headroom_bytes)} headroom" if self.headroom_bytes >= 0
                else f"{format_bytes(-self.headroom_bytes)} over")
        return (f"estimate: {self.model} at batch {self.batch} needs {format_bytes(self.total_bytes)} on {shown}, "
                f"{self.device} with {format_bytes(self.free_bytes)} free of {format_bytes(self.capacity_bytes)}: "
                f"{self.verdict} ({room})")

    def remedy_line(self) -> str | None:
        """The best remedy, when the verdict is not ``fits`` and one was found."""
        from gpudoc.output import format_bytes

        if self.remedy is None:
            return None
        r = self.remedy
        return f"best remedy: {r.change} -> {format_bytes(r.total_bytes)} ({r.verdict})"


def visible(devices: Sequence[GpuDevice], value: str | None) -> list[GpuDevice]:
    """The GPUs a process sees under ``CUDA_VISIBLE_DEVICES=value`` (None: all): indices or
    UUIDs (a unique prefix from ``GPU-``), comma-separated; as CUDA does, the list ends at
    the first entry that names no GPU, and a GPU named twice makes it empty."""
    if value is None:
        return list(devices)
    chosen: list[GpuDevice] = []
    for entry in (e.strip() for e in value.split(",")):
        if entry.isdigit():
            found = [d for d in devices if d.index == int(entry)]
        elif entry.upper().startswith("GPU-"):
            found = [d for d in devices if str(d.uuid).upper().startswith(entry.upper())]
        else:
            found = []
        if len(found) != 1:
            break
        if found[0] in chosen:
            return []
        chosen.append(found[0])
    return chosen


def read_visible(backend: GpuBackend, value: str | None) -> list[GpuDevice]:
    """The visible GPUs with their memory now, through ``backend`` (closed after)."""
    snap = read_gpus(backend, "--model", "run where the GPUs are, or without --model")
    seen = visible(snap.devices, value)
    if not seen:
        raise EnvironmentMissing(f"--model: CUDA_VISIBLE_DEVICES={value!r} leaves the run no GPU to estimate against",
                                 "name GPUs by index or UUID, or unset it")
    return seen


def tightest(seen: Sequence[GpuDevice], option: str = "--model") -> tuple[GpuDevice, Device]:
    """The GPU with the least memory free (lowest index on a tie) and its :class:`Device` with
    that free memory; a GPU without a memory reading is refused (unknown is not room), naming
    ``option``."""
    from gpudoc.oom.devices import device_named

    unread = [d.index for d in seen if not isinstance(d.memory_free, int) or not isinstance(d.memory_total, int)]
    if unread:
        raise EnvironmentMissing(f"{option}: GPU {unread[0]} has no memory reading, so no estimate against it",
                                 "run without --model, or hide it with CUDA_VISIBLE_DEVICES" if option == "--model"
                                 else "name a device such as A100-80GB")
    gpu = min(seen, key=lambda d: (d.memory_free, d.index))
    assert isinstance(gpu.memory_total, int) and isinstance(gpu.memory_free, int)
    return gpu, replace(device_named(str(gpu.name), gpu.memory_total), free=gpu.memory_free)


def prelaunch(build: Callable[[Callable[[], Device]], Plan], seen: Sequence[GpuDevice],
              progress: Callable[[str], Progress | None] | None = None) -> tuple[Plan, Fit]:
    """The plan ``build(device)`` makes for the tightest visible GPU, its estimate and, when
    it does not fit comfortably, the remedy that saves most among those that make it fit
    (else the one that saves most)."""
    gpu, device = tightest(seen)
    made = build(lambda: device)
    est = made.estimate(progress=progress("estimating") if progress else None)
    best = None
    if est.verdict != "fits":
        found = [r for r in made.remedies(est, progress) if r.saved_bytes > 0]
        best = next((r for r in found if r.verdict == "fits"), found[0] if found else None)
    return made, Fit(made.spec.name, made.config.batch, [d.index for d in seen], gpu.index, made.device.name,
                     made.device.capacity, made.device.usable, est.total_bytes, est.verdict, est.headroom_bytes, best)
