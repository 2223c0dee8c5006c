"""PSNR up to phase retrieval's twin: an image and its 180° rotation (within
the unpadded support) have the same Fourier magnitudes, so no method can tell
them apart from the measurement. Prints, per restoration folder, the mean PSNR
against the reference, the mean of max(PSNR vs reference, PSNR vs its
rotation), and how many restorations are closer to the rotation by more than
0.5 dB (a blend of both, as TV's symmetric iterates give, is close to both).

    python bench/twin_psnr.py CLEAN_DIR RESTORED_DIR [RESTORED_DIR ...]

Files are matched by name (the PNGs `bench/results_table.py` writes).
"""
import pathlib
import sys

import numpy as np
from PIL import Image


def psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a - b) ** 2))


def load(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    clean = pathlib.Path(sys.argv[1])
    for folder in map(pathlib.Path, sys.argv[2:]):
        plain, up_to_twin = [], []
        for ref in sorted(clean.glob("*.png")):
            truth, restored = load(ref), load(folder / ref.name)
            plain.append(psnr(restored, truth))
            up_to_twin.append(max(plain[-1], psnr(restored, truth[::-1, ::-1])))
        twins = sum(t > p + 0.5 for t, p in zip(up_to_twin, plain))
        print(f"{folder}: PSNR {np.mean(plain):.2f} dB, up to the twin {np.mean(up_to_twin):.2f} dB "
              f"({twins} of {len(plain)} closer to the twin)")


if __name__ == "__main__":
    main()
