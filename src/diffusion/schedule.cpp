#include "diffusion/schedule.hpp"

#include <torch/torch.h>

#include <cmath>

#include "core/error.hpp"

namespace ud2m::diffusion {

Schedule Schedule::linear(int steps, double beta_start, double beta_end) {
  UD2M_CHECK(steps > 1 && beta_start > 0 && beta_end < 1 && beta_start <= beta_end,
             "invalid linear schedule: {} steps, beta {}..{}", steps, beta_start, beta_end);
  Schedule s;
  s.steps_ = steps;
  s.beta_start_ = beta_start;
  s.beta_end_ = beta_end;
  s.betas_ = torch::linspace(beta_start, beta_end, steps, torch::kFloat64);
  s.alpha_bars_ = torch::cumprod(1 - s.betas_, 0);
  s.log_sigmas_ = 0.5 * ((1 - s.alpha_bars_) / s.alpha_bars_).log();
  return s;
}

nlohmann::json Schedule::to_json() const {
  return {{"type", "linear"}, {"steps", steps_}, {"beta_start", beta_start_}, {"beta_end", beta_end_}};
}

Schedule Schedule::from_json(const nlohmann::json& j) {
  UD2M_CHECK(j.value("type", "linear") == "linear", "unknown noise schedule type '{}'", j.value("type", ""));
  return linear(j.value("steps", 1000), j.value("beta_start", 1e-4), j.value("beta_end", 0.02));
}

double Schedule::alpha_bar(int t) const {
  UD2M_CHECK(t >= 0 && t < steps_, "timestep {} is outside 0..{}", t, steps_ - 1);
  return alpha_bars_[t].item<double>();
}

double Schedule::beta(int t) const {
  UD2M_CHECK(t >= 0 && t < steps_, "timestep {} is outside 0..{}", t, steps_ - 1);
  return betas_[t].item<double>();
}

double Schedule::sigma(int t) const {
  const double ab = alpha_bar(t);
  return std::sqrt((1 - ab) / ab);
}

int Schedule::timestep_for_sigma(double sigma) const {
  return static_cast<int>((log_sigmas_.exp() - sigma).abs().argmin().item<int64_t>());
}

torch::Tensor Schedule::sigmas_at(const torch::Tensor& t) const {
  auto tt = t.to(torch::kCPU, torch::kFloat64).clamp(0, steps_ - 1);
  auto lower = tt.floor().to(torch::kLong).clamp_max(steps_ - 2);
  auto w = tt - lower.to(torch::kFloat64);
  auto lo = log_sigmas_.index_select(0, lower), hi = log_sigmas_.index_select(0, lower + 1);
  return (lo + w * (hi - lo)).exp();
}

torch::Tensor Schedule::timesteps_at(const torch::Tensor& sigma) const {
  auto query = sigma.to(torch::kCPU, torch::kFloat64).clamp_min(1e-20).log();
  auto upper = torch::searchsorted(log_sigmas_, query).clamp(1, steps_ - 1);
  auto lower = upper - 1;
  auto lo = log_sigmas_.index_select(0, lower), hi = log_sigmas_.index_select(0, upper);
  auto t = lower.to(torch::kFloat64) + (query - lo) / (hi - lo);
  return t.clamp(0, steps_ - 1).to(sigma.device(), torch::kFloat32);
}

}  // namespace ud2m::diffusion
