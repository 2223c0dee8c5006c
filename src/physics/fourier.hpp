// Fourier-domain helpers shared by the circular operators.
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace ud2m::physics {

// Spectrum of an (h, w) kernel zero-padded to (H, W) and rolled so its centre
// (index h/2, w/2) sits at the origin: circular convolution with the kernel is
// a product with this spectrum. Full (H, W) spectrum, or (H, W/2+1) if half.
torch::Tensor kernel_spectrum(const torch::Tensor& kernel, int64_t H, int64_t W, bool half);

// The spectrum as a complex tensor matching a real dtype (complex64 for
// float32, complex128 for float64) on a device; computed once in float64.
torch::Tensor spectrum_like(const torch::Tensor& spectrum64, const torch::Tensor& like);
// The same for a complex tensor `like` (complex64 -> complex64, ...).
torch::Tensor spectrum_like_complex(const torch::Tensor& spectrum64, const torch::Tensor& like);

}  // namespace ud2m::physics
