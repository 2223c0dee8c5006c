#include "ud2m/sampler.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/random.hpp"

namespace ud2m::unrolled {

std::vector<int> ud2m_timesteps(int total, int steps) {
  UD2M_CHECK(steps > 0 && steps <= total, "the number of UD2M steps N must be in 1..{}, not {}", total, steps);
  std::vector<int> ts;
  for (int i = 1; i <= steps; ++i) {
    const double level = i * std::sqrt(static_cast<double>(total)) / steps;
    ts.push_back(std::min(static_cast<int>(level * level), total - 1));
  }
  ts.back() = total - 1;
  std::reverse(ts.begin(), ts.end());
  return ts;
}

torch::Tensor sample(UnrolledNetwork& network, const physics::Operator& op, const torch::Tensor& y,
                     double sigma, const std::vector<int64_t>& image_shape, const SamplerOptions& options,
                     torch::Generator& rng, const samplers::StepCallback& on_step) {
  torch::NoGradGuard no_grad;
  const auto& schedule = network.prior().schedule();
  const auto ts = ud2m_timesteps(schedule.steps(), options.steps);
  auto x = gaussian(image_shape, rng, y.options());
  for (size_t i = 0; i < ts.size(); ++i) {
    auto x0 = network.forward(op, y, sigma, x, ts[i], rng).clamp(-1, 1);
    if (on_step) on_step(static_cast<int>(i), ts[i], x0);
    if (i + 1 == ts.size()) return x0;
    x = samplers::ddim_step(schedule, x, x0, ts[i], ts[i + 1], options.eta, rng);
  }
  return x;  // unreachable
}

}  // namespace ud2m::unrolled
