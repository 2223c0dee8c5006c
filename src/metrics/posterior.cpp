#include "metrics/posterior.hpp"

#include <torch/torch.h>

#include <cmath>

#include "core/error.hpp"

namespace ud2m::metrics {
namespace {

void check_samples(const torch::Tensor& samples) {
  UD2M_CHECK(samples.dim() >= 1 && samples.size(0) >= 2, "posterior statistics need at least 2 samples, not {}",
             samples.dim() ? samples.size(0) : 0);
}

torch::Tensor sorted_quantile(const torch::Tensor& sorted, double p) {
  const double position = p * static_cast<double>(sorted.size(0) - 1);
  const int64_t below = static_cast<int64_t>(std::floor(position));
  const int64_t above = std::min(below + 1, sorted.size(0) - 1);
  const double fraction = position - static_cast<double>(below);
  return sorted[below] + fraction * (sorted[above] - sorted[below]);
}

}  // namespace

torch::Tensor posterior_mean(const torch::Tensor& samples) {
  check_samples(samples);
  return samples.mean(0);
}

torch::Tensor posterior_std(const torch::Tensor& samples) {
  check_samples(samples);
  return samples.std(0, /*unbiased=*/true);
}

torch::Tensor sample_quantile(const torch::Tensor& samples, double p) {
  check_samples(samples);
  UD2M_CHECK(p >= 0 && p <= 1, "a quantile level lies in [0, 1], not {}", p);
  return sorted_quantile(std::get<0>(samples.sort(0)), p);
}

double credible_coverage(const torch::Tensor& samples, const torch::Tensor& reference, double q) {
  check_samples(samples);
  UD2M_CHECK(q > 0 && q < 1, "the credible level q lies in (0, 1), not {}", q);
  UD2M_CHECK(samples.sizes().slice(1) == reference.sizes(), "samples of shape {} (S first) do not fit a reference of {}",
             fmt::join(samples.sizes(), "x"), fmt::join(reference.sizes(), "x"));
  torch::NoGradGuard no_grad;
  auto sorted = std::get<0>(samples.to(torch::kFloat64).sort(0));
  auto lower = sorted_quantile(sorted, (1 - q) / 2), upper = sorted_quantile(sorted, (1 + q) / 2);
  auto r = reference.to(torch::kFloat64);
  return ((r >= lower) & (r <= upper)).to(torch::kFloat64).mean().item<double>();
}

}  // namespace ud2m::metrics
