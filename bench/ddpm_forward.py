"""Per-NFE forward time of a DDPM U-Net (Ho et al.'s LSUN/CelebA-HQ 256 config,
113.7 M parameters, random weights): ud2m (C++) vs diffusers' UNet2DModel in
PyTorch eager, same weights, input and threads, in one run.

    python bench/ddpm_forward.py --build build [--size 256] [--iters 3]

Rows as in bench/adm_forward.py: PyTorch fp32 and its bf16 recipe (bf16
weights + autocast, channels-last), C++ fp32 and bf16 channels-last (GroupNorm
in fp32); the C++ outputs are checked against PyTorch fp32.
"""
import argparse
import copy
import json
import pathlib
import subprocess
import sys
import tempfile

import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from adm_forward import peak_rss_mib, print_table, time_python  # noqa: E402

# google/ddpm-bedroom-256 / ddpm-ema-church-256 / ddpm-celebahq-256
BEDROOM = dict(sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
               block_out_channels=(128, 128, 256, 256, 512, 512),
               down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
               norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0)


class Wrapped(torch.nn.Module):
    """diffusers' UNet2DModel behind the forward_diffusion(x, t) that time_python calls."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward_diffusion(self, x, t):
        return self.unet(x, t).sample


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = UNet2DModel(**BEDROOM).eval()
    model = Wrapped(unet)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp) / "ddpm"
        unet.save_pretrained(folder, safe_serialization=True)
        x = torch.randn(args.batch, 3, args.size, args.size)
        t = torch.full((args.batch,), 500.0)
        io = pathlib.Path(tmp) / "io.safetensors"
        save_file({"x": x, "t": t}, str(io))
        with torch.no_grad():
            reference = model.forward_diffusion(x, t)
        rows = []
        py_fp32, _ = time_python(model, x, t, args.iters, False, False)
        rows.append(("PyTorch (diffusers) eager fp32", py_fp32, peak_rss_mib()))
        py_bf16, _ = time_python(copy.deepcopy(model), x, t, args.iters, True, True)
        rows.append(("PyTorch bf16 weights+autocast, channels-last", py_bf16, None))
        binary = pathlib.Path(args.build) / "bench" / "adm_forward"
        errors = {}
        for label, dtype, cl in [("ud2m C++ fp32", "fp32", 0), ("ud2m C++ bf16 channels-last", "bf16", 1)]:
            out = subprocess.run([str(binary), str(folder), str(args.size), str(args.batch), dtype, str(cl),
                                  str(args.iters), str(args.threads), str(io)], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout)
            rows.append((label, r["seconds_per_pass"], r["peak_rss_mib"]))
            eps = load_file(str(io) + ".out.safetensors")["eps"]
            errors[label] = ((eps - reference).abs().max() / reference.abs().max()).item()
    params = sum(p.numel() for p in unet.parameters())
    print(f"DDPM bedroom-256 ({params:,} params), {args.size}x{args.size}, batch {args.batch}, {args.threads} threads")
    print_table(rows, py_fp32, py_bf16, errors)


if __name__ == "__main__":
    main()
