// The fused GroupNorm (+ per-channel affine) + SiLU of a residual block, for
// inference on the CPU (nets/fp32_group_norm.cpp decides when to use it).
// The composed ops read and write the activations five times (statistics,
// normalise, scale, shift, SiLU); this reads them twice and writes once.
#pragma once
#include <torch/torch.h>

namespace ud2m::nets::cpu {

// y = silu((x + β − mean)·rstd·scale[b, c] + shift[b, c]) for a 4-D fp32 or
// bf16 x, dense NCHW or NHWC; y has x's dtype and layout. mean and rstd =
// 1/√(var + eps) of each (sample, group) of x + β are accumulated in double;
// scale, shift and the input bias β (undefined: 0) are (batch, channels)
// fp32. No autograd.
torch::Tensor group_norm_silu(const torch::Tensor& x, int64_t groups, double eps, const torch::Tensor& scale,
                              const torch::Tensor& shift, const torch::Tensor& input_bias = {});

}  // namespace ud2m::nets::cpu
