// UD2M distillation: learning on real pixels, exact resume, CLI errors.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/atomic_file.hpp"
#include "core/device.hpp"
#include "core/image.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "test_util.hpp"
#include "tiny_runs.hpp"
#include "train/ud2m_trainer.hpp"
#include "ud2m/adapter.hpp"

using namespace ud2m;
namespace fs = std::filesystem;

namespace {

std::vector<torch::Tensor> adapter_values(train::Ud2mTrainer& trainer) {
  std::vector<torch::Tensor> out;
  for (auto& [name, p] : trainer.network().trainable_parameters()) out.push_back(p.detach().clone());
  return out;
}

// Validation x̂0-MSE before and after `steps` steps of the ℓ2 term alone (so
// the check is not at the mercy of the game), on the same draws both times:
// any drop is real.
std::pair<double, double> mse_before_after(train::Ud2mTrainOptions o, int steps) {
  o.w_adv = 0;
  o.lr = 1e-3;
  o.steps = steps;
  train::Ud2mTrainer trainer(o);
  const double before = trainer.validation_mse();
  for (int i = 0; i < steps; ++i) trainer.step();
  const double after = trainer.validation_mse();
  std::printf("UD2M on %s, validation x0-MSE: %.4f -> %.4f after %d steps\n", o.task.c_str(), before, after, steps);
  return {before, after};
}

}  // namespace

TEST(Ud2mTrain, FewStepsOnRealImagesReduceTheLoss) {
  auto dir = test::temp_dir();
  auto [before, after] = mse_before_after(test::tiny_ud2m_run(dir), 40);
  EXPECT_LT(after, 0.95 * before);
}

TEST(Ud2mTrain, LearnsJpegRestorationThroughTheSurrogate) {
  // JPEG is nonlinear: measurements from the real codec, the data step by
  // gradient steps through the differentiable model, kept in the graph.
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  o.task = "jpeg";
  auto [before, after] = mse_before_after(o, 30);
  EXPECT_LT(after, 0.95 * before);
}

TEST(Ud2mTrain, LearnedInitialiserIsTrainedJointly) {
  // The "w/ RAM" variant: its initialiser starts as the closed-form x⁽⁰⁾ and
  // learns with the adapter; every one of its layers moves (the zero output
  // conv does not block the gradient from reaching the rest after a step).
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  o.w_adv = 0;
  o.lr = 1e-3;
  o.learned_init = true;
  train::Ud2mTrainer trainer(o);
  std::map<std::string, torch::Tensor> before;
  for (auto& [name, p] : trainer.network().trainable_parameters())
    if (name.rfind("initialiser.", 0) == 0) before[name] = p.detach().clone();
  ASSERT_FALSE(before.empty());
  const double mse_before = trainer.validation_mse();
  for (int i = 0; i < 40; ++i) trainer.step();
  const double mse_after = trainer.validation_mse();
  std::printf("UD2M w/ learned initialiser, validation x0-MSE: %.4f -> %.4f after 40 steps\n", mse_before, mse_after);
  EXPECT_LT(mse_after, 0.95 * mse_before);
  for (auto& [name, p] : trainer.network().trainable_parameters())
    if (before.count(name) && name.find(".weight") != std::string::npos && name.find("norm") == std::string::npos)
      EXPECT_FALSE(torch::equal(p, before[name])) << name << " did not move";
}

TEST(Ud2mTrain, ValidationIsOnFixedDrawsAndSurvivesAResume) {
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
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
  auto o = test::tiny_ud2m_run(dir);
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
  auto o = test::tiny_ud2m_run(dir);
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

TEST(Ud2mTrain, InitAdapterStartsFromItsWeightsAndSettings) {
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  o.lora.placement = "attention+resblocks";
  o.steps = 2;
  train::Ud2mTrainer first(o);
  first.step();
  first.step();
  first.save_checkpoint();  // also writes run/adapter.safetensors
  auto trained = adapter_values(first);

  auto warm = test::tiny_ud2m_run(dir);  // K = 2 and LoRA on attention alone: the adapter's settings must win
  warm.blocks = 3;
  warm.out_dir = (dir / "warm").string();
  warm.init_adapter = (dir / "run" / "adapter.safetensors").string();
  auto expect_trained_weights = [&](train::Ud2mTrainer& trainer) {
    auto got = adapter_values(trainer);
    ASSERT_EQ(got.size(), trained.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(torch::equal(got[i], trained[i])) << i;
  };
  train::Ud2mTrainer second(warm);
  EXPECT_EQ(second.current_step(), 0);
  EXPECT_EQ(second.network().options().blocks, 2);
  EXPECT_EQ(second.network().options().lora.placement, "attention+resblocks");
  expect_trained_weights(second);

  warm.blocks_given = true;  // an explicit K wins: the same weights, unrolled further
  warm.out_dir = (dir / "deeper").string();
  train::Ud2mTrainer deeper(warm);
  EXPECT_EQ(deeper.network().options().blocks, 3);
  expect_trained_weights(deeper);
  warm.blocks_given = false;

  torch::manual_seed(1);  // another base prior: refused by fingerprint
  diffusion::AdmPrior other(nets::AdmConfig::preset("tiny-16"), diffusion::Schedule::linear());
  diffusion::save_prior((dir / "other.safetensors").string(), other);
  warm.prior = (dir / "other.safetensors").string();
  warm.out_dir = (dir / "other-run").string();
  EXPECT_THROW_MSG(train::Ud2mTrainer{warm}, "another base prior");
}

TEST(Ud2mTrain, InitAdapterWidensToTheResidualBlocksWithAZeroUpdate) {
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);  // LoRA on attention alone
  o.steps = 2;
  train::Ud2mTrainer first(o);
  first.step();
  first.step();
  first.save_checkpoint();

  auto wide = o;
  wide.lora.placement = "attention+resblocks";
  wide.out_dir = (dir / "wide").string();
  wide.init_adapter = (dir / "run" / "adapter.safetensors").string();
  train::Ud2mTrainer second(wide);
  EXPECT_EQ(second.network().options().lora.placement, "attention+resblocks");
  std::map<std::string, torch::Tensor> got;
  for (auto& [name, p] : second.network().trainable_parameters()) got[name] = p.detach();
  int fresh = 0;
  for (auto [name, p] : first.network().trainable_parameters()) {  // the adapter's weights, copied
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(torch::equal(got[name], p.detach())) << name;
  }
  for (auto& [name, p] : got)
    if (name.find(".in_lora.B") != std::string::npos || name.find(".out_lora.B") != std::string::npos) {
      EXPECT_EQ(p.abs().max().item<float>(), 0.0f) << name;  // the new LoRA's update starts at zero
      ++fresh;
    }
  EXPECT_GT(fresh, 0);
  // The same function: validation on the same fixed draws gives the same error.
  EXPECT_DOUBLE_EQ(second.validation_mse(), first.validation_mse());
}

TEST(Ud2mTrain, CliTrainsAnAdapterThatRestoreAccepts) {
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  auto r = test::run_ud2m("train --method ud2m --prior " + o.prior + " --data " + o.data + " --out " + o.out_dir +
                          " --crop 32 --steps 2 --blocks 1 --task sr");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "adapter.safetensors"));
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "loss.csv"));
  // Not told, it autocasts to bf16 only where bf16 is fast.
  const auto trained = unrolled::read_adapter((fs::path(o.out_dir) / "adapter.safetensors").string());
  EXPECT_EQ(trained.info.training.at("options").at("bf16").get<bool>(), has_fast_bf16(torch::kCPU));
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
  r = test::run_ud2m("train --method ncvsd --prior " + o.prior + " --data " + o.data + " --out " +
                     (dir / "y").string() + " --init-adapter " + (fs::path(o.out_dir) / "adapter.safetensors").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--init-adapter starts a UD2M run"), std::string::npos) << r.output;
  r = test::run_ud2m("train --prior " + o.prior + " --data " + o.data + " --out " + (dir / "z").string() +
                     " --init-generator " + o.prior);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--init-generator starts an NCVSD run"), std::string::npos) << r.output;
}

TEST(Ud2mTrain, TrainsAnAdapterForTheUsersOwnMatrix) {
  // The task's own flags, as `degrade` takes them, reach the operators training
  // draws: an adapter for a user's matrix (random projections of the 32x32
  // crops) trains and restores that matrix's measurements.
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  const auto matrix = (dir / "A.safetensors").string();
  torch::manual_seed(3);
  write_safetensors(matrix, {{"matrix", torch::randn({256, 32 * 32}) / 32}});
  const auto train = "train --method ud2m --prior " + o.prior + " --data " + o.data + " --crop 32 --steps 2 --blocks 1 ";
  auto r = test::run_ud2m(train + "--out " + o.out_dir + " --task matrix --matrix " + matrix);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto adapter = (fs::path(o.out_dir) / "adapter.safetensors").string();
  const auto trained = unrolled::read_adapter(adapter);
  EXPECT_EQ(trained.info.task, "matrix");
  EXPECT_EQ(trained.info.training.at("options").at("task_options").at("matrix"), matrix);
  const auto crop = (dir / "crop.png").string();
  write_png(crop, read_image(o.data).narrow(2, 100, 32).narrow(3, 100, 32));
  r = test::run_ud2m("degrade --task matrix --matrix " + matrix + " --sigma 0.01 " + crop + " " +
                     (dir / "y.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_ud2m("restore --method ud2m --model " + o.prior + " --adapter " + adapter + " -m " +
                     (dir / "y.safetensors").string() + " --out " + (dir / "x.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Without its file the task cannot be drawn; general draws several tasks, so no task's options; NCVSD has no task.
  r = test::run_ud2m(train + "--out " + (dir / "a").string() + " --task matrix");
  EXPECT_NE(r.output.find("task 'matrix' needs --matrix"), std::string::npos) << r.output;
  r = test::run_ud2m(train + "--out " + (dir / "b").string() + " --task general --fraction 0.5");
  EXPECT_NE(r.output.find("task options (--fraction) apply to one task, not to general"), std::string::npos)
      << r.output;
  r = test::run_ud2m("train --method ncvsd --prior " + o.prior + " --data " + o.data + " --out " +
                     (dir / "c").string() + " --matrix " + matrix);
  EXPECT_NE(r.output.find("--matrix sets a UD2M task; NCVSD distils without one"), std::string::npos) << r.output;
}

TEST(Ud2mTrain, TimeLimitStopsWithACheckpointThatTheNextRunResumes) {
  // Both distillation methods: --max-time ends the run with a checkpoint (the
  // limit is spent before the first step here), the same command without it
  // resumes from there.
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  for (std::string method : {"ud2m", "ncvsd"}) {
    const auto out = (dir / method).string();
    const auto args = "train --method " + method + " --prior " + o.prior + " --data " + o.data + " --out " + out +
                      " --crop " + (method == "ud2m" ? "32" : "16") + " --steps 2 --blocks 1 --val-images 1";
    auto r = test::run_ud2m(args + " --max-time 1e-9");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("stopping at step 0: the time limit"), std::string::npos) << method << r.output;
    ASSERT_TRUE(fs::exists(fs::path(out) / "checkpoint.safetensors")) << method;
    r = test::run_ud2m(args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << method << r.output;
    auto meta = read_safetensors((fs::path(out) / "checkpoint.safetensors").string()).metadata;
    auto key = method == "ud2m" ? "ud2m_train_ud2m" : "ud2m_train_ncvsd";
    EXPECT_EQ(nlohmann::json::parse(meta.at(key)).at("step"), 2) << method;
  }
}

TEST(Ud2mTrain, ProfileRecordsAFewStepsIntoAChromeTrace) {
  // --profile: steps 4..8 of the invocation under PyTorch's profiler, saved
  // whole as a Chrome trace of the step's operators; the run itself goes on.
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  for (std::string method : {"ud2m", "ncvsd"}) {
    const auto out = dir / method, trace = dir / (method + ".json");
    auto r = test::run_ud2m("train --method " + method + " --prior " + o.prior + " --data " + o.data + " --out " +
                            out.string() + " --crop " + (method == "ud2m" ? "32" : "16") +
                            " --steps 9 --blocks 1 --val-images 1 --save-every 100 " +
                            "--profile " + trace.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_TRUE(fs::exists(trace)) << method << r.output;
    EXPECT_FALSE(fs::exists(trace.string() + ".partial"));
    std::ifstream in(trace);
    auto events = nlohmann::json::parse(in).at("traceEvents");
    int ops = 0;
    for (const auto& e : events)
      if (e.contains("name") && e["name"].template get<std::string>().rfind("aten::", 0) == 0) ++ops;
    EXPECT_GT(ops, 100) << method;  // five steps of forward and backward passes
    EXPECT_TRUE(fs::exists(out / "checkpoint.safetensors")) << method;  // and the run finished
  }
}

TEST(Ud2mTrain, TwoProcessesMatchOneWithTheCombinedBatch) {
  // Same draws (every rank draws the whole batch and keeps its half), averaged
  // gradients: after 3 steps of G and D the adapter, the discriminator and the
  // logged losses are those of one process with the whole batch, up to the
  // order of floating-point sums. Ranks that did not average their gradients
  // or drew other samples differ by order 1.
  auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  const auto args = [&](const std::string& out) {
    return "train --method ud2m --prior " + o.prior + " --data " + o.data + " --out " + (dir / out).string() +
           " --crop 32 --batch 4 --steps 3 --blocks 2 --task gaussian_deblur --sigma 0.05 --perceptual none"
           " --val-images 1 --bf16 false --save-every 3";
  };
  auto one = test::run_ud2m(args("one"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = test::run_ud2m(args("two") + " --nproc 2");
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_NE(two.output.find("batch 4 (2 processes × 2)"), std::string::npos) << two.output;
  auto a = read_safetensors((dir / "one" / "checkpoint.safetensors").string());
  auto b = read_safetensors((dir / "two" / "checkpoint.safetensors").string());
  const double loss_diff = (a.tensors.at("history") - b.tensors.at("history")).abs().max().item<double>();
  // The weights, and Adam's first moments (running means of the averaged
  // gradients), which unlike the weights do not start out equal.
  const double weight_diff = test::relative_difference(a.tensors, b.tensors, {"g.", "d."});
  const double moment_diff = test::relative_difference(a.tensors, b.tensors, {"adam_g.exp_avg.", "adam_d.exp_avg."});
  std::printf("2 processes vs 1: max |loss difference| %.2e, relative differences: weights %.2e, Adam first moments "
              "%.2e\n", loss_diff, weight_diff, moment_diff);
  EXPECT_LT(loss_diff, 1e-3);
  EXPECT_LT(weight_diff, 1e-3);
  EXPECT_LT(moment_diff, 1e-2);
  // The history holds 3 steps of non-trivial losses (a zero tensor would match trivially).
  EXPECT_EQ(a.tensors.at("history").size(0), 3);
  EXPECT_GT(a.tensors.at("history").abs().sum().item<double>(), 0.1);
}

TEST(Ud2mTrain, DiscriminatorLearnsToTellImagesApartAtSmallSizes) {
  // Smooth images (real) vs the same with noise (fake), the measurement input
  // zero: 100 Adam steps must take the discriminator's loss far below chance
  // (2 ln 2) at the crop sizes we train on. InstanceNorm on the last stage's
  // 1×1 map made it a constant at 32² (loss stuck at 2 ln 2).
  for (int64_t size : {32, 64}) {
    SCOPED_TRACE(size);
    torch::manual_seed(0);
    nets::Discriminator d(size, 3);
    torch::optim::Adam adam(d->parameters(), torch::optim::AdamOptions(1e-3));
    auto coarse = torch::rand({4, 3, size / 8, size / 8}) * 2 - 1;
    auto real = torch::nn::functional::interpolate(
        coarse, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{size, size})
                    .mode(torch::kBilinear).align_corners(false));
    auto fake = real + 0.3 * torch::randn_like(real);
    auto y = torch::zeros_like(real);
    double loss_value = 0;
    for (int i = 0; i < 100; ++i) {
      adam.zero_grad();
      auto r = d->forward(real, y), f = d->forward(fake, y);
      auto loss = torch::binary_cross_entropy_with_logits(r, torch::ones_like(r)) +
                  torch::binary_cross_entropy_with_logits(f, torch::zeros_like(f));
      loss.backward();
      adam.step();
      loss_value = loss.item<double>();
    }
    std::printf("discriminator at %lld²: loss %.3f after 100 steps (chance %.3f)\n", static_cast<long long>(size),
                loss_value, 2 * std::log(2.0));
    EXPECT_LT(loss_value, 0.5 * 2 * std::log(2.0));
  }
}
