// DiffPIR (Zhu et al. 2023), following deepinv's DiffPIR: denoise, pull the x0
// estimate towards the data with the operator's prox, re-noise with a mix of
// the predicted and fresh noise (ζ).
#pragma once
#include "diffusion/denoiser.hpp"
#include "physics/operator.hpp"
#include "samplers/ddim.hpp"

namespace ud2m::samplers {

struct DiffPirOptions {
  int steps = 100;       // network evaluations
  double zeta = 0.1;     // share of fresh noise in each re-noising
  double lambda = 7.0;   // data-term weight
};

// Timesteps 999 → 0 with the quadratic spacing deepinv uses.
std::vector<int> diffpir_timesteps(int total, int steps);

// sigma: measurement noise std in [0, 1] image units (as deepinv's DiffPIR).
torch::Tensor diffpir(diffusion::Denoiser& denoiser, const physics::LinearOperator& op, const torch::Tensor& y,
                      double sigma, const DiffPirOptions& options, torch::Generator& rng,
                      const StepCallback& on_step = {});

}  // namespace ud2m::samplers
