// Unconditional generation: DDIM (η = 0 deterministic, η = 1 ≈ ancestral DDPM)
// on an evenly spaced sub-grid of the prior's timesteps.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <vector>

#include "diffusion/denoiser.hpp"

namespace ud2m::samplers {

// `steps` timesteps from T−1 down to 0, evenly spaced (descending).
std::vector<int> uniform_timesteps(int total, int steps);

using StepCallback = std::function<void(int step, int t, const torch::Tensor& x0)>;

// One DDIM update from x_t to x_{t_prev} given the x0 estimate (t_prev < 0: return x0).
torch::Tensor ddim_step(const diffusion::Schedule& schedule, const torch::Tensor& x_t, const torch::Tensor& x0,
                        int t, int t_prev, double eta, torch::Generator& rng);

// Starts from noise of `shape` on `device` (the denoiser's); noise always comes
// from the CPU generator `rng`, so a seed gives the same samples on any device.
// Each x0 estimate is clipped to the image range [-1, 1] unless clip_x0 is
// false (latent models, whose latents have no such range).
torch::Tensor sample_ddim(diffusion::Denoiser& denoiser, const std::vector<int64_t>& shape, int steps, double eta,
                          torch::Generator& rng, const StepCallback& on_step = {},
                          torch::Device device = torch::kCPU, bool clip_x0 = true);

}  // namespace ud2m::samplers
