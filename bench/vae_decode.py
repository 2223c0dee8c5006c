"""Time of the SD VAE's decoder (sd-vae-ft-mse's configuration, random weights):
ud2m (C++) vs diffusers' AutoencoderKL.decode in PyTorch eager, same weights,
latents and threads, in one run; the C++ output is checked against PyTorch's.

    python bench/vae_decode.py --build build [--latent 64] [--iters 2]

A 64² latent is a 512² image (EDM2's ImageNet-512 models).
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from adm_forward import peak_rss_mib  # noqa: E402

SD_VAE_FT_MSE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                     down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD_VAE_FT_MSE).eval()
    z = torch.randn(1, 4, args.latent, args.latent) * 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / "vae"
        vae.save_pretrained(folder, safe_serialization=True)
        io = pathlib.Path(tmp) / "io.safetensors"
        save_file({"z": z}, str(io))
        with torch.no_grad():
            reference = vae.decode(z).sample  # also the warm-up
            start = time.perf_counter()
            for _ in range(args.iters):
                vae.decode(z)
            python = (time.perf_counter() - start) / args.iters
        py_rss = peak_rss_mib()
        out = subprocess.run([str(pathlib.Path(args.build) / "bench" / "vae_decode"), str(folder), str(args.iters),
                              str(args.threads), str(io)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        pixels = load_file(str(io) + ".out.safetensors")["pixels"]
        error = ((pixels - reference).abs().max() / reference.abs().max()).item()
    side = args.latent * 8
    print(f"SD VAE decoder (sd-vae-ft-mse config), {args.latent}² latents -> {side}² pixels, batch 1, "
          f"{args.threads} threads")
    print("| | s / decode | vs diffusers | peak RSS |")
    print("|---|---|---|---|")
    print(f"| diffusers eager fp32 | {python:.3f} | 1.00× | {py_rss:.0f} MiB (whole Python process) |")
    print(f"| ud2m fp32 | {r['seconds_per_decode']:.3f} | {python / r['seconds_per_decode']:.2f}× | "
          f"{r['peak_rss_mib']:.0f} MiB |")
    print(f"max relative error vs diffusers: {error:.1e}")


if __name__ == "__main__":
    main()
