#include "nets/lora.hpp"

#include <cmath>

#include "core/error.hpp"

namespace ud2m::nets {

LoraImpl::LoraImpl(int64_t in, int64_t out, const LoraOptions& options) : scale_(options.scale()) {
  UD2M_CHECK(options.rank > 0, "the LoRA rank must be positive, not {}", options.rank);
  // A as a Linear layer's default init (Kaiming-uniform, a = √5); B zero.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  A = register_parameter("A", torch::empty({options.rank, in}).uniform_(-bound, bound));
  B = register_parameter("B", torch::zeros({out, options.rank}));
}

torch::Tensor LoraImpl::channels_first(const torch::Tensor& x) const {
  auto a = A.to(x.scalar_type()), b = B.to(x.scalar_type());
  return scale_ * torch::matmul(b, torch::matmul(a, x));
}

torch::Tensor LoraImpl::channels_last(const torch::Tensor& x) const {
  auto a = A.to(x.scalar_type()), b = B.to(x.scalar_type());
  return scale_ * torch::matmul(torch::matmul(x, a.t()), b.t());
}

}  // namespace ud2m::nets
