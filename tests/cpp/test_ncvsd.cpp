// NCVSD's losses on a 2-D Gaussian toy, where every distribution is known:
// prior x0 ~ N(μ, Σ), y = x0 + σn, posterior N(μ_p, Σ_p) in closed form.
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include "core/image.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "ncvsd/generation.hpp"
#include "ncvsd/vsd.hpp"
#include "nets/inference_precision.hpp"
#include "test_util.hpp"
#include "tiny_priors.hpp"

using namespace ud2m;

namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kFloat64);

struct Gaussian2 {
  torch::Tensor mean, cov;  // (2,), (2, 2)

  // E[x0 | x0 + s·n = x] for samples x (N, 2) at per-sample levels s (N,): μ + Σ(Σ + s²I)⁻¹(x − μ).
  torch::Tensor denoise(const torch::Tensor& x, const torch::Tensor& s) const {
    auto eye = torch::eye(2, kF64);
    auto gain = torch::matmul(cov, torch::linalg_inv(cov + s.pow(2).view({-1, 1, 1}) * eye));  // (N, 2, 2)
    return mean + torch::matmul(gain, (x - mean).unsqueeze(-1)).squeeze(-1);
  }
};

// KL(N(m0, S0) ‖ N(m1, S1)).
torch::Tensor kl(const torch::Tensor& m0, const torch::Tensor& s0, const torch::Tensor& m1, const torch::Tensor& s1) {
  auto s1_inv = torch::linalg_inv(s1);
  auto d = (m1 - m0).unsqueeze(-1);
  return 0.5 * (torch::trace(s1_inv.mm(s0)) + d.t().mm(s1_inv).mm(d).squeeze() - 2 +
                torch::logdet(s1) - torch::logdet(s0));
}

struct Toy {
  Gaussian2 prior{torch::tensor({0.3, -0.2}, kF64), torch::tensor({{1.0, 0.6}, {0.6, 0.5}}, kF64)};
  double sigma = 0.5;
  torch::Tensor y = torch::tensor({0.8, 0.1}, kF64);
  Gaussian2 posterior() const {
    auto eye = torch::eye(2, kF64);
    auto cov = torch::linalg_inv(torch::linalg_inv(prior.cov) + eye / (sigma * sigma));
    auto mean = cov.mv(torch::linalg_inv(prior.cov).mv(prior.mean) + y / (sigma * sigma));
    return {mean, cov};
  }
  // The teacher's target s0 = D_prior(y_eff, σ_eff) for samples x_t at levels t.
  torch::Tensor teacher_target(const torch::Tensor& x_t, const torch::Tensor& t) const {
    const int64_t n = x_t.size(0);
    auto point = ncvsd::noise_conditional_point(y.expand({n, 2}), torch::full({n}, sigma, kF64), x_t, t);
    return prior.denoise(point.y_eff, point.sigma_eff);
  }
};

}  // namespace

TEST(Ncvsd, TeacherAtTheNoiseConditionalPointIsThePosteriorDenoiser) {
  // E[x0 | x_t, y] with both Gaussian likelihoods written out: precision
  // Σ⁻¹ + I/σ² + I/t², mean cov·(Σ⁻¹μ + y/σ² + x_t/t²).
  Toy toy;
  torch::manual_seed(0);
  auto x_t = torch::randn({5, 2}, kF64) * 2;
  auto t = torch::tensor({0.01, 0.3, 1.0, 5.0, 80.0}, kF64);
  auto eye = torch::eye(2, kF64);
  auto prior_precision = torch::linalg_inv(toy.prior.cov);
  for (int64_t i = 0; i < 5; ++i) {
    const double ti = t[i].item<double>();
    auto cov = torch::linalg_inv(prior_precision + eye / (toy.sigma * toy.sigma) + eye / (ti * ti));
    auto exact = cov.mv(prior_precision.mv(toy.prior.mean) + toy.y / (toy.sigma * toy.sigma) + x_t[i] / (ti * ti));
    auto ours = toy.teacher_target(x_t.slice(0, i, i + 1), t.slice(0, i, i + 1))[0];
    EXPECT_TRUE(torch::allclose(ours, exact, 1e-10, 1e-12)) << "t = " << ti << ": " << ours << " vs " << exact;
  }
}

TEST(Ncvsd, GeneratorLossGradientIsTheKlGradient) {
  // Generator x = a + Bz, so q_t = N(a, BBᵀ + t²I); the fake denoiser is q_t's
  // exact one. The Monte-Carlo mean of the loss's autograd gradient must equal
  // 2t²·∇θ KL(q_t ‖ p_t(· | y)), the latter by central finite differences of
  // the closed-form KL.
  Toy toy;
  const auto posterior = toy.posterior();
  auto a = torch::tensor({0.1, 0.4}, kF64).requires_grad_(true);
  auto b = torch::tensor({{0.7, 0.0}, {0.2, 0.3}}, kF64).requires_grad_(true);
  const double t = 0.7;
  auto eye = torch::eye(2, kF64);
  auto kl_t = [&](const torch::Tensor& a_, const torch::Tensor& b_) {
    return kl(a_, b_.mm(b_.t()) + t * t * eye, posterior.mean, posterior.cov + t * t * eye);
  };

  const int64_t n = 2'000'000;
  auto rng = at::make_generator<at::CPUGeneratorImpl>(1);
  auto z = at::randn({n, 2}, rng, kF64), eps = at::randn({n, 2}, rng, kF64);
  auto x = a + z.mm(b.t());
  auto x_t = x + t * eps;
  auto levels = torch::full({n}, t, kF64);
  Gaussian2 q{a.detach(), b.detach().mm(b.detach().t())};
  auto s = q.denoise(x_t.detach(), levels);
  auto s0 = toy.teacher_target(x_t.detach(), levels);
  auto loss = ncvsd::generator_loss(x, s0, s, torch::ones({n}, kF64), torch::zeros({}, kF64)).mean();
  auto grads = torch::autograd::grad({loss}, {a, b});

  const double h = 1e-5;
  torch::NoGradGuard no_grad;
  auto check = [&](const torch::Tensor& param, const torch::Tensor& grad, const char* name) {
    auto flat = param.detach().flatten();
    for (int64_t i = 0; i < flat.numel(); ++i) {
      auto plus = param.detach().clone(), minus = param.detach().clone();
      plus.view(-1)[i] += h;
      minus.view(-1)[i] -= h;
      const double fd = param.dim() == 1 ? (kl_t(plus, b.detach()) - kl_t(minus, b.detach())).item<double>() / (2 * h)
                                         : (kl_t(a.detach(), plus) - kl_t(a.detach(), minus)).item<double>() / (2 * h);
      const double mc = grad.flatten()[i].item<double>();
      std::printf("d/d%s[%lld]: loss gradient %.5f, 2t²·dKL %.5f\n", name, static_cast<long long>(i), mc,
                  2 * t * t * fd);
      EXPECT_NEAR(mc, 2 * t * t * fd, 0.01 + 0.02 * std::abs(fd)) << name << "[" << i << "]";
    }
  };
  check(a, grads[0], "a");
  check(b, grads[1], "B");
}

TEST(Ncvsd, ToyGeneratorTrainedByDistillationSamplesThePosterior) {
  // Both networks Gaussian-shaped: the generator x = a + Bz, the fake
  // denoiser the exact denoiser of N(m, LLᵀ) with (m, L) learned by denoising
  // score matching on the generator's samples. Trained alternately with the
  // published level distributions and EDM weights, the generator must land
  // on the posterior's mean and covariance. The fake score has to keep up:
  // with one fake step per generator step at equal learning rates the
  // generator collapsed (covariance 0.005 vs 0.169); four steps and a 3×
  // smaller generator rate track it (errors < 0.01 over two seeds).
  Toy toy;
  const auto posterior = toy.posterior();
  auto a = torch::zeros({2}, kF64).requires_grad_(true);
  auto b = torch::eye(2, kF64).requires_grad_(true);
  auto m = torch::zeros({2}, kF64).requires_grad_(true);
  auto l = torch::eye(2, kF64).requires_grad_(true);
  torch::optim::Adam generator_opt({a, b}, torch::optim::AdamOptions(3e-3).betas({0.9, 0.99}));
  torch::optim::Adam fake_opt({m, l}, torch::optim::AdamOptions(1e-2).betas({0.9, 0.99}));
  auto rng = at::make_generator<at::CPUGeneratorImpl>(4);
  const int64_t n = 256;
  auto zero = torch::zeros({}, kF64);
  auto fake = [&](const torch::Tensor& x_t, const torch::Tensor& t) {
    return Gaussian2{m, l.mm(l.t())}.denoise(x_t, t);
  };
  for (int step = 0; step < 1000; ++step) {
    for (int k = 0; k < 4; ++k) {  // fake score: denoising score matching on detached generator samples
      auto x = (a + at::randn({n, 2}, rng, kF64).mm(b.t())).detach();
      auto t = ncvsd::lognormal_levels(n, -0.8, 1.6, rng);
      auto x_t = x + t.view({-1, 1}) * at::randn({n, 2}, rng, kF64);
      auto loss = ncvsd::fake_score_loss(fake(x_t, t), x, ncvsd::edm_weight(t), zero).mean();
      fake_opt.zero_grad();
      loss.backward();
      fake_opt.step();
    }
    {  // generator: the noise-conditional VSD loss
      auto x = a + at::randn({n, 2}, rng, kF64).mm(b.t());
      auto t = ncvsd::lognormal_levels(n, 0.4, 2.0, rng);
      auto x_t = (x + t.view({-1, 1}) * at::randn({n, 2}, rng, kF64)).detach();
      torch::Tensor s, s0;
      {
        torch::NoGradGuard no_grad;
        s = fake(x_t, t);
        s0 = toy.teacher_target(x_t, t);
      }
      auto loss = ncvsd::generator_loss(x, s0, s, ncvsd::edm_weight(t), zero).mean();
      generator_opt.zero_grad();
      loss.backward();
      generator_opt.step();
    }
  }
  torch::NoGradGuard no_grad;
  auto cov = b.mm(b.t());
  std::printf("toy NCVSD: mean (%.3f, %.3f) vs posterior (%.3f, %.3f); cov (%.3f, %.3f, %.3f) vs (%.3f, %.3f, %.3f)\n",
              a[0].item<double>(), a[1].item<double>(), posterior.mean[0].item<double>(),
              posterior.mean[1].item<double>(), cov[0][0].item<double>(), cov[0][1].item<double>(),
              cov[1][1].item<double>(), posterior.cov[0][0].item<double>(), posterior.cov[0][1].item<double>(),
              posterior.cov[1][1].item<double>());
  EXPECT_LT((a - posterior.mean).abs().max().item<double>(), 0.03);
  EXPECT_LT((cov - posterior.cov).abs().max().item<double>(), 0.03);
}

// ---- Networks built from the teacher -----------------------------------------


namespace {
std::shared_ptr<diffusion::AdmPrior> tiny_teacher() { return test::tiny_adm(); }
}  // namespace

TEST(Ncvsd, ContinuousTimestepsInvertTheScheduleLevels) {
  auto schedule = diffusion::Schedule::linear();
  auto t = torch::tensor({0, 1, 17, 500, 999});
  std::vector<double> levels;
  for (int i = 0; i < 5; ++i) levels.push_back(schedule.sigma(t[i].item<int>()));
  auto back = schedule.timesteps_at(torch::tensor(levels, kF64));
  EXPECT_TRUE(torch::allclose(back, t.to(torch::kFloat32), 0, 1e-3)) << back;
  // Between two timesteps, in between (the geometric mean of the levels is
  // the midpoint); beyond the ends, clamped.
  const double mid = std::sqrt(schedule.sigma(10) * schedule.sigma(11));
  auto between = schedule.timesteps_at(torch::tensor({mid, 1e-6, 1e6}, kF64));
  EXPECT_NEAR(between[0].item<float>(), 10.5, 1e-4);
  EXPECT_EQ(between[1].item<float>(), 0);
  EXPECT_EQ(between[2].item<float>(), 999);
  // sigmas_at is its inverse at fractional timesteps too.
  auto fractional = torch::tensor({0.25, 10.5, 333.3, 998.9}, kF64);
  EXPECT_TRUE(torch::allclose(schedule.timesteps_at(schedule.sigmas_at(fractional)).to(kF64), fractional, 0, 1e-3));
}

TEST(Ncvsd, FreshConditionalCopyIsTheTeacher) {
  // At integer-timestep levels the conditional copy must reproduce the
  // teacher's x0 exactly whatever y and σ are: the condition weights start at 0.
  auto teacher = tiny_teacher();
  ncvsd::ConditionalDenoiser copy(*teacher);
  torch::manual_seed(1);
  auto x0 = torch::rand({2, 3, 16, 16}) * 2 - 1;
  const int t = 300;
  auto level = torch::full({2}, teacher->schedule().sigma(t));
  auto x = x0 + level.view({-1, 1, 1, 1}) * torch::randn_like(x0);
  auto y = torch::randn_like(x0), sigma = torch::tensor({0.3f, 2.0f});
  torch::NoGradGuard no_grad;
  auto ours = copy->forward(x, level, y, sigma);
  const double ab = teacher->schedule().alpha_bar(t);
  auto expected = teacher->x0(x * std::sqrt(ab), t);
  EXPECT_LT((ours - expected).abs().max().item<double>(), 1e-4);
  EXPECT_LT((ncvsd::prior_x0(*teacher, x, level) - expected).abs().max().item<double>(), 1e-4);
  // Moving one condition weight makes y matter.
  auto& first = copy->net()->named_parameters()["input_blocks.0.0.weight"];
  first.narrow(1, 3, 3).fill_(0.01);
  EXPECT_GT((copy->forward(x, level, y, sigma) - ours).abs().max().item<double>(), 1e-4);
}

TEST(Ncvsd, TiledGenerationDrawsTheSameNoiseAndTilesOnlyLargeImages) {
  auto teacher = tiny_teacher();
  ncvsd::ConditionalDenoiser generator(*teacher);
  torch::NoGradGuard no_grad;
  auto sigma = torch::tensor({0.5f});
  auto draw = [&](const torch::Tensor& y, const std::optional<diffusion::Tiling>& tiling) {
    auto rng = at::make_generator<at::CPUGeneratorImpl>(3);
    return tiling ? ncvsd::generate(*generator, y, sigma, rng, tiling) : ncvsd::generate(*generator, y, sigma, rng);
  };
  const diffusion::Tiling tiling{16, 4};
  // Up to 4 tiles' worth of pixels: the same draw as without tiling, bit for bit.
  auto small = torch::randn({1, 3, 32, 32});
  EXPECT_TRUE(torch::equal(draw(small, tiling), draw(small, std::nullopt)));
  // Larger: tiles of 16 (the network's attention sees no further), blended to the image's size.
  auto large = torch::randn({1, 3, 48, 40});
  auto tiled = draw(large, tiling), whole = draw(large, std::nullopt);
  ASSERT_EQ(tiled.sizes(), large.sizes());
  EXPECT_TRUE(torch::isfinite(tiled).all().item<bool>());
  // The same z under every tile: the blend stays near the whole-image draw
  // (independent noise per tile would leave it as far as two draws are apart).
  auto rng = at::make_generator<at::CPUGeneratorImpl>(4);
  const double apart = (ncvsd::generate(*generator, large, sigma, rng) - whole).abs().mean().item<double>();
  const double tiling_error = (tiled - whole).abs().mean().item<double>();
  std::printf("tiled vs whole %.4f, two draws %.4f\n", tiling_error, apart);
  EXPECT_LT(tiling_error, 0.5 * apart);
}

TEST(Ncvsd, GeneratorFileRoundTripAndWrongKinds) {
  auto teacher = tiny_teacher();
  ncvsd::ConditionalDenoiser generator(*teacher);
  const auto dir = std::filesystem::temp_directory_path() / "ud2m_test_ncvsd_file";
  std::filesystem::create_directories(dir);
  const auto path = (dir / "g.safetensors").string();
  ncvsd::save_generator(path, *generator, {{"teacher", "tiny"}}, torch::kFloat32);
  auto loaded = ncvsd::load_generator(path);
  auto rng1 = at::make_generator<at::CPUGeneratorImpl>(5), rng2 = at::make_generator<at::CPUGeneratorImpl>(5);
  auto a = ncvsd::generate_images(*generator, {2, 3, 16, 16}, ncvsd::published_indices(2), rng1);
  auto b = ncvsd::generate_images(*loaded, {2, 3, 16, 16}, ncvsd::published_indices(2), rng2);
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-5));
  // A prior is not a generator, and a generator is not a prior.
  const auto prior_path = (dir / "prior.safetensors").string();
  diffusion::save_prior(prior_path, *teacher);
  EXPECT_THROW_MSG(ncvsd::load_generator(prior_path), "is not an NCVSD generator");
  EXPECT_THROW_MSG(diffusion::load_prior(path), "is not a diffusion prior (format 'ud2m-ncvsd-generator')");
  // Level index sets.
  EXPECT_THROW_MSG(ncvsd::published_indices(3), "1, 2 or 4 steps");
  auto rng = at::make_generator<at::CPUGeneratorImpl>(0);
  EXPECT_THROW_MSG(ncvsd::generate_images(*generator, {1, 3, 16, 16}, {10, 40}, rng), "outside the grid");
  EXPECT_THROW_MSG(ncvsd::generate_images(*generator, {1, 3, 16, 16}, {20, 10}, rng), "must increase");
  std::filesystem::remove_all(dir);
}

// --precision bf16 for generators: the ADM network underneath runs in its
// weights' dtype, so cast weights give (nearly) the fp32 draw for the same z.
TEST(Ncvsd, Bf16GeneratorGivesNearlyTheFp32Draw) {
  torch::NoGradGuard no_grad;
  auto teacher = tiny_teacher();
  ncvsd::ConditionalDenoiser fp32(*teacher), bf16(*teacher);
  nets::cast_for_inference(*bf16, torch::kBFloat16, /*channels_last=*/true);
  torch::manual_seed(3);
  auto y = torch::randn({2, 3, 16, 16}), z = torch::randn({2, 3, 16, 16});
  auto sigma = torch::tensor({0.3f, 2.0f});
  auto a = ncvsd::generate(*fp32, y, sigma, z), b = ncvsd::generate(*bf16, y, sigma, z);
  EXPECT_EQ(b.scalar_type(), torch::kFloat32);
  const double error = ((b - a).norm() / a.norm()).item<double>();
  std::printf("bf16 vs fp32 generator: relative error %.2e\n", error);
  EXPECT_LT(error, 0.02);
  EXPECT_GT(error, 0) << "bf16 must actually have run";
}

// A generator file may carry level sets of its own (`convert --levels`):
// `sample --steps N` uses them, the published sets serve the other counts,
// and a conversion keeps the file's training notes.
TEST(Ncvsd, LevelSetsStoredInTheGeneratorFileAreWhatSampleUses) {
  auto teacher = tiny_teacher();
  ncvsd::ConditionalDenoiser generator(*teacher);
  auto dir = test::temp_dir();
  const auto original = (dir / "g.safetensors").string(), tuned = (dir / "tuned.safetensors").string();
  ncvsd::save_generator(original, *generator, {{"teacher", "tiny"}, {"step", 7}}, torch::kFloat32);
  auto r = test::run_ud2m("convert " + original + " " + tuned + " --levels 3:0,14,22,39 --levels 4:0,14,22,30,39");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto loaded = ncvsd::load_generator(tuned);
  EXPECT_EQ(ncvsd::default_indices(3, *loaded), (std::vector<int>{0, 14, 22, 39}));
  EXPECT_EQ(ncvsd::default_indices(4, *loaded), (std::vector<int>{0, 14, 22, 30, 39}));
  EXPECT_EQ(ncvsd::default_indices(2, *loaded), ncvsd::published_indices(2));
  EXPECT_THROW_MSG(ncvsd::default_indices(5, *loaded), "its own for 3, 4, not 5");
  const auto notes = ncvsd::generator_file_notes(tuned);
  EXPECT_EQ(notes.at("teacher"), "tiny");
  EXPECT_EQ(notes.at("step"), 7);
  EXPECT_EQ(notes.at("converted_from"), original);
  // The stored 3-step set draws what --indices with the same set draws.
  auto sample = [&](const std::string& how, const std::string& name) {
    auto out = (dir / name).string();
    auto run =
        test::run_ud2m("sample --method ncvsd --model " + tuned + " " + how + " --n 2 --size 16 --seed 4 " + out);
    EXPECT_EQ(run.exit_code, 0) << run.output;
    return read_image(out);
  };
  EXPECT_TRUE(torch::equal(sample("--steps 3", "stored.png"), sample("--indices 0,14,22,39", "told.png")));
  EXPECT_FALSE(torch::equal(sample("--steps 4", "four.png"), sample("--indices 0,10,20,30,39", "published.png")));
  r = test::run_ud2m("sample --method ncvsd --model " + tuned + " --steps 5 --n 1 --size 16 " +
                     (dir / "five.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("convert --levels 5:"), std::string::npos) << r.output;
  // Bad sets are refused by name, and nothing is written.
  for (const auto& [levels, message] : std::vector<std::pair<std::string, std::string>>{
           {"4:0,10,20,39", "4 steps take 5 level indices"},
           {"2:10,40,39", "outside the grid"},
           {"1:20,10", "must increase"},
           {"2:10,x,39", "'x' is not a level index"},
           {"0,10", "write it as STEPS:"},
           {"0:0,39", "'0' is not a number of steps"}}) {
    const auto out = (dir / "bad.safetensors").string();
    r = test::run_ud2m("convert " + original + " " + out + " --levels " + levels);
    EXPECT_NE(r.exit_code, 0) << levels;
    EXPECT_NE(r.output.find(message), std::string::npos) << levels << ": " << r.output;
    EXPECT_FALSE(std::filesystem::exists(out)) << levels;
  }
  const auto prior = (dir / "prior.safetensors").string();
  diffusion::save_prior(prior, *teacher);
  r = test::run_ud2m("convert " + prior + " " + (dir / "p.safetensors").string() + " --levels 1:18,39");
  EXPECT_NE(r.output.find("--levels applies to NCVSD generators"), std::string::npos) << r.output;
  // A file whose stored sets are broken fails to load, naming them.
  auto file = read_safetensors(tuned);
  auto meta = nlohmann::json::parse(file.metadata.at("ud2m"));
  meta["generation_levels"]["4"] = {0, 50, 60, 70, 80};
  const auto broken = (dir / "broken.safetensors").string();
  write_safetensors(broken, file.tensors, {{"ud2m", meta.dump()}});
  EXPECT_THROW_MSG(ncvsd::load_generator(broken), "generation_levels[\"4\"]: NCVSD level index 50 is outside");
  std::filesystem::remove_all(dir);
}

TEST(Ncvsd, GenerationLevelsAsPublished) {
  auto levels = ncvsd::generation_levels();
  ASSERT_EQ(levels.size(), 40u);
  EXPECT_NEAR(levels[0], 80, 1e-9);
  EXPECT_NEAR(levels[39], 0.002, 1e-12);
  EXPECT_NEAR(levels[10], 16.78, 0.01);
  EXPECT_NEAR(levels[12], 11.72, 0.01);
  EXPECT_NEAR(levels[22], 1.38, 0.01);
}
