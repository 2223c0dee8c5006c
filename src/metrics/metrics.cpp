#include "metrics/metrics.hpp"

#include <torch/torch.h>

#include <cmath>

#include "core/error.hpp"

namespace ud2m::metrics {
namespace {

void check_pair(const torch::Tensor& estimate, const torch::Tensor& reference) {
  UD2M_CHECK(estimate.sizes() == reference.sizes(), "cannot compare images of sizes {} and {}",
             fmt::join(estimate.sizes(), "x"), fmt::join(reference.sizes(), "x"));
}

constexpr int64_t kSsimRadius = 5;  // int(3.5 σ + 0.5) for σ = 1.5, as scipy's gaussian_filter

// The normalised 1-D Gaussian scipy.ndimage.gaussian_filter uses.
torch::Tensor ssim_window() {
  auto x = torch::arange(-kSsimRadius, kSsimRadius + 1, torch::kFloat64);
  auto w = torch::exp(-0.5 * (x / 1.5).pow(2));
  return w / w.sum();
}

// Gaussian local mean of each channel over the pixels the window fits in
// ("valid"): exactly the region scikit-image keeps after its crop.
torch::Tensor local_mean(const torch::Tensor& x, const torch::Tensor& window) {
  const int64_t c = x.size(1), k = window.size(0);
  auto rows = window.view({1, 1, 1, k}).expand({c, 1, 1, k});
  auto cols = window.view({1, 1, k, 1}).expand({c, 1, k, 1});
  namespace F = torch::nn::functional;
  auto y = F::conv2d(x, rows, F::Conv2dFuncOptions().groups(c));
  return F::conv2d(y, cols, F::Conv2dFuncOptions().groups(c));
}

}  // namespace

torch::Tensor psnr_per_image(const torch::Tensor& estimate, const torch::Tensor& reference) {
  check_pair(estimate, reference);
  auto diff = (estimate.to(torch::kFloat64) - reference.to(torch::kFloat64));
  auto mse = diff.pow(2).flatten(1).mean(1);
  return -10.0 * torch::log10(mse.clamp_min(1e-20));
}

double psnr(const torch::Tensor& estimate, const torch::Tensor& reference) {
  return psnr_per_image(estimate, reference).mean().item<double>();
}

torch::Tensor ssim_per_image(const torch::Tensor& estimate, const torch::Tensor& reference) {
  check_pair(estimate, reference);
  UD2M_CHECK(estimate.dim() == 4, "SSIM needs (N, C, H, W) images, not {}", fmt::join(estimate.sizes(), "x"));
  const int64_t side = 2 * kSsimRadius + 1;
  UD2M_CHECK(estimate.size(2) >= side && estimate.size(3) >= side,
             "SSIM needs images of at least {}x{} pixels, not {}x{}", side, side, estimate.size(3), estimate.size(2));
  torch::NoGradGuard no_grad;
  auto x = estimate.to(torch::kFloat64), y = reference.to(torch::kFloat64);
  auto w = ssim_window().to(x.device());
  auto mx = local_mean(x, w), my = local_mean(y, w);
  auto vx = local_mean(x * x, w) - mx * mx;
  auto vy = local_mean(y * y, w) - my * my;
  auto cxy = local_mean(x * y, w) - mx * my;
  const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;  // (K·data range)²
  auto map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
  return map.flatten(1).mean(1);
}

double ssim(const torch::Tensor& estimate, const torch::Tensor& reference) {
  return ssim_per_image(estimate, reference).mean().item<double>();
}

}  // namespace ud2m::metrics
