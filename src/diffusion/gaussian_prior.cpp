#include "diffusion/gaussian_prior.hpp"

namespace ud2m::diffusion {

torch::Tensor GaussianPrior::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  auto ab = schedule_.alpha_bars().index_select(0, t.to(torch::kLong)).to(x_t.dtype()).view({-1, 1, 1, 1});
  // x_t ~ N(√ᾱ m, ᾱs² + 1 − ᾱ); ε and x_t are jointly Gaussian with Cov = √(1−ᾱ).
  auto variance = ab * std_ * std_ + 1 - ab;
  return (1 - ab).sqrt() * (x_t - ab.sqrt() * mean_) / variance;
}

}  // namespace ud2m::diffusion
