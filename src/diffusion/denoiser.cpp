#include "diffusion/denoiser.hpp"

#include <cmath>

namespace ud2m::diffusion {

torch::Tensor Denoiser::timesteps(int t, const torch::Tensor& like) const {
  return torch::full({like.size(0)}, static_cast<float>(t), like.options().dtype(torch::kFloat32));
}

torch::Tensor Denoiser::x0(const torch::Tensor& x_t, int t) {
  const double ab = schedule().alpha_bar(t);
  return (x_t - std::sqrt(1 - ab) * epsilon(x_t, timesteps(t, x_t))) / std::sqrt(ab);
}

torch::Tensor Denoiser::score(const torch::Tensor& x_t, int t) {
  return -epsilon(x_t, timesteps(t, x_t)) / std::sqrt(1 - schedule().alpha_bar(t));
}

torch::Tensor Denoiser::denoise(const torch::Tensor& x, double sigma) {
  const int t = schedule().timestep_for_sigma(sigma);
  return x0(std::sqrt(schedule().alpha_bar(t)) * x, t);
}

}  // namespace ud2m::diffusion
