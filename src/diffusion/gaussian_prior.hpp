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

// A stationary Gaussian "prior" x0 ~ N(0, C), C diagonal in the orthonormal
// 2-D Fourier basis with eigenvalues `power` (H, W): neighbouring pixels are
// correlated, so unlike the i.i.d. prior it fills inpainting holes by
// interpolation, and the exact posterior is still closed-form.
class StationaryGaussianPrior : public Denoiser {
 public:
  explicit StationaryGaussianPrior(torch::Tensor power, Schedule schedule = Schedule::linear())
      : power_(std::move(power)), schedule_(std::move(schedule)) {}
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  const Schedule& schedule() const override { return schedule_; }
  // C·x for images (..., H, W).
  torch::Tensor covariance_times(const torch::Tensor& x) const;
  // An exact sample of p(x0 | u) for u = x0 + σn (VE level σ): the ideal
  // generative denoiser, per Fourier coefficient N(p/(p+σ²)·û, pσ²/(p+σ²)).
  torch::Tensor sample_given(const torch::Tensor& u, double sigma, torch::Generator& rng) const;

 private:
  torch::Tensor power_;
  Schedule schedule_;
};

}  // namespace ud2m::diffusion
