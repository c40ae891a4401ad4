"""A small training loop to watch, CPU only (numpy; tensorboardX for event files):

    gpudoc run --logdir runs/toy -- python examples/toy_train.py --epochs 30
    gpudoc tui --demo -- python examples/toy_train.py --epochs 30

It fits y = 3x + 1 (plus noise) by gradient descent, draws a progress bar per epoch (redrawn
with carriage returns, as tqdm does) and prints the loss. With ``--logdir DIR`` (or the
``GPUDOC_LOGDIR`` that ``gpudoc run --logdir`` sets) it logs ``train/loss`` every step and, each
epoch, the validation MSE, MAE and PSNR of its predictions taken as 8-bit images — reported
as if 8-bit from [0,1] data with ``--buggy-scale``, the mistake ``gpudoc metrics-check``
finds. ``--nan-at STEP`` makes it diverge there, ``--hang-at STEP`` makes it hang there (a
stall), and ``--oom-at EPOCH`` ends it the way a CUDA out-of-memory error ends a PyTorch run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

import numpy as np


def writer(logdir: str | None) -> Any:
    """A tensorboardX writer (None without a log directory) that flushes every second."""
    if not logdir:
        return None
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]  # tensorboardX imports torch when it can
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir, flush_secs=1)


def image_metrics(pred: np.ndarray, target: np.ndarray, buggy_scale: bool) -> dict[str, float]:
    """MSE, MAE and PSNR of [0,1] values taken as 8-bit images; with ``buggy_scale`` computed
    on the [0,1] values while PSNR still uses peak 255."""
    scale = 1.0 if buggy_scale else 255.0
    diff = (pred - target) * scale
    mse = float(np.mean(diff**2))
    return {"mse": mse, "mae": float(np.mean(np.abs(diff))),
            "psnr": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--step-time", type=float, default=0.02, help="seconds per step")
    parser.add_argument("--oom-at", type=int, metavar="EPOCH", help="fail at this epoch with an out-of-memory error")
    parser.add_argument("--logdir", default=os.environ.get("GPUDOC_LOGDIR"),
                        help="write TensorBoard event files here (default: $GPUDOC_LOGDIR; none without it)")
    parser.add_argument("--buggy-scale", action="store_true",
                        help="log MSE/MAE of the [0,1] values with PSNR at peak 255 (the scale bug)")
    parser.add_argument("--nan-at", type=int, metavar="STEP", help="diverge at this global step (the loss turns NaN)")
    parser.add_argument("--hang-at", type=int, metavar="STEP", help="stop making progress at this global step")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x_val = rng.uniform(-1, 1, 256)
    y_val = 3 * x_val + 1 + rng.normal(0, 0.1, x_val.shape)
    log = writer(args.logdir)
    w, b, lr = 0.0, 0.0, 0.05
    step = 0
    for epoch in range(1, args.epochs + 1):
        if epoch == args.oom_at:
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB "
                  "total capacity; 21.90 GiB already allocated)", file=sys.stderr)
            return 1
        loss = 0.0
        for batch in range(1, args.steps + 1):
            step += 1
            while step == args.hang_at:
                time.sleep(1)
            if step == args.nan_at:
                w = math.nan
            x = rng.uniform(-1, 1)
            error = w * x + b - (3 * x + 1 + rng.normal(0, 0.1))
            w, b = w - lr * 2 * error * x, b - lr * 2 * error
            loss += error * error
            if log:
                log.add_scalar("train/loss", error * error, step)
            filled = 20 * batch // args.steps
            sys.stdout.write(f"\repoch {epoch:3d} |{'#' * filled}{'.' * (20 - filled)}| {batch}/{args.steps}")
            sys.stdout.flush()
            time.sleep(args.step_time)
        print(f"  loss {loss / args.steps:.4f}  w {w:.3f}  b {b:.3f}")
        if log:
            # y in [-2, 4] as pixel values in [0, 1].
            pred, target = np.clip((w * x_val + b + 2) / 6, 0, 1), np.clip((y_val + 2) / 6, 0, 1)
            for name, value in image_metrics(pred, target, args.buggy_scale).items():
                log.add_scalar(f"val/{name}", value, step)
            log.flush()
    if log:
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
