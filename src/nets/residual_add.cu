// The end of a residual block on the GPU, for bf16 activations: y = a + b +
// bias₁[c] + bias₂[c] in one pass, where the convolutions that produced a and
// b left out their biases. PyTorch would add each bias in a pass of its own
// (a broadcast over channels-last tensors, which its generic elementwise
// kernel runs well below memory speed), then the sum.
#include <algorithm>
#include <cstdint>

#include "nets/cuda_kernel_common.cuh"

namespace ud2m::nets::cuda {
namespace {

// A per-channel bias (batch_stride 0), 0 where absent.
__device__ float bias_at(const ChannelValues& v, int64_t c) { return value_at(v, 0, c, 0.f); }

// Channel of element i (NHWC: the fastest index; NCHW: planes of `pixels`).
__device__ int64_t channel_of(int64_t i, const Activations& s) {
  return s.layout == Layout::kChannelsLast ? i % s.channels : (i / s.pixels) % s.channels;
}

// Vectorised, each thread takes eight elements that share a pixel (NHWC:
// channels a multiple of 8) or a channel (NCHW: pixels a multiple of 8).
__global__ void residual_add_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* y, Activations s,
                                    ChannelValues bias1, ChannelValues bias2, bool vectorised) {
  const int64_t total = s.batch * s.channels * s.pixels, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (!vectorised) {
    for (int64_t i = first; i < total; i += stride) {
      const int64_t c = channel_of(i, s);
      y[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]) + bias_at(bias1, c) + bias_at(bias2, c));
    }
    return;
  }
  const bool nhwc = s.layout == Layout::kChannelsLast;
  for (int64_t v = first; v < total / kVector; v += stride) {
    const int64_t i = v * kVector, c0 = channel_of(i, s);
    const uint4 ra = *reinterpret_cast<const uint4*>(a + i), rb = *reinterpret_cast<const uint4*>(b + i);
    const auto* pa = reinterpret_cast<const __nv_bfloat162*>(&ra);
    const auto* pb = reinterpret_cast<const __nv_bfloat162*>(&rb);
    uint4 result;
    auto* out = reinterpret_cast<__nv_bfloat162*>(&result);
#pragma unroll
    for (int k = 0; k < kVector / 2; ++k) {
      const int64_t c = nhwc ? c0 + 2 * k : c0;
      const float2 va = __bfloat1622float2(pa[k]), vb = __bfloat1622float2(pb[k]);
      out[k] = __floats2bfloat162_rn(va.x + vb.x + bias_at(bias1, c) + bias_at(bias2, c),
                                     va.y + vb.y + bias_at(bias1, nhwc ? c + 1 : c) + bias_at(bias2, nhwc ? c + 1 : c));
    }
    *reinterpret_cast<uint4*>(y + i) = result;
  }
}

}  // namespace

void residual_add_bf16(const void* a, const void* b, void* y, const Activations& shape, const ChannelValues& bias1,
                       const ChannelValues& bias2, void* stream) {
  const int64_t row = shape.layout == Layout::kChannelsLast ? shape.channels : shape.pixels;
  const bool vectorised = vectorisable(row, {a, b, y});
  const int64_t total = shape.batch * shape.channels * shape.pixels, units = vectorised ? total / kVector : total;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((units + kThreads - 1) / kThreads, 4096));
  residual_add_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(a), static_cast<const __nv_bfloat16*>(b), static_cast<__nv_bfloat16*>(y),
      shape, bias1, bias2, vectorised);
  check_launch("residual add kernel");
}

}  // namespace ud2m::nets::cuda
