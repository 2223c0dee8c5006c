// UD2M's unrolled network, LoRA adapters and sampler.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include <filesystem>
#include <map>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "diffusion/prior.hpp"
#include "metrics/metrics.hpp"
#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/inpainting.hpp"
#include "physics/jpeg.hpp"
#include "physics/kernels.hpp"
#include "physics/matrix.hpp"
#include "test_util.hpp"
#include "tiny_priors.hpp"
#include "ud2m/adapter.hpp"
#include "ud2m/sampler.hpp"

using namespace ud2m;
namespace fs = std::filesystem;

namespace {

using test::tiny_adm;
using test::tiny_ddpm;

// A blur behind the nonlinear interface: the data step must then solve its
// objective by gradient steps, and should land where the closed form does.
class OpaqueBlur : public physics::Operator {
 public:
  explicit OpaqueBlur(std::shared_ptr<physics::CircularBlur> blur) : blur_(std::move(blur)) {}
  torch::Tensor forward(const torch::Tensor& x) const override { return blur_->forward(x); }
  double jacobian_bound() const override { return 1; }  // a non-negative kernel summing to 1
  nlohmann::json to_json() const override { return blur_->to_json(); }
  std::string name() const override { return "opaque_blur"; }

 private:
  std::shared_ptr<physics::CircularBlur> blur_;
};

// Moves every LoRA B factor (and the head) off zero, as training would.
void perturb_trainable(unrolled::UnrolledNetwork& net, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : net.trainable_parameters()) p.add_(0.05 * torch::randn_like(p));
}

// For the CLI tests: a tiny prior at DIR/prior.safetensors (its path is
// returned) and a random 32×32 image at DIR/clean.png.
std::string save_prior_and_image(const fs::path& dir) {
  const auto prior_path = (dir / "prior.safetensors").string();
  diffusion::save_prior(prior_path, *tiny_adm());
  torch::manual_seed(0);
  write_png((dir / "clean.png").string(), torch::rand({1, 3, 32, 32}));
  return prior_path;
}

}  // namespace

TEST(Lora, ZeroUpdateReproducesTheBaseNetworkExactly) {
  for (const std::string placement : {"attention", "attention+resblocks"}) {
    for (diffusion::PriorPtr prior : std::vector<diffusion::PriorPtr>{tiny_adm(), tiny_ddpm()}) {
      torch::NoGradGuard no_grad;
      auto x = torch::randn({2, 3, 16, 16});
      auto t = torch::tensor({10.0f, 700.0f});
      auto before = prior->epsilon(x, t);
      const auto n_before = prior->module().parameters().size();
      nets::LoraOptions options;
      options.placement = placement;
      prior->add_lora(options);
      int conv_factors = 0;
      for (auto& item : prior->module().named_parameters())
        if (item.key().find("lora.A") != std::string::npos && item.value().dim() == 4) ++conv_factors;
      EXPECT_EQ(conv_factors > 0, placement == "attention+resblocks") << placement;
      EXPECT_GT(prior->module().parameters().size(), n_before);
      EXPECT_TRUE(torch::equal(prior->epsilon(x, t), before)) << placement;
      // A non-zero update changes the output.
      for (auto& item : prior->module().named_parameters())
        if (item.key().find("lora.B") != std::string::npos) item.value().fill_(0.1);
      EXPECT_GT((prior->epsilon(x, t) - before).abs().max().item<double>(), 1e-4) << placement;
    }
  }
  nets::LoraOptions bad;
  bad.placement = "everywhere";
  EXPECT_THROW_MSG(tiny_adm()->add_lora(bad), "unknown LoRA placement 'everywhere'");
}

TEST(Lora, ConvolutionUpdatesAloneChangeTheOutput) {
  // Only the residual blocks' factors moved: the placement reaches the convolutions.
  auto prior = tiny_adm();
  nets::LoraOptions options;
  options.placement = "attention+resblocks";
  prior->add_lora(options);
  torch::NoGradGuard no_grad;
  auto x = torch::randn({1, 3, 16, 16});
  auto t = torch::tensor({300.0f});
  auto before = prior->epsilon(x, t);
  for (auto& item : prior->module().named_parameters())
    if (item.key().find("lora.B") != std::string::npos && item.value().dim() == 4) item.value().fill_(0.1);
  EXPECT_GT((prior->epsilon(x, t) - before).abs().max().item<double>(), 1e-4);
}

TEST(Lora, FoldingIntoTheBaseWeightsComputesWhatTheFactorsDo) {
  for (const std::string placement : {"attention", "attention+resblocks"}) {
    for (diffusion::PriorPtr prior : std::vector<diffusion::PriorPtr>{tiny_adm(), tiny_ddpm()}) {
      auto x = torch::randn({2, 3, 16, 16});
      auto t = torch::tensor({10.0f, 700.0f});
      auto base = prior->epsilon(x, t).detach();
      nets::LoraOptions options;
      options.placement = placement;
      unrolled::UnrolledNetwork net(prior, {1, options});
      perturb_trainable(net, 3);
      torch::NoGradGuard no_grad;
      auto adapted = prior->epsilon(x, t);
      net.fold_lora();
      auto folded = prior->epsilon(x, t);
      for (auto& item : prior->module().named_parameters())
        EXPECT_EQ(item.key().find("lora"), std::string::npos) << item.key() << " survived the fold";
      const double scale = adapted.abs().max().item<double>();
      EXPECT_LT((folded - adapted).abs().max().item<double>(), 1e-5 * scale) << placement;
      EXPECT_GT((adapted - base).abs().max().item<double>(), 1e-3) << "the update must matter for the check to";
      EXPECT_THROW_MSG(net.trainable_parameters(), "folded");
    }
  }
}

TEST(Ud2m, OnlyLoraAndTheOutputHeadAreTrainable) {
  auto prior = tiny_adm();
  unrolled::UnrolledNetwork net(prior, {});
  int64_t trainable = 0, lora = 0;
  for (auto& [name, p] : net.trainable_parameters()) {
    trainable += p.numel();
    if (name.find("lora") != std::string::npos) lora += p.numel();
    EXPECT_TRUE(name.find("lora") != std::string::npos || name.rfind("prior.out.", 0) == 0 ||
                name.rfind("log_", 0) == 0)
        << name;
  }
  EXPECT_GT(lora, 0);
  EXPECT_LT(trainable, nets::count_parameters(prior->module()) / 5);
}

TEST(Ud2m, DataStepSolvesItsObjective) {
  // z minimises ‖y − Az‖²/(2λσ_y²) + ‖z − x_t/√ᾱ_t‖²/(2σ_t²) + ‖z − x_prev‖²/(2ρ²): its gradient vanishes.
  auto prior = tiny_adm();
  unrolled::UnrolledNetwork net(prior, {});
  torch::NoGradGuard no_grad;
  net.named_parameters()["log_lambda"].fill_(0.3);
  std::vector<std::shared_ptr<physics::LinearOperator>> ops = {
      std::make_shared<physics::CircularBlur>(physics::gaussian_kernel(5, 1.5), 16, 16),
      std::make_shared<physics::Inpainting>(physics::random_mask(16, 16, 0.5, 2)),
      std::make_shared<physics::ConvBlur>(physics::motion_kernel(5, 1), physics::ConvBlur::Boundary::reflect, 16, 16)};
  for (auto& op : ops) {
    auto x = torch::randn({1, 3, 16, 16}, torch::kFloat64) * 0.5;
    const double sigma_y = 0.1;
    auto y = op->forward(x) + sigma_y * torch::randn_like(op->forward(x));
    const int t = 300;
    const auto& s = prior->schedule();
    auto x_t = std::sqrt(s.alpha_bar(t)) * x + std::sqrt(1 - s.alpha_bar(t)) * torch::randn_like(x);
    auto previous = x + 0.1 * torch::randn_like(x);
    auto z = net.data_step(*op, y, sigma_y, x_t, t, previous);
    const double lambda = net.lambda().item<double>(), rho = net.rho0(sigma_y, t) * net.rho_scale().item<double>();
    auto grad = op->adjoint(op->forward(z) - y) / (lambda * sigma_y * sigma_y) +
                (z - x_t / std::sqrt(s.alpha_bar(t))) / std::pow(s.sigma(t), 2) + (z - previous) / (rho * rho);
    auto scale = (z - previous).abs().max().item<double>() / (rho * rho);
    EXPECT_LT(grad.abs().max().item<double>(), 1e-4 * scale) << op->name();
  }
}

TEST(Ud2m, DataStepGradientInLambdaMatchesFiniteDifferences) {
  auto prior = tiny_adm();
  unrolled::UnrolledNetwork net(prior, {});
  physics::CircularBlur op(physics::gaussian_kernel(5, 1.5), 16, 16);
  torch::manual_seed(1);
  auto x_t = torch::randn({1, 3, 16, 16}, torch::kFloat64), prev = torch::randn({1, 3, 16, 16}, torch::kFloat64);
  auto y = torch::randn({1, 3, 16, 16}, torch::kFloat64), w = torch::randn({1, 3, 16, 16}, torch::kFloat64);
  auto objective = [&] { return (net.data_step(op, y, 0.1, x_t, 200, prev) * w).sum(); };
  auto log_lambda = net.named_parameters()["log_lambda"];
  auto analytic = torch::autograd::grad({objective()}, {log_lambda})[0].item<double>();
  const double h = 1e-3;  // log λ is float32: a smaller step drowns in rounding
  torch::NoGradGuard no_grad;
  log_lambda.fill_(h);
  const double plus = objective().item<double>();
  log_lambda.fill_(-h);
  const double minus = objective().item<double>();
  log_lambda.fill_(0);
  const double numeric = (plus - minus) / (2 * h);
  EXPECT_NEAR(analytic, numeric, 1e-3 * std::abs(numeric));
}

TEST(Ud2m, NonlinearDataStepConvergesToTheProxAndCarriesItsGradients) {
  auto prior = tiny_adm();
  unrolled::UnrolledOptions options;
  options.nonlinear_prox_steps = 200;
  unrolled::UnrolledNetwork net(prior, options);
  auto blur = std::make_shared<physics::CircularBlur>(physics::gaussian_kernel(5, 1.5), 16, 16);
  OpaqueBlur opaque(blur);
  torch::manual_seed(1);
  auto x_t = torch::randn({1, 3, 16, 16}, torch::kFloat64), y = torch::randn({1, 3, 16, 16}, torch::kFloat64);
  auto w = torch::randn({1, 3, 16, 16}, torch::kFloat64);
  auto prev = torch::randn({1, 3, 16, 16}, torch::kFloat64).requires_grad_(true);
  auto log_lambda = net.named_parameters()["log_lambda"];
  {
    torch::NoGradGuard no_grad;
    log_lambda.fill_(0.3);
    EXPECT_TRUE(torch::allclose(net.data_step(opaque, y, 0.1, x_t, 200, prev), net.data_step(*blur, y, 0.1, x_t, 200, prev),
                                1e-6, 1e-8));
  }
  // The gradient steps stay in the graph: the same gradients in λ and in the
  // previous estimate as the closed form's (whose λ-gradient is checked above).
  auto gradients = [&](const physics::Operator& op) {
    return torch::autograd::grad({(net.data_step(op, y, 0.1, x_t, 200, prev) * w).sum()}, {log_lambda, prev});
  };
  auto nonlinear = gradients(opaque), linear = gradients(*blur);
  EXPECT_NEAR(nonlinear[0].item<double>(), linear[0].item<double>(), 1e-4 * std::abs(linear[0].item<double>()));
  EXPECT_TRUE(torch::allclose(nonlinear[1], linear[1], 1e-5, 1e-8));
}

TEST(Ud2m, JpegDataStepLowersItsObjectiveFromEitherEstimate) {
  // On real JPEG (the codec's y), the data step's z scores better on its own
  // objective than the two estimates it weighs, and starts from y (x⁽⁰⁾).
  auto prior = tiny_adm();
  unrolled::UnrolledNetwork net(prior, {});
  physics::JpegCompression op(10);
  auto x = to_model(read_image((test::source_dir() / "assets" / "astronaut_256.png").string()))
               .slice(2, 64, 96).slice(3, 96, 128);
  auto y = op.measure(x);
  EXPECT_TRUE(torch::equal(unrolled::initial_estimate(op, y), y.clamp(-1, 1)));
  const int t = 300;
  const double sigma_y = 0.02;
  const auto& s = prior->schedule();
  torch::manual_seed(2);
  auto x_t = std::sqrt(s.alpha_bar(t)) * x + std::sqrt(1 - s.alpha_bar(t)) * torch::randn_like(x);
  auto previous = (x + 0.05 * torch::randn_like(x)).clamp(-1, 1);
  torch::NoGradGuard no_grad;
  auto z = net.data_step(op, y, sigma_y, x_t, t, previous);
  const double rho = net.rho0(sigma_y, t);
  auto objective = [&](const torch::Tensor& v) {
    return ((op.forward(v) - y).pow(2).sum() / (2 * sigma_y * sigma_y) +
            (v - x_t / std::sqrt(s.alpha_bar(t))).pow(2).sum() / (2 * std::pow(s.sigma(t), 2)) +
            (v - previous).pow(2).sum() / (2 * rho * rho))
        .item<double>();
  };
  const double at_z = objective(z), at_previous = objective(previous), at_y = objective(y);
  std::printf("JPEG data step objective: previous %.1f, y %.1f, z %.1f\n", at_previous, at_y, at_z);
  EXPECT_LT(at_z, 0.9 * std::min(at_previous, at_y));
}

TEST(Ud2m, OneBlockAtTheFirstTimestepIsOneLatinoIteration) {
  // At t = 999 the x_t term weighs ρ²/σ_t² ≈ 4e-7 (σ_t ≈ 157 ≫ ρ), so a
  // single block is LATINO's step up to ~1e-4: prox of the initial estimate
  // with γ = ρ²/(λσ_y²), re-noise to t_δ, denoise. For inpainting the initial
  // estimate is y with its holes filled (initial_estimate).
  auto prior = tiny_adm();
  unrolled::UnrolledOptions options;
  options.blocks = 1;
  unrolled::UnrolledNetwork net(prior, options);
  physics::Inpainting op(physics::random_mask(16, 16, 0.5, 3));
  torch::manual_seed(2);
  auto y = op.forward(torch::rand({1, 3, 16, 16}) * 2 - 1);
  auto x_t = torch::randn({1, 3, 16, 16});
  const double sigma = 0.05, sigma_y = 0.1;
  torch::NoGradGuard no_grad;
  auto rng = at::make_generator<at::CPUGeneratorImpl>(9);
  auto ours = net.forward(op, y, sigma, x_t, 999, rng);
  rng = at::make_generator<at::CPUGeneratorImpl>(9);
  const double rho = net.rho0(sigma_y, 999);
  const int t_delta = net.renoise_timestep(sigma_y, 999);
  EXPECT_LT(t_delta, 50);  // ρ₀ ≈ σ_y: a low noise level
  auto z = op.prox(unrolled::initial_estimate(op, y), y, rho * rho / (sigma_y * sigma_y));
  const double ab = prior->schedule().alpha_bar(t_delta);
  auto z_in = std::sqrt(ab) * z + std::sqrt(1 - ab) * at::randn(z.sizes(), rng, z.options());
  auto latino = prior->x0(z_in, t_delta);
  EXPECT_LT((ours - latino).abs().max().item<double>(), 1e-3);
}

TEST(Ud2m, NoiseInflationRaisesTheRenoisingLevel) {
  // c multiplies σ_y in ρ₀: at σ_y = 0.02 and t = 999, t_δ goes from ~2 to well above 50 at c = 13.
  auto prior = tiny_adm();
  unrolled::UnrolledNetwork net(prior, {});
  EXPECT_LT(net.renoise_timestep(0.02, 999), 5);
  net.set_noise_inflation(13);
  EXPECT_GT(net.renoise_timestep(0.02, 999), 50);
  EXPECT_THROW_MSG(net.set_noise_inflation(0), "noise inflation");
  EXPECT_THROW_MSG(unrolled::UnrolledNetwork(tiny_adm(), {3, {}, -1}), "noise inflation");
}

TEST(Ud2m, InitialEstimateAveragesTheMeasurementsAndNeverAmplifiesNoise) {
  torch::manual_seed(4);
  auto kernel = physics::gaussian_kernel(7, 2.0);
  physics::CircularBlur blur(kernel, 16, 16);
  physics::Downsampling sr(kernel, 4, 16, 16);
  physics::Inpainting inpainting(physics::random_mask(16, 16, 0.7, 1));
  auto noise = torch::randn({1, 3, 16, 16}) * 0.1;
  // A normalised blur has Aᵀ1 = 1: the estimate is Aᵀy.
  auto y = blur.forward(noise);
  EXPECT_TRUE(torch::allclose(unrolled::initial_estimate(blur, y), blur.adjoint(y), 1e-5, 1e-6));
  // Inpainting: y where observed; a hole gets a weighted mean of the seen
  // pixels near it: a constant image is filled exactly, and the fill stays
  // within the seen values (a box hole too, from its border inwards).
  auto seen = inpainting.mask().expand({1, 3, 16, 16}) > 0.5;
  y = inpainting.forward(noise);
  auto estimate = unrolled::initial_estimate(inpainting, y);
  EXPECT_TRUE(torch::equal(estimate.masked_select(seen), y.masked_select(seen)));
  auto seen_values = y.masked_select(seen), filled = estimate.masked_select(~seen);
  EXPECT_LE(filled.max().item<double>(), seen_values.max().item<double>() + 1e-6);
  EXPECT_GE(filled.min().item<double>(), seen_values.min().item<double>() - 1e-6);
  EXPECT_GT(filled.abs().mean().item<double>(), 1e-3);  // not grey
  physics::Inpainting box(physics::box_mask(16, 16, 8, 8));
  auto constant = torch::full({1, 3, 16, 16}, -0.4);
  EXPECT_TRUE(torch::allclose(unrolled::initial_estimate(box, box.forward(constant)), constant, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(unrolled::initial_estimate(inpainting, inpainting.forward(constant)), constant, 1e-5,
                              1e-6));
  // A weighted mean with non-negative weights: constants are kept, and
  // pure noise never grows (A†y would multiply it by up to 1/σ_min).
  for (const physics::LinearOperator* op : {static_cast<const physics::LinearOperator*>(&blur),
                                            static_cast<const physics::LinearOperator*>(&sr)}) {
    SCOPED_TRACE(op->name());
    auto constant = torch::full({1, 3, 16, 16}, 0.3);
    EXPECT_TRUE(torch::allclose(unrolled::initial_estimate(*op, op->forward(constant)), constant, 1e-4, 1e-5));
    auto y_noise = torch::randn(op->output_shape({1, 3, 16, 16})) * 0.1;
    EXPECT_LE(unrolled::initial_estimate(*op, y_noise).abs().max().item<double>(),
              y_noise.abs().max().item<double>() + 1e-5);
    EXPECT_GT(op->pinv(y_noise).abs().max().item<double>(), 2 * y_noise.abs().max().item<double>());
  }
  // A signed matrix (random projections) weighs no mean: A†y, clipped to the image range.
  physics::MatrixOperator projections(torch::randn({100, 256}) / 16, {3, 16, 16});
  y = projections.forward(noise);
  EXPECT_TRUE(torch::allclose(unrolled::initial_estimate(projections, y), projections.pinv(y).clamp(-1, 1)));
  EXPECT_LT(test::max_rel_error(projections.forward(unrolled::initial_estimate(projections, y)), y), 1e-3);
}

TEST(Ud2m, TimestepsAsPublished) {
  EXPECT_EQ(unrolled::ud2m_timesteps(1000, 3), (std::vector<int>{999, 444, 111}));
  EXPECT_EQ(unrolled::ud2m_timesteps(1000, 5), (std::vector<int>{999, 639, 360, 159, 39}));
  EXPECT_THROW(unrolled::ud2m_timesteps(1000, 0), Error);
  EXPECT_THROW(unrolled::UnrolledNetwork(tiny_adm(), {0, {}}), Error);
}

TEST(Ud2m, AdapterRoundTripAndBaseCheck) {
  auto dir = test::temp_dir();
  const auto prior_path = (dir / "prior.safetensors").string();
  diffusion::save_prior(prior_path, *tiny_adm());
  auto net = std::make_shared<unrolled::UnrolledNetwork>(diffusion::load_prior(prior_path), unrolled::UnrolledOptions{});
  perturb_trainable(*net, 4);
  unrolled::save_adapter((dir / "a.safetensors").string(), *net, {"gaussian_deblur", 3, {}});
  EXPECT_LT(fs::file_size(dir / "a.safetensors"), fs::file_size(prior_path) / 4);

  auto loaded = unrolled::load_adapter((dir / "a.safetensors").string(), diffusion::load_prior(prior_path), prior_path);
  EXPECT_EQ(loaded.info.task, "gaussian_deblur");
  physics::CircularBlur op(physics::gaussian_kernel(5, 1.5), 16, 16);
  auto y = torch::randn({1, 3, 16, 16}) * 0.5, x_t = torch::randn({1, 3, 16, 16});
  torch::NoGradGuard no_grad;
  auto rng1 = at::make_generator<at::CPUGeneratorImpl>(3), rng2 = at::make_generator<at::CPUGeneratorImpl>(3);
  EXPECT_TRUE(torch::equal(net->forward(op, y, 0.05, x_t, 500, rng1), loaded.network->forward(op, y, 0.05, x_t, 500, rng2)));

  // LoRA on the residual blocks too: the placement travels in the file.
  unrolled::UnrolledOptions wide;
  wide.lora.placement = "attention+resblocks";
  auto wide_net = std::make_shared<unrolled::UnrolledNetwork>(diffusion::load_prior(prior_path), wide);
  perturb_trainable(*wide_net, 5);
  unrolled::save_adapter((dir / "wide.safetensors").string(), *wide_net, {"gaussian_deblur", 3, {}});
  auto wide_loaded = unrolled::load_adapter((dir / "wide.safetensors").string(), diffusion::load_prior(prior_path),
                                            prior_path);
  EXPECT_EQ(wide_loaded.network->options().lora.placement, "attention+resblocks");
  EXPECT_GT(wide_loaded.network->trainable_parameters().size(), loaded.network->trainable_parameters().size());
  auto rng3 = at::make_generator<at::CPUGeneratorImpl>(3), rng4 = at::make_generator<at::CPUGeneratorImpl>(3);
  EXPECT_TRUE(torch::equal(wide_net->forward(op, y, 0.05, x_t, 500, rng3),
                           wide_loaded.network->forward(op, y, 0.05, x_t, 500, rng4)));

  // Another base prior is refused, naming both.
  diffusion::save_prior((dir / "other.safetensors").string(), *tiny_adm(1));
  try {
    unrolled::load_adapter((dir / "a.safetensors").string(), diffusion::load_prior((dir / "other.safetensors").string()),
                           "other.safetensors");
    ADD_FAILURE() << "a mismatched base prior was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another base prior"), std::string::npos) << e.what();
  }
}

TEST(Ud2m, LearnedInitialiserStartsAtTheFormulaAndRoundTrips) {
  // Untrained, the "w/ RAM" variant is the plain network (its output conv is
  // zero); trained (perturbed here), it changes x⁽⁰⁾ and its weights travel in
  // the adapter with the flag.
  auto dir = test::temp_dir();
  const auto prior_path = (dir / "prior.safetensors").string();
  diffusion::save_prior(prior_path, *tiny_adm());
  unrolled::UnrolledOptions with_init;
  with_init.learned_init = true;
  auto plain = std::make_shared<unrolled::UnrolledNetwork>(diffusion::load_prior(prior_path), unrolled::UnrolledOptions{});
  auto ram = std::make_shared<unrolled::UnrolledNetwork>(diffusion::load_prior(prior_path), with_init);
  EXPECT_EQ(plain->evaluations(), 3);
  EXPECT_EQ(ram->evaluations(), 4);
  int64_t initialiser_weights = 0;
  for (auto& [name, p] : ram->trainable_parameters())
    if (name.rfind("initialiser.", 0) == 0) initialiser_weights += p.numel();
  EXPECT_GT(initialiser_weights, 10000);

  physics::CircularBlur op(physics::gaussian_kernel(5, 1.5), 16, 16);
  torch::manual_seed(1);
  auto y = torch::randn({1, 3, 16, 16}) * 0.5, x_t = torch::randn({1, 3, 16, 16});
  auto rng = at::make_generator<at::CPUGeneratorImpl>(3);
  auto noise = plain->draw_block_noise(x_t, rng);
  torch::NoGradGuard no_grad;
  auto reference = plain->forward(op, y, 0.05, x_t, 500, noise);
  EXPECT_TRUE(torch::equal(ram->forward(op, y, 0.05, x_t, 500, noise), reference));

  for (auto& [name, p] : ram->trainable_parameters())
    if (name.rfind("initialiser.out.", 0) == 0) p.normal_(0, 0.05);
  auto changed = ram->forward(op, y, 0.05, x_t, 500, noise);
  EXPECT_GT((changed - reference).abs().max().item<double>(), 1e-4);

  unrolled::save_adapter((dir / "ram.safetensors").string(), *ram, {"gaussian_deblur", 3, {}});
  auto loaded = unrolled::load_adapter((dir / "ram.safetensors").string(), diffusion::load_prior(prior_path), prior_path);
  EXPECT_TRUE(loaded.network->options().learned_init);
  EXPECT_TRUE(torch::equal(loaded.network->forward(op, y, 0.05, x_t, 500, noise), changed));
}

TEST(Ud2m, RecomputingThePriorCallsGivesTheSameGradients) {
  // Activation recomputation changes memory, not values: the same gradients
  // for every trainable parameter, in fp32 and under bf16 autocast.
  unrolled::UnrolledOptions with_init;
  with_init.learned_init = true;
  auto net = std::make_shared<unrolled::UnrolledNetwork>(tiny_adm(), with_init);
  perturb_trainable(*net, 5);
  physics::CircularBlur op(physics::gaussian_kernel(5, 1.5), 16, 16);
  torch::manual_seed(2);
  auto y = torch::randn({2, 3, 16, 16}) * 0.5, x_t = torch::randn({2, 3, 16, 16});
  auto rng = at::make_generator<at::CPUGeneratorImpl>(3);
  auto noise = net->draw_block_noise(x_t, rng);
  for (bool bf16 : {false, true}) {
    std::vector<std::vector<torch::Tensor>> grads;
    for (bool recompute : {false, true}) {
      net->set_recompute(recompute);
      net->zero_grad();
      {
        at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
        at::autocast::set_autocast_enabled(at::kCPU, bf16);
        auto x0 = net->forward(op, y, 0.05, x_t, 600, noise).to(torch::kFloat32);
        at::autocast::set_autocast_enabled(at::kCPU, false);
        at::autocast::clear_cache();
        (x0 * torch::linspace(-1, 1, x0.numel()).view_as(x0)).sum().backward();
      }
      grads.emplace_back();
      for (auto& [name, p] : net->trainable_parameters())
        grads.back().push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    }
    int compared = 0;
    for (size_t i = 0; i < grads[0].size(); ++i) {
      const double scale = grads[0][i].abs().max().item<double>();
      if (scale == 0) continue;
      ++compared;
      EXPECT_LE((grads[1][i] - grads[0][i]).abs().max().item<double>(), (bf16 ? 1e-2 : 1e-5) * scale)
          << "parameter " << i << (bf16 ? " (bf16)" : " (fp32)");
    }
    EXPECT_GT(compared, 10);
  }
}

TEST(Ud2mCli, RestoresWithAnAdapterAndRefusesBadRequests) {
  auto dir = test::temp_dir();
  const auto prior_path = save_prior_and_image(dir);
  unrolled::UnrolledNetwork net(diffusion::load_prior(prior_path), {});
  unrolled::save_adapter((dir / "deblur.safetensors").string(), net, {"gaussian_deblur", 3, {}});
  auto r = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.02 " + (dir / "clean.png").string() + " " +
                          (dir / "y.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto base = "restore -m " + (dir / "y.png").string() + " --method ud2m --model " + prior_path + " --out " +
                    (dir / "x.png").string();
  r = test::run_ud2m(base + " --adapter " + (dir / "deblur.safetensors").string() + " --steps 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(read_file((dir / "x.json").string()));
  EXPECT_EQ(report.at("settings").at("nfe"), 6);  // N = 2 steps × K = 3 blocks
  fs::remove(dir / "x.png");
  unrolled::UnrolledOptions with_init;
  with_init.learned_init = true;
  unrolled::UnrolledNetwork ram(diffusion::load_prior(prior_path), with_init);
  unrolled::save_adapter((dir / "ram.safetensors").string(), ram, {"gaussian_deblur", 3, {}});
  r = test::run_ud2m(base + " --adapter " + (dir / "ram.safetensors").string() + " --steps 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  report = nlohmann::json::parse(read_file((dir / "x.json").string()));
  EXPECT_EQ(report.at("settings").at("nfe"), 8);  // N = 2 × (K = 3 blocks + the initialiser)
  fs::remove(dir / "x.png");

  diffusion::save_prior((dir / "other.safetensors").string(), *tiny_adm(1));
  unrolled::UnrolledNetwork sr(diffusion::load_prior(prior_path), {});
  unrolled::save_adapter((dir / "sr.safetensors").string(), sr, {"sr", 3, {}});
  struct Case {
    std::string args, message;
  };
  std::vector<Case> cases = {
      {"", "needs an adapter"},
      {"--adapter " + (dir / "deblur.safetensors").string() + " --steps 0", "--steps N must be positive"},
      {"--adapter " + (dir / "deblur.safetensors").string() + " --blocks -3", "--blocks K must be positive"},
      {"--adapter " + (dir / "deblur.safetensors").string() + " --nfe 9", "not --nfe"},
      {"--adapter " + (dir / "sr.safetensors").string(), "trained for sr"},
      {"--adapter " + prior_path, "not a UD2M adapter"},
  };
  for (auto& c : cases) {
    r = test::run_ud2m(base + " " + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << ": " << r.output;
    EXPECT_FALSE(fs::exists(dir / "x.png")) << c.args;
  }
  r = test::run_ud2m("restore -m " + (dir / "y.png").string() + " --method ud2m --model " +
                     (dir / "other.safetensors").string() + " --out " + (dir / "x.png").string() + " --adapter " +
                     (dir / "deblur.safetensors").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("another base prior"), std::string::npos) << r.output;
}

TEST(Ud2mCli, ConvertSetsTheUnrollAnAdapterRestoresWithByDefault) {
  // `convert --steps N --blocks K` changes only the default: the same tensors
  // and training record, and restoring with the new file equals restoring
  // with the old one told N and K.
  auto dir = test::temp_dir();
  const auto prior_path = save_prior_and_image(dir);
  unrolled::UnrolledNetwork net(diffusion::load_prior(prior_path), {});
  perturb_trainable(net, 6);
  const auto old_path = (dir / "a.safetensors").string(), new_path = (dir / "b.safetensors").string();
  unrolled::save_adapter(old_path, net, {"gaussian_deblur", 3, {{"step", 42}}});
  auto r = test::run_ud2m("convert " + old_path + " " + new_path + " --steps 1 --blocks 5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto before = unrolled::read_adapter(old_path), after = unrolled::read_adapter(new_path);
  EXPECT_EQ(after.info.steps, 1);
  EXPECT_EQ(after.options.blocks, 5);
  EXPECT_EQ(after.info.task, "gaussian_deblur");
  EXPECT_EQ(after.info.training, before.info.training);
  ASSERT_EQ(after.tensors.size(), before.tensors.size());
  for (const auto& [name, value] : before.tensors) EXPECT_TRUE(torch::equal(after.tensors.at(name), value)) << name;

  r = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.02 " + (dir / "clean.png").string() + " " +
                     (dir / "y.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto restore = [&](const std::string& adapter, const std::string& extra, const std::string& out) {
    auto run = test::run_ud2m("restore -m " + (dir / "y.safetensors").string() + " --method ud2m --model " +
                              prior_path + " --adapter " + adapter + extra + " --bit-depth 16 --out " +
                              (dir / out).string());
    EXPECT_EQ(run.exit_code, 0) << run.output;
    return nlohmann::json::parse(read_file((dir / fs::path(out).replace_extension(".json")).string()));
  };
  EXPECT_EQ(restore(old_path, " --steps 1 --blocks 5", "told.png").at("settings").at("nfe"), 5);
  EXPECT_EQ(restore(new_path, "", "default.png").at("settings").at("nfe"), 5);
  EXPECT_TRUE(torch::equal(read_image((dir / "told.png").string()), read_image((dir / "default.png").string())));

  struct Case {
    std::string args, message;
  };
  for (const auto& c : std::vector<Case>{{old_path + " --steps 0", "must be positive"},
                                         {prior_path + " --blocks 9", "apply to UD2M adapters"}}) {
    r = test::run_ud2m("convert " + c.args + " " + (dir / "refused.safetensors").string());
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << ": " << r.output;
    EXPECT_FALSE(fs::exists(dir / "refused.safetensors")) << c.args;
  }
}

TEST(Ud2mCli, Bf16RestoreStaysCloseToFp32AndIsRefusedWhereItCannotApply) {
  auto dir = test::temp_dir();
  const auto prior_path = save_prior_and_image(dir);
  unrolled::UnrolledNetwork net(diffusion::load_prior(prior_path), {});
  perturb_trainable(net, 5);  // LoRA that matters: folded at full precision, then rounded to bf16
  unrolled::save_adapter((dir / "deblur.safetensors").string(), net, {"gaussian_deblur", 3, {}});
  auto r = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.02 " + (dir / "clean.png").string() + " " +
                          (dir / "y.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto base = "restore -m " + (dir / "y.png").string() + " --method ud2m --model " + prior_path +
                    " --adapter " + (dir / "deblur.safetensors").string() + " --bit-depth 16 --out ";
  std::map<std::string, torch::Tensor> restored;
  for (const std::string precision : {"fp32", "bf16"}) {
    const auto out = dir / (precision + ".png");
    r = test::run_ud2m(base + out.string() + " --precision " + precision);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    restored[precision] = read_image(out.string());
    auto report = nlohmann::json::parse(read_file((dir / (precision + ".json")).string()));
    EXPECT_EQ(report.at("precision"), precision);
  }
  const double agreement = metrics::psnr(restored["bf16"], restored["fp32"]);
  std::printf("UD2M restore, bf16 vs fp32: %.1f dB apart\n", agreement);
  EXPECT_GT(agreement, 35);
  EXPECT_LT(agreement, 200) << "bf16 must actually have run";

  r = test::run_ud2m("restore -m " + (dir / "y.png").string() + " --method tv --out " + (dir / "tv.png").string() +
                     " --precision bf16");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("applies to the methods that run a network"), std::string::npos) << r.output;
  // DDPM priors run in bf16 too (GroupNorm in fp32); EDM2 ones are refused.
  diffusion::save_prior((dir / "ddpm.safetensors").string(), *tiny_ddpm());
  for (const std::string precision : {"fp32", "bf16"}) {
    r = test::run_ud2m("denoise --model " + (dir / "ddpm.safetensors").string() + " --sigma 0.1 --bit-depth 16 " +
                       "--precision " + precision + " " + (dir / "clean.png").string() + " " +
                       (dir / ("ddpm_" + precision + ".png")).string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const double ddpm_agreement = metrics::psnr(read_image((dir / "ddpm_bf16.png").string()),
                                              read_image((dir / "ddpm_fp32.png").string()));
  std::printf("DDPM denoise, bf16 vs fp32: %.1f dB apart\n", ddpm_agreement);
  EXPECT_GT(ddpm_agreement, 35);
  EXPECT_LT(ddpm_agreement, 200) << "bf16 must actually have run";
  const auto edm2 = (test::source_dir() / "tests/data/edm2/edm2_tiny.pkl").string();
  r = test::run_ud2m("denoise --model " + edm2 + " --sigma 0.1 --precision bf16 " + (dir / "clean.png").string() +
                     " " + (dir / "d.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("implemented for ADM and DDPM priors"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "d.png"));
}

TEST(Ud2mCli, RestoresJpegAndRefusesPhaseRetrieval) {
  auto dir = test::temp_dir();
  const auto prior_path = save_prior_and_image(dir);
  unrolled::UnrolledNetwork net(diffusion::load_prior(prior_path), {});
  unrolled::save_adapter((dir / "jpeg.safetensors").string(), net, {"jpeg", 3, {}});
  unrolled::save_adapter((dir / "general.safetensors").string(), net, {"general", 3, {}});
  const auto clean = (dir / "clean.png").string();
  auto r = test::run_ud2m("degrade --task jpeg --quality 10 --sigma 0.01 " + clean + " " +
                          (dir / "y.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto restore = " --method ud2m --model " + prior_path + " --out " + (dir / "x.png").string() + " --adapter ";
  r = test::run_ud2m("restore -m " + (dir / "y.safetensors").string() + restore + (dir / "jpeg.safetensors").string() +
                     " --steps 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(read_file((dir / "x.json").string())).at("settings").at("nfe"), 6);
  fs::remove(dir / "x.png");

  r = test::run_ud2m("degrade --task phase_retrieval --sigma 0.01 " + clean + " " + (dir / "pr.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_ud2m("restore -m " + (dir / "pr.safetensors").string() + restore +
                     (dir / "general.safetensors").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'phase_retrieval' is neither"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "x.png"));
}
