#include <ATen/CPUGeneratorImpl.h>

#include "diffusion/gaussian_prior.hpp"
#include "physics/identity.hpp"
#include "physics/inpainting.hpp"
#include "samplers/ddim.hpp"
#include "samplers/diffpir.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {
// Prior x0 ~ N(0, s²), measurement y = x0 + σ_m n (model units): the posterior
// is N(s²/(s²+σ_m²)·y, s²σ_m²/(s²+σ_m²)) per pixel.
constexpr double kPriorStd = 0.3;  // small enough that clamping x0 to [-1, 1] is negligible

struct Moments {
  torch::Tensor mean, var;
};

Moments sample_moments(const std::function<torch::Tensor(torch::Generator&)>& draw, int n) {
  auto rng = at::make_generator<at::CPUGeneratorImpl>(7);
  std::vector<torch::Tensor> samples;
  for (int i = 0; i < n; ++i) samples.push_back(draw(rng));
  auto s = torch::stack(samples).to(torch::kFloat64);
  return {s.mean(0), s.var(0)};
}
}  // namespace

// Ancestral sampling (η = 1) over all 1000 steps with the exact denoiser samples
// the prior; with fewer, larger steps it under-disperses (x̂0 is a mean).
TEST(GaussianPrior, AncestralSamplesHaveThePriorMoments) {
  diffusion::GaussianPrior prior(0.0, kPriorStd);
  auto m = sample_moments([&](torch::Generator& rng) { return samplers::sample_ddim(prior, {1, 1, 16, 16}, 1000, 1.0, rng); }, 100);
  std::printf("DDIM eta=1 Gaussian prior: mean %.4f, variance %.4f vs %.4f\n", m.mean.mean().item<double>(),
              m.var.mean().item<double>(), kPriorStd * kPriorStd);
  EXPECT_NEAR(m.mean.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(m.var.mean().item<double>(), kPriorStd * kPriorStd, 0.1 * kPriorStd * kPriorStd);
}

TEST(DiffPir, TimestepsFollowDeepinvQuadraticSpacing) {
  auto ts = samplers::diffpir_timesteps(1000, 5);
  EXPECT_EQ(ts, (std::vector<int>{999, 499, 292, 133, 0}));
}

TEST(DiffPir, GaussianDenoisingPosteriorMeanAndApproximateVariance) {
  diffusion::GaussianPrior prior(0.0, kPriorStd);
  physics::Identity op;
  const double sigma = 0.1, sm = 2 * sigma, s2 = kPriorStd * kPriorStd;
  torch::manual_seed(3);
  auto y = torch::randn({1, 1, 8, 8}) * std::sqrt(s2 + sm * sm);
  samplers::DiffPirOptions options;
  options.steps = 100;
  auto m = sample_moments([&](torch::Generator& rng) { return samplers::diffpir(prior, op, y, sigma, options, rng); }, 100);
  auto exact_mean = (s2 / (s2 + sm * sm) * y).to(torch::kFloat64)[0];
  const double exact_var = s2 * sm * sm / (s2 + sm * sm);
  const double mean_err = (m.mean[0] - exact_mean).abs().mean().item<double>();
  const double var = m.var.mean().item<double>();
  std::printf("DiffPIR Gaussian toy: mean abs error %.4f (posterior std %.4f), variance %.4f vs exact %.4f\n",
              mean_err, std::sqrt(exact_var), var, exact_var);
  // DiffPIR is approximate: its mean is close, its spread is not the posterior's.
  EXPECT_LT(mean_err, 0.25 * std::sqrt(exact_var));
}
