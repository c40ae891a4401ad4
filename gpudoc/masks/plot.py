"""A PNG chart of a sweep (Dice and IoU against the threshold), drawn with Pillow."""

from __future__ import annotations

from pathlib import Path

from gpudoc.masks.sweep import SweepResult
from gpudoc.output import atomic_file

WIDTH, HEIGHT, MARGIN = 720, 420, 50
COLOURS = {"dice": (31, 119, 180), "iou": (255, 127, 14), "best": (214, 39, 40), "axis": (60, 60, 60)}


def write_plot(result: SweepResult, dest: Path | str) -> None:
    """Write the chart to ``dest`` (atomically)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN, 20, WIDTH - 20, HEIGHT - MARGIN

    def at(t: float, score: float) -> tuple[float, float]:
        return left + t * (right - left), bottom - score * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline=COLOURS["axis"])
    for tick in range(0, 11, 2):
        x, y = at(tick / 10, tick / 10)
        draw.line((x, bottom, x, bottom + 4), fill=COLOURS["axis"])
        draw.text((x - 8, bottom + 8), f"{tick / 10:.1f}", fill=COLOURS["axis"])
        draw.line((left - 4, y, left, y), fill=COLOURS["axis"])
        draw.text((left - 30, y - 6), f"{tick / 10:.1f}", fill=COLOURS["axis"])
    for metric in ("dice", "iou"):
        points = [at(r.threshold, getattr(r, metric)) for r in result.rows]
        draw.line(points, fill=COLOURS[metric], width=2)
    x, y = at(result.best_threshold, result.best_score)
    draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=COLOURS["best"], width=2)
    draw.text((left + 8, top + 6), "Dice", fill=COLOURS["dice"])
    draw.text((left + 48, top + 6), "IoU", fill=COLOURS["iou"])
    draw.text((left + 88, top + 6), f"best {result.metric} {result.best_score:.3f} at t={result.best_threshold:g}",
              fill=COLOURS["best"])
    draw.text(((left + right) // 2 - 30, HEIGHT - 20), "threshold", fill=COLOURS["axis"])
    with atomic_file(dest) as out:
        image.save(out, format="PNG")
