// Fused GroupNorm + affine + SiLU for bf16 activations on the GPU: one pass
// to collect each group's statistics, one to normalise, scale, shift and
// activate — where the unfused path upcasts to fp32, normalises, casts back
// and runs SiLU (about four times the memory traffic; at batch 1 these
// memory-bound passes are a large share of an ADM pass).
//
// Both passes are meant to run at memory speed: the statistics of each
// (sample, group) are split over several blocks (at batch 1 there are only 32
// groups for a GPU's ~130 multiprocessors), and no element pays for an integer
// division — loops walk pixels and channels directly, and the per-element
// work of the second pass is a fused multiply-add and a SiLU.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "nets/group_norm_silu_kernels.hpp"

namespace ud2m::nets::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kTargetBlocks = 512;  // enough statistics blocks to fill a large GPU
constexpr int64_t kMinPixelsPerSplit = 256;

// Count, mean and sum of squared deviations (Welford's M2), merged pairwise
// (Chan et al.), so that off-centre activations keep their variance.
struct Moments {  // an aggregate: __shared__ arrays allow no constructors
  float n, mean, m2;
  __device__ void merge(const Moments& o) {
    if (o.n == 0) return;
    const float total = n + o.n, d = o.mean - mean;
    mean += d * o.n / total;
    m2 += o.m2 + d * d * n * o.n / total;
    n = total;
  }
};

// One thread's values, summed about its first value (no division per value;
// the shift keeps the sums small for off-centre data).
struct ShiftedSums {
  float origin = 0, sum = 0, squares = 0;
  int n = 0;
  __device__ void add(float v) {
    if (n == 0) origin = v;
    const float d = v - origin;
    sum += d;
    squares += d * d;
    ++n;
  }
  __device__ Moments moments() const {
    if (n == 0) return {0, 0, 0};
    const float mean = sum / n;
    return {float(n), origin + mean, fmaxf(squares - sum * mean, 0.f)};
  }
};

int64_t splits_per_group(const GroupNormShape& s) {
  const int64_t wanted = (kTargetBlocks + s.batch * s.groups - 1) / (s.batch * s.groups);
  return std::max<int64_t>(1, std::min(wanted, s.pixels / kMinPixelsPerSplit));
}

// The workspace: the partial moments (three floats each), then the
// per-(sample, channel) centres and gains.
int64_t partial_moments_floats(const GroupNormShape& s) { return 3 * s.batch * s.groups * splits_per_group(s); }

// Block (b·groups + g, split): the moments of group g of sample b over one
// range of its pixels.
__global__ void partial_moments_kernel(const __nv_bfloat16* x, GroupNormShape s, Moments* partials) {
  const int64_t bg = blockIdx.x, b = bg / s.groups, g = bg % s.groups, per_group = s.channels / s.groups;
  const int64_t first = s.pixels * blockIdx.y / gridDim.y, last = s.pixels * (blockIdx.y + 1) / gridDim.y;
  ShiftedSums sums;
  if (s.layout == Layout::kChannelsFirst) {  // the group's channels are planes of contiguous pixels
    for (int64_t c = 0; c < per_group; ++c) {
      const __nv_bfloat16* plane = x + (b * s.channels + g * per_group + c) * s.pixels;
      for (int64_t p = first + threadIdx.x; p < last; p += blockDim.x) sums.add(__bfloat162float(plane[p]));
    }
  } else {  // each pixel holds the group's channels side by side
    const __nv_bfloat16* group = x + b * s.pixels * s.channels + g * per_group;
    for (int64_t p = first + threadIdx.x; p < last; p += blockDim.x)
      for (int64_t c = 0; c < per_group; ++c) sums.add(__bfloat162float(group[p * s.channels + c]));
  }
  __shared__ Moments shared[kThreads];
  shared[threadIdx.x] = sums.moments();
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x].merge(shared[threadIdx.x + half]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[bg * gridDim.y + blockIdx.y] = shared[0];
}

// One thread per (sample, channel): its group's statistics from the partial
// moments, as the centre and gain of y = (x − centre)·gain + shift.
__global__ void channel_coefficients_kernel(const Moments* partials, int64_t splits, GroupNormShape s, float eps,
                                            const float* scale, float* centre, float* gain) {
  const int64_t bc = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (bc >= s.batch * s.channels) return;
  const int64_t b = bc / s.channels, g = (bc % s.channels) / (s.channels / s.groups);
  const Moments* part = partials + (b * s.groups + g) * splits;
  Moments m = part[0];
  for (int64_t k = 1; k < splits; ++k) m.merge(part[k]);
  centre[bc] = m.mean;
  gain[bc] = rsqrtf(m.m2 / m.n + eps) * scale[bc];  // biased variance, as GroupNorm
}

// Rows of contiguous elements that share a sample: one channel's pixels
// (NCHW) or one pixel's channels (NHWC).
__global__ void normalize_silu_kernel(const __nv_bfloat16* x, __nv_bfloat16* y, GroupNormShape s,
                                      const float* centre, const float* gain, const float* shift) {
  const bool nchw = s.layout == Layout::kChannelsFirst;
  const int64_t rows = nchw ? s.batch * s.channels : s.batch * s.pixels, length = nchw ? s.pixels : s.channels;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * length, channel0 = nchw ? row : (row / s.pixels) * s.channels;
    for (int64_t i = threadIdx.x; i < length; i += blockDim.x) {
      const int64_t bc = nchw ? channel0 : channel0 + i;
      const float v = (__bfloat162float(x[base + i]) - centre[bc]) * gain[bc] + shift[bc];
      y[base + i] = __float2bfloat16(v / (1.0f + __expf(-v)));
    }
  }
}

void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

}  // namespace

int64_t group_norm_silu_workspace_floats(const GroupNormShape& shape) {
  static_assert(sizeof(Moments) == 3 * sizeof(float), "Moments are three floats");
  return partial_moments_floats(shape) + 2 * shape.batch * shape.channels;
}

void group_norm_silu_bf16(const void* x, void* y, const GroupNormShape& shape, float eps, const float* scale,
                          const float* shift, float* workspace, void* stream) {
  const auto on = static_cast<cudaStream_t>(stream);
  const int64_t splits = splits_per_group(shape), channels = shape.batch * shape.channels;
  auto* partials = reinterpret_cast<Moments*>(workspace);
  float* centre = workspace + partial_moments_floats(shape);
  float* gain = centre + channels;
  const auto* in = static_cast<const __nv_bfloat16*>(x);
  partial_moments_kernel<<<dim3(shape.batch * shape.groups, splits), kThreads, 0, on>>>(in, shape, partials);
  check_launch("GroupNorm statistics kernel");
  channel_coefficients_kernel<<<(channels + kThreads - 1) / kThreads, kThreads, 0, on>>>(
      partials, splits, shape, eps, scale, centre, gain);
  check_launch("GroupNorm coefficients kernel");
  const int64_t rows = shape.layout == Layout::kChannelsFirst ? channels : shape.batch * shape.pixels;
  normalize_silu_kernel<<<std::min<int64_t>(rows, 1 << 16), kThreads, 0, on>>>(
      in, static_cast<__nv_bfloat16*>(y), shape, centre, gain, shift);
  check_launch("GroupNorm apply kernel");
}

}  // namespace ud2m::nets::cuda
