#include "samplers/diffpir.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/random.hpp"

namespace ud2m::samplers {

std::vector<int> diffpir_timesteps(int total, int steps) {
  UD2M_CHECK(steps >= 2, "DiffPIR needs at least 2 steps, not {}", steps);
  std::vector<int> ts;
  for (int i = 0; i < steps; ++i) {
    const double level = std::sqrt(static_cast<double>(i) / (steps - 1)) * total;
    const int index = std::min(static_cast<int>(level), total - 1);
    ts.push_back(total - 1 - index);
  }
  return ts;
}

torch::Tensor diffpir(diffusion::Denoiser& denoiser, const physics::LinearOperator& op, const torch::Tensor& y,
                      double sigma, const DiffPirOptions& options, torch::Generator& rng,
                      const StepCallback& on_step) {
  UD2M_CHECK(sigma > 0, "DiffPIR needs a positive noise level, not {}", sigma);
  torch::NoGradGuard no_grad;
  const auto& schedule = denoiser.schedule();
  const auto ts = diffpir_timesteps(schedule.steps(), options.steps);
  auto noise = [&](const torch::Tensor& like) { return gaussian(like.sizes(), rng, like.options()); };
  // Start from Aᵀy pushed to the first noise level (its content barely matters there).
  auto x = op.adjoint(y);
  const double sigma_first = schedule.sigma(ts[0]);
  x = (x + std::sqrt(std::max(sigma_first * sigma_first - 4 * sigma * sigma, 0.0)) * noise(x)) *
      std::sqrt(schedule.alpha_bar(schedule.steps() - 1));
  for (size_t i = 0; i < ts.size(); ++i) {
    const int t = ts[i];
    auto x0 = denoiser.x0(x, t).clamp(-1, 1);
    if (on_step) on_step(static_cast<int>(i), t, x0);
    if (i + 1 == ts.size()) break;  // as deepinv: the last estimate is not re-noised
    // ρ_t = λσ²/σ_t² weighs the data against the denoiser's estimate.
    const double rho = options.lambda * sigma * sigma / std::pow(schedule.sigma(t), 2);
    x0 = op.prox(x0, y, 1.0 / (2.0 * rho));
    const double ab = schedule.alpha_bar(t), ab_next = schedule.alpha_bar(ts[i + 1]);
    auto eps = (x - std::sqrt(ab) * x0) / std::sqrt(1 - ab);
    x = std::sqrt(ab_next) * x0 +
        std::sqrt(1 - ab_next) * (std::sqrt(1 - options.zeta) * eps + std::sqrt(options.zeta) * noise(x));
  }
  return x;
}

}  // namespace ud2m::samplers
