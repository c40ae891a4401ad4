"""A PyTorch denoising autoencoder on synthetic images, CPU only (torch; tensorboardX for event files):

    gpudoc run --logdir runs/denoise -- python examples/train_denoise.py
    gpudoc run --strict --logdir runs/denoise -- python examples/train_denoise.py --buggy-scale   # exit 1

It learns to remove Gaussian noise from random smooth gray images held as [0,1] floats, and
each epoch logs ``train/loss`` and the validation ``val/mae``, ``val/mse``, ``val/psnr`` and
``val/ssim`` computed by ``gpudoc.metrics.image_metrics`` on the 8-bit scale: prediction and
target converted back to [0,255] first, with ``data_range=255``. ``--buggy-scale`` makes the
common mistake instead — the [0,1] tensors passed with ``data_range=255`` — which the
metric-scale checks of ``gpudoc run`` and ``gpudoc metrics-check`` catch. Event files go to
``--logdir`` (default: ``$GPUDOC_LOGDIR``, which ``gpudoc run --logdir`` sets).
"""

from __future__ import annotations

import argparse
import os

import torch
from tensorboardX import SummaryWriter
from torch import nn

from gpudoc.metrics import image_metrics


def images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` smooth gray images (N, 1, size, size) in [0, 1]: sums of a few random blobs."""
    axis = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    centres = torch.rand(count, 4, 2, generator=generator)
    widths = 0.05 + 0.2 * torch.rand(count, 4, 1, 1, generator=generator)
    heights = torch.rand(count, 4, 1, 1, generator=generator)
    d2 = (xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2
    blobs = (heights * torch.exp(-d2 / (2 * widths**2))).sum(dim=1, keepdim=True)
    return (blobs / blobs.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)).clamp(0, 1)


def model(width: int) -> nn.Module:
    """A small convolutional encoder-decoder that ends in a sigmoid (outputs in [0, 1])."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(width, 1, 3, padding=1), nn.Sigmoid(),
    )


def validation_metrics(pred: torch.Tensor, target: torch.Tensor, buggy_scale: bool) -> dict[str, float]:
    """MAE, MSE, PSNR and SSIM (where the images are large enough) of [0,1] images on the
    8-bit scale; with ``buggy_scale`` of the [0,1] values at ``data_range=255`` (the bug)."""
    if not buggy_scale:
        pred, target = pred * 255, target * 255
    metrics = image_metrics(pred, target, data_range=255)
    return {name: metrics[name].mean for name in ("mae", "mse", "psnr", "ssim") if name in metrics}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (SSIM needs at least 11)")
    parser.add_argument("--images", type=int, default=512, help="training images (a quarter as many to validate)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=16, help="channels of the hidden layers")
    parser.add_argument("--noise", type=float, default=0.1, help="standard deviation of the added noise")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--logdir", default=os.environ.get("GPUDOC_LOGDIR"),
                        help="write TensorBoard event files here (default: $GPUDOC_LOGDIR; none without it)")
    parser.add_argument("--buggy-scale", action="store_true",
                        help="compute the metrics on the [0,1] tensors with data_range=255 (the scale bug)")
    args = parser.parse_args()
    if args.size < 4 or args.size % 2:
        parser.error("--size must be an even number of at least 4")
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    clean = images(args.images, args.size, generator)
    val_clean = images(max(args.images // 4, 1), args.size, generator)
    val_noisy = (val_clean + args.noise * torch.randn(val_clean.shape, generator=generator)).clamp(0, 1)
    net = model(args.width)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    log = SummaryWriter(args.logdir, flush_secs=1) if args.logdir else None
    step = 0
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(clean), generator=generator)
        total = 0.0
        for start in range(0, len(clean), args.batch):
            target = clean[order[start:start + args.batch]]
            noisy = (target + args.noise * torch.randn(target.shape, generator=generator)).clamp(0, 1)
            loss = nn.functional.mse_loss(net(noisy), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            total += loss.item() * len(target)
            if log:
                log.add_scalar("train/loss", loss.item(), step)
        net.eval()
        with torch.no_grad():
            metrics = validation_metrics(net(val_noisy), val_clean, args.buggy_scale)
        shown = "  ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        print(f"epoch {epoch}/{args.epochs}  loss {total / len(clean):.5f}  {shown}", flush=True)
        if log:
            for name, value in metrics.items():
                log.add_scalar(f"val/{name}", value, step)
            log.flush()
    if log:
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
