"""Deterministic crops of the held-out photographs (data/test_images.txt,
scikit-image's natural photographs, never trained on) for benchmarks.

    python bench/heldout.py OUT_DIR [--size 64] [--count 20] [--images data/val_images.txt]

Each photograph is downscaled so its short side is 2·size (the prior was
trained on multi-scale crops of this kind), then crops are taken on a fixed
grid, round-robin over the photographs, until `count` are written.
"""
import argparse
import pathlib

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent


TEST_IMAGES = ROOT / "data" / "test_images.txt"


def photographs(images=TEST_IMAGES):
    lines = pathlib.Path(images).read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


def crops(path, size):
    img = Image.open(path).convert("RGB")
    scale = 2 * size / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    a = np.asarray(img)
    h, w = a.shape[:2]
    # corners of a 2×2 grid centred in the image
    for oy in (h // 2 - size, h // 2):
        for ox in (w // 2 - size, w // 2):
            yield a[oy:oy + size, ox:ox + size]


def write_heldout(out_dir, size=64, count=20, images=TEST_IMAGES):
    """Crops of the photographs listed in `images` (the validation list
    data/val_images.txt gives crops to decide things on without the test set)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generators = [crops(p, size) for p in photographs(images)]
    written = []
    while len(written) < count and generators:
        for g in list(generators):
            crop = next(g, None)
            if crop is None:
                generators.remove(g)
                continue
            path = out / f"{len(written):03d}.png"
            Image.fromarray(crop).save(path)
            written.append(path)
            if len(written) == count:
                break
    return written


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--images", default=str(TEST_IMAGES), help="a list of photographs")
    a = ap.parse_args()
    print("\n".join(str(p) for p in write_heldout(a.out_dir, a.size, a.count, a.images)))
