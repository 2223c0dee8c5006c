"""deepinv operators on fixed inputs: the oracle for tests/cpp/test_physics_deepinv.cpp.

Each case is one safetensors file with the inputs (x, y, z, kernel/mask, gamma)
and deepinv's outputs (A, At, prox, pinv where deepinv has them).
"""
import math

import torch
from safetensors.torch import save_file

import deepinv as dinv
import deepinv.physics.functional as dF


def _save(out, name, tensors):
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, str(out / f"{name}.safetensors"))


def _linear_case(out, name, physics, x, kernel=None, mask=None, gamma=0.7, pinv=True, prox=True):
    y = physics.A(x)
    y_in = torch.randn_like(y)
    z = torch.randn_like(x)
    t = {"x": x, "y": y_in, "z": z, "A": y, "At": physics.A_adjoint(y_in), "gamma": torch.tensor([gamma])}
    if prox:
        t["prox"] = physics.prox_l2(z, y_in, gamma)
    if pinv:
        t["pinv"] = physics.A_dagger(y_in)
    if kernel is not None:
        t["kernel"] = kernel.squeeze()
    if mask is not None:
        t["mask"] = mask
    _save(out, name, t)


def generate(out):
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(2, 3, 16, 20, generator=g)

    # Circular blur, odd Gaussian kernel (the papers' σ² = 3, 5×5) and an even random one.
    k = dF.gaussian_blur(sigma=(math.sqrt(3), math.sqrt(3)), psf_size=(5, 5))
    _linear_case(out, "blurfft_gaussian", dinv.physics.BlurFFT(img_size=(3, 16, 20), filter=k), x, kernel=k)
    k_even = torch.rand(1, 1, 4, 6, generator=g)
    k_even = k_even / k_even.sum()
    _linear_case(out, "blurfft_even", dinv.physics.BlurFFT(img_size=(3, 16, 20), filter=k_even), x, kernel=k_even)

    # Non-circular blur: deepinv's Blur has no closed-form prox or pinv.
    k_odd = torch.rand(1, 1, 5, 3, generator=g)
    k_odd = k_odd / k_odd.sum()
    for pad in ("reflect", "valid"):
        for kname, kk in (("odd", k_odd), ("even", k_even)):
            _linear_case(out, f"blur_{pad}_{kname}", dinv.physics.Blur(filter=kk, padding=pad), x, kernel=kk,
                         pinv=False, prox=False)

    # Super-resolution, circular.
    x_sr = torch.randn(2, 3, 32, 32, generator=g)
    for filt, factor in (("gaussian", 2), ("bicubic", 2), ("bicubic", 4), ("gaussian", 4)):
        p = dinv.physics.Downsampling(img_size=(3, 32, 32), filter=filt, factor=factor, padding="circular")
        _linear_case(out, f"sr_{filt}_{factor}", p, x_sr, kernel=p.filter, pinv=False)

    # Inpainting with a pixelwise mask shared by the channels.
    mask = (torch.rand(1, 16, 20, generator=g) > 0.6).float()
    p = dinv.physics.Inpainting(img_size=(3, 16, 20), mask=mask.expand(3, 16, 20).clone())
    _linear_case(out, "inpainting", p, x, mask=mask[0])

    # A real photograph for the JPEG surrogate-vs-codec test and the CLI tests:
    # scikit-image's astronaut, area-downsampled ×4 to 128×128, then cropped to
    # 120×104 so the sides are not multiples of 16.
    from skimage import data

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float()[None] / 255
    photo = torch.nn.functional.avg_pool2d(photo, 4)[:, :, :120, :104]
    save_file({"photo": (photo * 255).round().div(255).contiguous()}, str(out / "photo.safetensors"))

    # Motion blur PSFs from deepinv's generator: the same seeded torch CPU
    # generator draws the same trajectories in C++.
    for seed in (0, 7):
        gen = dinv.physics.generator.MotionBlurGenerator((31, 31), rng=torch.Generator().manual_seed(seed))
        save_file({"kernel": gen.step(batch_size=1, seed=seed)["filter"][0, 0].contiguous()},
                  str(out / f"motion_{seed}.safetensors"))
