"""A safetensors file written by the Python reference library."""
import torch
from safetensors.torch import save_file


def generate(out):
    base = torch.arange(24, dtype=torch.float32).view(2, 3, 4) / 7
    save_file(
        {"a.weight": base, "half": base.half(), "bf16": base.bfloat16(), "long": torch.arange(5)},
        str(out / "python.safetensors"),
        metadata={"format": "pt"},
    )
