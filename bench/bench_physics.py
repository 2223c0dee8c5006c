"""deepinv peer of bench_physics.cpp: same operators, sizes and timing rule."""
import math
import time

import torch

import deepinv as dinv
import deepinv.physics.functional as dF


def time_ms(fn, reps=15):
    fn(), fn()
    t = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        t.append((time.perf_counter() - start) * 1e3)
    return min(t)


def report(name, physics, x):
    with torch.no_grad():
        y = physics.A(x)
        apply = time_ms(lambda: physics.A(x))
        prox = time_ms(lambda: physics.prox_l2(x, y, 0.5))
    print(f"{name} {apply:.3f} {prox:.3f}")


def main():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 256, 256) * 2 - 1
    k = dF.gaussian_blur(sigma=(math.sqrt(3), math.sqrt(3)), psf_size=(5, 5))
    report("gaussian_blur_circular", dinv.physics.BlurFFT(img_size=(3, 256, 256), filter=k), x)
    report("sr4_bicubic", dinv.physics.Downsampling(img_size=(3, 256, 256), filter="bicubic", factor=4,
                                                     padding="circular"), x)
    mask = (torch.rand(1, 256, 256) > 0.7).float().expand(3, 256, 256).clone()
    report("inpainting_random", dinv.physics.Inpainting(img_size=(3, 256, 256), mask=mask), x)


if __name__ == "__main__":
    main()
