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

// mean and rstd = 1/√(var + eps) of every (sample, group), (batch·groups)
// floats each, accumulated in fp32 (Welford) from bf16 x.
void group_stats_bf16(const void* x, const GroupNormShape& shape, float eps, float* mean, float* rstd,
                      void* stream);

// y = silu((x − mean)·rstd·scale[b, c] + shift[b, c]) for bf16 x and y of
// the same layout, in fp32 with one rounding. scale and shift:
// (batch·channels) floats.
void normalize_affine_silu_bf16(const void* x, void* y, const GroupNormShape& shape, const float* mean,
                                const float* rstd, const float* scale, const float* shift, void* stream);

}  // namespace ud2m::nets::cuda
