#include "nets/group_norm_silu_cpu.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.hpp"

// The loops below are compiled three times — baseline x86-64, AVX2 and
// AVX-512 (x86-64-v3/v4) — and the loader picks the version this CPU runs:
// the baseline's 4-lane vectors would leave the wider units idle, and a
// binary built for AVX-512 alone would not start on older CPUs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define UD2M_VECTOR_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define UD2M_VECTOR_CLONES
#endif
// The helpers must be compiled inside each clone, not once for the baseline.
#define UD2M_INLINE [[gnu::always_inline]] inline

namespace ud2m::nets::cpu {
namespace {

// Loads and stores the compiler can vectorise: bf16 values are handled as
// their bits (uint16_t), as c10::BFloat16's conversions keep loops scalar.
UD2M_INLINE float load(float v) { return v; }
UD2M_INLINE float load(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
UD2M_INLINE void store(float v, float* out) { *out = v; }
UD2M_INLINE void store(float v, uint16_t* out) {  // round to nearest even, NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
  const bool nan = (bits & 0x7FFFFFFF) > 0x7F800000;  // integer test: a float compare blocks vectorising
  *out = static_cast<uint16_t>(nan ? 0x7FC0 : rounded);
}

// e^x within ~2 ulp, as 2ⁿ·e^r with |r| ≤ ln2/2 and e^r's Taylor polynomial
// to r⁷ (error < 6e-9); x is clamped to [−87, 88], where 2ⁿ stays a normal
// float. Written out because std::exp is a library call per element.
UD2M_INLINE float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float round = 12582912.0f;  // 1.5·2²³: adding it rounds to an integer
  const float n = (x * 1.44269504f + round) - round;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-6f;  // ln 2 in two parts
  const float p =
      1 + r * (1 + r * (1.f / 2 + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720 + r / 5040))))));
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

UD2M_INLINE float silu(float z) { return z / (1 + exp_approx(-z)); }

// Sum and sum of squares of a contiguous run, in double; 16 partial sums so
// that the additions vectorise without reassociating one long chain.
template <typename T>
UD2M_INLINE void run_moments_of(const T* x, int64_t n, double* out) {
  constexpr int kLanes = 16;
  double sum[kLanes] = {}, squares[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double v = load(x[i + l]);
      sum[l] += v;
      squares[l] += v * v;
    }
  for (; i < n; ++i) {
    const double v = load(x[i]);
    sum[0] += v;
    squares[0] += v * v;
  }
  for (int l = 0; l < kLanes; ++l) {
    out[0] += sum[l];
    out[1] += squares[l];
  }
}

// Adds one NHWC pixel's channels into per-channel sums and sums of squares.
template <typename T>
UD2M_INLINE void accumulate_pixel_of(const T* x, int64_t channels, double* sum, double* squares) {
  for (int64_t c = 0; c < channels; ++c) {
    const double v = load(x[c]);
    sum[c] += v;
    squares[c] += v * v;
  }
}

// y = silu(x·a + s), a and s per element (NHWC: per channel of a pixel) or
// one value for the run (NCHW: a channel's plane).
template <typename T>
UD2M_INLINE void silu_affine_of(const T* x, T* y, int64_t n, const float* a, const float* s, bool per_element) {
  if (per_element) {
    for (int64_t i = 0; i < n; ++i) store(silu(load(x[i]) * a[i] + s[i]), y + i);
    return;
  }
  const float a0 = *a, s0 = *s;
  for (int64_t i = 0; i < n; ++i) store(silu(load(x[i]) * a0 + s0), y + i);
}

UD2M_VECTOR_CLONES void run_moments(const void* x, bool bf16, int64_t n, double* out) {
  if (bf16) return run_moments_of(static_cast<const uint16_t*>(x), n, out);
  run_moments_of(static_cast<const float*>(x), n, out);
}

UD2M_VECTOR_CLONES void accumulate_pixels(const void* x, bool bf16, int64_t pixels, int64_t channels, double* sum,
                                          double* squares) {
  for (int64_t p = 0; p < pixels; ++p) {
    if (bf16) accumulate_pixel_of(static_cast<const uint16_t*>(x) + p * channels, channels, sum, squares);
    else accumulate_pixel_of(static_cast<const float*>(x) + p * channels, channels, sum, squares);
  }
}

UD2M_VECTOR_CLONES void silu_affine(const void* x, void* y, bool bf16, int64_t n, const float* a, const float* s,
                                    bool per_element) {
  if (bf16)
    return silu_affine_of(static_cast<const uint16_t*>(x), static_cast<uint16_t*>(y), n, a, s,
                          per_element);
  silu_affine_of(static_cast<const float*>(x), static_cast<float*>(y), n, a, s, per_element);
}

// Per (sample, channel): Σx and Σx² over the pixels, as a (B·C, 2) array.
std::vector<double> channel_moments(const torch::Tensor& x, bool channels_last) {
  const int64_t batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  const bool bf16 = x.scalar_type() == torch::kBFloat16;
  const auto* base = static_cast<const char*>(x.data_ptr());
  const int64_t item = x.element_size();
  std::vector<double> moments(2 * batch * channels, 0.0);
  if (!channels_last) {
    at::parallel_for(0, batch * channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane)
        run_moments(base + plane * pixels * item, bf16, pixels, &moments[2 * plane]);
    });
    return moments;
  }
  // NHWC: each chunk of pixels sums into its own per-channel arrays, merged after.
  const int64_t chunks = std::min<int64_t>(at::get_num_threads() * 4, pixels);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<double> partial(2 * chunks * channels, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t first = pixels * k / chunks, last = pixels * (k + 1) / chunks;
        double* sums = &partial[2 * k * channels];
        accumulate_pixels(base + (b * pixels + first) * channels * item, bf16, last - first, channels, sums,
                          sums + channels);
      }
    });
    for (int64_t k = 0; k < chunks; ++k)
      for (int64_t c = 0; c < channels; ++c) {
        moments[2 * (b * channels + c)] += partial[2 * k * channels + c];
        moments[2 * (b * channels + c) + 1] += partial[(2 * k + 1) * channels + c];
      }
  }
  return moments;
}

}  // namespace

torch::Tensor group_norm_silu(const torch::Tensor& x, int64_t groups, double eps, const torch::Tensor& scale,
                              const torch::Tensor& shift, const torch::Tensor& input_bias) {
  UD2M_CHECK(x.device().is_cpu() && x.dim() == 4 &&
                 (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16) &&
                 x.size(1) % groups == 0,
             "the CPU GroupNorm+SiLU takes a 4-D fp32 or bf16 CPU tensor whose channels the groups divide");
  const bool channels_last = !x.is_contiguous();
  UD2M_CHECK(channels_last ? x.is_contiguous(torch::MemoryFormat::ChannelsLast) : true,
             "the CPU GroupNorm+SiLU takes a dense NCHW or NHWC tensor");
  const int64_t batch = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  const int64_t per_group = channels / groups;
  auto moments = channel_moments(x, channels_last);
  // The input bias β moves each channel's values: Σ(x+β) = Σx + nβ,
  // Σ(x+β)² = Σx² + 2βΣx + nβ²; the normalised value (x + β − mean)·gain.
  std::vector<double> beta(batch * channels, 0.0);
  if (input_bias.defined()) {
    const auto bias = input_bias.to(torch::kFloat64).reshape({batch, channels}).contiguous();
    std::copy_n(bias.data_ptr<double>(), beta.size(), beta.begin());
    for (int64_t i = 0; i < batch * channels; ++i) {
      const double n = static_cast<double>(pixels), sum = moments[2 * i];
      moments[2 * i] += n * beta[i];
      moments[2 * i + 1] += 2 * beta[i] * sum + n * beta[i] * beta[i];
    }
  }
  // Fold the group's mean and rstd into each channel's scale and shift.
  auto a = scale.to(torch::kFloat32).reshape({batch, channels}).contiguous().clone();
  auto s = shift.to(torch::kFloat32).reshape({batch, channels}).contiguous().clone();
  float *pa = a.data_ptr<float>(), *ps = s.data_ptr<float>();
  const double count = static_cast<double>(per_group * pixels);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t g = 0; g < groups; ++g) {
      double sum = 0, squares = 0;
      for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        sum += moments[2 * (b * channels + c)];
        squares += moments[2 * (b * channels + c) + 1];
      }
      const double mean = sum / count, variance = std::max(squares / count - mean * mean, 0.0);
      const double rstd = 1 / std::sqrt(variance + eps);
      for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        const int64_t i = b * channels + c;
        const double gain = pa[i] * rstd;
        pa[i] = static_cast<float>(gain);
        ps[i] = static_cast<float>(ps[i] + (beta[i] - mean) * gain);
      }
    }
  auto y = torch::empty_like(x);  // keeps x's layout
  const bool bf16 = x.scalar_type() == torch::kBFloat16;
  const auto* in = static_cast<const char*>(x.data_ptr());
  auto* out = static_cast<char*>(y.data_ptr());
  const int64_t item = x.element_size();
  if (channels_last) {
    at::parallel_for(0, batch * pixels, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / pixels, offset = row * channels * item;
        silu_affine(in + offset, out + offset, bf16, channels, pa + b * channels, ps + b * channels, true);
      }
    });
  } else {
    at::parallel_for(0, batch * channels, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t offset = plane * pixels * item;
        silu_affine(in + offset, out + offset, bf16, pixels, pa + plane, ps + plane, false);
      }
    });
  }
  return y;
}

}  // namespace ud2m::nets::cpu
