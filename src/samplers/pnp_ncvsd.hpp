// PnP-NCVSD (Peng et al.): a split Gibbs sampler whose prior step is a
// generative denoiser. With an auxiliary u = x0 + σ·n and σ annealed along a
// Karras grid from σ_max to σ_min, alternate
//   prior step:      x0 ~ G(u, σ_i)                 (a sample of p(x0 | u));
//   likelihood step: u ~ p(u | x0, y) ∝ N(u; x0, σ_{i+1}²)·N(y; Au, σ_y²),
// the latter exact for linear operators by perturb-and-MAP: the prox of
// the perturbed pair (x0 + σn₁, y + σ_y n₂) is a sample of that Gaussian;
// for nonlinear ones (phase retrieval) it is unadjusted Langevin dynamics, as
// published (50–100 steps).
// Returns the last x0, by default an EMA of the x0's (the published pixel-space
// presets: decay 0.6 from the second step on; phase retrieval only below σ 0.2).
// The likelihood step uses the true measurement noise σ_y by default; the
// published presets use a tuned σ' = √(β/2) per task instead (likelihood_sigma).
#pragma once
#include <functional>

#include "physics/operator.hpp"
#include "samplers/ddim.hpp"

namespace ud2m::samplers {

// A sample of p(x0 | u) for u = x0 + σn (σ: VE level in model units).
using GenerativeDenoiser =
    std::function<torch::Tensor(const torch::Tensor& u, double sigma, torch::Generator& rng)>;

// Unadjusted Langevin for the likelihood step of nonlinear operators.
struct LangevinOptions {
  int steps = 100;
  // Step η = tau/(1/s² + L/σ_y²), L the largest eigenvalue of JᵀJ at the
  // chain's current point (J the operator's Jacobian; the square of its
  // declared bound where it has one, as JPEG): each direction moves at
  // most tau of its own scale per step. For a Gaussian target the stationary variance is too large by
  // at most 1/(1 − tau/2) in the stiffest direction (5% at 0.1).
  double tau = 0.1;
  int power_iterations = 10;
  int recurvature_every = 20;  // L is re-measured at the current u every this many steps
  // Where the operator offers a preconditioner M (phase retrieval), propose
  // u + tau·M·drift + √(2·tau)·N(0, M) instead and accept by Metropolis–
  // Hastings (MALA), M re-made at the current u every recurvature_every
  // steps: every direction then moves at ~tau of its own scale, not only the
  // stiffest one. Off by default: inside PnP-NCVSD on held-out phase
  // retrieval it reached the data no better and scored lower (README).
  bool precondition = false;
};

struct PnpNcvsdOptions {
  int steps = 49;  // generator calls, on a grid of steps + 1 levels (as published: 50 levels)
  double sigma_min = 0.002, sigma_max = 80, rho = 2;
  double ema_below = 100;   // average the x0's once σ_i is below this ...
  double ema_decay = 0.6;   // ... as x̄ ← decay·x̄ + (1 − decay)·x0 (0: no averaging)
  // σ of the Gaussian likelihood in the likelihood step, in [0, 1] image
  // units; 0: the measurement's own σ. A smaller one pulls u harder to the data.
  double likelihood_sigma = 0;
  LangevinOptions langevin;  // nonlinear operators only
  // Clamp each x0 to the data range [-1, 1], the prior's support (as
  // guided-diffusion's clip_denoised). An imperfect generator's out-of-range
  // x0 otherwise steers phase retrieval into its mirror mode (intensities of
  // the wrong sign, which measure the same).
  bool clip_x0 = true;
};

// σ_i = (σmax^{1/ρ} + i/(n−1)·(σmin^{1/ρ} − σmax^{1/ρ}))^ρ, i = 0..n−1.
std::vector<double> karras_sigmas(int steps, double sigma_min, double sigma_max, double rho);

// u ~ N(mean, (AᵀA/σ_y² + I/s²)⁻¹), mean = argmin ‖Au − y‖²/(2σ_y²) + ‖u − x0‖²/(2s²).
torch::Tensor sample_likelihood_step(const physics::LinearOperator& op, const torch::Tensor& x0,
                                     const torch::Tensor& y, double sigma_y, double s, torch::Generator& rng);

// The same distribution for any differentiable operator, by Langevin dynamics
// from u = x0 + s·n (a draw of the Gaussian factor: already right in every
// direction the measurement does not see).
torch::Tensor langevin_likelihood_step(const physics::Operator& op, const torch::Tensor& x0, const torch::Tensor& y,
                                       double sigma_y, double s, const LangevinOptions& options,
                                       torch::Generator& rng);

// Largest eigenvalue of JᵀJ at x (J the Jacobian of op.forward), by power
// iteration: J v by central differences, Jᵀw by autograd. The maximum over
// the batch.
double jacobian_gram_norm(const physics::Operator& op, const torch::Tensor& x, int iterations, torch::Generator& rng);

// sigma: measurement noise std in [0, 1] image units (> 0).
torch::Tensor pnp_ncvsd(const GenerativeDenoiser& generator, const physics::Operator& op, const torch::Tensor& y,
                        double sigma, const std::vector<int64_t>& image_shape, const PnpNcvsdOptions& options,
                        torch::Generator& rng, const StepCallback& on_step = {});

}  // namespace ud2m::samplers
