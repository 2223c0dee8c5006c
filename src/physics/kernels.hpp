// Blur kernels (point spread functions) as (h, w) float32 tensors summing to 1.
// The centre of an h-wide kernel is index h / 2 (deepinv's convention), for odd
// and even sizes alike.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>

namespace ud2m::physics {

// exp(-(u² + v²) / (2 std²)) on a size×size grid centred on 0; the papers use
// std = √3 (variance 3), size 5.
torch::Tensor gaussian_kernel(int64_t size, double std);
// size×size average.
torch::Tensor box_kernel(int64_t size);
// Random camera-shake PSF: a 2-D trajectory whose coordinates are Gaussian
// processes with a Matérn-5/2 covariance (length scale l, amplitude sigma) on
// t ∈ [−π, π], sampled at 1000 steps of which the first 1000/(2π) are kept,
// histogrammed on a size×size grid over [−1, 1]² (first coordinate = row). The
// seeded CPU generator makes this deepinv MotionBlurGenerator's kernel for the
// same seed, bit for bit (tested).
torch::Tensor motion_kernel(int64_t size, uint64_t seed, double l = 0.3, double sigma = 0.25);
// Anti-aliasing filters of deepinv's Downsampling for a decimation factor.
torch::Tensor bicubic_filter(int64_t factor);  // 4·factor wide, Keys a = −0.5
torch::Tensor downsampling_gaussian_filter(int64_t factor);  // std = factor, size 2·⌊factor/0.3 + 1⌋ + 1
// A user's kernel: a grayscale PNG/JPEG, or a safetensors file holding one 2-D
// tensor (key "kernel", or its only tensor). Negative values are rejected;
// the result is normalised to sum 1.
torch::Tensor load_kernel_file(const std::string& path);

}  // namespace ud2m::physics
