#include "samplers/latino.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/random.hpp"

namespace ud2m::samplers {

std::vector<int> latino_timesteps(int total, int steps) {
  UD2M_CHECK(steps >= 1 && steps <= total, "LATINO needs 1..{} steps, not {}", total, steps);
  std::vector<int> ts;
  for (int k = 0; k < steps; ++k) ts.push_back(total - 1 - static_cast<int>(std::llround(double(k) * total / steps)));
  return ts;
}

torch::Tensor latino(diffusion::Denoiser& denoiser, const physics::LinearOperator& op, const torch::Tensor& y,
                     double sigma, const LatinoOptions& options, torch::Generator& rng, const StepCallback& on_step) {
  UD2M_CHECK(sigma > 0, "LATINO needs a positive measurement noise level, not {}", sigma);
  UD2M_CHECK(options.delta > 0, "the LATINO step delta must be positive, not {}", options.delta);
  torch::NoGradGuard no_grad;
  const auto& schedule = denoiser.schedule();
  const auto ts = latino_timesteps(schedule.steps(), options.steps);
  const double sigma_y = 2 * sigma;  // model units
  auto renoise = [&](const torch::Tensor& x0, int t) {
    const double ab = schedule.alpha_bar(t);
    return std::sqrt(ab) * x0 + std::sqrt(1 - ab) * gaussian(x0.sizes(), rng, x0.options());
  };
  auto x = renoise(op.pinv(y).clamp(-1, 1), ts[0]);
  for (size_t i = 0; i < ts.size(); ++i) {
    const int t = ts[i];
    auto x0 = denoiser.x0(x, t).clamp(-1, 1);
    const double gamma = options.delta * (1 - schedule.alpha_bar(t)) / (sigma_y * sigma_y);
    x0 = op.prox(x0, y, gamma);
    if (on_step) on_step(static_cast<int>(i), t, x0);
    if (i + 1 == ts.size()) return x0;
    x = renoise(x0, ts[i + 1]);
  }
  return x;  // unreachable
}

}  // namespace ud2m::samplers
