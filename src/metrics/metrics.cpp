#include "metrics/metrics.hpp"

#include <torch/torch.h>

#include <cmath>

#include "core/error.hpp"

namespace ud2m::metrics {

double psnr(const torch::Tensor& estimate, const torch::Tensor& reference) {
  UD2M_CHECK(estimate.sizes() == reference.sizes(), "cannot compare images of sizes {} and {}",
             fmt::join(estimate.sizes(), "x"), fmt::join(reference.sizes(), "x"));
  auto diff = (estimate.to(torch::kFloat64) - reference.to(torch::kFloat64));
  auto mse = diff.pow(2).flatten(1).mean(1);
  return (-10.0 * torch::log10(mse.clamp_min(1e-20))).mean().item<double>();
}

}  // namespace ud2m::metrics
