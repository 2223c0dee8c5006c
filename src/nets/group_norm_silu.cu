// Fused GroupNorm + affine + SiLU for bf16 activations on the GPU: one pass
// to collect each group's statistics, one to normalise, scale, shift and
// activate — where the unfused path upcasts to fp32, normalises, casts back
// and runs SiLU (about four times the memory traffic; at batch 1 these
// memory-bound passes are a large share of an ADM pass).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "nets/group_norm_silu_kernels.hpp"

namespace ud2m::nets::cuda {
namespace {

constexpr int kThreads = 256;

// Running (count, mean, M2) of Welford's algorithm, merged pairwise (Chan et al.).
struct Moments {  // an aggregate: __shared__ arrays allow no constructors
  float n, mean, m2;
  __device__ void add(float v) {
    n += 1;
    const float d = v - mean;
    mean += d / n;
    m2 += d * (v - mean);
  }
  __device__ void merge(const Moments& o) {
    if (o.n == 0) return;
    const float total = n + o.n, d = o.mean - mean;
    mean += d * o.n / total;
    m2 += o.m2 + d * d * n * o.n / total;
    n = total;
  }
};

// One block per (sample, group).
__global__ void group_stats_kernel(const __nv_bfloat16* x, GroupNormShape s, float eps, float* mean_out,
                                   float* rstd_out) {
  const int64_t b = blockIdx.x / s.groups, g = blockIdx.x % s.groups;
  const int64_t per_group = s.channels / s.groups, count = per_group * s.pixels;
  Moments m{0, 0, 0};
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    int64_t offset;
    if (s.layout == Layout::kChannelsFirst) {
      offset = (b * s.channels + g * per_group) * s.pixels + i;  // the group's channels are contiguous
    } else {
      offset = (b * s.pixels + i / per_group) * s.channels + g * per_group + i % per_group;
    }
    m.add(__bfloat162float(x[offset]));
  }
  __shared__ Moments shared[kThreads];
  shared[threadIdx.x] = m;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x].merge(shared[threadIdx.x + half]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    mean_out[blockIdx.x] = shared[0].mean;
    rstd_out[blockIdx.x] = rsqrtf(shared[0].m2 / shared[0].n + eps);  // biased variance, as GroupNorm
  }
}

__global__ void normalize_affine_silu_kernel(const __nv_bfloat16* x, __nv_bfloat16* y, GroupNormShape s,
                                             const float* mean, const float* rstd, const float* scale,
                                             const float* shift) {
  const int64_t total = s.batch * s.channels * s.pixels, per_group = s.channels / s.groups;
  for (int64_t m = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; m < total;
       m += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = m / (s.channels * s.pixels);
    const int64_t c = s.layout == Layout::kChannelsFirst ? (m / s.pixels) % s.channels : m % s.channels;
    const int64_t bg = b * s.groups + c / per_group, bc = b * s.channels + c;
    const float v = (__bfloat162float(x[m]) - mean[bg]) * rstd[bg] * scale[bc] + shift[bc];
    y[m] = __float2bfloat16(v / (1.0f + __expf(-v)));
  }
}

void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

}  // namespace

void group_stats_bf16(const void* x, const GroupNormShape& shape, float eps, float* mean, float* rstd,
                      void* stream) {
  group_stats_kernel<<<shape.batch * shape.groups, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(x), shape, eps, mean, rstd);
  check_launch("GroupNorm statistics kernel");
}

void normalize_affine_silu_bf16(const void* x, void* y, const GroupNormShape& shape, const float* mean,
                                const float* rstd, const float* scale, const float* shift, void* stream) {
  const int64_t total = shape.batch * shape.channels * shape.pixels;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  normalize_affine_silu_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), shape, mean, rstd, scale, shift);
  check_launch("GroupNorm apply kernel");
}

}  // namespace ud2m::nets::cuda
