#include "variational/tv.hpp"

#include <torch/torch.h>

#include <algorithm>

#include "core/error.hpp"

namespace ud2m::variational {
namespace {

namespace F = torch::nn::functional;

// Forward differences with a zero last row/column (Neumann boundary).
std::pair<torch::Tensor, torch::Tensor> image_gradient(const torch::Tensor& x) {
  auto dx = F::pad(x.narrow(3, 1, x.size(3) - 1) - x.narrow(3, 0, x.size(3) - 1),
                   F::PadFuncOptions({0, 1, 0, 0}));
  auto dy = F::pad(x.narrow(2, 1, x.size(2) - 1) - x.narrow(2, 0, x.size(2) - 1),
                   F::PadFuncOptions({0, 0, 0, 1}));
  return {dx, dy};
}

// The negative adjoint of image_gradient().
torch::Tensor divergence(const torch::Tensor& px, const torch::Tensor& py) {
  auto div_x = px - F::pad(px.narrow(3, 0, px.size(3) - 1), F::PadFuncOptions({1, 0, 0, 0}));
  div_x.narrow(3, div_x.size(3) - 1, 1).copy_(-px.narrow(3, px.size(3) - 2, 1));
  auto div_y = py - F::pad(py.narrow(2, 0, py.size(2) - 1), F::PadFuncOptions({0, 0, 1, 0}));
  div_y.narrow(2, div_y.size(2) - 1, 1).copy_(-py.narrow(2, py.size(2) - 2, 1));
  return div_x + div_y;
}

// Per-pixel gradient magnitude over both directions and all channels.
torch::Tensor magnitude(const torch::Tensor& gx, const torch::Tensor& gy) {
  return (gx.pow(2) + gy.pow(2)).sum(1, true).sqrt();
}

constexpr double kTvWeightPerSigma = 0.1;

}  // namespace

torch::Tensor total_variation(const torch::Tensor& x) {
  auto [gx, gy] = image_gradient(x);
  return magnitude(gx, gy).sum();
}

torch::Tensor tv_prox(const torch::Tensor& v, double lambda, int iterations) {
  if (lambda <= 0) return v;
  UD2M_CHECK(v.size(2) >= 2 && v.size(3) >= 2, "TV needs images of at least 2x2 pixels");
  auto px = torch::zeros_like(v), py = torch::zeros_like(v);
  const double tau = 0.248;  // Chambolle's step bound is 1/4 for this discretisation
  for (int i = 0; i < iterations; ++i) {
    auto [gx, gy] = image_gradient(divergence(px, py) - v / lambda);
    auto denom = 1 + tau * magnitude(gx, gy);
    px = (px + tau * gx) / denom;
    py = (py + tau * gy) / denom;
  }
  return v - lambda * divergence(px, py);
}

double default_tv_weight(double sigma) {
  // λ grows with the noise (model units); the floor keeps noiseless tasks
  // (JPEG, inpainting) regularised. Constant tuned on the bundled example.
  return kTvWeightPerSigma * std::max(2.0 * sigma, 0.005);
}

torch::Tensor tv_restore(const physics::Operator& op, const torch::Tensor& y, const std::vector<int64_t>& image_shape,
                         const TvOptions& options, const StepCallback& on_step) {
  UD2M_CHECK(options.iterations > 0, "the number of iterations must be positive, not {}", options.iterations);
  UD2M_CHECK(options.weight >= 0, "the TV weight must be non-negative, not {}", options.weight);
  torch::NoGradGuard no_grad;
  const double lambda = options.weight;
  if (auto* linear = dynamic_cast<const physics::LinearOperator*>(&op)) {
    // ADMM on x = z: x-step is the operator's prox, z-step the TV prox.
    const double rho = std::max(lambda * 20.0, 1e-3);
    auto x = linear->pinv(y).clamp(-1, 1);
    auto z = x.clone(), u = torch::zeros_like(x);
    for (int k = 0; k < options.iterations; ++k) {
      x = linear->prox(z - u, y, 1.0 / rho);
      z = tv_prox(x + u, lambda / rho, options.inner).clamp(-1, 1);
      u = u + x - z;
      if (on_step) on_step(k, z);
    }
    return z;
  }
  // Nonlinear operator: proximal gradient, from y itself when it is an image
  // of the right size (JPEG), else from mid-grey (phase retrieval).
  auto x = y.sizes().vec() == image_shape ? y.clamp(-1, 1) : torch::zeros(image_shape, y.options());
  for (int k = 0; k < options.iterations; ++k) {
    x = tv_prox(x - options.step * op.data_grad(x, y), options.step * lambda, options.inner).clamp(-1, 1);
    if (on_step) on_step(k, x);
  }
  return x;
}

}  // namespace ud2m::variational
