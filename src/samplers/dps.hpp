// DPS (Chung et al. 2023): ancestral sampling with a likelihood step that
// differentiates ‖y − A(x̂0(x_t))‖ through the network. Needs only a
// differentiable forward model, so it also runs on nonlinear operators (JPEG
// surrogate, phase retrieval). Approximate: it does not sample the posterior
// exactly even with an exact prior (see the Gaussian test).
#pragma once
#include "diffusion/denoiser.hpp"
#include "physics/operator.hpp"
#include "samplers/ddim.hpp"

namespace ud2m::samplers {

struct DpsOptions {
  int steps = 1000;   // network evaluations (each with a backward pass)
  double zeta = 1.0;  // step on ∇‖y − A(x̂0)‖ (the norm, not its square, as published)
};

// image_shape: (N, C, H, W) of the images A maps onto y.
torch::Tensor dps(diffusion::Denoiser& denoiser, const physics::Operator& op, const torch::Tensor& y,
                  const std::vector<int64_t>& image_shape, const DpsOptions& options, torch::Generator& rng, const StepCallback& on_step = {});

}  // namespace ud2m::samplers
