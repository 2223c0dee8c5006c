"""The generation table: few-step NCVSD students vs their teacher prior with
many DDIM steps, by a feature-space distance to real photographs.

    python bench/generation_table.py --build build --out out/generation \
        [--count 64] [--methods ddim10 ddim50 ddim250 ncvsd1 ncvsd2 ncvsd4 real] \
        [--prior models/ud2m-small-64.safetensors] \
        [--generator models/ud2m-small-64-ncvsd.generator.safetensors] \
        [--seed 0] [--real-seed 0] [--figure docs/generation_samples.png]

A method "ncvsd@0,8,16,24,39" samples NCVSD on those levels of the 40-level
grid (`sample --indices`) instead of a published set: to choose levels, run
with other --seed and --real-seed (a tuning set) than the table's, then report
the choice on the table's own seeds.

No Inception weights can be had here, so FID/KID are computed on a stand-in
feature space: `ud2m eval --unpaired --feature-prior PRIOR` (per-channel mean
and std of the shipped prior's encoder activations on the clean image, 960
dimensions), named FD-prior and KID-prior. The real set is random 64² crops of
the prior's own training photographs at the trainer's scales (short side
64·2^k, k = 0..3), the distribution the teacher was fitted to. The row "real"
is a second, independent set of real crops: the floor of the metric at this
image count. With fewer images than feature dimensions the Fréchet distance is
biased, so compare rows only at equal --count; KID is unbiased.

--figure draws the first eight samples of each of --figure-rows (folders in
OUT from this or an earlier run; "reference" is the real set) as one picture.

Everything goes through the `ud2m` binary (`sample --out-dir`, `eval`); seconds
per image are the binary's own timing of the sampling (model load excluded).
Writes OUT/generation.json and OUT/generation.md; a later run into the same OUT
replaces only the rows it recomputes.
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw

ROOT = pathlib.Path(__file__).resolve().parent.parent
METHODS = {  # name -> (method, steps)
    "ddim10": ("ddim", 10), "ddim50": ("ddim", 50), "ddim250": ("ddim", 250),
    "ncvsd1": ("ncvsd", 1), "ncvsd2": ("ncvsd", 2), "ncvsd4": ("ncvsd", 4),
}
LABELS = {"ddim10": "teacher, DDIM 10", "ddim50": "teacher, DDIM 50", "ddim250": "teacher, DDIM 250",
          "ncvsd1": "NCVSD, 1 step", "ncvsd2": "NCVSD, 2 steps", "ncvsd4": "NCVSD, 4 steps",
          "real": "real photos (a 2nd set)"}


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}{r.stderr}")
    return r.stdout + r.stderr


def training_photos():
    lines = (ROOT / "data" / "prior_train.txt").read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


def write_real_crops(out_dir, count, size, seed):
    """Random crops at the prior trainer's scales, with a fixed seed."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = training_photos()
    for i in range(count):
        img = Image.open(photos[rng.integers(len(photos))]).convert("RGB")
        short = size * 2 ** int(rng.integers(4))
        scale = short / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
        y, x = rng.integers(img.height - size + 1), rng.integers(img.width - size + 1)
        crop = img.crop((x, y, x + size, y + size))
        if rng.integers(2):
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(out / f"{i:05d}.png")


def sampling_command(name, a):
    """(ud2m sample arguments, NFE) for a method name."""
    if name.startswith("ncvsd@"):
        indices = name.split("@", 1)[1]
        return ["--method", "ncvsd", "--model", a.generator, "--indices", indices], len(indices.split(",")) - 1
    if name not in METHODS:
        sys.exit(f"unknown method '{name}': one of {', '.join(METHODS)}, real, or ncvsd@i0,i1,...")
    method, steps = METHODS[name]
    model = a.prior if method == "ddim" else a.generator
    return ["--method", method, "--model", model, "--steps", steps], steps


def label(name):
    if name == "reference":
        return "real photos"
    return LABELS.get(name, name.replace("ncvsd@", "NCVSD, levels "))


def draw_figure(out, rows, path, per_row=8, size=64, gap=4, label_width=170):
    """The first `per_row` samples of each row's folder, labelled."""
    picture = Image.new("RGB", (label_width + per_row * (size + gap), len(rows) * (size + gap)), "white")
    draw = ImageDraw.Draw(picture)
    for r, name in enumerate(rows):
        files = sorted((out / name).glob("*.png"))[:per_row]
        if not files:
            sys.exit(f"--figure: no samples in {out / name} (run that method first)")
        top = r * (size + gap)
        draw.text((4, top + size // 2 - 6), label(name), fill="black")
        for i, file in enumerate(files):
            picture.paste(Image.open(file).convert("RGB").resize((size, size)), (label_width + i * (size + gap), top))
    picture.save(path)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--out", default=str(ROOT / "out" / "generation"))
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--methods", nargs="+", default=list(METHODS) + ["real"])
    ap.add_argument("--prior", default=str(ROOT / "models" / "ud2m-small-64.safetensors"))
    ap.add_argument("--generator", default=str(ROOT / "models" / "ud2m-small-64-ncvsd.generator.safetensors"))
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--figure", help="also draw the samples of --figure-rows into this PNG")
    ap.add_argument("--figure-rows", nargs="+",
                    default=["reference", "ddim250", "ddim10", "ncvsd@0,10,20,30,39", "ncvsd4", "ncvsd2", "ncvsd1"])
    ap.add_argument("--real-seed", type=int, default=0,
                    help="seed of the reference crops; the 'real' row's set uses the next one")
    a = ap.parse_args()
    ud2m = pathlib.Path(a.build) / "ud2m"
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    real = out / "reference"
    if not real.exists():
        write_real_crops(real, a.count, a.size, seed=a.real_seed)

    table_path = out / "generation.json"
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    for name in a.methods:
        folder = out / name
        seconds = None
        if name == "real":  # a second real set: the metric's floor
            write_real_crops(folder, a.count, a.size, seed=a.real_seed + 1)
            nfe = 0
        else:
            arguments, nfe = sampling_command(name, a)
            log = run([ud2m, "sample", *arguments, "--n", a.count, "--size", a.size, "--seed", a.seed,
                       "--out-dir", folder, out / f"{name}.png"])
            seconds = float(re.search(r"\(([\d.]+) s per sample\)", log).group(1))
        report = out / f"{name}.eval.json"
        run([ud2m, "eval", "--unpaired", "--ref", real, "--pred", folder, "--feature-prior", a.prior,
             "--json", report])
        r = json.loads(report.read_text())
        table[name] = {"nfe": nfe, "seconds_per_image": seconds, "fd_prior": r["fd_prior"],
                       "kid_prior": r["kid_prior"]["mean"], "count": a.count}
        print(f"{name}: FD-prior {r['fd_prior']:.3f}  KID-prior {r['kid_prior']['mean']:.5f}", flush=True)
        table_path.write_text(json.dumps(table, indent=2) + "\n")

    chosen_levels = sorted((m for m in table if m.startswith("ncvsd@")),
                           key=lambda m: (table[m]["nfe"], [int(i) for i in m[len("ncvsd@"):].split(",")]))
    order = [m for m in list(METHODS) + ["real"] if m in table] + chosen_levels
    lines = ["| sampler | NFE | FD-prior ↓ | KID-prior ↓ | s / image |", "|---|---|---|---|---|"]
    for name in order:
        row = table[name]
        seconds = "–" if row["seconds_per_image"] is None else f"{row['seconds_per_image']:.2f}"
        lines.append(f"| {label(name)} | {row['nfe']} | {row['fd_prior']:.2f} | {row['kid_prior']:.4f} | {seconds} |")
    (out / "generation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if a.figure:
        draw_figure(out, a.figure_rows, a.figure)


if __name__ == "__main__":
    main()
