#include "ncvsd/vsd.hpp"

#include "core/random.hpp"

namespace ud2m::ncvsd {
namespace {

// (N,) levels broadcast against (N, ...) samples.
torch::Tensor per_sample(const torch::Tensor& level, const torch::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = level.numel();
  return level.reshape(shape);
}

// Σ over every non-batch dimension.
torch::Tensor sum_per_sample(const torch::Tensor& x) { return x.flatten(1).sum(1); }

torch::Tensor weighted_distance(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& weight,
                                const torch::Tensor& logvar) {
  const double numel = static_cast<double>(a[0].numel());
  return weight * (-logvar).exp() * sum_per_sample((a - b).pow(2)) + logvar * numel;
}

}  // namespace

NoiseConditionalPoint noise_conditional_point(const torch::Tensor& y, const torch::Tensor& sigma,
                                              const torch::Tensor& x_t, const torch::Tensor& t) {
  auto precision_y = sigma.pow(-2), precision_t = t.pow(-2);
  auto sigma_eff = (precision_y + precision_t).rsqrt();
  auto y_eff = (y * per_sample(precision_y, y) + x_t * per_sample(precision_t, x_t)) * per_sample(sigma_eff.pow(2), y);
  return {y_eff, sigma_eff};
}

torch::Tensor edm_weight(const torch::Tensor& t) {
  return (t.pow(2) + kSigmaData * kSigmaData) / (t * kSigmaData).pow(2);
}

torch::Tensor generator_loss(const torch::Tensor& x, const torch::Tensor& s0, const torch::Tensor& s,
                             const torch::Tensor& weight, const torch::Tensor& logvar) {
  // The target is a constant: only x carries the generator's gradient.
  auto target = (x - (s - s0)).detach();
  return weighted_distance(x, target, weight, logvar);
}

torch::Tensor fake_score_loss(const torch::Tensor& s, const torch::Tensor& x, const torch::Tensor& weight,
                              const torch::Tensor& logvar) {
  return weighted_distance(s, x.detach(), weight, logvar);
}

torch::Tensor lognormal_levels(int64_t n, double p_mean, double p_std, torch::Generator& rng) {
  return (gaussian({n}, rng, torch::TensorOptions().dtype(torch::kFloat64)) * p_std + p_mean).exp();
}

}  // namespace ud2m::ncvsd
