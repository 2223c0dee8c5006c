"""Golden outputs of NCVSD's generator network, made once with the reference code.

NCVSD's code is not on PyPI, so CI cannot regenerate these: this script was run
once against a checkout of github.com/xypeng9903/ncvsd (commit 115109b) and its
outputs are committed under tests/data/ncvsd/ as data. It builds a small
class-conditional PrecondCondition (the EDM2 U-Net with a ControlNet encoder
for the noisy observation) with random weights — the zero-initialised gains and
ControlNet mixing weights made non-zero, two mixing weights outside [0, 1] so
the forward's clipping matters — wraps it in the GenerativeDenoiser (γ = 0.414)
and pickles it the way NCVSD's training loop writes snapshots: an EasyDict
whose `ema` is the fp16 GenerativeDenoiser, beside the encoder, dataset_kwargs
and the persistent NCVSDLoss. It saves inputs and outputs of the stored (fp16)
weights run in fp32: D(x; t, y, σ, class), its log-variance, and one generator
call G(y, σ) (no class, as posterior sampling calls it) with the standard
normal draw it made.

    python tests/python/golden_ncvsd.py /path/to/ncvsd tests/data/ncvsd
"""
import copy
import pathlib
import pickle
import sys
import types

import torch
from safetensors.torch import save_file


def stub_training_only_modules() -> None:
    """The training loop imports these at module level but the pickle needs none of them."""
    for name in ["psutil", "torch.utils.tensorboard"]:
        module = types.ModuleType(name)
        module.SummaryWriter = object
        sys.modules[name] = module


def main(ncvsd_dir: str, outdir: str) -> None:
    sys.path.insert(0, ncvsd_dir)
    stub_training_only_modules()
    import dnnlib
    from training.encoders import StandardRGBEncoder
    from training.networks_edm2 import GenerativeDenoiser, PrecondCondition
    from training.training_loop import LogNormalNoiseSampler, NCVSDLoss

    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = dict(img_resolution=16, img_channels=3, label_dim=10, model_channels=16,
                  channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[8], channels_per_head=16)
    model = PrecondCondition(**config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 0:  # out_gain, emb_gain: zero at initialisation
                p.copy_(torch.randn([]) * 0.5 + 1.0)
            elif "additional_" in name:  # the ControlNet's mixing weights, clipped to [0, 1] when used
                p.copy_(torch.rand(p.shape))
        skips = model.dec.additional_skips_weight
        skips[0], skips[-1] = 1.3, -0.2
    generator = GenerativeDenoiser(model, gamma=0.414, init_sigma=80.0)
    ema = copy.deepcopy(generator).cpu().eval().requires_grad_(False).to(torch.float16)
    data = dnnlib.EasyDict(encoder=StandardRGBEncoder(), dataset_kwargs=dict(resolution=16),
                           loss_fn=NCVSDLoss(t_sampler=LogNormalNoiseSampler(P_mean=-0.8, P_std=1.6)))
    data.ema = ema
    with open(out / "ncvsd_tiny.pkl", "wb") as f:
        pickle.dump(data, f)

    # The reference forward of the stored (fp16) weights, run in fp32 on the CPU.
    reference = copy.deepcopy(ema).to(torch.float32)
    x = torch.randn(3, 3, 16, 16) * 1.3
    level = torch.tensor([0.3, 2.0, 50.0])
    y = torch.randn(3, 3, 16, 16) * 0.8
    sigma = torch.tensor([0.05, 0.7, 20.0])
    labels = torch.nn.functional.one_hot(torch.tensor([2, 0, 7]), 10).to(torch.float32)
    with torch.no_grad():
        denoised, logvar = reference.model(x, level, y, sigma, labels, return_logvar=True)
        unconditional = reference.model(x, level, y, sigma)  # class labels None: a zero label vector
        torch.manual_seed(1)
        z = torch.randn_like(y)  # the generator's first draw
        torch.manual_seed(1)
        generated = reference(y, sigma.reshape(-1, 1, 1, 1))  # no labels, as in posterior sampling
    save_file({"x": x, "level": level, "y": y, "sigma": sigma, "class_labels": labels,
               "denoised": denoised.contiguous(), "logvar": logvar.reshape(-1).contiguous(),
               "denoised_no_class": unconditional.contiguous(), "z": z, "generated": generated.contiguous()},
              str(out / "ncvsd_tiny.golden.safetensors"))
    print("parameters:", sum(p.numel() for p in reference.parameters()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
