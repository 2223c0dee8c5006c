// GroupNorm computed in float32 whatever the activations' dtype (as
// guided-diffusion's GroupNorm32), so a network run in bf16 still normalises
// at full precision. Its parameters are named as torch::nn::GroupNorm's.
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

class Fp32GroupNormImpl : public torch::nn::Module {
 public:
  Fp32GroupNormImpl(int64_t groups, int64_t channels, double eps);
  // Outside autograd on a GPU, bf16 4-D activations take the fused kernel
  // without its SiLU (one rounding, no fp32 copies of x).
  torch::Tensor forward(const torch::Tensor& x);
  // silu(forward(x + input_bias)·scale + shift) — the norm-then-activation
  // of a residual block, `scale` and `shift` (B, C, 1, 1) or undefined (1 and
  // 0); `input_bias` ((C) or (B, C, 1, 1)) is the bias of the convolution
  // that produced x, left to the norm so that no pass of its own adds it.
  // Outside autograd fused kernels compute it in fp32 with a single
  // rounding: on the CPU for fp32 and bf16 (nets/group_norm_silu_cpu.hpp), on
  // a GPU for bf16; elsewhere these very operations run.
  torch::Tensor forward_silu(const torch::Tensor& x, const torch::Tensor& scale = {},
                             const torch::Tensor& shift = {}, const torch::Tensor& input_bias = {});
  torch::Tensor weight, bias;

 private:
  int64_t groups_;
  double eps_;
};
TORCH_MODULE(Fp32GroupNorm);

// Whether this build has the fused GPU kernel (a CUDA LibTorch and nvcc).
bool fused_group_norm_silu_available();

}  // namespace ud2m::nets
