// GroupNorm computed in float32 whatever the activations' dtype (as
// guided-diffusion's GroupNorm32), so a network run in bf16 still normalises
// at full precision. Its parameters are named as torch::nn::GroupNorm's.
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

class Fp32GroupNormImpl : public torch::nn::Module {
 public:
  Fp32GroupNormImpl(int64_t groups, int64_t channels, double eps) : groups_(groups), eps_(eps) {
    weight = register_parameter("weight", torch::ones({channels}));
    bias = register_parameter("bias", torch::zeros({channels}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    namespace F = torch::nn::functional;
    return F::group_norm(x.to(torch::kFloat32), F::GroupNormFuncOptions(groups_)
                                                    .weight(weight.to(torch::kFloat32))
                                                    .bias(bias.to(torch::kFloat32))
                                                    .eps(eps_))
        .to(x.scalar_type());
  }
  torch::Tensor weight, bias;

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(Fp32GroupNorm);

}  // namespace ud2m::nets
