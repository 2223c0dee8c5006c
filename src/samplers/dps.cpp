#include "samplers/dps.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/random.hpp"

namespace ud2m::samplers {
namespace {

// ‖y − A(x̂0)‖ per image, summed: each image's gradient is its own.
torch::Tensor residual_norm(const physics::Operator& op, const torch::Tensor& x0, const torch::Tensor& y) {
  return (y - op.forward(x0)).flatten(1).norm(2, 1).sum();
}

}  // namespace

torch::Tensor dps(diffusion::Denoiser& denoiser, const physics::Operator& op, const torch::Tensor& y,
                  const std::vector<int64_t>& image_shape, const DpsOptions& options, torch::Generator& rng,
                  const StepCallback& on_step) {
  UD2M_CHECK(options.zeta >= 0, "the DPS step zeta must be non-negative, not {}", options.zeta);
  const auto& schedule = denoiser.schedule();
  const auto ts = uniform_timesteps(schedule.steps(), options.steps);
  auto x = gaussian(image_shape, rng, y.options());
  for (size_t i = 0; i < ts.size(); ++i) {
    const int t = ts[i];
    auto x_t = x.detach().requires_grad_(true);
    torch::Tensor x0, grad;
    {
      torch::AutoGradMode grad_mode(true);
      x0 = denoiser.x0(x_t, t).clamp(-1, 1);
      grad = torch::autograd::grad({residual_norm(op, x0, y)}, {x_t})[0];
    }
    x0 = x0.detach();
    if (on_step) on_step(static_cast<int>(i), t, x0);
    torch::NoGradGuard no_grad;
    // Ancestral step with the unconditional x̂0, then the likelihood
    // correction; the last step goes to x̂0 itself and is corrected too, as
    // in Chung et al.'s code.
    const int t_prev = i + 1 < ts.size() ? ts[i + 1] : -1;
    x = ddim_step(schedule, x, x0, t, t_prev, 1.0, rng) - options.zeta * grad;
  }
  return x;
}

}  // namespace ud2m::samplers
