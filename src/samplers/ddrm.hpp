// DDRM (Kawar et al. 2022): denoising diffusion in the spectral coordinates of
// A's SVD. Coordinates the measurement sees are pulled towards ȳ = Uᵀy/s as
// the diffusion level drops below their noise level σ_y/s; the others (and the
// null space) follow DDIM with the prior alone.
#pragma once
#include "diffusion/denoiser.hpp"
#include "physics/operator.hpp"
#include "samplers/ddim.hpp"

namespace ud2m::samplers {

struct DdrmOptions {
  int steps = 20;     // network evaluations (evenly spaced timesteps)
  double eta = 0.85;  // share of fresh noise for the prior-only coordinates
  double eta_b = 1.0; // weight of the measurement once it is noisier than the diffusion
};

// sigma: measurement noise std in [0, 1] image units. The operator needs an
// SVD (physics/svd.hpp): identity, inpainting, circular blur, circular SR.
torch::Tensor ddrm(diffusion::Denoiser& denoiser, const physics::Operator& op, const torch::Tensor& y, double sigma,
                   const DdrmOptions& options, torch::Generator& rng, const StepCallback& on_step = {});

}  // namespace ud2m::samplers
