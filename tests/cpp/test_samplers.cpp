#include <ATen/CPUGeneratorImpl.h>

#include "core/error.hpp"
#include "diffusion/gaussian_prior.hpp"
#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/identity.hpp"
#include "physics/inpainting.hpp"
#include "physics/jpeg.hpp"
#include "physics/kernels.hpp"
#include "samplers/ddim.hpp"
#include "samplers/ddrm.hpp"
#include "samplers/diffpir.hpp"
#include "samplers/dps.hpp"
#include "samplers/latino.hpp"
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

// ---- DDRM, DPS, LATINO on the Gaussian toy -----------------------------------
// Prior N(0, s²) per pixel and y = A x + σ_m n: the posterior mean solves
// argmin ‖Ax − y‖²/(2σ_m²) + ‖x‖²/(2s²), i.e. the operator's prox from 0 with
// γ = s²/σ_m². Many posterior samples are drawn as one batch.
namespace {

struct Toy {
  std::shared_ptr<physics::LinearOperator> op;
  double sigma;  // [0, 1] units
  torch::Tensor x, y, posterior_mean;
};

Toy make_toy(std::shared_ptr<physics::LinearOperator> op, double sigma, int samples, int64_t size = 8) {
  torch::manual_seed(5);
  const double sm = 2 * sigma;
  auto x = torch::randn({1, 1, size, size}) * kPriorStd;
  auto y = op->forward(x) + sm * torch::randn(op->output_shape({1, 1, size, size}));
  auto mean = op->prox(torch::zeros_like(x), y, kPriorStd * kPriorStd / (sm * sm));
  return {op, sigma, x, y.expand(op->output_shape({samples, 1, size, size})).contiguous(), mean};
}

// Mean absolute error of the sample mean, in units of the prior std.
double mean_error(const torch::Tensor& samples, const Toy& toy) {
  return (samples.mean(0, true) - toy.posterior_mean).abs().mean().item<double>() / kPriorStd;
}

// The same error for an estimate that ignores the data (the prior mean, 0).
double zero_information_error(const Toy& toy) {
  return toy.posterior_mean.abs().mean().item<double>() / kPriorStd;
}

}  // namespace

// DDRM is approximate. With the identity, a coordinate's diffusion level
// crosses the measurement's noise level once and DDRM denoises ȳ there, which
// is the exact posterior mean only if a grid point sits at that level. Below
// it, each step moves x̂0 towards ȳ by cσ'/σ_y, so more steps do not converge:
// measured mean errors 0.19 (20 steps), 0.02 (100), 0.17 (1000) prior std.
TEST(Ddrm, GaussianDenoisingPosteriorMean) {
  diffusion::GaussianPrior prior(0.0, kPriorStd);
  auto toy = make_toy(std::make_shared<physics::Identity>(), 0.1, 200);
  for (int steps : {20, 100}) {
    auto rng = at::make_generator<at::CPUGeneratorImpl>(1);
    samplers::DdrmOptions options;
    options.steps = steps;
    auto samples = samplers::ddrm(prior, *toy.op, toy.y, toy.sigma, options, rng);
    const double error = mean_error(samples, toy);
    std::printf("DDRM Gaussian denoising, %d steps: mean error %.4f prior std (data ignored: %.4f), variance %.4f\n",
                steps, error, zero_information_error(toy), samples.var(0).mean().item<double>());
    EXPECT_LT(error, steps == 100 ? 0.05 : 0.3 * zero_information_error(toy)) << steps << " steps";
  }
}

TEST(Ddrm, GaussianCircularDeblurAndSrPosteriorMeans) {
  // Exercises the Fourier coordinates: a wrong phase or scale moves the mean.
  diffusion::GaussianPrior prior(0.0, kPriorStd);
  for (auto op : std::vector<std::shared_ptr<physics::LinearOperator>>{
           std::make_shared<physics::CircularBlur>(physics::motion_kernel(5, 4), 16, 16),
           std::make_shared<physics::Downsampling>(physics::sr_filter("bicubic", 2), 2, 16, 16)}) {
    auto toy = make_toy(op, 0.05, 200, 16);
    auto rng = at::make_generator<at::CPUGeneratorImpl>(2);
    samplers::DdrmOptions options;
    options.steps = 100;
    auto samples = samplers::ddrm(prior, *toy.op, toy.y, toy.sigma, options, rng);
    std::printf("DDRM Gaussian %s, 100 steps: mean error %.4f prior std (data ignored: %.4f)\n", op->name().c_str(),
                mean_error(samples, toy), zero_information_error(toy));
    EXPECT_LT(mean_error(samples, toy), 0.25 * zero_information_error(toy)) << op->name();
  }
}

TEST(Ddrm, RefusesOperatorsWithoutSvd) {
  diffusion::GaussianPrior prior(0.0, kPriorStd);
  physics::JpegCompression jpeg(10);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(0);
  EXPECT_THROW(samplers::ddrm(prior, jpeg, torch::zeros({1, 3, 16, 16}), 0.01, {}, rng), Error);
}

TEST(Dps, GaussianInpaintingPosteriorMeanIsApproximate) {
  diffusion::GaussianPrior prior(0.0, kPriorStd);
  auto toy = make_toy(std::make_shared<physics::Inpainting>(physics::random_mask(8, 8, 0.5, 1)), 0.05, 100);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(3);
  samplers::DpsOptions options;
  options.steps = 200;
  auto samples = samplers::dps(prior, *toy.op, toy.y, {100, 1, 8, 8}, options, rng);
  const double error = mean_error(samples, toy);
  std::printf("DPS Gaussian inpainting: mean error %.4f prior std (data ignored: %.4f)\n", error,
              zero_information_error(toy));
  // DPS is approximate; it must still land far closer than ignoring the data.
  EXPECT_LT(error, 0.5 * zero_information_error(toy));
}

TEST(Dps, RunsOnNonlinearOperators) {
  diffusion::GaussianPrior prior(0.0, kPriorStd);
  physics::JpegCompression jpeg(50);
  torch::manual_seed(0);
  auto x = (torch::randn({1, 3, 16, 16}) * kPriorStd).clamp(-1, 1);
  auto y = jpeg.forward(x).expand({16, 3, 16, 16}).contiguous();
  auto rng = at::make_generator<at::CPUGeneratorImpl>(0);
  samplers::DpsOptions options;
  options.steps = 50;
  auto samples = samplers::dps(prior, jpeg, y, {16, 3, 16, 16}, options, rng);
  ASSERT_TRUE(torch::isfinite(samples).all().item<bool>());
  // The mean of the samples is closer to the truth than the prior mean (0) is.
  const double mse = (samples.mean(0, true) - x).pow(2).mean().item<double>();
  std::printf("DPS Gaussian JPEG-50: MSE of the mean %.4f, of the prior mean %.4f\n", mse, x.pow(2).mean().item<double>());
  EXPECT_LT(mse, 0.9 * x.pow(2).mean().item<double>());
}

TEST(Latino, TimestepsAsPublished) {
  EXPECT_EQ(samplers::latino_timesteps(1000, 8), (std::vector<int>{999, 874, 749, 624, 499, 374, 249, 124}));
}

TEST(Latino, GaussianDeblurPosteriorMean) {
  diffusion::GaussianPrior prior(0.0, kPriorStd);
  auto toy = make_toy(std::make_shared<physics::CircularBlur>(physics::gaussian_kernel(5, 1.0), 16, 16), 0.05, 100, 16);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(4);
  auto samples = samplers::latino(prior, *toy.op, toy.y, toy.sigma, {}, rng);
  const double error = mean_error(samples, toy);
  std::printf("LATINO Gaussian deblur: mean error %.4f prior std (data ignored: %.4f)\n", error,
              zero_information_error(toy));
  // LATINO is approximate (8 steps, a heuristic prox weight; δ = 1 gives 0.25).
  EXPECT_LT(error, 0.5 * zero_information_error(toy));
}
