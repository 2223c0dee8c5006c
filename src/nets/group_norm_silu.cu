// Fused GroupNorm + affine + SiLU for bf16 activations on the GPU: one pass
// to collect each group's statistics, one to normalise, scale, shift and
// activate — where the unfused path upcasts to fp32, normalises, casts back
// and runs SiLU (about four times the memory traffic; at batch 1 these
// memory-bound passes are a large share of an ADM pass).
//
// Both passes are meant to run at memory speed: the statistics of each
// (sample, group) are split over several blocks (at batch 1 there are only 32
// groups for a GPU's ~130 multiprocessors); each block of the second pass
// folds the group statistics, the norm's affine and the block's scale and
// shift into per-channel coefficients once, in shared memory, so that each
// element costs a fused multiply-add and a SiLU. Where rows hold whole
// 16-byte vectors (ADM's channels-last activations always do), each thread
// loads and stores eight values at a time. No launch prepares the affine:
// the kernels read the parameters in place, in bf16 or fp32.
#include <algorithm>
#include <cstdint>

#include "nets/cuda_kernel_common.cuh"

namespace ud2m::nets::cuda {
namespace {

constexpr int64_t kTargetBlocks = 512;  // enough blocks per pass to fill a large GPU
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

// The workspace: the partial moments, three floats each.
int64_t partial_moments_floats(const GroupNormShape& s) { return 3 * s.batch * s.groups * splits_per_group(s); }

// Adds eight values, each plus its channel's input bias (`bias` has one per
// value; null: none).
__device__ void add_vector(ShiftedSums& sums, const __nv_bfloat16* at, const float* bias) {
  const uint4 raw = *reinterpret_cast<const uint4*>(at);
  const auto* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int k = 0; k < kVector / 2; ++k) {
    const float2 v = __bfloat1622float2(pairs[k]);
    sums.add(v.x + (bias ? bias[2 * k] : 0.f));
    sums.add(v.y + (bias ? bias[2 * k + 1] : 0.f));
  }
}

// Block (b·groups + g, split): the moments of group g of sample b (of x plus
// its input bias) over one range of its pixels (NCHW: of its pixel vectors,
// when `vectorised`).
__global__ void partial_moments_kernel(const __nv_bfloat16* x, GroupNormShape s, bool vectorised,
                                       ChannelValues input_bias, Moments* partials) {
  const int64_t bg = blockIdx.x, b = bg / s.groups, g = bg % s.groups, per_group = s.channels / s.groups;
  ShiftedSums sums;
  if (s.layout == Layout::kChannelsFirst) {  // the group's channels are planes of contiguous pixels
    const int64_t units = vectorised ? s.pixels / kVector : s.pixels;
    const int64_t first = units * blockIdx.y / gridDim.y, last = units * (blockIdx.y + 1) / gridDim.y;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
      const __nv_bfloat16* plane = x + (b * s.channels + c) * s.pixels;
      const float beta = value_at(input_bias, b, c, 0.f);
      const float betas[kVector] = {beta, beta, beta, beta, beta, beta, beta, beta};
      for (int64_t u = first + threadIdx.x; u < last; u += blockDim.x) {
        if (vectorised) add_vector(sums, plane + u * kVector, betas);
        else sums.add(__bfloat162float(plane[u]) + beta);
      }
    }
  } else {  // each pixel holds the group's channels side by side
    extern __shared__ float group_bias[];  // per_group floats
    for (int64_t c = threadIdx.x; c < per_group; c += blockDim.x)
      group_bias[c] = value_at(input_bias, b, g * per_group + c, 0.f);
    __syncthreads();
    const int64_t first = s.pixels * blockIdx.y / gridDim.y, last = s.pixels * (blockIdx.y + 1) / gridDim.y;
    const __nv_bfloat16* group = x + b * s.pixels * s.channels + g * per_group;
    for (int64_t p = first + threadIdx.x; p < last; p += blockDim.x) {
      const __nv_bfloat16* pixel = group + p * s.channels;
      if (vectorised) {
        for (int64_t c = 0; c < per_group; c += kVector) add_vector(sums, pixel + c, group_bias + c);
      } else {
        for (int64_t c = 0; c < per_group; ++c) sums.add(__bfloat162float(pixel[c]) + group_bias[c]);
      }
    }
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

// Channel c of sample b as y = silu((x − centre)·gain + offset): the group's
// statistics (of x + β), the norm's affine (w, bias), the block's scale k and
// shift t folded: silu(((x + β − mean)·rstd·w + bias)·k + t).
struct Coefficients {
  float centre, gain, offset;
};

__device__ Coefficients coefficients(float mean, float rstd, const GroupNormAffine& affine, int64_t b, int64_t c) {
  const float k = value_at(affine.scale, b, c, 1.f);
  return {mean - value_at(affine.input_bias, b, c, 0.f), rstd * value_at(affine.weight, b, c, 1.f) * k,
          value_at(affine.bias, b, c, 0.f) * k + value_at(affine.shift, b, c, 0.f)};
}

// Mean and rstd = 1/√(var + eps) of group g of sample b from its partial moments.
__device__ float2 group_statistics(const Moments* partials, int64_t splits, int64_t bg, float eps) {
  const Moments* part = partials + bg * splits;
  Moments m = part[0];
  for (int64_t k = 1; k < splits; ++k) m.merge(part[k]);
  return {m.mean, rsqrtf(m.m2 / m.n + eps)};  // biased variance, as GroupNorm
}

__device__ float silu_of_affine(float x, const Coefficients& k) {
  const float v = (x - k.centre) * k.gain + k.offset;
  return __fdividef(v, 1.0f + __expf(-v));
}

// Eight elements at once, of one channel (NCHW: k[0] for all) or of eight
// (NHWC: k[0..7]).
__device__ void normalize_silu_vector(const __nv_bfloat16* x, __nv_bfloat16* y, const Coefficients* k,
                                      bool one_channel) {
  const uint4 raw = *reinterpret_cast<const uint4*>(x);
  const auto* in = reinterpret_cast<const __nv_bfloat162*>(&raw);
  uint4 result;
  auto* out = reinterpret_cast<__nv_bfloat162*>(&result);
#pragma unroll
  for (int i = 0; i < kVector / 2; ++i) {
    const float2 v = __bfloat1622float2(in[i]);
    out[i] = __floats2bfloat162_rn(silu_of_affine(v.x, k[one_channel ? 0 : 2 * i]),
                                   silu_of_affine(v.y, k[one_channel ? 0 : 2 * i + 1]));
  }
  *reinterpret_cast<uint4*>(y) = result;
}

// NCHW: block (b·C + c) normalises channel c's plane of sample b, in
// 16-byte vectors when `vectorised`.
__global__ void normalize_planes_kernel(const __nv_bfloat16* x, __nv_bfloat16* y, GroupNormShape s, bool vectorised,
                                        const Moments* partials, int64_t splits, float eps, GroupNormAffine affine) {
  const int64_t bc = blockIdx.x, b = bc / s.channels, c = bc % s.channels;
  __shared__ Coefficients shared;
  if (threadIdx.x == 0) {
    const float2 stats = group_statistics(partials, splits, b * s.groups + c / (s.channels / s.groups), eps);
    shared = coefficients(stats.x, stats.y, affine, b, c);
  }
  __syncthreads();
  const Coefficients k = shared;
  const __nv_bfloat16* in = x + bc * s.pixels;
  __nv_bfloat16* out = y + bc * s.pixels;
  if (vectorised) {
    for (int64_t v = threadIdx.x; v < s.pixels / kVector; v += blockDim.x)
      normalize_silu_vector(in + v * kVector, out + v * kVector, &k, true);
  } else {
    for (int64_t p = threadIdx.x; p < s.pixels; p += blockDim.x)
      out[p] = __float2bfloat16(silu_of_affine(__bfloat162float(in[p]), k));
  }
}

// NHWC: blocks (i, b) share the pixels of sample b. Each block first folds
// the coefficients of all C channels into shared memory (the group
// statistics, then the channels). Vectorised, thread t always serves the
// same eight channels (blockDim.x is a multiple of C / 8) of blockDim.x · 8 / C
// pixels per pass; otherwise the block walks one pixel's channels at a time.
__global__ void normalize_pixels_kernel(const __nv_bfloat16* x, __nv_bfloat16* y, GroupNormShape s, bool vectorised,
                                        const Moments* partials, int64_t splits, float eps, GroupNormAffine affine) {
  extern __shared__ float shared[];  // groups float2 statistics, then C coefficients
  auto* stats = reinterpret_cast<float2*>(shared);
  auto* k = reinterpret_cast<Coefficients*>(stats + s.groups);
  const int64_t b = blockIdx.y, per_group = s.channels / s.groups;
  for (int64_t g = threadIdx.x; g < s.groups; g += blockDim.x)
    stats[g] = group_statistics(partials, splits, b * s.groups + g, eps);
  __syncthreads();
  for (int64_t c = threadIdx.x; c < s.channels; c += blockDim.x) {
    const float2 m = stats[c / per_group];
    k[c] = coefficients(m.x, m.y, affine, b, c);
  }
  __syncthreads();
  const __nv_bfloat16* in = x + b * s.pixels * s.channels;
  __nv_bfloat16* out = y + b * s.pixels * s.channels;
  if (vectorised) {
    const int64_t chunks = s.channels / kVector, pixels_per_pass = blockDim.x / chunks;
    const int64_t c = (threadIdx.x % chunks) * kVector;
    Coefficients mine[kVector];  // in registers
#pragma unroll
    for (int i = 0; i < kVector; ++i) mine[i] = k[c + i];
    for (int64_t p = blockIdx.x * pixels_per_pass + threadIdx.x / chunks; p < s.pixels;
         p += gridDim.x * pixels_per_pass)
      normalize_silu_vector(in + p * s.channels + c, out + p * s.channels + c, mine, false);
  } else {
    for (int64_t p = blockIdx.x; p < s.pixels; p += gridDim.x)
      for (int64_t c = threadIdx.x; c < s.channels; c += blockDim.x)
        out[p * s.channels + c] = __float2bfloat16(silu_of_affine(__bfloat162float(in[p * s.channels + c]), k[c]));
  }
}

void launch_normalize(const __nv_bfloat16* x, __nv_bfloat16* y, const GroupNormShape& s, const Moments* partials,
                      int64_t splits, float eps, const GroupNormAffine& affine, cudaStream_t on) {
  if (s.layout == Layout::kChannelsFirst) {
    normalize_planes_kernel<<<s.batch * s.channels, kThreads, 0, on>>>(x, y, s, vectorisable(s.pixels, {x, y}),
                                                                       partials, splits, eps, affine);
    return;
  }
  const int64_t chunks = s.channels / kVector;
  const bool vectorised = vectorisable(s.channels, {x, y}) && chunks <= 1024;
  const int64_t threads = vectorised ? chunks * std::max<int64_t>(1, kThreads / chunks) : kThreads;
  const int64_t pixels_per_pass = vectorised ? threads / chunks : 1;
  const int64_t wanted = (kTargetBlocks + s.batch - 1) / s.batch;
  const int64_t blocks = std::max<int64_t>(1, std::min(wanted, (s.pixels + pixels_per_pass - 1) / pixels_per_pass));
  const size_t shared = s.groups * sizeof(float2) + s.channels * sizeof(Coefficients);
  normalize_pixels_kernel<<<dim3(blocks, s.batch), threads, shared, on>>>(x, y, s, vectorised, partials, splits, eps,
                                                                          affine);
}

}  // namespace

int64_t group_norm_silu_workspace_floats(const GroupNormShape& shape) {
  static_assert(sizeof(Moments) == 3 * sizeof(float), "Moments are three floats");
  return partial_moments_floats(shape);
}

void group_norm_silu_bf16(const void* x, void* y, const GroupNormShape& shape, float eps,
                          const GroupNormAffine& affine, float* workspace, void* stream) {
  if (shape.channels > kMaxFusedChannels)
    throw std::invalid_argument("fused GroupNorm+SiLU: more than " + std::to_string(kMaxFusedChannels) + " channels");
  const auto on = static_cast<cudaStream_t>(stream);
  const int64_t splits = splits_per_group(shape), per_group = shape.channels / shape.groups;
  auto* partials = reinterpret_cast<Moments*>(workspace);
  const auto* in = static_cast<const __nv_bfloat16*>(x);
  const bool nchw = shape.layout == Layout::kChannelsFirst;
  const bool vector_moments = vectorisable(nchw ? shape.pixels : per_group, {x});
  const size_t shared = nchw ? 0 : per_group * sizeof(float);
  partial_moments_kernel<<<dim3(shape.batch * shape.groups, splits), kThreads, shared, on>>>(
      in, shape, vector_moments, affine.input_bias, partials);
  check_launch("GroupNorm statistics kernel");
  launch_normalize(in, static_cast<__nv_bfloat16*>(y), shape, partials, splits, eps, affine, on);
  check_launch("GroupNorm apply kernel");
}

}  // namespace ud2m::nets::cuda
