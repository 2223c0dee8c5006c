// UD2M's few-step posterior sampler (Algorithm 1): on a quadratic timestep
// grid, x̂0 = L_θ(y, x_τ, τ), then a DDIM step (η = 0.8) to the next τ; the
// last x̂0 is the sample. N steps cost N·K network evaluations (N·(K+1) with a
// learned initialiser).
#pragma once
#include "samplers/ddim.hpp"
#include "ud2m/unrolled.hpp"

namespace ud2m::unrolled {

struct SamplerOptions {
  int steps = 3;     // N
  double eta = 0.8;  // DDIM η
};

// τ_i = ⌊(i·√T/N)²⌋ for i = 1..N (in double precision, as published), the
// last set to T−1, descending: N = 3 → 999, 444, 111; N = 5 → 999, 639, 360, 159, 39.
std::vector<int> ud2m_timesteps(int total, int steps);

torch::Tensor sample(UnrolledNetwork& network, const physics::Operator& op, const torch::Tensor& y,
                     double sigma, const std::vector<int64_t>& image_shape, const SamplerOptions& options,
                     torch::Generator& rng, const samplers::StepCallback& on_step = {});

}  // namespace ud2m::unrolled
