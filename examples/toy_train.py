"""A small training loop to watch in the monitor, CPU only:

    gpudoc tui --demo -- python examples/toy_train.py --epochs 30

It fits y = 3x + 1 by gradient descent, draws a progress bar per epoch (redrawn with
carriage returns, as tqdm does) and prints the loss. ``--oom-at EPOCH`` ends it the way a
CUDA out-of-memory error ends a PyTorch run, to see how the monitor reports one.
"""

from __future__ import annotations

import argparse
import random
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--step-time", type=float, default=0.02, help="seconds per step")
    parser.add_argument("--oom-at", type=int, help="fail at this epoch with an out-of-memory error")
    args = parser.parse_args()
    rng = random.Random(0)
    w, b, lr = 0.0, 0.0, 0.05
    for epoch in range(1, args.epochs + 1):
        if epoch == args.oom_at:
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB "
                  "total capacity; 21.90 GiB already allocated)", file=sys.stderr)
            return 1
        loss = 0.0
        for step in range(1, args.steps + 1):
            x = rng.uniform(-1, 1)
            error = w * x + b - (3 * x + 1)
            w, b = w - lr * 2 * error * x, b - lr * 2 * error
            loss += error * error
            filled = 20 * step // args.steps
            sys.stdout.write(f"\repoch {epoch:3d} |{'#' * filled}{'.' * (20 - filled)}| {step}/{args.steps}")
            sys.stdout.flush()
            time.sleep(args.step_time)
        print(f"  loss {loss / args.steps:.4f}  w {w:.3f}  b {b:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
