// Learned metrics on [0, 1] images: LPIPS distances and the Inception
// features FID/KID are computed from (weights from user files, see
// nets/lpips_net.hpp and nets/inception.hpp).
#pragma once
#include <torch/types.h>

#include "nets/adm_unet.hpp"
#include "nets/inception.hpp"
#include "nets/lpips_net.hpp"

namespace ud2m::metrics {

// LPIPS per image pair, (N) float64, of (N, C, H, W) images in [0, 1]; gray
// images (C = 1) are repeated to RGB. As lpips(x, y, normalize=True).
torch::Tensor lpips_per_image(nets::LpipsNet& net, const torch::Tensor& estimate, const torch::Tensor& reference);

// (N, 2048) float64 Inception pool features of [0, 1] images (gray repeated to RGB).
torch::Tensor inception_features(nets::FidInception& net, const torch::Tensor& images);

// A stand-in for Inception features when its weights are not at hand: the
// encoder of a diffusion prior (ADM) sees the clean image (t = 0), and each
// channel's spatial mean and standard deviation at every encoder level are
// concatenated; (N, D) float64. Distances computed from them ("FD-prior",
// "KID-prior") compare only with others from the same prior.
torch::Tensor prior_features(nets::AdmUNet& net, const torch::Tensor& images);

}  // namespace ud2m::metrics
