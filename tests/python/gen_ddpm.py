"""Tiny diffusers UNet2DModels (the DDPM layout) with random weights, saved with
save_pretrained as published models are, plus inputs and ε outputs."""
import json

import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

CONFIGS = {
    # the Ho et al. conventions: [sin, cos], shift 1, (0,1,0,1) padding, one head
    "ho": dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1,
               down_block_types=("DownBlock2D", "AttnDownBlock2D"),
               up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_eps=1e-6, freq_shift=1,
               flip_sin_to_cos=False, downsample_padding=0, attention_head_dim=None),
    # diffusers defaults: [cos, sin], padded conv, several heads, three levels
    "heads": dict(sample_size=16, block_out_channels=(32, 32, 64), layers_per_block=2,
                  down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"), attention_head_dim=16),
}


def generate(out):
    for name, cfg in CONFIGS.items():
        torch.manual_seed(0)
        model = UNet2DModel(**cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        folder = out / name
        model.save_pretrained(folder, safe_serialization=True)
        x = torch.randn(2, 3, 16, 16)
        t = torch.tensor([3, 650])
        with torch.no_grad():
            eps = model(x, t).sample
        save_file({"x": x, "t": t, "out": eps.contiguous()}, str(folder / "io.safetensors"))
