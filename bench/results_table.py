"""The restoration results table: task × method → PSNR / SSIM (/ LPIPS) / NFE /
seconds per image, on the held-out crops (bench/heldout.py), with the shipped
prior, every method at its published default NFE. `measurement` scores y itself
(tasks whose measurement is an image: JPEG's decoded file). `ud2m-init` is UD2M with
an adapter trained with a learned initialiser (`train --learned-init true`,
the paper's "w/ RAM" variant: N·(K+1) = 12 NFE).

    python bench/results_table.py --build build --out out/results \
        [--count 12] [--tasks gaussian_deblur sr inpainting_random] \
        [--methods measurement tv ddrm diffpir latino dps ud2m ud2m-init pnp-ncvsd] [--adapter ADAPTER] \
        [--init-adapter ADAPTER] [--generator G] \
        [--slow-count 4] [--sigma 0.01] [--oversampling 4] [--lpips-weights TRUNK HEADS] [--samples 1] \
        [--estimate mean|best-fit] [--ud2m-steps N] [--ud2m-blocks K] [--tasks matrix --matrix A.safetensors]

Everything goes through the `ud2m` binary: `degrade` writes exact (float)
measurements, `restore` restores the folder, `eval` scores it. Seconds per
image are wall time of the `restore` call divided by its images (one process,
all cores; model loading included). DPS (1000 NFE, with a backward pass each)
runs on the first --slow-count crops only, which the table says. Writes
OUT/results.json and OUT/results.md; a later run into the same OUT replaces
only the (task, method) rows it recomputes. --samples N scores each method's
mean of N posterior samples (`restore --samples N`; N times the NFE), or
with --estimate best-fit the sample that fits the data best (phase
retrieval's published best of 4, judged by the data).
--ud2m-steps N --ud2m-blocks K (together) run UD2M and ud2m-init with N
sampling steps and K unrolled blocks instead of the adapter's; such rows are
labelled with their N and K and kept apart from the default ones.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import heldout  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Published default NFE per method (TV: iterations, no network; UD2M's rows
# take theirs from `restore`'s report).
NFE = {"measurement": 0, "tv": 0, "ddrm": 20, "diffpir": 100, "latino": 8, "dps": 1000, "ud2m": 9, "ud2m-init": 12,
       "pnp-ncvsd": 49}
SLOW = {"dps"}


def run(cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}{r.stderr}")
    return r.stdout + r.stderr


def degrade_all(binary, clean, out, task, sigma, oversampling, matrix, suffix=".safetensors"):
    out.mkdir(parents=True, exist_ok=True)
    extra = ["--oversampling", oversampling] if "phase_retrieval" in task else []
    if task == "matrix":  # a user's own operator
        extra = ["--matrix", pathlib.Path(matrix).resolve()]
    for i, image in enumerate(sorted(clean.glob("*.png"))):
        run([binary, "degrade", "--task", task, "--sigma", sigma, "--seed", i, *extra, image,
             out / (image.stem + suffix)])


def unroll(args, method):
    """The (N, K) a UD2M method runs at instead of its adapter's, or None."""
    return (args.ud2m_steps, args.ud2m_blocks) if method.startswith("ud2m") and args.ud2m_steps else None


def restore_and_score(args, binary, clean, measurements, out, task, method):
    pred = out / "restored"
    if method == "measurement":
        # No restoration: y itself, for tasks whose measurement is an image
        # (JPEG: the decoded file). Same seeds, so the same y, as 8-bit PNGs.
        start = time.time()
        degrade_all(binary, clean, pred, task, args.sigma, args.oversampling, args.matrix, suffix=".png")
        return score(args, binary, clean, measurements, out, task, method, time.time() - start)
    cmd = [binary, "restore", "-m", measurements, "--method", "ud2m" if method == "ud2m-init" else method,
           "--out", pred, "--seed", 0, "--samples", args.samples, "--estimate", args.estimate]
    if method == "pnp-ncvsd":
        cmd += ["--model", args.generator]
    elif method != "tv":
        cmd += ["--model", args.model]
    if method == "ud2m":
        cmd += ["--adapter", args.adapter]
    if method == "ud2m-init":
        cmd += ["--adapter", args.init_adapter]
    if unroll(args, method):
        steps, blocks = unroll(args, method)
        cmd += ["--steps", steps, "--blocks", blocks]
    start = time.time()
    run(cmd)
    return score(args, binary, clean, measurements, out, task, method, time.time() - start)


def score(args, binary, clean, measurements, out, task, method, seconds):
    pred = out / "restored"
    n = len(list(measurements.glob("*.safetensors")))
    ev = [binary, "eval", "--ref", clean, "--pred", pred, "--json", out / "eval.json"]
    if args.lpips_weights:
        ev += ["--lpips-weights", *args.lpips_weights]
    run(ev)
    scores = json.loads((out / "eval.json").read_text())
    row = {"task": task, "method": method, "sigma": float(args.sigma), "images": n,
           "nfe": nfe_per_sample(pred, method) * args.samples, "samples": args.samples,
           "seconds_per_image": seconds / n, **{k: scores["mean"][k] for k in scores["mean"]}}
    if unroll(args, method):
        row["variant"] = "N={}, K={}".format(*unroll(args, method))
    if args.estimate != "mean" and args.samples > 1:
        row["estimate"] = args.estimate
    return row


def nfe_per_sample(pred, method):
    """UD2M's NFE is its adapter's N × K (N × (K+1) with an initialiser), as `restore` reports it."""
    if method.startswith("ud2m"):
        return json.loads(next(pred.glob("*.json")).read_text())["settings"]["nfe"]
    return NFE[method]


def subset(src, dst, count):
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob("*"))[: count * 2]:
        if int(p.stem) < count:
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def panel(out, task, methods, index="000", scale=2):
    """One held-out crop of `task`, restored by each method, beside the truth."""
    from PIL import Image, ImageDraw
    tiles = [("truth", out / "clean" / f"{index}.png")]
    tiles = [(m, out / task / m / "restored" / f"{index}.png") for m in methods] + tiles
    tiles = [(name, path) for name, path in tiles if path.exists()]
    size = 64 * scale
    img = Image.new("RGB", (size * len(tiles), size + 14), "white")
    draw = ImageDraw.Draw(img)
    for i, (name, path) in enumerate(tiles):
        img.paste(Image.open(path).convert("RGB").resize((size, size), Image.NEAREST), (i * size, 14))
        draw.text((i * size + 2, 1), name, fill="black")
    img.save(out / f"panel_{task}.png")


def markdown(rows, lpips):
    head = "| task | σ | method | NFE | PSNR | SSIM |" + (" LPIPS |" if lpips else "") + " s/image | images |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        nfe = str(r["nfe"]) if r["nfe"] else "— (TV)" if r["method"] == "tv" else "—"
        method = r["method"] + (f" ({r['variant']})" if "variant" in r else "") + \
            (f" ({'best fit' if r.get('estimate') == 'best-fit' else 'mean'} of {r['samples']})"
             if r.get("samples", 1) > 1 else "")
        cells = [r["task"], f"{r.get('sigma', 0.01):g}", method, nfe,
                 f"{r['psnr']:.2f}", f"{r['ssim']:.3f}"]
        if lpips:
            cells.append(f"{r['lpips']:.3f}")
        cells += [f"{r['seconds_per_image']:.2f}", str(r["images"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default="out/results")
    ap.add_argument("--model", default=str(ROOT / "models" / "ud2m-small-64.safetensors"))
    ap.add_argument("--adapter", help="UD2M adapter (needed for the ud2m method)")
    ap.add_argument("--init-adapter", help="UD2M adapter with a learned initialiser (for ud2m-init)")
    ap.add_argument("--generator", help="NCVSD generator (needed for the pnp-ncvsd method)")
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--samples", type=int, default=1,
                    help="posterior samples per image; each method's output is their mean (or see --estimate)")
    ap.add_argument("--estimate", default="mean", choices=["mean", "best-fit"],
                    help="with several samples: their mean, or the one whose A(x) is closest to y")
    ap.add_argument("--ud2m-steps", type=int, help="UD2M sampling steps N (default: the adapter's)")
    ap.add_argument("--ud2m-blocks", type=int, help="UD2M unrolled blocks K (default: the adapter's)")
    ap.add_argument("--slow-count", type=int, default=4)
    ap.add_argument("--sigma", default="0.01")
    ap.add_argument("--oversampling", default="4", help="phase retrieval (the published protocol: 4)")
    ap.add_argument("--tasks", nargs="+", default=["gaussian_deblur", "sr", "inpainting_random"])
    ap.add_argument("--methods", nargs="+", default=["tv", "ddrm", "diffpir", "latino", "dps", "ud2m"])
    ap.add_argument("--lpips-weights", nargs=2, metavar=("TRUNK", "HEADS"))
    ap.add_argument("--matrix", help="the operator of the matrix task (a file `degrade --task matrix` takes)")
    ap.add_argument("--images", default=str(heldout.TEST_IMAGES),
                    help="photographs to crop (default the held-out test set; data/val_images.txt to decide on "
                         "something without looking at it)")
    args = ap.parse_args()
    if "ud2m" in args.methods and not args.adapter:
        ap.error("the ud2m method needs --adapter")
    if "ud2m-init" in args.methods and not args.init_adapter:
        ap.error("the ud2m-init method needs --init-adapter")
    if (args.ud2m_steps is None) != (args.ud2m_blocks is None):
        ap.error("--ud2m-steps and --ud2m-blocks go together")
    if "pnp-ncvsd" in args.methods and not args.generator:
        ap.error("the pnp-ncvsd method needs --generator")
    if "matrix" in args.tasks and not args.matrix:
        ap.error("the matrix task needs --matrix")
    binary = pathlib.Path(args.build).resolve() / "ud2m"
    out = pathlib.Path(args.out)
    clean = out / "clean"
    heldout.write_heldout(clean, 64, args.count, args.images)
    rows = []
    for task in args.tasks:
        measurements = out / task / "measurements"
        degrade_all(binary, clean, measurements, task, args.sigma, args.oversampling, args.matrix)
        for method in args.methods:
            m, c = measurements, clean
            if method in SLOW and args.slow_count < args.count:
                m = subset(measurements, out / task / f"measurements_{args.slow_count}", args.slow_count)
                c = subset(clean, out / f"clean_{args.slow_count}", args.slow_count)
            row = restore_and_score(args, binary, c, m, out / task / method, task, method)
            rows.append(row)
            print(f"{task:18s} {method:8s} PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  "
                  f"{row['seconds_per_image']:.2f} s/image  ({row['images']} images)", flush=True)
    # Rows of earlier runs into the same folder stay unless this run redid them
    # (a method's means of N samples, and UD2M at another N and K, are rows of their own).
    def key(r):
        return r["task"], r["method"], r.get("samples", 1), r.get("variant", ""), r.get("estimate", "mean")
    done = {key(r) for r in rows}
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else []
    rows = [r for r in previous if key(r) not in done] + rows
    order = {m: i for i, m in enumerate(NFE)}
    rows.sort(key=lambda r: (r["task"], order.get(r["method"], 99), r.get("variant", ""), r.get("samples", 1)))
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    for task in args.tasks:
        panel(out, task, list(NFE))
    table = markdown(rows, bool(args.lpips_weights))
    (out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
