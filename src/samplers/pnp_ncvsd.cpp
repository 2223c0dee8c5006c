#include "samplers/pnp_ncvsd.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/random.hpp"

namespace ud2m::samplers {

std::vector<double> karras_sigmas(int steps, double sigma_min, double sigma_max, double rho) {
  UD2M_CHECK(steps >= 2, "PnP-NCVSD needs at least 2 steps, not {}", steps);
  UD2M_CHECK(sigma_min > 0 && sigma_max > sigma_min && rho > 0,
             "the noise levels need 0 < sigma_min < sigma_max and rho > 0 (got {}, {}, {})", sigma_min, sigma_max, rho);
  std::vector<double> sigmas;
  const double lo = std::pow(sigma_min, 1 / rho), hi = std::pow(sigma_max, 1 / rho);
  for (int i = 0; i < steps; ++i) sigmas.push_back(std::pow(hi + i * (lo - hi) / (steps - 1), rho));
  return sigmas;
}

torch::Tensor sample_likelihood_step(const physics::LinearOperator& op, const torch::Tensor& x0,
                                     const torch::Tensor& y, double sigma_y, double s, torch::Generator& rng) {
  auto x0_perturbed = x0 + s * gaussian(x0.sizes(), rng, x0.options());
  auto y_perturbed = y + sigma_y * gaussian(y.sizes(), rng, y.options());
  return op.prox(x0_perturbed, y_perturbed, s * s / (sigma_y * sigma_y));
}

double jacobian_gram_norm(const physics::Operator& op, const torch::Tensor& x, int iterations, torch::Generator& rng) {
  torch::AutoGradMode enable(true);
  auto point = x.detach().requires_grad_(true);
  auto image = op.forward(point);
  auto v = gaussian(x.sizes(), rng, x.options());
  torch::Tensor norms;
  for (int k = 0; k < iterations; ++k) {
    v = v / v.flatten(1).norm(2, 1).clamp_min(1e-30).view({-1, 1, 1, 1});
    const double eps = 1e-3 * std::max(1.0, x.abs().max().item<double>());
    torch::Tensor jv;
    {
      torch::NoGradGuard no_grad;
      jv = (op.forward(x + eps * v) - op.forward(x - eps * v)) / (2 * eps);
    }
    auto jtjv = torch::autograd::grad({image}, {point}, {jv}, /*retain_graph=*/true)[0];
    norms = (jtjv * v).flatten(1).sum(1);  // Rayleigh quotient vᵀJᵀJv, ‖v‖ = 1
    v = jtjv.detach();
  }
  return norms.max().item<double>();
}

namespace {

// Per image: ‖u − x0‖²/(2s²) + ‖A(u) − y‖²/(2σ_y²), and minus its gradient.
struct Potential {
  const physics::Operator& op;
  const torch::Tensor &x0, &y;
  double s, sigma_y;
  // Summed in double: Metropolis compares two energies of ~10⁶ that differ by ~1.
  torch::Tensor value(const torch::Tensor& u) const {
    return (u - x0).to(torch::kFloat64).pow(2).flatten(1).sum(1) / (2 * s * s) +
           (op.forward(u) - y).to(torch::kFloat64).pow(2).flatten(1).sum(1) / (2 * sigma_y * sigma_y);
  }
  torch::Tensor drift(const torch::Tensor& u) const {
    return -(u - x0) / (s * s) - op.data_grad(u, y) / (sigma_y * sigma_y);
  }
};

// Preconditioned Langevin proposals u' = u + τM·drift(u) + √(2τ)·N(0, M),
// each accepted or not per image by the Metropolis–Hastings rule (MALA): the
// chain keeps its target even where M only approximates the inverse
// curvature (up to the step adaptation below), and a proposal that overshoots
// is refused rather than followed. `m` is M at the starting u.
torch::Tensor preconditioned_mala(const Potential& target, physics::LangevinPreconditioner m,
                                  const LangevinOptions& options, torch::Tensor u, torch::Generator& rng) {
  const double variance = target.s * target.s, noise_variance = target.sigma_y * target.sigma_y;
  double tau = options.tau;
  auto per_image = [](const torch::Tensor& t) { return t.view({-1, 1, 1, 1}); };
  // log q(to | from) up to a constant, for the Gaussian proposal from `from`.
  auto log_proposal = [&](const torch::Tensor& to, const torch::Tensor& from, const torch::Tensor& drift_from) {
    auto d = to - from - tau * m.apply(drift_from);
    return -(d * m.inverse(d)).to(torch::kFloat64).flatten(1).sum(1) / (4 * tau);
  };
  auto drift = target.drift(u), energy = target.value(u);
  for (int k = 0; k < options.steps; ++k) {
    if (k > 0 && k % options.recurvature_every == 0) m = *target.op.langevin_preconditioner(u, variance, noise_variance);
    auto proposal = u + tau * m.apply(drift) + std::sqrt(2 * tau) * m.noise(rng);
    auto proposal_drift = target.drift(proposal), proposal_energy = target.value(proposal);
    auto log_ratio = energy - proposal_energy + log_proposal(u, proposal, proposal_drift) -
                     log_proposal(proposal, u, drift);
    auto accept = (uniform({u.size(0)}, rng, log_ratio.options()).log() < log_ratio) & torch::isfinite(log_ratio);
    u = torch::where(per_image(accept), proposal, u);
    drift = torch::where(per_image(accept), proposal_drift, drift);
    energy = torch::where(accept, proposal_energy, energy);
    // Where M fits the curvature poorly (far from the data, the Hessian's
    // residual term) proposals at tau are all refused: shrink the step while
    // most are, grow it back (up to tau) while most pass.
    const double rate = accept.to(torch::kFloat64).mean().item<double>();
    if (rate < 0.25) tau *= 0.5;
    if (rate > 0.75) tau = std::min(options.tau, 1.5 * tau);
  }
  return u;
}

}  // namespace

torch::Tensor langevin_likelihood_step(const physics::Operator& op, const torch::Tensor& x0, const torch::Tensor& y,
                                       double sigma_y, double s, const LangevinOptions& options,
                                       torch::Generator& rng) {
  UD2M_CHECK(options.steps >= 0 && options.tau > 0 && options.tau < 1 && options.recurvature_every >= 1 &&
                 options.power_iterations >= 1,
             "Langevin needs steps >= 0, 0 < tau < 1 and positive curvature intervals and iterations (got {}, {}, "
             "{}, {})", options.steps, options.tau, options.recurvature_every, options.power_iterations);
  auto u = x0 + s * gaussian(x0.sizes(), rng, x0.options());
  const Potential target{op, x0, y, s, sigma_y};
  if (options.precondition)
    if (auto m = op.langevin_preconditioner(u, s * s, sigma_y * sigma_y))
      return preconditioned_mala(target, *m, options, u, rng);
  // An operator that declares a bound on its Jacobian (JPEG) is taken at its
  // word: finite differences through its rounding measure jumps, not slopes.
  const double bound = op.jacobian_bound();
  double eta = 0;
  for (int k = 0; k < options.steps; ++k) {
    // The curvature of a nonlinear operator changes along the chain (phase
    // retrieval's grows with the intensities): re-measure it where u is.
    if (k % options.recurvature_every == 0) {
      const double curvature = bound > 0 ? bound * bound : jacobian_gram_norm(op, u, options.power_iterations, rng);
      eta = options.tau / (1 / (s * s) + curvature / (sigma_y * sigma_y));
    }
    u = u + eta * target.drift(u) + std::sqrt(2 * eta) * gaussian(u.sizes(), rng, u.options());
  }
  return u;
}

torch::Tensor pnp_ncvsd(const GenerativeDenoiser& generator, const physics::Operator& op, const torch::Tensor& y,
                        double sigma, const std::vector<int64_t>& image_shape, const PnpNcvsdOptions& options,
                        torch::Generator& rng, const StepCallback& on_step) {
  UD2M_CHECK(sigma > 0, "PnP-NCVSD needs a positive measurement noise level, not {}", sigma);
  UD2M_CHECK(options.ema_decay >= 0 && options.ema_decay < 1, "the x0 EMA decay must be in [0, 1), not {}",
             options.ema_decay);
  UD2M_CHECK(options.likelihood_sigma >= 0, "the likelihood sigma must be >= 0 (0: the measurement's), not {}",
             options.likelihood_sigma);
  torch::NoGradGuard no_grad;
  UD2M_CHECK(options.steps >= 1, "PnP-NCVSD needs at least 1 step, not {}", options.steps);
  const auto sigmas = karras_sigmas(options.steps + 1, options.sigma_min, options.sigma_max, options.rho);
  const double sigma_y = 2 * (options.likelihood_sigma > 0 ? options.likelihood_sigma : sigma);  // model units
  auto* linear = dynamic_cast<const physics::LinearOperator*>(&op);
  auto u = sigmas[0] * gaussian(image_shape, rng, y.options());
  torch::Tensor average;
  for (int i = 0; i < options.steps; ++i) {
    auto x0 = generator(u, sigmas[i], rng);
    if (options.clip_x0) x0 = x0.clamp(-1, 1);
    const bool averaging = options.ema_decay > 0 && sigmas[i] < options.ema_below && average.defined();
    average = averaging ? options.ema_decay * average + (1 - options.ema_decay) * x0 : x0;
    if (on_step) on_step(i, -1, average);
    if (i + 1 == options.steps) break;
    u = linear ? sample_likelihood_step(*linear, x0, y, sigma_y, sigmas[i + 1], rng)
               : langevin_likelihood_step(op, x0, y, sigma_y, sigmas[i + 1], options.langevin, rng);
  }
  return average;
}

}  // namespace ud2m::samplers
