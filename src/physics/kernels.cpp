#include "physics/kernels.hpp"

#include <torch/torch.h>

#include <cmath>

#include "core/error.hpp"
#include "core/image.hpp"
#include "io/safetensors.hpp"

namespace ud2m::physics {

namespace {
// Coordinates −(n−1)/2 … (n−1)/2, in float64 so kernels do not depend on rounding order.
torch::Tensor centred_grid(int64_t n) { return torch::linspace(-(n - 1) / 2.0, (n - 1) / 2.0, n, torch::kFloat64); }

torch::Tensor normalised(const torch::Tensor& k) { return (k / k.sum()).to(torch::kFloat32); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

torch::Tensor gaussian_kernel(int64_t size, double std) {
  UD2M_CHECK(size >= 1, "kernel size must be at least 1, not {}", size);
  UD2M_CHECK(std > 0, "Gaussian kernel std must be positive, not {}", std);
  auto g = torch::exp(-centred_grid(size).pow(2) / (2 * std * std));
  return normalised(torch::outer(g, g));
}

torch::Tensor box_kernel(int64_t size) {
  UD2M_CHECK(size >= 1, "kernel size must be at least 1, not {}", size);
  return normalised(torch::ones({size, size}, torch::kFloat64));
}

namespace {
// One coordinate of the trajectory: white noise filtered in Fourier by the
// square root of the (circular) Matérn covariance's spectrum.
torch::Tensor matern_path(int64_t n_steps, double l, double sigma, at::Generator& rng) {
  auto noise = at::randn({n_steps}, rng, torch::TensorOptions().dtype(torch::kFloat32));
  auto t = torch::linspace(-M_PI, M_PI, n_steps, torch::kFloat32);
  auto r = std::sqrt(5.0) * t.abs() / l;
  auto cov = sigma * sigma * (1 + r + r.pow(2) / 3) * torch::exp(-r);
  auto path = torch::fft::irfft(torch::fft::rfft(noise) * torch::sqrt(torch::fft::rfft(cov)), n_steps);
  auto keep = int64_t(std::floor(n_steps / (2 * M_PI)));
  path = torch::real(path).slice(0, 0, keep);
  return path - path.mean();
}
}  // namespace

torch::Tensor motion_kernel(int64_t size, uint64_t seed, double l, double sigma) {
  UD2M_CHECK(size >= 3, "motion kernel size must be at least 3, not {}", size);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto fx = matern_path(1000, l, sigma, rng);
  auto fy = matern_path(1000, l, sigma, rng);
  // Histogram over [−1, 1]² with `size` bins per axis; points outside are dropped.
  auto ix = torch::floor((fx + 1) / 2 * size).to(torch::kLong);
  auto iy = torch::floor((fy + 1) / 2 * size).to(torch::kLong);
  auto inside = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size);
  auto k = torch::zeros({size * size}, torch::kFloat64);
  auto idx = (ix * size + iy).masked_select(inside);  // first coordinate = row, as deepinv
  k.index_add_(0, idx, torch::ones({idx.numel()}, torch::kFloat64));
  if (k.sum().item<double>() == 0) k[size * size / 2] = 1;  // a path that left the grid: no blur
  return normalised(k.view({size, size}));
}

torch::Tensor bicubic_filter(int64_t factor) {
  auto x = (torch::arange(-2 * factor, 2 * factor, torch::kFloat64) + 0.5).abs() / double(factor);
  const double a = -0.5;
  auto w = ((a + 2) * x.pow(3) - (a + 3) * x.pow(2) + 1) * (x <= 1) +
           (a * x.pow(3) - 5 * a * x.pow(2) + 8 * a * x - 4 * a) * (x > 1) * (x < 2);
  return normalised(torch::outer(w, w));
}

torch::Tensor downsampling_gaussian_filter(int64_t factor) {
  const int64_t c = int64_t(double(factor) / 0.3 + 1);
  return gaussian_kernel(2 * c + 1, double(factor));
}

torch::Tensor load_kernel_file(const std::string& path) {
  torch::Tensor k;
  if (ends_with(path, ".safetensors")) {
    auto file = read_safetensors(path);
    UD2M_CHECK(!file.tensors.empty(), "kernel file {} holds no tensor", path);
    if (file.tensors.count("kernel"))
      k = file.tensors.at("kernel");
    else {
      UD2M_CHECK(file.tensors.size() == 1, "kernel file {} holds several tensors and none is named 'kernel'", path);
      k = file.tensors.begin()->second;
    }
    k = k.to(torch::kFloat64).squeeze();
    UD2M_CHECK(k.dim() == 2, "kernel file {} must hold a 2-D tensor, not one of shape {}", path, k.sizes().vec());
  } else {
    k = read_image(path, 1)[0][0].to(torch::kFloat64);
  }
  UD2M_CHECK(torch::isfinite(k).all().item<bool>(), "kernel file {} has non-finite values", path);
  UD2M_CHECK(k.min().item<double>() >= 0, "kernel file {} has negative values", path);
  UD2M_CHECK(k.sum().item<double>() > 0, "kernel file {} is all zeros", path);
  return normalised(k);
}

}  // namespace ud2m::physics
