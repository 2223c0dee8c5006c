// Image-quality metrics on [0, 1] images (N, C, H, W). The scalar forms
// average over the batch; the *_per_image forms return (N) float64.
#pragma once
#include <torch/types.h>

namespace ud2m::metrics {

// Peak signal-to-noise ratio in dB, data range 1 (computed in float64).
double psnr(const torch::Tensor& estimate, const torch::Tensor& reference);
torch::Tensor psnr_per_image(const torch::Tensor& estimate, const torch::Tensor& reference);

// Structural similarity (Wang et al. 2004) with scikit-image's convention:
// structural_similarity(..., gaussian_weights=True, sigma=1.5,
// use_sample_covariance=False, data_range=1, channel_axis=...). That is an
// 11×11 Gaussian window (σ = 1.5, truncated at 3.5σ), K1 = 0.01, K2 = 0.03,
// population (co)variances, and the mean over channels and over the pixels
// the whole window covers (a 5-pixel border is left out). torchmetrics 1.9
// instead averages over the whole reflect-padded image, which differs near
// borders. Images need sides of at least 11 pixels. Float64.
double ssim(const torch::Tensor& estimate, const torch::Tensor& reference);
torch::Tensor ssim_per_image(const torch::Tensor& estimate, const torch::Tensor& reference);

}  // namespace ud2m::metrics
