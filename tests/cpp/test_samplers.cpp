#include <ATen/CPUGeneratorImpl.h>

#include "core/error.hpp"
#include "core/image.hpp"
#include "core/random.hpp"
#include "diffusion/gaussian_prior.hpp"
#include "diffusion/padded_denoiser.hpp"
#include "diffusion/tiled_denoiser.hpp"
#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/identity.hpp"
#include "physics/inpainting.hpp"
#include "physics/jpeg.hpp"
#include "physics/phase_retrieval.hpp"
#include "physics/square_root.hpp"
#include "physics/kernels.hpp"
#include "samplers/ddim.hpp"
#include "samplers/ddrm.hpp"
#include "samplers/diffpir.hpp"
#include "samplers/dps.hpp"
#include "samplers/latino.hpp"
#include "samplers/pnp_ncvsd.hpp"
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

namespace {
// A per-pixel prior that, like a U-Net with three down-samplings, takes only
// sides divisible by 8.
class OnlyMultiplesOf8 : public diffusion::GaussianPrior {
 public:
  using GaussianPrior::GaussianPrior;
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override {
    UD2M_CHECK(x_t.size(-2) % 8 == 0 && x_t.size(-1) % 8 == 0, "sides {}x{}", x_t.size(-2), x_t.size(-1));
    return GaussianPrior::epsilon(x_t, t);
  }
};
}  // namespace

TEST(PaddedDenoiser, GivesTheNetworkTheSidesItNeedsAndCropsBackInPlace) {
  auto inner = std::make_shared<OnlyMultiplesOf8>(0.1, kPriorStd);
  diffusion::PaddedDenoiser padded(inner, 8);
  auto x = torch::randn({2, 3, 31, 23}, torch::requires_grad());
  auto t = inner->timesteps(500, x);
  EXPECT_THROW(inner->epsilon(x, t), Error);
  auto eps = padded.epsilon(x, t);
  ASSERT_EQ(eps.sizes(), x.sizes());
  // Per pixel, so the padding must change nothing: a crop from the wrong corner would.
  EXPECT_TRUE(torch::allclose(eps, inner->GaussianPrior::epsilon(x, t)));
  eps.sum().backward();  // DPS differentiates through the pad and crop
  EXPECT_TRUE(torch::allclose(x.grad(), torch::autograd::grad({inner->GaussianPrior::epsilon(x, t).sum()}, {x})[0]));
  // Sides that fit go through untouched.
  auto fits = torch::randn({1, 3, 32, 24});
  EXPECT_TRUE(torch::equal(padded.epsilon(fits, t.narrow(0, 0, 1)), inner->epsilon(fits, t.narrow(0, 0, 1))));
  // Sides smaller than the padding (reflection impossible) are replicated.
  EXPECT_EQ(padded.epsilon(torch::randn({1, 3, 3, 2}), t.narrow(0, 0, 1)).sizes(), (std::vector<int64_t>{1, 3, 3, 2}));
}

namespace {
// The per-pixel Gaussian prior, recording the shape of every call.
class RecordingPrior : public diffusion::GaussianPrior {
 public:
  using GaussianPrior::GaussianPrior;
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override {
    calls.push_back(x_t.sizes().vec());
    EXPECT_EQ(t.size(0), x_t.size(0));
    return GaussianPrior::epsilon(x_t, t);
  }
  std::vector<std::vector<int64_t>> calls;
};
}  // namespace

TEST(TiledDenoiser, TileOriginsCoverTheImageWithTheOverlap) {
  const diffusion::Tiling tiling{16, 4};
  for (int64_t size : {16, 17, 28, 29, 100, 257}) {
    auto o = tiling.origins(size);
    EXPECT_EQ(o.front(), 0) << size;
    EXPECT_EQ(o.back(), std::max<int64_t>(0, size - 16)) << size;
    for (size_t i = 1; i < o.size(); ++i) EXPECT_GE(o[i - 1] + 16 - o[i], 4) << size;  // neighbours overlap
    // As few tiles as that allows: one fewer could not cover the side with the overlap.
    EXPECT_LT(int64_t(o.size() - 1) * (16 - 4) + 4, size) << size;
  }
}

TEST(TiledDenoiser, BlendsTilesIntoTheWholeImagesEpsilon) {
  // Per pixel, every tile's ε is the whole image's there: the blend must give
  // it back exactly, wherever the tiles lie; a misplaced tile or weight would not.
  auto prior = std::make_shared<RecordingPrior>(0.1, kPriorStd);
  const diffusion::Tiling tiling{16, 4, /*batch=*/3};
  diffusion::TiledDenoiser tiled(prior, tiling);
  auto x = torch::randn({2, 3, 70, 50}, torch::requires_grad());
  auto t = prior->timesteps(300, x);
  auto eps = tiled.epsilon(x, t);
  EXPECT_TRUE(torch::allclose(eps, prior->GaussianPrior::epsilon(x, t), 1e-5, 1e-6));
  // 6 x 4 tiles of 16 x 16, 3 per call (each of the batch's 2 images).
  const int64_t tiles = int64_t(tiling.origins(70).size() * tiling.origins(50).size());
  EXPECT_EQ(tiles, 6 * 4);
  ASSERT_EQ(prior->calls.size(), size_t((tiles + 2) / 3));
  EXPECT_EQ(prior->calls.front(), (std::vector<int64_t>{3 * 2, 3, 16, 16}));
  // Gradients (DPS) flow through every tile.
  eps.sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), torch::autograd::grad({prior->GaussianPrior::epsilon(x, t).sum()}, {x})[0],
                              1e-5, 1e-6));
  // Up to 4 tiles' worth of pixels the image goes through whole.
  prior->calls.clear();
  auto small = torch::randn({1, 3, 32, 32});
  tiled.epsilon(small, t.narrow(0, 0, 1));
  EXPECT_EQ(prior->calls, (std::vector<std::vector<int64_t>>{{1, 3, 32, 32}}));
  EXPECT_THROW(diffusion::TiledDenoiser(prior, {16, 16}), Error);
}

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

// ---- Inpainting under a spatially correlated Gaussian prior -------------------
// With the i.i.d. prior a hole's posterior is the prior itself; here the prior
// is stationary with a correlation length of a few pixels, so the exact
// posterior mean interpolates the holes (smoothly) and the posterior variance
// there is well below the prior's. A sampler that mishandles unobserved pixels
// (noise left in them, wrong scale) misses both.
namespace {

struct CorrelatedToy {
  std::shared_ptr<diffusion::StationaryGaussianPrior> prior;
  physics::Inpainting op;
  double sigma;
  torch::Tensor y, hole, mean, var;  // exact posterior mean and variance, (1, 1, n, n)
};

CorrelatedToy make_correlated_toy(int64_t n, double missing, double sigma, int samples) {
  auto f = torch::fft::fftfreq(n, torch::kFloat64);
  auto radius2 = f.view({-1, 1}).pow(2) + f.view({1, -1}).pow(2);
  auto power = (1 + radius2 / (0.06 * 0.06)).pow(-2);
  power = power * (kPriorStd * kPriorStd / power.mean());  // per-pixel prior variance s²
  auto prior = std::make_shared<diffusion::StationaryGaussianPrior>(power);
  physics::Inpainting op(physics::random_mask(n, n, missing, 2));
  torch::manual_seed(6);
  auto white = torch::fft::fft2(torch::randn({1, 1, n, n}, torch::kFloat64), c10::nullopt, {-2, -1}, "ortho");
  auto x = torch::real(torch::fft::ifft2(power.sqrt() * white, c10::nullopt, {-2, -1}, "ortho")).to(torch::kFloat32);
  const double sm = 2 * sigma;
  auto y = op.forward(x + sm * torch::randn_like(x));
  // Dense closed form: μ = C M (M C M + σ²I)⁻¹ y, Σ = C − C M (M C M + σ²I)⁻¹ M C.
  const int64_t d = n * n;
  auto c = prior->covariance_times(torch::eye(d, torch::kFloat64).view({d, 1, n, n})).view({d, d});
  auto m = torch::diag(op.mask().to(torch::kFloat64).flatten());
  auto k = m.mm(c).mm(m) + sm * sm * torch::eye(d, torch::kFloat64);
  auto gain = c.mm(m).mm(torch::linalg_inv(k));
  auto mean = gain.mv(y.to(torch::kFloat64).flatten()).view({1, 1, n, n});
  auto var = torch::diagonal(c - gain.mm(m).mm(c)).view({1, 1, n, n});
  return {prior, op, sigma, y.expand({samples, 1, n, n}).contiguous(), op.mask() < 0.5, mean, var};
}

struct HoleReport {
  double mean_error, data_ignored, var_ratio;  // errors in prior-std units; var: sampled / exact
};

HoleReport in_holes(const torch::Tensor& samples, const CorrelatedToy& toy) {
  auto hole = toy.hole.view({1, 1, toy.hole.size(0), toy.hole.size(1)});
  auto s = samples.to(torch::kFloat64);
  auto err = (s.mean(0, true) - toy.mean).abs().masked_select(hole).mean().item<double>() / kPriorStd;
  auto ignored = toy.mean.abs().masked_select(hole).mean().item<double>() / kPriorStd;
  auto ratio = s.var(0, true, true).masked_select(hole).mean().item<double>() /
               toy.var.masked_select(hole).mean().item<double>();
  return {err, ignored, ratio};
}

}  // namespace

// Measured (100 samples, Monte-Carlo floor of the mean error ≈ 0.034):
//   DDRM 20 / 100 / 1000 steps: mean error 0.26 / 0.14 / 0.047, variance 1.79 / 1.15 / 0.83 × exact;
//   DiffPIR 100: 0.21, 2.6× (1000 steps: 0.12, 1.7×); LATINO 8: 0.35, 1.6× (50: 0.17, 0.86×).
// So the speckle these samplers leave in the holes of real photographs at
// their published step counts is their few-step approximation (DDRM converges
// to the exact posterior as the steps grow), not a mishandling of the holes.
TEST(Samplers, CorrelatedGaussianInpaintingFillsTheHoles) {
  auto toy = make_correlated_toy(16, 0.7, 0.025, 100);
  auto report = [&](const std::string& name, const std::function<torch::Tensor(torch::Generator&)>& sample) {
    auto rng = at::make_generator<at::CPUGeneratorImpl>(11);
    auto r = in_holes(sample(rng), toy);
    std::printf("%s, correlated Gaussian inpainting (70%% missing), holes: mean error %.4f prior std (data ignored: "
                "%.4f), variance %.2f x exact\n", name.c_str(), r.mean_error, r.data_ignored, r.var_ratio);
    return r;
  };
  std::vector<HoleReport> ddrm;
  for (int steps : {20, 100, 1000}) {
    samplers::DdrmOptions options;
    options.steps = steps;
    ddrm.push_back(report(fmt::format("DDRM {}", steps), [&](torch::Generator& g) {
      return samplers::ddrm(*toy.prior, toy.op, toy.y, toy.sigma, options, g);
    }));
  }
  EXPECT_GT(ddrm[0].mean_error, ddrm[1].mean_error);
  EXPECT_GT(ddrm[1].mean_error, ddrm[2].mean_error);
  EXPECT_LT(ddrm[2].mean_error, 0.08);
  EXPECT_NEAR(ddrm[2].var_ratio, 1.0, 0.3);
  auto diffpir = report("DiffPIR 100", [&](torch::Generator& g) {
    return samplers::diffpir(*toy.prior, toy.op, toy.y, toy.sigma, {}, g);
  });
  EXPECT_LT(diffpir.mean_error, 0.6 * diffpir.data_ignored);
  auto latino = report("LATINO 8", [&](torch::Generator& g) {
    return samplers::latino(*toy.prior, toy.op, toy.y, toy.sigma, {}, g);
  });
  EXPECT_LT(latino.mean_error, 0.85 * latino.data_ignored);
}

TEST(PnpNcvsd, KarrasGridEndsAtBothLevels) {
  auto sigmas = samplers::karras_sigmas(50, 0.002, 80, 2);
  ASSERT_EQ(sigmas.size(), 50u);
  EXPECT_DOUBLE_EQ(sigmas.front(), 80);
  EXPECT_NEAR(sigmas.back(), 0.002, 1e-12);
  for (size_t i = 1; i < sigmas.size(); ++i) EXPECT_LT(sigmas[i], sigmas[i - 1]);
  EXPECT_THROW_MSG(samplers::karras_sigmas(1, 0.002, 80, 2), "at least 2 steps");
}

TEST(PnpNcvsd, LikelihoodStepSamplesItsGaussian) {
  // Identity operator: N((s²y + σ_y²x0)/(s² + σ_y²), s²σ_y²/(s² + σ_y²)) per pixel.
  physics::Identity op;
  const double sigma_y = 0.2, s = 0.3;
  auto x0 = torch::full({20000, 1, 2, 2}, 0.5), y = torch::full({20000, 1, 2, 2}, -0.1);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(1);
  auto u = samplers::sample_likelihood_step(op, x0, y, sigma_y, s, rng).to(torch::kFloat64);
  const double mean = (s * s * -0.1 + sigma_y * sigma_y * 0.5) / (s * s + sigma_y * sigma_y);
  const double var = s * s * sigma_y * sigma_y / (s * s + sigma_y * sigma_y);
  EXPECT_NEAR(u.mean().item<double>(), mean, 0.003);
  EXPECT_NEAR(u.var().item<double>(), var, 0.02 * var);
}

namespace {
// A linear operator that hides its linearity: samplers must treat it as any
// nonlinear one (autograd data gradient, Langevin likelihood step).
class AsNonlinear : public physics::Operator {
 public:
  explicit AsNonlinear(std::shared_ptr<physics::LinearOperator> op) : op_(std::move(op)) {}
  torch::Tensor forward(const torch::Tensor& x) const override { return op_->forward(x); }
  nlohmann::json to_json() const override { return op_->to_json(); }
  std::string name() const override { return "nonlinear " + op_->name(); }

 protected:
  std::shared_ptr<physics::LinearOperator> op_;
};

// The same circular blur offering the Fourier preconditioner, which for it is
// exact: M = F* diag(1/(1/s² + |K(ω)|²/σ²)) F is the target's covariance.
class PreconditionedBlur : public AsNonlinear {
 public:
  using AsNonlinear::AsNonlinear;
  std::optional<physics::LangevinPreconditioner> langevin_preconditioner(const torch::Tensor& x, double prior_var,
                                                                         double noise_var) const override {
    auto delta = torch::zeros({1, 1, x.size(2), x.size(3)});
    delta[0][0][0][0] = 1;
    auto gain = torch::fft::fft2(op_->forward(delta)).abs().pow(2);
    auto weights = 1 / (1 / prior_var + gain / noise_var);
    auto filter = [](const torch::Tensor& v, const torch::Tensor& w) {
      return torch::real(torch::fft::ifft2(torch::fft::fft2(v) * w)).to(torch::kFloat32);
    };
    const auto shape = x.sizes().vec();
    return physics::LangevinPreconditioner{
        [=](const torch::Tensor& v) { return filter(v, weights); },
        [=](const torch::Tensor& v) { return filter(v, 1 / weights); },
        [=](torch::Generator& rng) { return filter(at::randn(shape, rng, torch::TensorOptions()), weights.sqrt()); }};
  }
};
}  // namespace

// The Langevin likelihood step targets the same Gaussian the exact
// perturb-and-MAP step samples: compare their per-pixel moments on a blur
// (directions of very different curvature), each from 4,000 chains.
TEST(PnpNcvsd, LangevinLikelihoodStepSamplesTheExactGaussian) {
  auto blur = std::make_shared<physics::CircularBlur>(physics::gaussian_kernel(3, 0.8), 6, 6);
  AsNonlinear nonlinear(blur);
  const double sigma_y = 0.3, s = 0.5;  // curvatures 4 ... 15: every direction relaxes within the steps
  auto rng = at::make_generator<at::CPUGeneratorImpl>(3);
  auto x0 = (0.4 * gaussian({1, 1, 6, 6}, rng)).expand({4000, 1, 6, 6}).contiguous();
  auto y = blur->forward(0.4 * gaussian({1, 1, 6, 6}, rng)).expand({4000, 1, 6, 6}).contiguous();
  // λmax(AᵀA) of the hidden blur, by power iteration on its own normal operator.
  auto v = torch::randn({1, 1, 6, 6});
  for (int k = 0; k < 200; ++k) v = blur->normal(v) / blur->normal(v).norm();
  const double lambda = (v * blur->normal(v)).sum().item<double>() / (v * v).sum().item<double>();
  EXPECT_NEAR(samplers::jacobian_gram_norm(nonlinear, x0.narrow(0, 0, 2), 30, rng), lambda, 1e-3 * lambda);

  auto exact = samplers::sample_likelihood_step(*blur, x0, y, sigma_y, s, rng).to(torch::kFloat64);
  samplers::LangevinOptions options;
  options.tau = 0.1;
  options.steps = 300;
  auto langevin = samplers::langevin_likelihood_step(nonlinear, x0, y, sigma_y, s, options, rng).to(torch::kFloat64);
  auto exact_var = exact.var(0), langevin_var = langevin.var(0);
  const double mean_error = ((langevin.mean(0) - exact.mean(0)).abs() / exact_var.sqrt()).max().item<double>();
  const double var_ratio_min = (langevin_var / exact_var).min().item<double>();
  const double var_ratio_max = (langevin_var / exact_var).max().item<double>();
  std::printf("Langevin vs exact likelihood step: mean error %.3f std, variance ratio %.3f-%.3f\n", mean_error,
              var_ratio_min, var_ratio_max);
  EXPECT_LT(mean_error, 0.12);  // 4,000 samples: Monte-Carlo error of a difference ≈ 0.022 std
  EXPECT_GT(var_ratio_min, 0.9);
  EXPECT_LT(var_ratio_max, 1.12);  // ULA's bias is at most 1/(1 − τ/2) = 1.05, plus sampling error
  options.tau = 1.5;
  EXPECT_THROW_MSG(samplers::langevin_likelihood_step(nonlinear, x0, y, sigma_y, s, options, rng), "0 < tau < 1");
}

// With the Fourier preconditioner every direction relaxes at the same rate,
// and the Metropolis-adjusted chain samples the exact Gaussian: the same
// moments check, in far fewer steps.
TEST(PnpNcvsd, PreconditionedLangevinSamplesTheExactGaussian) {
  auto blur = std::make_shared<physics::CircularBlur>(physics::gaussian_kernel(3, 0.8), 6, 6);
  PreconditionedBlur preconditioned(blur);
  const double sigma_y = 0.05, s = 0.5;  // curvatures 4 ... 400: unpreconditioned, 60 steps would not do
  auto rng = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x0 = (0.4 * gaussian({1, 1, 6, 6}, rng)).expand({4000, 1, 6, 6}).contiguous();
  auto y = blur->forward(0.4 * gaussian({1, 1, 6, 6}, rng)).expand({4000, 1, 6, 6}).contiguous();
  auto exact = samplers::sample_likelihood_step(*blur, x0, y, sigma_y, s, rng).to(torch::kFloat64);
  samplers::LangevinOptions options;
  options.tau = 0.1;
  options.steps = 60;
  options.precondition = true;
  auto langevin =
      samplers::langevin_likelihood_step(preconditioned, x0, y, sigma_y, s, options, rng).to(torch::kFloat64);
  auto exact_var = exact.var(0), langevin_var = langevin.var(0);
  const double mean_error = ((langevin.mean(0) - exact.mean(0)).abs() / exact_var.sqrt()).max().item<double>();
  const double var_ratio_min = (langevin_var / exact_var).min().item<double>();
  const double var_ratio_max = (langevin_var / exact_var).max().item<double>();
  std::printf("preconditioned Langevin vs exact: mean error %.3f std, variance ratio %.3f-%.3f\n", mean_error,
              var_ratio_min, var_ratio_max);
  EXPECT_LT(mean_error, 0.12);
  EXPECT_GT(var_ratio_min, 0.9);
  EXPECT_LT(var_ratio_max, 1.15);
  options.precondition = false;  // the same 60 steps, sized by the stiffest direction, stay far from it
  auto plain = samplers::langevin_likelihood_step(preconditioned, x0, y, sigma_y, s, options, rng).to(torch::kFloat64);
  EXPECT_GT(((plain.mean(0) - exact.mean(0)).abs() / exact_var.sqrt()).max().item<double>(), 3 * mean_error);
}

// Phase retrieval's intensities make the likelihood very stiff at the bright
// low frequencies: sized by them, 100 plain Langevin steps barely move the
// others, while the preconditioned chain reaches the data.
TEST(PnpNcvsd, PreconditionedLangevinReachesPhaseRetrievalData) {
  physics::PhaseRetrieval op(16, 16, 2, false, 0);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(6);
  auto photo = read_image((test::source_dir() / "assets" / "astronaut_256.png").string());
  auto x = torch::nn::functional::avg_pool2d(photo, torch::nn::functional::AvgPool2dFuncOptions(16)) * 2 - 1;
  const double sigma_y = 1e-3, s = 0.2;
  auto y = op.forward(x) + sigma_y * gaussian(op.output_shape(x.sizes().vec()), rng);
  auto x0 = x + s * gaussian(x.sizes(), rng);  // a prior step's estimate, off the truth by s
  samplers::LangevinOptions options;
  options.precondition = true;
  auto residual = [&](const torch::Tensor& u) { return ((op.forward(u) - y).norm() / y.norm()).item<double>(); };
  auto preconditioned = samplers::langevin_likelihood_step(op, x0, y, sigma_y, s, options, rng);
  options.precondition = false;
  auto plain = samplers::langevin_likelihood_step(op, x0, y, sigma_y, s, options, rng);
  std::printf("phase retrieval data residual: truth %.4f, start %.4f, plain Langevin %.4f, preconditioned %.4f\n",
              residual(x), residual(x0), residual(plain), residual(preconditioned));
  EXPECT_LT(residual(preconditioned), 0.35 * residual(plain));
  EXPECT_LT((preconditioned - x).norm().item<double>(), (plain - x).norm().item<double>());
}

// Fitting amplitudes √y instead of the intensities y evens out the curvature
// (at most 1/σ'² in every direction), so 100 plain Langevin steps reach the
// weakly lit frequencies too.
TEST(PnpNcvsd, FittingAmplitudesReachesPhaseRetrievalData) {
  auto intensities = std::make_shared<physics::PhaseRetrieval>(16, 16, 2, false, 0);
  const auto& op = *intensities;
  const physics::SquareRoot amplitudes(intensities);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(6);
  auto photo = read_image((test::source_dir() / "assets" / "astronaut_256.png").string());
  auto x = torch::nn::functional::avg_pool2d(photo, torch::nn::functional::AvgPool2dFuncOptions(16)) * 2 - 1;
  const double sigma_y = 1e-3, sigma_amplitude = 1e-2, s = 0.2;
  auto y = op.forward(x) + sigma_y * gaussian(op.output_shape(x.sizes().vec()), rng);
  auto x0 = x + s * gaussian(x.sizes(), rng);
  samplers::LangevinOptions options;
  auto residual = [&](const torch::Tensor& u) {
    auto a = y.clamp_min(0).sqrt();
    return ((amplitudes.forward(u) - a).norm() / a.norm()).item<double>();
  };
  auto fitted = samplers::langevin_likelihood_step(amplitudes, x0, y.clamp_min(0).sqrt(), sigma_amplitude, s,
                                                   options, rng);
  auto plain = samplers::langevin_likelihood_step(op, x0, y, sigma_y, s, options, rng);
  auto distance = [&](const torch::Tensor& u) { return (u - x).norm().item<double>(); };
  std::printf("phase retrieval amplitude residual: truth %.4f, start %.4f, intensities fitted %.4f, amplitudes "
              "fitted %.4f; distance to the truth: start %.3f, %.3f, %.3f\n",
              residual(x), residual(x0), residual(plain), residual(fitted), distance(x0), distance(plain),
              distance(fitted));
  EXPECT_LT(residual(fitted), 0.5 * residual(plain));
  EXPECT_LT(distance(fitted), distance(plain));
}

// JPEG's surrogate rounds: finite differences across a rounding step are
// jumps, and a step sized by them blew the chain up (NaN in PnP-NCVSD). With
// the declared Jacobian bound the chain stays finite and moves towards y.
TEST(PnpNcvsd, LangevinStepOnJpegUsesTheDeclaredBoundAndApproachesTheData) {
  physics::JpegCompression op(10);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(4);
  auto x = (0.5 * gaussian({1, 3, 16, 16}, rng)).clamp(-1, 1);
  auto y = op.measure(x);
  auto x0 = torch::zeros_like(x);
  samplers::LangevinOptions options;
  options.steps = 100;
  for (double s : {1.0, 0.1}) {
    auto u = samplers::langevin_likelihood_step(op, x0, y, 0.02, s, options, rng);
    ASSERT_TRUE(torch::isfinite(u).all().item<bool>()) << s;
    EXPECT_LT((op.forward(u) - y).norm().item<double>(), 0.5 * (op.forward(x0) - y).norm().item<double>()) << s;
  }
}

// The ideal generative denoiser of a Gaussian prior: exact samples of p(x0 | u).
samplers::GenerativeDenoiser exact_generator(const diffusion::StationaryGaussianPrior& prior) {
  return [&prior](const torch::Tensor& u, double sigma, torch::Generator& rng) {
    return prior.sample_given(u, sigma, rng);
  };
}

// With the exact generative denoiser of the correlated Gaussian prior the
// split Gibbs chain targets p(x0 | y) with noise σ_y² + σ², so it reaches the
// exact posterior as σ anneals slowly enough to 0. Measured in the holes (200
// samples, Monte-Carlo floor ≈ 0.024): 50 / 200 / 1000 steps: mean error
// 0.23 / 0.11 / 0.054 prior std, variance 2.8 / 1.6 / 1.1 × exact. 50 steps (the
// published count) are far from equilibrium on 70 %-missing inpainting.
TEST(PnpNcvsd, ExactGeneratorConvergesToTheCorrelatedInpaintingPosterior) {
  auto toy = make_correlated_toy(16, 0.7, 0.025, 200);
  auto generator = exact_generator(*toy.prior);
  std::vector<HoleReport> reports;
  for (int steps : {49, 200, 1000}) {
    samplers::PnpNcvsdOptions options;
    options.steps = steps;
    options.ema_decay = 0;  // the EMA averages samples: a point estimate, not a posterior sample
    options.clip_x0 = false;  // the Gaussian prior's support is unbounded
    auto rng = at::make_generator<at::CPUGeneratorImpl>(12);
    auto r = in_holes(samplers::pnp_ncvsd(generator, toy.op, toy.y, toy.sigma, {200, 1, 16, 16}, options, rng), toy);
    std::printf("PnP-NCVSD %d steps (exact generator) correlated Gaussian inpainting, holes: mean error %.4f prior "
                "std (data ignored: %.4f), variance %.2f x exact\n", steps, r.mean_error, r.data_ignored, r.var_ratio);
    reports.push_back(r);
  }
  EXPECT_GT(reports[0].mean_error, reports[1].mean_error);
  EXPECT_GT(reports[1].mean_error, reports[2].mean_error);
  EXPECT_LT(reports[2].mean_error, 0.08);
  EXPECT_NEAR(reports[2].var_ratio, 1.0, 0.3);
}

// x0 ~ N(0, I), y = x0 + noise: the posterior under a likelihood std s (model
// units) is N(y/(1+s²), s²/(1+s²)) per pixel, whatever noise made y. With the
// exact generator, PnP-NCVSD told likelihood_sigma samples that one (up to
// annealing: the chain stops mixing once its coupling level falls below s,
// which 1000 steps keep to a few percent; 100 leave the variance ~2x).
TEST(PnpNcvsd, LikelihoodSigmaSetsThePosteriorItSamples) {
  diffusion::StationaryGaussianPrior prior(torch::ones({8, 8}));
  physics::Identity op;
  auto generator = exact_generator(prior);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(3);
  auto y = torch::randn({100, 1, 8, 8}, rng);
  for (double likelihood_sigma : {0.0, 0.25}) {
    samplers::PnpNcvsdOptions options;
    options.steps = 1000;
    options.ema_decay = 0;
    options.clip_x0 = false;
    options.likelihood_sigma = likelihood_sigma;
    const double s = 2 * (likelihood_sigma > 0 ? likelihood_sigma : 0.05);  // model units
    auto x = samplers::pnp_ncvsd(generator, op, y, 0.05, {100, 1, 8, 8}, options, rng);
    const double slope = ((x * y).sum() / (y * y).sum()).item<double>();
    auto residual = x - slope * y;
    const double variance_ratio = residual.var().item<double>() / (s * s / (1 + s * s));
    std::printf("likelihood sigma %.2f: E[x | y] = %.4f y (exact %.4f), variance %.2f x exact\n", likelihood_sigma,
                slope, 1 / (1 + s * s), variance_ratio);
    EXPECT_NEAR(slope, 1 / (1 + s * s), 0.03) << likelihood_sigma;
    EXPECT_GT(variance_ratio, 0.9) << likelihood_sigma;
    EXPECT_LT(variance_ratio, 1.25) << likelihood_sigma;
  }
}

TEST(PnpNcvsd, RefusesBadSettings) {
  diffusion::StationaryGaussianPrior prior(torch::ones({8, 8}));
  physics::Identity op;
  auto generator = exact_generator(prior);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(0);
  auto y = torch::zeros({1, 1, 8, 8});
  EXPECT_THROW_MSG(samplers::pnp_ncvsd(generator, op, y, 0.0, {1, 1, 8, 8}, {}, rng), "positive measurement noise");
  samplers::PnpNcvsdOptions options;
  options.steps = 0;
  EXPECT_THROW_MSG(samplers::pnp_ncvsd(generator, op, y, 0.05, {1, 1, 8, 8}, options, rng), "at least 1 step");
  options.steps = 4;
  options.likelihood_sigma = -0.1;
  EXPECT_THROW_MSG(samplers::pnp_ncvsd(generator, op, y, 0.05, {1, 1, 8, 8}, options, rng), "likelihood sigma");
}
