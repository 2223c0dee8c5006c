"""Golden outputs of a latent EDM2 model's decoding, made once with the reference code.

EDM2's code is not on PyPI, so CI cannot regenerate these: this script was run
once against a checkout of github.com/NVlabs/edm2 (commit 4bf8162) with
diffusers 0.42.1, and its outputs are committed under tests/data/edm2/ as data.
It writes
- vae_tiny/: a small diffusers AutoencoderKL with random weights, saved with
  save_pretrained as stabilityai/sd-vae-ft-mse is, and vae_tiny_old/: the same
  weights under the attention names of older AutoencoderKL files;
- edm2_latent_tiny.pkl: a small latent EDM2 network (4 channels at 8x8) pickled
  as EDM2's training loop writes snapshots of latent models, whose `encoder` is
  a StabilityVAEEncoder with the published raw_mean/raw_std;
- edm2_latent_tiny.golden.safetensors: latents z, the VAE's own decoding of raw
  latents (diffusers, float), and the reference encoder's decode(z) (uint8
  pixels, as EDM2 writes images) run with the tiny VAE in place of the real one;
  and the decoder's parameter count at sd-vae-ft-mse's configuration.

    python tests/python/golden_edm2_latent.py /path/to/edm2 tests/data/edm2
"""
import copy
import json
import pathlib
import pickle
import sys

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  layers_per_block=1, norm_num_groups=8)
OLD_ATTENTION_NAMES = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}


def tiny_vae(out: pathlib.Path) -> AutoencoderKL:
    torch.manual_seed(1)
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # biases and norms away from their initial 0 / 1
    vae.save_pretrained(out / "vae_tiny", safe_serialization=True)
    old = out / "vae_tiny_old"
    old.mkdir(exist_ok=True)
    renamed = {}
    for name, t in vae.state_dict().items():
        for new, previous in OLD_ATTENTION_NAMES.items():
            name = name.replace(".attentions.0." + new, ".attentions.0." + previous)
        renamed[name] = t.contiguous()
    save_file(renamed, str(old / "diffusion_pytorch_model.safetensors"))
    (old / "config.json").write_text((out / "vae_tiny" / "config.json").read_text())
    return vae


def main(edm2_dir: str, outdir: str) -> None:
    sys.path.insert(0, edm2_dir)
    import dnnlib
    from training import encoders
    from training.networks_edm2 import Precond

    out = pathlib.Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    vae = tiny_vae(out)

    torch.manual_seed(0)
    net = Precond(img_resolution=8, img_channels=4, label_dim=0, model_channels=16, channel_mult=[1, 2],
                  num_blocks=1, attn_resolutions=[4], channels_per_head=16)
    encoder = encoders.StabilityVAEEncoder(vae_name="stabilityai/sd-vae-ft-mse")
    data = dnnlib.EasyDict(encoder=encoder, dataset_kwargs=dict(resolution=8))
    data.ema = copy.deepcopy(net).eval().requires_grad_(False).to(torch.float16)
    with open(out / "edm2_latent_tiny.pkl", "wb") as f:
        pickle.dump(data, f)

    z = torch.randn(2, 4, 8, 8) * 0.5  # final latents, as the network samples them
    raw = torch.randn(2, 4, 8, 8) * 3
    encoder._vae = vae  # the reference decode, with the tiny VAE in place of the downloaded one
    with torch.no_grad():
        pixels = encoder.decode(z)
        vae_out = vae.decode(raw).sample
    full = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    # ^ sd-vae-ft-mse's configuration
    decoder_parameters = sum(p.numel() for n, p in full.named_parameters()
                             if n.startswith(("decoder.", "post_quant_conv.")))
    save_file({"z": z, "pixels_uint8": pixels.contiguous(), "raw": raw, "vae_out": vae_out.contiguous(),
               "decoder_parameters_full": torch.tensor([decoder_parameters], dtype=torch.int64)},
              str(out / "edm2_latent_tiny.golden.safetensors"))
    print("decoder parameters at sd-vae-ft-mse's configuration:", decoder_parameters)
    print(json.dumps({k: list(map(float, v)) for k, v in dict(scale=encoder.scale, bias=encoder.bias).items()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
