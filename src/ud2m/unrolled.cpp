#include "ud2m/unrolled.hpp"

#include <cmath>
#include <cstring>
#include <map>

#include <c10/core/impl/LocalDispatchKeySet.h>

#include "core/error.hpp"
#include "core/random.hpp"
#include "nets/recompute.hpp"

namespace ud2m::unrolled {

std::string weights_fingerprint(torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> sorted;
  for (auto& item : module.named_parameters()) sorted[item.key()] = item.value();
  for (auto& item : module.named_buffers()) sorted[item.key()] = item.value();
  uint64_t hash = 1469598103934665603ull;
  auto mix = [&](const void* data, size_t n) {
    auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  };
  for (auto& [name, tensor] : sorted) {
    mix(name.data(), name.size());
    auto values = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    mix(values.data_ptr(), values.numel() * sizeof(float));
  }
  return fmt::format("fnv1a64:{:016x}", hash);
}

UnrolledNetwork::UnrolledNetwork(diffusion::PriorPtr prior, UnrolledOptions options)
    : prior_(std::move(prior)), options_(options) {
  UD2M_CHECK(options_.blocks > 0, "the number of unrolled blocks K must be positive, not {}", options_.blocks);
  set_noise_inflation(options_.noise_inflation);
  base_fingerprint_ = weights_fingerprint(prior_->module());
  for (auto& p : prior_->module().parameters()) p.set_requires_grad(false);
  prior_->add_lora(options_.lora);
  for (auto& item : prior_->module().named_parameters())
    if (prior_->is_output_head(item.key())) item.value().set_requires_grad(true);
  register_module("prior", prior_->module().shared_from_this());
  log_lambda_ = register_parameter("log_lambda", torch::zeros({}));
  log_rho_scale_ = register_parameter("log_rho_scale", torch::zeros({}));
  if (options_.learned_init) initialiser_ = register_module("initialiser", nets::Initialiser(prior_->channels()));
}

void UnrolledNetwork::set_blocks(int blocks) {
  UD2M_CHECK(blocks > 0, "the number of unrolled blocks K must be positive, not {}", blocks);
  options_.blocks = blocks;
}

void UnrolledNetwork::set_noise_inflation(double inflation) {
  UD2M_CHECK(inflation > 0 && std::isfinite(inflation), "the noise inflation c must be positive, not {}", inflation);
  options_.noise_inflation = inflation;
}

void UnrolledNetwork::fold_lora() {
  prior_->fold_lora();
  lora_folded_ = true;
}

void UnrolledNetwork::set_denoiser(diffusion::DenoiserPtr denoiser) {
  UD2M_CHECK(lora_folded_, "a UD2M network takes another denoiser only for restoring, after fold_lora()");
  denoiser_ = std::move(denoiser);
}

std::vector<std::pair<std::string, torch::Tensor>> UnrolledNetwork::trainable_parameters() {
  UD2M_CHECK(!lora_folded_, "this UD2M network's LoRA was folded into its prior for restoring: it has no adapter "
             "weights to train, load or save");
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& item : named_parameters())
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

double UnrolledNetwork::rho0(double sigma_y, int t) const {
  const double sigma_t = prior_->schedule().sigma(t), s = options_.noise_inflation * sigma_y;
  return s * sigma_t / std::sqrt(s * s + sigma_t * sigma_t);
}

int UnrolledNetwork::renoise_timestep(double sigma_y, int t) const {
  return prior_->schedule().timestep_for_sigma(rho0(sigma_y, t));
}

namespace {

// argmin_z ½γ‖A(z) − y‖² + ½‖z − u‖² for a nonlinear A, which has no closed
// form: gradient descent from u through A's differentiable model, step
// 1/(γL² + 1) with L ≥ ‖∂A‖ (the objective's curvature is at most γL² + 1).
// When a gradient is wanted the steps stay in the graph, so z is
// differentiable in u and γ. Always fp32/fp64: JPEG's quantisation would not
// survive bf16 autocast.
torch::Tensor gradient_prox(const physics::Operator& op, const torch::Tensor& u, const torch::Tensor& y,
                            const torch::Tensor& gamma, int steps) {
  const double bound = op.jacobian_bound();
  UD2M_CHECK(bound > 0, "UD2M's data step needs a linear operator or one with a known Jacobian bound (JPEG); '{}' "
             "has neither", op.name());
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const bool track = torch::GradMode::is_enabled() && (u.requires_grad() || gamma.requires_grad());
  auto g = gamma.to(u.scalar_type()), step = 1 / (g * bound * bound + 1);
  auto z = u;
  for (int i = 0; i < steps; ++i) {
    torch::Tensor grad;
    if (track) {
      if (!z.requires_grad()) z = z.detach().requires_grad_(true);
      auto misfit = 0.5 * (op.forward(z) - y).pow(2).sum();
      grad = torch::autograd::grad({misfit}, {z}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
    } else {
      grad = op.data_grad(z, y);
    }
    z = z - step * (g * grad + z - u);
  }
  return z;
}

}  // namespace

torch::Tensor UnrolledNetwork::data_step(const physics::Operator& op, const torch::Tensor& y, double sigma_y,
                                         const torch::Tensor& x_t, int t, const torch::Tensor& previous) const {
  const auto& schedule = prior_->schedule();
  const double sigma_t = schedule.sigma(t);
  // The two quadratic terms in z merge into one, ‖z − u‖²/(2v).
  auto rho = rho0(sigma_y, t) * rho_scale();
  auto w_t = torch::full({}, 1 / (sigma_t * sigma_t), torch::kFloat64), w_prev = 1 / rho.to(torch::kFloat64).pow(2);
  auto v = 1 / (w_t + w_prev);
  auto u = (v * (w_t * x_t / std::sqrt(schedule.alpha_bar(t)) + w_prev * previous)).to(x_t.scalar_type());
  auto gamma = v / (lambda().to(torch::kFloat64) * sigma_y * sigma_y);  // ½γ‖A(z) − y‖² + ½‖z − u‖²
  auto* linear = dynamic_cast<const physics::LinearOperator*>(&op);
  if (!linear) return gradient_prox(op, u, y, gamma, options_.nonlinear_prox_steps);
  const double g = gamma.item<double>();
  auto z = linear->prox(u, y, g);
  if (!gamma.requires_grad()) return z;
  // The prox takes γ as a number; its derivative dz/dγ = (γAᵀA + I)⁻¹Aᵀ(y − Az)
  // is attached with a term that is zero in value.
  auto dz_dgamma = linear->prox(linear->adjoint(y - linear->forward(z.detach())).detach(), torch::zeros_like(y), g);
  return z + (gamma - gamma.detach()).to(z.scalar_type()) * dz_dgamma;
}

namespace {

// Separable Gaussian blur of (N, C, H, W), zero outside the image.
torch::Tensor gaussian_blur(const torch::Tensor& x, double std) {
  const int64_t radius = std::min<int64_t>(static_cast<int64_t>(std::ceil(2.5 * std)), std::max(x.size(2), x.size(3)));
  auto u = torch::arange(-radius, radius + 1, x.options());
  auto g = (-(u * u) / (2 * std * std)).exp();
  g = g / g.sum();
  const int64_t c = x.size(1);
  auto row = g.view({1, 1, 1, -1}).expand({c, 1, 1, g.size(0)}).contiguous();
  auto col = g.view({1, 1, -1, 1}).expand({c, 1, g.size(0), 1}).contiguous();
  namespace F = torch::nn::functional;
  auto h = F::conv2d(x, row, F::Conv2dFuncOptions().padding({0, radius}).groups(c));
  return F::conv2d(h, col, F::Conv2dFuncOptions().padding({radius, 0}).groups(c));
}

// Each unseen pixel gets the Gaussian-weighted mean of the seen pixels around
// it (normalised convolution), at the smallest scale 1, 2, 4, … that reaches
// one: a smooth fill that keeps constants and never leaves the range of the
// seen values, so the prior starts from a plausible image instead of grey.
torch::Tensor fill_unseen(torch::Tensor x, torch::Tensor seen) {
  auto known = seen.to(x.scalar_type());
  auto done = seen;
  for (double std = 1; !done.all().item<bool>(); std *= 2) {
    auto weight = gaussian_blur(known, std);
    auto reached = weight > 1e-4;
    auto mean = gaussian_blur(x * known, std) / torch::where(reached, weight, torch::ones_like(weight));
    auto fill = reached & ~done;
    x = torch::where(fill, mean, x);
    done = done | reached;
    if (std > 4 * std::max(x.size(2), x.size(3))) break;  // nothing seen at all: leave 0
  }
  return x;
}

}  // namespace

torch::Tensor initial_estimate(const physics::Operator& op, const torch::Tensor& y) {
  auto* linear = dynamic_cast<const physics::LinearOperator*>(&op);
  if (!linear) {
    UD2M_CHECK(op.jacobian_bound() > 0 && y.dim() == 4 && op.output_shape(y.sizes().vec()) == y.sizes().vec(),
               "UD2M needs a linear operator or a nonlinear one whose measurement is an image (JPEG); '{}' is neither",
               op.name());
    return y.clamp(-1, 1);
  }
  // Aᵀy / Aᵀ1: each pixel the weighted mean of the measurements it enters —
  // y for blur and denoising, y in the seen pixels for inpainting, a
  // normalised (blurred) upsampling for SR. It never amplifies noise, where A†y or a
  // weakly regularised MAP estimate does (gain up to 1/(2σ_y) under blur).
  auto weight = linear->adjoint(torch::ones_like(y));
  // A matrix with signed entries (random projections) weighs no mean: its
  // minimum-norm solution A†y then (such matrices are seldom ill-conditioned).
  if ((weight < 0).any().item<bool>()) return linear->pinv(y).clamp(-1, 1);
  auto seen = weight > 1e-3 * weight.abs().max();  // pixels some measurement sees
  auto x = torch::where(seen, linear->adjoint(y) / torch::where(seen, weight, torch::ones_like(weight)),
                        torch::zeros_like(weight));
  return fill_unseen(x, seen).clamp(-1, 1);
}

std::vector<torch::Tensor> UnrolledNetwork::draw_block_noise(const torch::Tensor& x_t, torch::Generator& rng) const {
  std::vector<torch::Tensor> noise;
  for (int k = 0; k < options_.blocks; ++k) noise.push_back(gaussian(x_t.sizes(), rng, x_t.options()));
  return noise;
}

torch::Tensor UnrolledNetwork::forward(const physics::Operator& op, const torch::Tensor& y, double sigma,
                                       const torch::Tensor& x_t, int t, torch::Generator& rng) {
  return forward(op, y, sigma, x_t, t, draw_block_noise(x_t, rng));
}

torch::Tensor UnrolledNetwork::forward(const physics::Operator& op, const torch::Tensor& y, double sigma,
                                       const torch::Tensor& x_t, int t, const std::vector<torch::Tensor>& block_noise) {
  UD2M_CHECK(block_noise.size() == static_cast<size_t>(options_.blocks), "{} re-noising draws for {} blocks",
             block_noise.size(), options_.blocks);
  UD2M_CHECK(sigma > 0, "UD2M needs a positive measurement noise level, not {}", sigma);
  const double sigma_y = 2 * sigma;  // model units
  const auto& schedule = prior_->schedule();
  const int t_delta = renoise_timestep(sigma_y, t);
  const double ab = schedule.alpha_bar(t_delta);
  auto x = initial_estimate(op, y);
  if (initialiser_) x = initialiser_->forward(x, x_t, schedule.alpha_bar(t));
  for (int k = 0; k < options_.blocks; ++k) {
    auto z = data_step(op, y, sigma_y, x_t, t, x);
    auto z_in = std::sqrt(ab) * z + std::sqrt(1 - ab) * block_noise[k].to(z.scalar_type());
    if (recompute_)
      x = nets::recompute_in_backward(
          [this, t_delta](const torch::Tensor& in) { return denoiser().x0(in, t_delta); }, z_in);
    else
      x = denoiser().x0(z_in, t_delta);
  }
  return x;
}

}  // namespace ud2m::unrolled
