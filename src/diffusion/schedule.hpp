// The discrete DDPM noise schedule (Ho et al.): x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε.
// Its VE view x_t/√ᾱ_t = x0 + σ_t ε, σ_t = √(1−ᾱ_t)/√ᾱ_t, links timesteps to
// noise levels for samplers that think in σ.
#pragma once
#include <torch/types.h>

#include <nlohmann/json.hpp>

namespace ud2m::diffusion {

class Schedule {
 public:
  // Linear β from beta_start to beta_end over `steps` (computed in float64).
  static Schedule linear(int steps = 1000, double beta_start = 1e-4, double beta_end = 0.02);
  static Schedule from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;

  int steps() const { return steps_; }
  double alpha_bar(int t) const;      // ᾱ_t, t in [0, steps)
  double sigma(int t) const;          // VE level √(1−ᾱ_t)/√ᾱ_t
  double beta(int t) const;
  int timestep_for_sigma(double sigma) const;  // nearest t in σ
  // Continuous time: σ and t linked by interpolating log σ linearly between
  // integer timesteps (log σ_t increases with t). σ at timesteps t (N,), any
  // device, float64 on the CPU; and its inverse, the timesteps (float32, same
  // device) whose levels are `sigma`, clamped to [0, T−1]. For networks called
  // at noise levels between the discrete ones (ncvsd, EDM2 priors).
  torch::Tensor sigmas_at(const torch::Tensor& t) const;
  torch::Tensor timesteps_at(const torch::Tensor& sigma) const;
  const torch::Tensor& alpha_bars() const { return alpha_bars_; }  // float64 (steps,)

 private:
  int steps_ = 0;
  double beta_start_ = 0, beta_end_ = 0;
  torch::Tensor betas_, alpha_bars_, log_sigmas_;  // float64 (steps,)
};

}  // namespace ud2m::diffusion
