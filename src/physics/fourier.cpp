#include "physics/fourier.hpp"

#include <torch/torch.h>

namespace ud2m::physics {

torch::Tensor kernel_spectrum(const torch::Tensor& kernel, int64_t H, int64_t W, bool half) {
  const int64_t h = kernel.size(0), w = kernel.size(1);
  auto padded = torch::zeros({H, W}, torch::kFloat64);
  padded.slice(0, 0, h).slice(1, 0, w).copy_(kernel.to(torch::kFloat64));
  padded = torch::roll(padded, {-(h / 2), -(w / 2)}, {0, 1});
  return half ? torch::fft::rfft2(padded) : torch::fft::fft2(padded);
}

torch::Tensor spectrum_like(const torch::Tensor& spectrum64, const torch::Tensor& like) {
  auto dtype = like.scalar_type() == torch::kFloat64 ? torch::kComplexDouble : torch::kComplexFloat;
  return spectrum64.to(like.device(), dtype);
}

torch::Tensor spectrum_like_complex(const torch::Tensor& spectrum64, const torch::Tensor& like) {
  return spectrum64.to(like.device(), like.scalar_type());
}

}  // namespace ud2m::physics
