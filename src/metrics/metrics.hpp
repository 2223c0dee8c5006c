// Image-quality metrics on [0, 1] images (N, C, H, W), averaged over the batch.
#pragma once
#include <torch/types.h>

namespace ud2m::metrics {

// Peak signal-to-noise ratio in dB, data range 1 (computed in float64).
double psnr(const torch::Tensor& estimate, const torch::Tensor& reference);

}  // namespace ud2m::metrics
