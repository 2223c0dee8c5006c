#include "samplers/ddrm.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/random.hpp"
#include "physics/svd.hpp"

namespace ud2m::samplers {
namespace {

// Noise drawn in pixels and split: its row-space coordinates and the rest.
struct SplitNoise {
  torch::Tensor coords, null;
};

SplitNoise split(const physics::Svd& svd, const torch::Tensor& x) {
  auto coords = svd.vt(x);
  return {coords, x - svd.v(coords)};
}

}  // namespace

torch::Tensor ddrm(diffusion::Denoiser& denoiser, const physics::Operator& op, const torch::Tensor& y, double sigma,
                   const DdrmOptions& options, torch::Generator& rng, const StepCallback& on_step) {
  auto svd = physics::svd_of(op);
  UD2M_CHECK(svd, "DDRM needs an operator with a singular value decomposition (identity, inpainting, circular blur, "
                  "circular super-resolution, a matrix of up to 25 M entries); '{}' has none", op.name());
  UD2M_CHECK(sigma >= 0, "the measurement noise sigma must be non-negative, not {}", sigma);
  UD2M_CHECK(options.eta >= 0 && options.eta <= 1, "DDRM eta must be in [0, 1], not {}", options.eta);
  torch::NoGradGuard no_grad;
  const auto& schedule = denoiser.schedule();
  const auto ts = uniform_timesteps(schedule.steps(), options.steps);
  const double sigma_y = 2 * sigma;  // model units

  auto yc = svd->ut(y);
  auto s = svd->singular_values(yc);
  auto observed = s > 1e-5;
  auto s_safe = torch::where(observed, s, torch::ones_like(s));
  auto y_bar = yc / s_safe;
  // Per-coordinate noise level of ȳ; infinite where nothing is observed.
  auto nsr = torch::where(observed, sigma_y / s_safe, torch::full_like(s, INFINITY));
  auto noise = [&](const torch::Tensor& like) { return split(*svd, gaussian(like.sizes(), rng, like.options())); };

  // Start at the first level: observed coordinates from N(ȳ, σ² − nsr²) where
  // the measurement is less noisy than the diffusion, everything else N(0, σ²).
  const double level0 = schedule.sigma(ts[0]);
  auto z = noise(svd->v(yc));  // v(Uᵀy) has the image's shape
  auto precise = observed & (nsr <= level0);
  auto coords = torch::where(precise, y_bar + (level0 * level0 - nsr.pow(2)).clamp_min(0).sqrt() * z.coords,
                             level0 * z.coords);
  auto x = svd->v(coords) + level0 * z.null;  // VE scale: x = x0 + σ ε

  const double c = std::sqrt(1 - options.eta * options.eta);
  for (size_t i = 0; i < ts.size(); ++i) {
    const int t = ts[i];
    const double level = schedule.sigma(t);
    auto x0 = denoiser.x0(std::sqrt(schedule.alpha_bar(t)) * x, t).clamp(-1, 1);
    if (on_step) on_step(static_cast<int>(i), t, x0);
    if (i + 1 == ts.size()) return x0;
    const double next = schedule.sigma(ts[i + 1]);
    auto x0_split = split(*svd, x0), x_split = split(*svd, x);
    auto fresh = noise(x);
    // Prior only (DDIM in VE form): keep a share c of the current noise direction.
    auto prior_step = [&](const torch::Tensor& x0c, const torch::Tensor& xc, const torch::Tensor& e) {
      return x0c + c * next * (xc - x0c) / level + options.eta * next * e;
    };
    auto coords_prior = prior_step(x0_split.coords, x_split.coords, fresh.coords);
    // Measurement noisier than the next level: move towards ȳ by its share.
    auto coords_towards_y = x0_split.coords + c * next * (yc - s * x0_split.coords) / sigma_y +
                            options.eta * next * fresh.coords;
    // Measurement more precise than the next level: ȳ plus the missing noise.
    auto coords_from_y = (1 - options.eta_b) * x0_split.coords + options.eta_b * y_bar +
                         (next * next - (options.eta_b * nsr).pow(2)).clamp_min(0).sqrt() * fresh.coords;
    auto coords_next = torch::where(observed & (nsr > next), coords_towards_y, coords_prior);
    coords_next = torch::where(observed & (nsr <= next), coords_from_y, coords_next);
    x = svd->v(coords_next) + prior_step(x0_split.null, x_split.null, fresh.null);
  }
  return x;  // unreachable: the loop returns the last x0
}

}  // namespace ud2m::samplers
