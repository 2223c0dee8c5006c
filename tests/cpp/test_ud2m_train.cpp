// UD2M distillation: learning on real pixels, exact resume, CLI errors.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/atomic_file.hpp"
#include "diffusion/prior.hpp"
#include "test_util.hpp"
#include "train/ud2m_trainer.hpp"

using namespace ud2m;
namespace fs = std::filesystem;

namespace {

// A tiny random prior and the bundled photograph as the training data.
train::Ud2mTrainOptions tiny_options(const fs::path& dir) {
  torch::manual_seed(0);
  diffusion::AdmPrior prior(nets::AdmConfig::preset("tiny-16"), diffusion::Schedule::linear());
  diffusion::save_prior((dir / "prior.safetensors").string(), prior);
  train::Ud2mTrainOptions o;
  o.prior = (dir / "prior.safetensors").string();
  o.data = (test::source_dir() / "assets" / "astronaut_256.png").string();
  o.out_dir = (dir / "run").string();
  o.crop = 32;
  o.batch = 2;
  o.blocks = 2;
  o.sigma = 0.05;
  return o;
}

std::vector<torch::Tensor> adapter_values(train::Ud2mTrainer& trainer) {
  std::vector<torch::Tensor> out;
  for (auto& [name, p] : trainer.network().trainable_parameters()) out.push_back(p.detach().clone());
  return out;
}

}  // namespace

TEST(Ud2mTrain, FewStepsOnRealImagesReduceTheLoss) {
  auto dir = test::temp_dir();
  auto o = tiny_options(dir);
  o.w_adv = 0;  // the ℓ2 term alone, so the check is not at the mercy of the game
  o.lr = 1e-3;
  o.steps = 40;
  train::Ud2mTrainer trainer(o);
  const double before = trainer.validation_mse();
  for (int i = 0; i < 40; ++i) trainer.step();
  const double after = trainer.validation_mse();
  std::printf("UD2M validation x0-MSE: %.4f -> %.4f after 40 steps\n", before, after);
  EXPECT_LT(after, 0.95 * before);  // same draws before and after: any drop is real
}

TEST(Ud2mTrain, ValidationIsOnFixedDrawsAndSurvivesAResume) {
  auto dir = test::temp_dir();
  auto o = tiny_options(dir);
  o.val_images = 2;
  o.steps = 2;
  o.save_every = 1;
  train::Ud2mTrainer trainer(o);
  const double first = trainer.validation_psnr();
  EXPECT_TRUE(std::isfinite(first));
  EXPECT_EQ(trainer.validation_psnr(), first);  // same crops, operators and noise each call
  trainer.run();
  o.steps = 3;
  train::Ud2mTrainer resumed(o);
  resumed.run();
  const auto csv = read_file((fs::path(o.out_dir) / "validation.csv").string());
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5) << csv;  // header + steps 0, 1, 2, 3
}

TEST(Ud2mTrain, PriorFeatureLossIsADifferentiableDistanceOnAFrozenCopy) {
  auto dir = test::temp_dir();
  auto o = tiny_options(dir);
  auto loss = train::prior_feature_loss(o.prior);
  EXPECT_EQ(loss.name, "prior features");
  torch::manual_seed(1);
  auto x = torch::rand({2, 3, 16, 16}) * 2 - 1;
  auto estimate = (x + 0.3 * torch::randn_like(x)).requires_grad_(true);
  EXPECT_NEAR(loss(x, x).item<double>(), 0.0, 1e-10);
  auto d = loss(estimate, x);
  EXPECT_GT(d.item<double>(), 1e-4);
  d.backward();
  EXPECT_GT(estimate.grad().abs().sum().item<double>(), 0.0);
  // Smaller perturbations, smaller distance.
  EXPECT_LT(loss(x + 0.03 * (estimate.detach() - x), x).item<double>(), d.item<double>());
  // A prior that cannot be read: an error naming it, not a silently absent term.
  EXPECT_THROW_MSG(train::prior_feature_loss((test::source_dir() / "nope.safetensors").string()), "nope.safetensors");
}

TEST(Ud2mTrain, ResumeAfterAStopGivesTheSameAdapter) {
  auto dir = test::temp_dir();
  auto o = tiny_options(dir);
  o.steps = 4;
  train::Ud2mTrainer straight(o);
  for (int i = 0; i < 4; ++i) straight.step();
  auto expected = adapter_values(straight);

  o.out_dir = (dir / "resumed").string();
  {
    train::Ud2mTrainer first(o);
    first.step();
    first.step();
    first.save_checkpoint();
  }
  train::Ud2mTrainer second(o);
  EXPECT_EQ(second.current_step(), 2);
  second.step();
  second.step();
  auto got = adapter_values(second);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(torch::equal(got[i], expected[i])) << i;
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "adapter.safetensors"));
}

TEST(Ud2mTrain, CliTrainsAnAdapterThatRestoreAccepts) {
  auto dir = test::temp_dir();
  auto o = tiny_options(dir);
  auto r = test::run_ud2m("train --method ud2m --prior " + o.prior + " --data " + o.data + " --out " + o.out_dir +
                          " --crop 32 --steps 2 --blocks 1 --task sr");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "adapter.safetensors"));
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "loss.csv"));
  // Without LPIPS weights the prior's own features are the perceptual term.
  EXPECT_NE(r.output.find("perceptual term: prior features"), std::string::npos) << r.output;
  // Validated before training and at the end: two rows after the header.
  const auto validation = read_file((fs::path(o.out_dir) / "validation.csv").string());
  EXPECT_EQ(std::count(validation.begin(), validation.end(), '\n'), 3) << validation;
  EXPECT_NE(r.output.find("step 0: validation PSNR"), std::string::npos) << r.output;
  // With LPIPS weights (random AlexNet trunk and heads from the metrics refs) the perceptual term is on.
  const auto refs = test::refs_dir("metrics");
  r = test::run_ud2m("train --prior " + o.prior + " --data " + o.data + " --out " + (dir / "lpips").string() +
                     " --crop 32 --steps 1 --blocks 1 --lpips-weights " + (refs / "alex_backbone.pth").string() + " " +
                     (refs / "alex_heads.pth").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("perceptual term: LPIPS (alex)"), std::string::npos) << r.output;
  r = test::run_ud2m("train --method foo --prior " + o.prior + " --data " + o.data + " --out " + o.out_dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown --method 'foo'"), std::string::npos) << r.output;
  r = test::run_ud2m("train --prior " + o.prior + " --data " + o.data + " --out " + (dir / "x").string() +
                     " --task nope");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown --task 'nope'"), std::string::npos) << r.output;
}
