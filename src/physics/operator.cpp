#include "physics/operator.hpp"

#include <torch/torch.h>

#include "core/error.hpp"
#include "core/random.hpp"

namespace ud2m::physics {

torch::Tensor GaussianNoise::add(const torch::Tensor& y, torch::Generator& rng) const {
  UD2M_CHECK(sigma >= 0, "noise sigma must be non-negative, not {}", sigma);
  if (sigma == 0) return y;
  return y + model_sigma() * gaussian(y.sizes(), rng, y.options());
}

torch::Tensor Operator::data_grad(const torch::Tensor& x, const torch::Tensor& y) const {
  torch::AutoGradMode enable(true);
  auto xv = x.detach().requires_grad_(true);
  auto loss = 0.5 * (forward(xv) - y).pow(2).sum();
  return torch::autograd::grad({loss}, {xv})[0];
}

std::vector<int64_t> Operator::output_shape(const std::vector<int64_t>& input_shape) const {
  torch::NoGradGuard no_grad;
  return forward(torch::zeros(input_shape)).sizes().vec();
}

torch::Tensor LinearOperator::data_grad(const torch::Tensor& x, const torch::Tensor& y) const {
  return adjoint(forward(x) - y);
}

namespace {
// Per-sample inner product, shaped to broadcast against (N, ...).
torch::Tensor batch_dot(const torch::Tensor& a, const torch::Tensor& b) {
  auto shape = std::vector<int64_t>(a.dim(), 1);
  shape[0] = a.size(0);
  return (a * b).flatten(1).sum(1).view(shape);
}
}  // namespace

torch::Tensor conjugate_gradient(const LinearOperator& op, const torch::Tensor& b, double alpha, double beta,
                                 const torch::Tensor& x0, int max_iter, double tol) {
  auto apply = [&](const torch::Tensor& v) { return alpha * v + beta * op.normal(v); };
  auto x = x0.clone();
  auto r = b - apply(x);
  auto p = r.clone();
  auto rr = batch_dot(r, r);
  const double stop = tol * tol * std::max(batch_dot(b, b).max().item<double>(), 1e-30);
  for (int i = 0; i < max_iter; ++i) {
    if (rr.max().item<double>() <= stop) break;
    auto ap = apply(p);
    auto step = rr / batch_dot(p, ap).clamp_min(1e-30);
    x = x + step * p;
    r = r - step * ap;
    auto rr_next = batch_dot(r, r);
    p = r + (rr_next / rr.clamp_min(1e-30)) * p;
    rr = rr_next;
  }
  return x;
}

torch::Tensor LinearOperator::pinv(const torch::Tensor& y) const {
  // CG on AᵀA x = Aᵀy from zero stays in range(Aᵀ): the minimum-norm solution.
  auto b = adjoint(y);
  return conjugate_gradient(*this, b, 0.0, 1.0, torch::zeros_like(b), 500, 1e-6);
}

torch::Tensor LinearOperator::prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const {
  UD2M_CHECK(gamma >= 0, "prox step gamma must be non-negative, not {}", gamma);
  return conjugate_gradient(*this, gamma * adjoint(y) + z, 1.0, gamma, z);
}

}  // namespace ud2m::physics
