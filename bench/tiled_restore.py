"""Whole-image vs tiled prior calls on large photographs, in the same run.

    python bench/tiled_restore.py --build build [--sizes 512x512 1200x800] [--tiles 0 256 128]
        [--threads 2] [--out out/tiled]

A held-out photograph (scikit-image's astronaut, never trained on) resized to
each size, blurred (gaussian_deblur, σ = 0.01), then restored by UD2M with the
shipped prior and deblurring adapter at each --tile (0: the whole image at
once). Prints seconds, peak memory and PSNR per run and the speed-up of each
tiling over the whole image.
"""
import argparse
import pathlib
import re
import subprocess
import sys
import time

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import heldout  # noqa: E402


def run(cmd, threads):
    env = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    start = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "maxrss %M", *map(str, cmd)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}{r.stderr}")
    return time.time() - start, r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--sizes", nargs="+", default=["512x512", "1200x800"])
    ap.add_argument("--tiles", nargs="+", type=int, default=[0, 256, 128])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/tiled")
    args = ap.parse_args()
    binary = pathlib.Path(args.build).resolve() / "ud2m"
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photo = next(p for p in heldout.photographs() if "astronaut" in p)
    models = ROOT / "models"
    print(f"{'size':>10} {'tile':>5} {'seconds':>8} {'MiB':>6} {'PSNR':>6} {'speed-up':>8}")
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        clean = out / f"clean_{size}.png"
        Image.open(photo).convert("RGB").resize((w, h), Image.BICUBIC).save(clean)
        y = out / f"y_{size}.png"
        run([binary, "degrade", "--task", "gaussian_deblur", "--sigma", "0.01", clean, y], args.threads)
        whole = None
        for tile in args.tiles:
            seconds, log = run([binary, "restore", "-m", y, "--method", "ud2m",
                                "--model", models / "ud2m-small-64.safetensors",
                                "--adapter", models / "ud2m-small-64-deblur.adapter.safetensors",
                                "--tile", tile, "--reference", clean, "--out", out / f"x_{size}_{tile}.png"],
                               args.threads)
            psnr = float(re.search(r"PSNR ([0-9.]+) dB", log).group(1))
            mib = int(re.search(r"maxrss (\d+)", log).group(1)) / 1024
            whole = seconds if tile == 0 else whole
            ratio = f"{whole / seconds:.2f}x" if whole else "-"
            print(f"{size:>10} {tile:>5} {seconds:8.1f} {mib:6.0f} {psnr:6.2f} {ratio:>8}", flush=True)


if __name__ == "__main__":
    main()
