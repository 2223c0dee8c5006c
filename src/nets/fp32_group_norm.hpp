// GroupNorm computed in float32 whatever the activations' dtype (as
// guided-diffusion's GroupNorm32), so a network run in bf16 still normalises
// at full precision. Its parameters are named as torch::nn::GroupNorm's.
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

class Fp32GroupNormImpl : public torch::nn::Module {
 public:
  Fp32GroupNormImpl(int64_t groups, int64_t channels, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(Fp32GroupNorm);

}  // namespace ud2m::nets
