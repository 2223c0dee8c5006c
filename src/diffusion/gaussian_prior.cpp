#include "diffusion/gaussian_prior.hpp"

#include "core/random.hpp"

namespace ud2m::diffusion {

torch::Tensor GaussianPrior::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  auto ab = schedule_.alpha_bars().index_select(0, t.to(torch::kLong)).to(x_t.dtype()).view({-1, 1, 1, 1});
  // x_t ~ N(√ᾱ m, ᾱs² + 1 − ᾱ); ε and x_t are jointly Gaussian with Cov = √(1−ᾱ).
  auto variance = ab * std_ * std_ + 1 - ab;
  return (1 - ab).sqrt() * (x_t - ab.sqrt() * mean_) / variance;
}

torch::Tensor StationaryGaussianPrior::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  auto ab = schedule_.alpha_bars().index_select(0, t.to(torch::kLong)).to(torch::kFloat64).view({-1, 1, 1, 1});
  // Per Fourier coefficient the same identity as the i.i.d. prior, with variance p.
  auto spectrum = torch::fft::fft2(x_t.to(torch::kFloat64), c10::nullopt, {-2, -1}, "ortho");
  auto eps = (1 - ab).sqrt() * spectrum / (ab * power_.to(torch::kFloat64) + 1 - ab);
  return torch::real(torch::fft::ifft2(eps, c10::nullopt, {-2, -1}, "ortho")).to(x_t.dtype());
}

torch::Tensor StationaryGaussianPrior::covariance_times(const torch::Tensor& x) const {
  auto spectrum = torch::fft::fft2(x.to(torch::kFloat64), c10::nullopt, {-2, -1}, "ortho");
  return torch::real(torch::fft::ifft2(power_.to(torch::kFloat64) * spectrum, c10::nullopt, {-2, -1}, "ortho"))
      .to(x.dtype());
}

torch::Tensor StationaryGaussianPrior::sample_given(const torch::Tensor& u, double sigma, torch::Generator& rng) const {
  auto power = power_.to(torch::kFloat64);
  auto spectrum = torch::fft::fft2(u.to(torch::kFloat64), c10::nullopt, {-2, -1}, "ortho");
  // White noise has a white orthonormal spectrum, so scaling it per frequency
  // gives the posterior's covariance; a real field because p is symmetric.
  auto white = torch::fft::fft2(gaussian(u.sizes(), rng, torch::kFloat64), c10::nullopt, {-2, -1}, "ortho");
  auto sample = power / (power + sigma * sigma) * spectrum + (power * sigma * sigma / (power + sigma * sigma)).sqrt() * white;
  return torch::real(torch::fft::ifft2(sample, c10::nullopt, {-2, -1}, "ortho")).to(u.dtype());
}

}  // namespace ud2m::diffusion
