"""ud2m's zero-shot samplers vs deepinv's on the same prior weights, operator,
measurements and held-out images: mean PSNR of each, and the gap.

    python bench/zero_shot_agreement.py --build build --model PRIOR.safetensors \
        [--images 20] [--size 64] [--task gaussian_deblur] [--sigma 0.05] \
        [--methods diffpir,ddrm,dps] [--dps-steps 100] [--deepinv-dps-step chung|sde]
        [--ud2m-adapter ADAPTER] [--out bench_out/agreement]

The measurements are made once by `ud2m degrade` (exact float values in
.safetensors); deepinv reads the same values and the same blur kernel. The
deepinv network is the ADM assembled from deepinv's own DiffUNet blocks
(tests/python/gen_adm.py) carrying the prior's weights. Each side uses its own
random numbers, so single images differ; the claim is about the mean.

DPS: deepinv puts the guidance ∇‖y − A(x̂0)‖ into the score of its reverse SDE,
so its ancestral solver moves x by s_t s_t' (σ_t² − σ_t'²)·(weight/2)·∇ per step
(the /2: its norm is taken in [0, 1] units) — about β_t/2, far below the fixed
step ζ = 1 of Chung et al.'s Algorithm 1, which ud2m follows. With
`--deepinv-dps-step chung` (default) deepinv's weight is set per step so that
its update is exactly ζ = 1 and x̂0 is clamped to the image range before A,
as in Chung et al.; `sde` keeps deepinv's own DPS.

With `--ud2m-adapter`, UD2M (9 NFE) restores the same measurements too and
is reported beside deepinv's runs: PSNR and seconds per image, the speed-up
over each deepinv sampler and the PSNR difference (same images, same threads).
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors import safe_open

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(ROOT / "bench"))
import deepinv as dinv  # noqa: E402
from gen_adm import build  # noqa: E402
from heldout import write_heldout  # noqa: E402


def load_deepinv_prior(path):
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["ud2m"])
        weights = {k: f.get_tensor(k).float() for k in f.keys()}
    assert meta["arch"] == "adm", "this benchmark compares ADM priors"
    model = build(meta["config"])
    model.load_state_dict(weights)
    # DiffUNet's denoiser mode maps σ to timesteps with these buffers.
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float32)
    ab = torch.cumprod(1 - betas, 0)
    model.register_buffer("sqrt_1m_alphas_cumprod", (1 - ab).sqrt())
    model.register_buffer("sqrt_alphas_cumprod", ab.sqrt())
    return model.eval()


def psnr(x, ref):
    mse = ((x.clamp(0, 1).double() - ref.double()) ** 2).mean().item()
    return 10 * np.log10(1 / mse)


def read_png(path):
    from PIL import Image
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def ud2m(binary, *args):
    subprocess.run([str(binary), *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def ddpm_sigmas(steps):
    """Our DDRM grid (steps evenly spaced timesteps 999 → 0) as deepinv noise levels in [0, 1] units."""
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    ts = [round(i * 999 / (steps - 1)) for i in range(steps - 1, -1, -1)]
    return [float(((1 - ab[t]) / ab[t]).sqrt() / 2) for t in ts]


class ChungStepDPS(dinv.sampling.DPSDataFidelity):
    """deepinv's DPS guidance with its weight set per step so that the
    ancestral update is x' − ζ∇_x‖y − A(x̂0)‖ (ζ = 1, model units), as in
    Chung et al.; `sigmas` are the solver's VE levels in model units."""

    def __init__(self, denoiser, sigmas):
        # x̂0 clamped to the image range before A, as in Chung et al. and ud2m
        # (deepinv's DPS clips to [-1, 1] while its data term works in [0, 1]).
        super().__init__(denoiser=denoiser, clip=[0.0, 1.0])
        self.sigmas = [float(s) for s in sigmas]

    def grad(self, x, y, physics, sigma, *args, **kwargs):
        level = 2 * float(sigma)  # deepinv passes σ in [0, 1] units
        i = min(range(len(self.sigmas)), key=lambda k: abs(self.sigmas[k] - level))
        ab0 = 1 / (1 + self.sigmas[i] ** 2)
        ab1 = 1 / (1 + self.sigmas[min(i + 1, len(self.sigmas) - 1)] ** 2)
        # deepinv's step on x is ½·weight·(ᾱ1 − ᾱ0)/√(ᾱ0ᾱ1)·∇ in model units.
        self.weight = 2 * (ab0 * ab1) ** 0.5 / max(ab1 - ab0, 1e-12)
        return super().grad(x, y, physics, sigma, *args, **kwargs)


def deepinv_restore(method, model, physics, y01, sigma, args):
    if method == "diffpir":
        algo = dinv.sampling.DiffPIR(model, dinv.optim.data_fidelity.L2(), sigma=sigma, max_iter=100)
    elif method == "ddrm":
        algo = dinv.sampling.DDRM(model, sigmas=np.array(ddpm_sigmas(20)))
    elif method == "dps":
        algo = dinv.sampling.DPS(model, num_steps=args.dps_steps, dtype=torch.float32)
        if args.deepinv_dps_step == "chung":
            algo.data_fidelity = ChungStepDPS(algo.data_fidelity.denoiser,
                                              algo.sde.sigma_t(algo.solver.timesteps))
    else:
        raise ValueError(method)
    if method == "dps":
        return algo(y01, physics)
    with torch.no_grad():
        return algo(y01, physics)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--task", default="gaussian_deblur")
    ap.add_argument("--sigma", type=float, default=0.05)
    ap.add_argument("--methods", default="diffpir,ddrm,dps")
    ap.add_argument("--dps-steps", type=int, default=100)
    ap.add_argument("--deepinv-dps-step", choices=["chung", "sde"], default="chung",
                    help="deepinv's DPS step: Chung et al.'s ζ = 1 (default) or its own SDE weight 1")
    ap.add_argument("--ud2m-adapter", help="also run UD2M with this adapter, for time at equal quality")
    ap.add_argument("--out", default="bench_out/agreement")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    binary = pathlib.Path(args.build) / "ud2m"
    out = pathlib.Path(args.out)
    clean = write_heldout(out / "clean", args.size, args.images)
    (out / "y").mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(clean):
        ud2m(binary, "degrade", "--task", args.task, "--sigma", args.sigma, "--seed", i, path,
             out / "y" / (path.stem + ".safetensors"))
    model = load_deepinv_prior(args.model)
    results = {}
    for method in args.methods.split(","):
        nfe = {"diffpir": 100, "ddrm": 20, "dps": args.dps_steps}[method]
        start = time.time()
        ud2m(binary, "restore", "-m", out / "y", "--method", method, "--model", args.model, "--nfe", nfe,
             "--out", out / f"ud2m_{method}", "--reference", out / "clean")
        ud2m_seconds = time.time() - start
        ours = [json.loads((out / f"ud2m_{method}" / (p.stem + ".json")).read_text())["psnr"] for p in clean]
        theirs, start = [], time.time()
        torch.manual_seed(0)
        for p in clean:
            with safe_open(str(out / "y" / (p.stem + ".safetensors")), "pt") as f:
                y = f.get_tensor("y").float()
                sidecar = json.loads(f.metadata()["ud2m_sidecar"])
            kernel = torch.tensor(sidecar["operator"]["kernel"]["values"], dtype=torch.float32)
            kernel = kernel.reshape(sidecar["operator"]["kernel"]["shape"])[None, None]
            physics = dinv.physics.BlurFFT(img_size=(3, args.size, args.size), filter=kernel,
                                           noise_model=dinv.physics.GaussianNoise(args.sigma))
            x = deepinv_restore(method, model, physics, (y + 1) / 2, args.sigma, args)
            theirs.append(psnr(x.detach(), read_png(p)))
        # The two sides draw different noise: the gap's standard error comes
        # from the spread of the per-image differences.
        diff = np.array(ours) - np.array(theirs)
        results[method] = {"nfe": nfe, "ud2m_psnr": float(np.mean(ours)), "deepinv_psnr": float(np.mean(theirs)),
                           "gap_db": float(diff.mean()), "gap_standard_error_db": float(diff.std(ddof=1) / len(diff) ** 0.5),
                           "ud2m_seconds": ud2m_seconds, "deepinv_seconds": time.time() - start,
                           "images": len(clean), "ud2m_per_image": ours, "deepinv_per_image": theirs}
        r = results[method]
        print(f"{method:8s} NFE {nfe:4d}: ud2m {r['ud2m_psnr']:.2f} dB ({r['ud2m_seconds']:.0f} s), "
              f"deepinv {r['deepinv_psnr']:.2f} dB ({r['deepinv_seconds']:.0f} s), "
              f"gap {r['gap_db']:+.2f} ± {r['gap_standard_error_db']:.2f} dB (standard error)", flush=True)
    if args.ud2m_adapter:
        start = time.time()
        ud2m(binary, "restore", "-m", out / "y", "--method", "ud2m", "--model", args.model, "--adapter",
             args.ud2m_adapter, "--out", out / "ud2m_ud2m", "--reference", out / "clean")
        seconds = time.time() - start
        ours = [json.loads((out / "ud2m_ud2m" / (p.stem + ".json")).read_text())["psnr"] for p in clean]
        results["ud2m"] = {"nfe": 9, "ud2m_psnr": float(np.mean(ours)), "ud2m_seconds": seconds,
                           "images": len(clean), "ud2m_per_image": ours}
        print(f"ud2m     NFE    9: {np.mean(ours):.2f} dB, {seconds / len(clean):.2f} s/image", flush=True)
        for method, r in results.items():
            if method != "ud2m":
                print(f"  vs deepinv {method} ({r['deepinv_psnr']:.2f} dB, {r['deepinv_seconds'] / len(clean):.2f} "
                      f"s/image): {r['deepinv_seconds'] / seconds:.1f}x faster, "
                      f"{np.mean(ours) - r['deepinv_psnr']:+.2f} dB", flush=True)
    (out / "agreement.json").write_text(json.dumps({"task": args.task, "sigma": args.sigma, "model": args.model,
                                                     "results": results}, indent=2))


if __name__ == "__main__":
    main()
