// Fused GroupNorm + affine + SiLU for bf16 activations on the GPU: one pass
// to collect each group's statistics, one to normalise, scale, shift and
// activate — where the unfused path upcasts to fp32, normalises, casts back
// and runs SiLU (about four times the memory traffic; at batch 1 these
// memory-bound passes are a large share of an ADM pass).
//
// Both passes are meant to run at memory speed. The statistics pass spreads
// each (sample, group) over many blocks (at batch 1 there are only 32 groups
// for a GPU's ~130 multiprocessors); each block adds its share to the group's
// sum and sum of squares in double, by atomics (taken about one value of the
// group, so that off-centre activations keep their variance), so the second
// pass reads two numbers per group however many blocks the first had. In
// channels-last tensors whose groups hold whole 16-byte vectors (ADM's always
// do) the statistics blocks read whole pixels, coalesced, as the second pass
// does. Each block of the second pass folds the group statistics, the norm's
// affine and the block's scale and shift into per-channel coefficients once,
// in shared memory, so that each element costs a fused multiply-add and a
// SiLU. Where rows hold whole 16-byte vectors, each thread loads and stores
// eight values at a time. No launch prepares the affine: the kernels read the
// parameters in place, in bf16 or fp32.
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

// A group's sum and sum of squares of (x + input bias − its reference value),
// the workspace (zeroed before the statistics pass).
struct GroupSums {
  double sum, squares;
};

// The value sums are taken about: the group's first value (plus its input
// bias), which lies within a few standard deviations of the group's mean.
__device__ float reference_value(const __nv_bfloat16* x, const GroupNormShape& s, const ChannelValues& input_bias,
                                 int64_t b, int64_t g) {
  const int64_t c = g * (s.channels / s.groups);
  const int64_t at = s.layout == Layout::kChannelsFirst ? (b * s.channels + c) * s.pixels : b * s.pixels * s.channels + c;
  return __bfloat162float(x[at]) + value_at(input_bias, b, c, 0.f);
}

// Adds a block's moments (count, mean, M2) to the group's sums about `reference`.
__device__ void add_to_group(GroupSums* group, const Moments& m, float reference) {
  if (m.n == 0) return;
  const double offset = double(m.mean) - reference;
  atomicAdd(&group->sum, m.n * offset);
  atomicAdd(&group->squares, double(m.m2) + m.n * offset * offset);
}

// Mean and rstd = 1/√(var + eps) of group g of sample b from its sums.
__device__ float2 group_statistics(const __nv_bfloat16* x, const GroupNormShape& s, const ChannelValues& input_bias,
                                   const GroupSums* sums, int64_t b, int64_t g, float eps) {
  const double count = double(s.pixels) * (s.channels / s.groups);
  const GroupSums& group = sums[b * s.groups + g];
  const double offset = group.sum / count;
  const double variance = fmax(group.squares / count - offset * offset, 0.0);  // biased, as GroupNorm
  return {float(reference_value(x, s, input_bias, b, g) + offset), rsqrtf(float(variance) + eps)};
}

// The per-thread moments of a block, merged into shared[0] (blockDim.x ≤ kThreads, a power of two).
__device__ void merge_block(Moments* shared) {
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x].merge(shared[threadIdx.x + half]);
    __syncthreads();
  }
}

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
__global__ void group_moments_kernel(const __nv_bfloat16* x, GroupNormShape s, bool vectorised,
                                     ChannelValues input_bias, GroupSums* sums) {
  const int64_t bg = blockIdx.x, b = bg / s.groups, g = bg % s.groups, per_group = s.channels / s.groups;
  ShiftedSums mine;
  if (s.layout == Layout::kChannelsFirst) {  // the group's channels are planes of contiguous pixels
    const int64_t units = vectorised ? s.pixels / kVector : s.pixels;
    const int64_t first = units * blockIdx.y / gridDim.y, last = units * (blockIdx.y + 1) / gridDim.y;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
      const __nv_bfloat16* plane = x + (b * s.channels + c) * s.pixels;
      const float beta = value_at(input_bias, b, c, 0.f);
      const float betas[kVector] = {beta, beta, beta, beta, beta, beta, beta, beta};
      for (int64_t u = first + threadIdx.x; u < last; u += blockDim.x) {
        if (vectorised) add_vector(mine, plane + u * kVector, betas);
        else mine.add(__bfloat162float(plane[u]) + beta);
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
        for (int64_t c = 0; c < per_group; c += kVector) add_vector(mine, pixel + c, group_bias + c);
      } else {
        for (int64_t c = 0; c < per_group; ++c) mine.add(__bfloat162float(pixel[c]) + group_bias[c]);
      }
    }
  }
  __shared__ Moments shared[kThreads];
  shared[threadIdx.x] = mine.moments();
  __syncthreads();
  merge_block(shared);
  if (threadIdx.x == 0) add_to_group(sums + bg, shared[0], reference_value(x, s, input_bias, b, g));
}

// NHWC with groups of whole vectors: blocks (i, b) share the pixels of sample
// b; as in the normalisation, thread t always reads the same eight channels
// (one group's) of blockDim.x · 8 / C pixels per pass, so that a warp reads
// contiguous memory. The block's moments are merged per group, then added.
__global__ void pixel_moments_kernel(const __nv_bfloat16* x, GroupNormShape s, ChannelValues input_bias,
                                     GroupSums* sums) {
  const int64_t b = blockIdx.y, per_group = s.channels / s.groups, chunks = s.channels / kVector;
  const int64_t lanes = blockDim.x / chunks, chunk = threadIdx.x % chunks, c = chunk * kVector;
  float bias[kVector];
#pragma unroll
  for (int i = 0; i < kVector; ++i) bias[i] = value_at(input_bias, b, c + i, 0.f);
  ShiftedSums mine;
  const __nv_bfloat16* in = x + b * s.pixels * s.channels + c;
  for (int64_t p = blockIdx.x * lanes + threadIdx.x / chunks; p < s.pixels; p += gridDim.x * lanes)
    add_vector(mine, in + p * s.channels, bias);
  __shared__ Moments shared[kThreads];
  shared[threadIdx.x] = mine.moments();
  __syncthreads();
  const int64_t chunks_per_group = per_group / kVector;
  for (int64_t g = threadIdx.x; g < s.groups; g += blockDim.x) {
    Moments m{0, 0, 0};
    for (int64_t lane = 0; lane < lanes; ++lane)
      for (int64_t k = g * chunks_per_group; k < (g + 1) * chunks_per_group; ++k) m.merge(shared[lane * chunks + k]);
    add_to_group(sums + b * s.groups + g, m, reference_value(x, s, input_bias, b, g));
  }
}

// Channel c of sample b as y = silu((x − centre)·gain + offset): the group's
// statistics (of x + β), the norm's affine (w, bias), the block's scale k and
// shift t folded: silu(((x + β − mean)·rstd·w + bias)·k + t) (without the
// SiLU where `silu` is false).
struct Coefficients {
  float centre, gain, offset;
  bool silu;
};

__device__ Coefficients coefficients(float mean, float rstd, const GroupNormAffine& affine, int64_t b, int64_t c) {
  const float k = value_at(affine.scale, b, c, 1.f);
  return {mean - value_at(affine.input_bias, b, c, 0.f), rstd * value_at(affine.weight, b, c, 1.f) * k,
          value_at(affine.bias, b, c, 0.f) * k + value_at(affine.shift, b, c, 0.f), affine.silu};
}

__device__ float silu_of_affine(float x, const Coefficients& k) {
  const float v = (x - k.centre) * k.gain + k.offset;
  return k.silu ? __fdividef(v, 1.0f + __expf(-v)) : v;
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
                                        const GroupSums* sums, float eps, GroupNormAffine affine) {
  const int64_t bc = blockIdx.x, b = bc / s.channels, c = bc % s.channels;
  __shared__ Coefficients shared;
  if (threadIdx.x == 0) {
    const float2 stats = group_statistics(x, s, affine.input_bias, sums, b, c / (s.channels / s.groups), eps);
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
                                        const GroupSums* sums, float eps, GroupNormAffine affine) {
  extern __shared__ float shared[];  // groups float2 statistics, then C coefficients
  auto* stats = reinterpret_cast<float2*>(shared);
  auto* k = reinterpret_cast<Coefficients*>(stats + s.groups);
  const int64_t b = blockIdx.y, per_group = s.channels / s.groups;
  for (int64_t g = threadIdx.x; g < s.groups; g += blockDim.x)
    stats[g] = group_statistics(x, s, affine.input_bias, sums, b, g, eps);
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

void launch_normalize(const __nv_bfloat16* x, __nv_bfloat16* y, const GroupNormShape& s, const GroupSums* sums,
                      float eps, const GroupNormAffine& affine, cudaStream_t on) {
  if (s.layout == Layout::kChannelsFirst) {
    normalize_planes_kernel<<<s.batch * s.channels, kThreads, 0, on>>>(x, y, s, vectorisable(s.pixels, {x, y}),
                                                                       sums, eps, affine);
    return;
  }
  const int64_t chunks = s.channels / kVector;
  const bool vectorised = vectorisable(s.channels, {x, y}) && chunks <= 1024;
  const int64_t threads = vectorised ? chunks * std::max<int64_t>(1, kThreads / chunks) : kThreads;
  const int64_t pixels_per_pass = vectorised ? threads / chunks : 1;
  const int64_t wanted = (kTargetBlocks + s.batch - 1) / s.batch;
  const int64_t blocks = std::max<int64_t>(1, std::min(wanted, (s.pixels + pixels_per_pass - 1) / pixels_per_pass));
  const size_t shared = s.groups * sizeof(float2) + s.channels * sizeof(Coefficients);
  normalize_pixels_kernel<<<dim3(blocks, s.batch), threads, shared, on>>>(x, y, s, vectorised, sums, eps, affine);
}

void launch_moments(const __nv_bfloat16* x, const GroupNormShape& s, const ChannelValues& input_bias,
                    GroupSums* sums, cudaStream_t on) {
  const int64_t per_group = s.channels / s.groups, chunks = s.channels / kVector;
  if (s.layout == Layout::kChannelsLast && per_group % kVector == 0 && vectorisable(s.channels, {x}) &&
      chunks <= kThreads) {  // whole pixels, coalesced
    const int64_t lanes = std::max<int64_t>(1, kThreads / chunks), threads = chunks * lanes;
    const int64_t wanted = (kTargetBlocks + s.batch - 1) / s.batch;
    const int64_t blocks = std::max<int64_t>(1, std::min(wanted, (s.pixels + lanes - 1) / lanes));
    pixel_moments_kernel<<<dim3(blocks, s.batch), threads, 0, on>>>(x, s, input_bias, sums);
    return;
  }
  const bool nchw = s.layout == Layout::kChannelsFirst;
  const bool vectorised = vectorisable(nchw ? s.pixels : per_group, {x});
  const size_t shared = nchw ? 0 : per_group * sizeof(float);
  group_moments_kernel<<<dim3(s.batch * s.groups, splits_per_group(s)), kThreads, shared, on>>>(x, s, vectorised,
                                                                                                input_bias, sums);
}

}  // namespace

int64_t group_norm_silu_workspace_floats(const GroupNormShape& shape) {
  static_assert(sizeof(GroupSums) == 4 * sizeof(float), "GroupSums are two doubles");
  return 4 * shape.batch * shape.groups;
}

void group_norm_silu_bf16(const void* x, void* y, const GroupNormShape& shape, float eps,
                          const GroupNormAffine& affine, float* workspace, void* stream) {
  if (shape.channels > kMaxFusedChannels)
    throw std::invalid_argument("fused GroupNorm+SiLU: more than " + std::to_string(kMaxFusedChannels) + " channels");
  const auto on = static_cast<cudaStream_t>(stream);
  auto* sums = reinterpret_cast<GroupSums*>(workspace);
  cudaMemsetAsync(sums, 0, shape.batch * shape.groups * sizeof(GroupSums), on);
  check_launch("GroupNorm statistics reset");
  launch_moments(static_cast<const __nv_bfloat16*>(x), shape, affine.input_bias, sums, on);
  check_launch("GroupNorm statistics kernel");
  launch_normalize(static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), shape, sums, eps, affine, on);
  check_launch("GroupNorm apply kernel");
}

}  // namespace ud2m::nets::cuda
