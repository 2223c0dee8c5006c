#include "nets/fp32_group_norm.hpp"

namespace ud2m::nets {
namespace F = torch::nn::functional;

Fp32GroupNormImpl::Fp32GroupNormImpl(int64_t groups, int64_t channels, double eps) : groups_(groups), eps_(eps) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor Fp32GroupNormImpl::forward(const torch::Tensor& x) {
  auto options = F::GroupNormFuncOptions(groups_).weight(weight.to(torch::kFloat32)).bias(bias.to(torch::kFloat32))
                     .eps(eps_);
  // On the CPU, bf16 activations with fp32 affine parameters take the
  // mixed-type kernel, which accumulates in fp32: the same values as
  // upcasting first (checked bit-for-bit), ~20× faster at 256² (1.3 vs 26 ms
  // for 128 channels), as it skips two passes over the activations.
  if (x.scalar_type() == torch::kFloat32 || x.device().is_cpu()) return F::group_norm(x, options);
  return F::group_norm(x.to(torch::kFloat32), options).to(x.scalar_type());
}

}  // namespace ud2m::nets
