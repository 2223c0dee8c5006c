// Our CUDA kernels for bf16 activations: the fused GroupNorm (+ per-channel
// affine) + SiLU (nets/group_norm_silu.cu; nets/fp32_group_norm.cpp decides
// when to use it), a residual block's closing sum (nets/residual_add.cu;
// nets/residual_add.cpp), and (any dtype) the decoder's channel concatenation
// (nets/channel_cat.cu; nets/channel_cat.cpp). Plain pointers and sizes, so the .cu files need no
// LibTorch headers.
#pragma once
#include <cstdint>

namespace ud2m::nets::cuda {

// The two memory layouts the kernels read and write: NCHW and NHWC
// (channels-last), both dense.
enum class Layout { kChannelsFirst, kChannelsLast };

// A dense 4-D tensor of activations.
struct Activations {
  int64_t batch, channels, pixels;  // pixels = H·W
  Layout layout;
};

// Activations and the number of groups their channels form.
struct GroupNormShape : Activations {
  int64_t groups;
};

// Per-(sample, channel) values the kernels read in place: bf16 or fp32,
// channel i of sample b at data[b·batch_stride + i] (batch_stride 0: one
// value per channel for every sample). No data: absent (1 for a gain, 0 for
// an offset).
struct ChannelValues {
  const void* data = nullptr;
  bool bf16 = false;
  int64_t batch_stride = 0;
};

// What the kernels fold into y = silu(((x + input_bias − mean)·rstd·weight +
// bias)·scale + shift), mean and rstd those of x + input_bias: the norm's
// affine (weight, bias: one value per channel), a residual block's scale and
// shift, and the bias of the convolution that produced x (left out of the
// convolution, so that no pass of its own adds it). silu = false: the
// normalised, affine values themselves (an attention block's norm).
struct GroupNormAffine {
  ChannelValues weight, bias, scale, shift, input_bias;
  bool silu = true;
};

// The most channels the kernels take (their per-channel coefficients live in
// a block's shared memory).
constexpr int64_t kMaxFusedChannels = 2048;

// The fp32 scratch that group_norm_silu_bf16 needs, in floats.
int64_t group_norm_silu_workspace_floats(const GroupNormShape& shape);

// The fused GroupNorm + affine (+ SiLU) above for bf16 x and y of the same
// layout: the statistics of each (sample, group) accumulated in fp32, one
// rounding at the end; workspace: group_norm_silu_workspace_floats(shape).
void group_norm_silu_bf16(const void* x, void* y, const GroupNormShape& shape, float eps,
                          const GroupNormAffine& affine, float* workspace, void* stream);

// y = a + b + bias1[c] + bias2[c] for bf16 a, b and y of one layout, summed
// in fp32 and rounded once; the biases are per channel (batch_stride 0), either
// may be absent.
void residual_add_bf16(const void* a, const void* b, void* y, const Activations& shape, const ChannelValues& bias1,
                       const ChannelValues& bias2, void* stream);

// y = [a | b] along channels for channels-last tensors of any dtype:
// `pixels` = batch·H·W rows of bytes_a then bytes_b bytes (nets/channel_cat.cu).
void cat_pixels(const void* a, const void* b, void* y, int64_t pixels, int64_t bytes_a, int64_t bytes_b,
                void* stream);

}  // namespace ud2m::nets::cuda
