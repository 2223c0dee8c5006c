// LATINO in pixel space (Spagnoletti et al. 2025, the loop UD2M unrolls): on a
// short decreasing timestep grid, denoise once, pull the estimate to the data
// with the operator's prox, re-noise with fresh noise to the next level. The
// prox step is δ(1−ᾱ_t)/σ_y²: it trusts the data more as the estimate sharpens,
// δ(1−ᾱ_t) standing for the estimate's error variance. δ = 0.3 is that ratio
// for a denoiser at the last level on the Gaussian test prior (mean error
// 0.04 prior std there, 0.25 with δ = 1); the published code tunes δ per task.
#pragma once
#include "diffusion/denoiser.hpp"
#include "physics/operator.hpp"
#include "samplers/ddim.hpp"

namespace ud2m::samplers {

struct LatinoOptions {
  int steps = 8;       // network evaluations
  double delta = 0.3;  // scale of the prox step
};

// Timesteps T−1, T−1−T/N, ... (8 steps: 999, 874, ..., 124 as published).
std::vector<int> latino_timesteps(int total, int steps);

// sigma: measurement noise std in [0, 1] image units (> 0). Starts from A†y.
torch::Tensor latino(diffusion::Denoiser& denoiser, const physics::LinearOperator& op, const torch::Tensor& y,
                     double sigma, const LatinoOptions& options, torch::Generator& rng,
                     const StepCallback& on_step = {});

}  // namespace ud2m::samplers
