"""Draws a training loss curve (the trainer's loss.csv: step,value) as a PNG.

    python scripts/plot_loss.py runs/prior/loss.csv docs/prior_loss.png
"""
import csv
import sys

from PIL import Image, ImageDraw


def plot(csv_path, png_path, width=480, height=240, margin=40):
    with open(csv_path) as f:
        rows = [(float(r[0]), float(r[1])) for r in list(csv.reader(f))[1:] if r]
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    steps, values = zip(*rows)
    x0, x1, y0, y1 = 0, max(steps), 0, max(values) * 1.05
    sx = lambda s: margin + (s - x0) / (x1 - x0 or 1) * (width - 2 * margin)
    sy = lambda v: height - margin - (v - y0) / (y1 - y0 or 1) * (height - 2 * margin)
    d.line([(margin, margin), (margin, height - margin), (width - margin, height - margin)], fill="black")
    d.line([(sx(s), sy(v)) for s, v in rows], fill="blue", width=2)
    d.text((margin, 8), f"loss (mean of 50 steps), max {y1 / 1.05:.3f}", fill="black")
    d.text((width - margin - 60, height - margin + 8), f"step {int(x1)}", fill="black")
    d.text((4, height - margin - 6), "0", fill="black")
    img.save(png_path)


if __name__ == "__main__":
    plot(sys.argv[1], sys.argv[2])
