"""PyTorch segmentation of synthetic shapes with DataLoader workers, CPU only (torch; tensorboardX):

    gpudoc run --logdir runs/segment -- python examples/train_segment.py

A small fully convolutional network learns to mark the discs and rectangles drawn on noisy
images. The images are made in ``--workers`` DataLoader worker processes (``num_workers > 0``,
as real input pipelines do; ``gpudoc run`` reports any that outlive the run). Each epoch it logs
``train/loss`` and, on the validation images, ``val/dice`` and ``val/iou`` at threshold 0.5
with the ``ge`` rule, and the best threshold for Dice over a grid of 101 from
``gpudoc.masks.sweep`` (``val/best_threshold``, ``val/best_dice``). Event files go to
``--logdir`` (default: ``$GPUDOC_LOGDIR``, which ``gpudoc run --logdir`` sets).
"""

from __future__ import annotations

import argparse
import os

import torch
from tensorboardX import SummaryWriter
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gpudoc.masks import sweep


class Shapes(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Image ``i`` (1, size, size) and its 0/1 mask: a disc or a rectangle of random size and
    brightness on a noisy background, the same for the same ``seed`` and ``i`` in any worker."""

    def __init__(self, count: int, size: int, seed: int) -> None:
        self.count, self.size, self.seed = count, size, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        axis = torch.arange(self.size, dtype=torch.float32)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        cy, cx = (torch.rand(2, generator=g) * 0.6 + 0.2) * self.size
        r = (torch.rand(1, generator=g) * 0.2 + 0.1) * self.size
        if torch.rand(1, generator=g) < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        else:
            mask = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r * 0.7)
        brightness = 0.4 + 0.4 * torch.rand(1, generator=g)
        image = 0.2 + brightness * mask + 0.15 * torch.randn(self.size, self.size, generator=g)
        return image.clamp(0, 1)[None], mask.float()[None]


def announce(worker: int) -> None:
    """Says which process a training worker is (the run's output names every process it starts)."""
    # One write: two workers printing at once (unbuffered under gpudoc run) would interleave
    # print's text and its newline into one line.
    os.write(1, f"DataLoader worker {worker}: PID {os.getpid()}\n".encode())


def model(width: int) -> nn.Module:
    """A few 3x3 convolutions (one dilated, for context) ending in one logit per pixel."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 1, 1),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--images", type=int, default=512, help="training images (a quarter as many to validate)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=16, help="channels of the hidden layers")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--logdir", default=os.environ.get("GPUDOC_LOGDIR"),
                        help="write TensorBoard event files here (default: $GPUDOC_LOGDIR; none without it)")
    args = parser.parse_args()
    if args.size < 8:
        parser.error("--size must be at least 8")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = DataLoader(Shapes(args.images, args.size, seed=1), batch_size=args.batch, shuffle=True,
                       num_workers=args.workers, persistent_workers=args.workers > 0, worker_init_fn=announce)
    val = DataLoader(Shapes(max(args.images // 4, 1), args.size, seed=2), batch_size=args.batch,
                     num_workers=args.workers)
    net = model(args.width)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    log = SummaryWriter(args.logdir, flush_secs=1) if args.logdir else None
    step = 0
    for epoch in range(1, args.epochs + 1):
        net.train()
        total, seen = 0.0, 0
        for image, mask in train:
            loss = nn.functional.binary_cross_entropy_with_logits(net(image), mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            total, seen = total + loss.item() * len(image), seen + len(image)
            if log:
                log.add_scalar("train/loss", loss.item(), step)
        net.eval()
        with torch.no_grad():
            pairs = [(torch.sigmoid(net(image)), mask) for image, mask in val]
        probs = torch.cat([p for p, _ in pairs])[:, 0]
        truth = torch.cat([m for _, m in pairs])[:, 0].to(torch.uint8)
        result = sweep(probs, truth, 101, metric="dice", rule="ge")
        at_half = next(row for row in result.rows if row.threshold == 0.5)
        metrics = {"dice": at_half.dice, "iou": at_half.iou,
                   "best_threshold": result.best_threshold, "best_dice": result.best_score}
        shown = "  ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        print(f"epoch {epoch}/{args.epochs}  loss {total / seen:.4f}  {shown}", flush=True)
        if log:
            for name, value in metrics.items():
                log.add_scalar(f"val/{name}", value, step)
            log.flush()
    if log:
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
