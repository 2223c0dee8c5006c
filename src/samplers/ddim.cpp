#include "samplers/ddim.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/random.hpp"

namespace ud2m::samplers {

std::vector<int> uniform_timesteps(int total, int steps) {
  UD2M_CHECK(steps > 0 && steps <= total, "the number of steps must be in 1..{}, not {}", total, steps);
  std::vector<int> ts;
  for (int i = steps - 1; i >= 0; --i)
    ts.push_back(static_cast<int>(std::llround(static_cast<double>(i) * (total - 1) / std::max(steps - 1, 1))));
  if (steps == 1) ts = {total - 1};
  return ts;
}

torch::Tensor ddim_step(const diffusion::Schedule& schedule, const torch::Tensor& x_t, const torch::Tensor& x0,
                        int t, int t_prev, double eta, torch::Generator& rng) {
  if (t_prev < 0) return x0;
  const double ab = schedule.alpha_bar(t), ab_prev = schedule.alpha_bar(t_prev);
  auto eps = (x_t - std::sqrt(ab) * x0) / std::sqrt(1 - ab);
  // σ_t of DDIM (Song et al. eq. 16); η = 1 gives the DDPM posterior variance.
  const double sigma = eta * std::sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev));
  auto x = std::sqrt(ab_prev) * x0 + std::sqrt(std::max(1 - ab_prev - sigma * sigma, 0.0)) * eps;
  if (sigma > 0) x = x + sigma * gaussian(x.sizes(), rng, x.options());
  return x;
}

torch::Tensor sample_ddim(diffusion::Denoiser& denoiser, const std::vector<int64_t>& shape, int steps, double eta,
                          torch::Generator& rng, const StepCallback& on_step, torch::Device device, bool clip_x0) {
  torch::NoGradGuard no_grad;
  const auto& schedule = denoiser.schedule();
  auto ts = uniform_timesteps(schedule.steps(), steps);
  auto x = gaussian(shape, rng, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  for (size_t i = 0; i < ts.size(); ++i) {
    auto x0 = denoiser.x0(x, ts[i]);
    if (clip_x0) x0 = x0.clamp(-1, 1);
    const int t_prev = i + 1 < ts.size() ? ts[i + 1] : -1;
    x = ddim_step(schedule, x, x0, ts[i], t_prev, eta, rng);
    if (on_step) on_step(static_cast<int>(i), ts[i], x0);
  }
  return x;
}

}  // namespace ud2m::samplers
