"""Golden outputs of the EDM2 network, made once with the reference code.

The EDM2 code is not on PyPI, so CI cannot regenerate these: this script was
run once against a checkout of github.com/NVlabs/edm2 (commit 4bf8162) and its
outputs are committed under tests/data/edm2/ as data. It builds a small
class-conditional Precond with random weights (out_gain and emb_gain made
non-zero so every branch matters), pickles it the way EDM2's training loop
writes network snapshots (an EasyDict holding the fp16 EMA network, the
encoder, dataset_kwargs and loss_fn, through pickle.dump with the persistent
classes' embedded source), and saves inputs and the network's D(x; σ, class)
and log-variance outputs.

    python tests/python/golden_edm2.py /path/to/edm2 tests/data/edm2
"""
import copy
import pathlib
import pickle
import sys

import torch
from safetensors.torch import save_file


def main(edm2_dir: str, outdir: str) -> None:
    sys.path.insert(0, edm2_dir)
    import dnnlib
    from training.encoders import StandardRGBEncoder
    from training.networks_edm2 import Precond
    from training.training_loop import EDM2Loss

    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = dict(img_resolution=16, img_channels=3, label_dim=10, model_channels=16,
                  channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], channels_per_head=16)
    net = Precond(**config)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 0:  # out_gain, emb_gain: zero at initialisation
                p.copy_(torch.randn([]) * 0.5 + 1.0)
    ema = copy.deepcopy(net).cpu().eval().requires_grad_(False).to(torch.float16)
    data = dnnlib.EasyDict(encoder=StandardRGBEncoder(), dataset_kwargs=dict(resolution=16),
                           loss_fn=EDM2Loss(P_mean=-0.8, P_std=1.6))
    data.ema = ema
    with open(out / "edm2_tiny.pkl", "wb") as f:
        pickle.dump(data, f)

    # The reference forward of the stored (fp16) weights, run in fp32 on the CPU.
    reference = copy.deepcopy(ema).to(torch.float32)
    x = torch.randn(3, 3, 16, 16) * 1.3
    sigma = torch.tensor([0.01, 0.7, 40.0])
    labels = torch.nn.functional.one_hot(torch.tensor([2, 0, 7]), 10).to(torch.float32)
    with torch.no_grad():
        denoised, logvar = reference(x, sigma, labels, return_logvar=True)
        unconditional = reference(x, sigma)  # class labels None: a zero label vector
    save_file({"x": x, "sigma": sigma, "class_labels": labels, "denoised": denoised.contiguous(),
               "logvar": logvar.reshape(-1).contiguous(), "denoised_no_class": unconditional.contiguous()},
              str(out / "edm2_tiny.golden.safetensors"))
    print("parameters:", sum(p.numel() for p in reference.parameters()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
