// An analytic "prior" x0 ~ N(mean, s²·I): its exact ε-prediction lets samplers
// be checked against closed-form posteriors.
#pragma once
#include "diffusion/denoiser.hpp"

namespace ud2m::diffusion {

class GaussianPrior : public Denoiser {
 public:
  GaussianPrior(double mean, double std, Schedule schedule = Schedule::linear())
      : mean_(mean), std_(std), schedule_(std::move(schedule)) {}
  // E[ε | x_t] for x_t = √ᾱ x0 + √(1−ᾱ) ε.
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  const Schedule& schedule() const override { return schedule_; }

 private:
  double mean_, std_;
  Schedule schedule_;
};

}  // namespace ud2m::diffusion
