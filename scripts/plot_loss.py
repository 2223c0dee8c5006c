"""Draws a training curve (a trainer's CSV: step,value, e.g. loss.csv or validation.csv) as a PNG.

    python scripts/plot_loss.py runs/prior/loss.csv docs/prior_loss.png
"""
import csv
import sys

from PIL import Image, ImageDraw


def plot(csv_path, png_path, width=480, height=240, margin=40):
    with open(csv_path) as f:
        table = list(csv.reader(f))
    name = table[0][1]
    rows = [(float(r[0]), float(r[1])) for r in table[1:] if r]
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    steps, values = zip(*rows)
    # Losses from zero; other curves (validation PSNR) over their own range.
    low = 0 if "loss" in name else min(values) - 0.05 * (max(values) - min(values))
    x0, x1, y0, y1 = 0, max(steps), low, max(values) + 0.05 * (max(values) - low)
    sx = lambda s: margin + (s - x0) / (x1 - x0 or 1) * (width - 2 * margin)
    sy = lambda v: height - margin - (v - y0) / (y1 - y0 or 1) * (height - 2 * margin)
    d.line([(margin, margin), (margin, height - margin), (width - margin, height - margin)], fill="black")
    d.line([(sx(s), sy(v)) for s, v in rows], fill="blue", width=2)
    d.text((margin, 8), f"{name}: {values[0]:.4g} at step {int(steps[0])}, {values[-1]:.4g} at step {int(steps[-1])}",
           fill="black")
    d.text((width - margin - 60, height - margin + 8), f"step {int(x1)}", fill="black")
    d.text((4, height - margin - 6), f"{y0:.3g}", fill="black")
    img.save(png_path)


if __name__ == "__main__":
    plot(sys.argv[1], sys.argv[2])
