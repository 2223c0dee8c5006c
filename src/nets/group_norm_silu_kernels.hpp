// CUDA kernels of the fused GroupNorm (+ per-channel affine) + SiLU on bf16
// activations (nets/fp32_group_norm.cpp decides when to use them). Plain
// pointers and sizes, so the .cu file needs no LibTorch headers.
#pragma once
#include <cstdint>

namespace ud2m::nets::cuda {

// The two memory layouts the kernels read and write: NCHW and NHWC
// (channels-last), both dense.
enum class Layout { kChannelsFirst, kChannelsLast };

struct GroupNormShape {
  int64_t batch, channels, pixels, groups;  // pixels = H·W
  Layout layout;
};

// The fp32 scratch that group_norm_silu_bf16 needs, in floats.
int64_t group_norm_silu_workspace_floats(const GroupNormShape& shape);

// y = silu((x − mean)·rstd·scale[b, c] + shift[b, c]) for bf16 x and y of the
// same layout, with mean and rstd = 1/√(var + eps) of each (sample, group)
// accumulated in fp32, and one rounding at the end. scale and shift:
// (batch·channels) floats; workspace: group_norm_silu_workspace_floats(shape).
void group_norm_silu_bf16(const void* x, void* y, const GroupNormShape& shape, float eps, const float* scale,
                          const float* shift, float* workspace, void* stream);

}  // namespace ud2m::nets::cuda
