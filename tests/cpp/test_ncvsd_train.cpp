// NCVSD distillation on real pixels: exact resume, the files it writes, and
// the commands that use them.
#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/image.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "metrics/metrics.hpp"
#include "ncvsd/networks.hpp"
#include "test_util.hpp"
#include "tiny_priors.hpp"
#include "tiny_runs.hpp"
#include "train/ncvsd_trainer.hpp"

using namespace ud2m;
namespace fs = std::filesystem;

namespace {

std::vector<torch::Tensor> weights(torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (auto& p : module.parameters()) out.push_back(p.detach().clone());
  return out;
}

}  // namespace

TEST(NcvsdTrain, StepsMoveTheGeneratorAndResumeIsExact) {
  auto dir = test::temp_dir();
  auto o = test::tiny_ncvsd_run(dir);
  o.steps = 4;
  train::NcvsdTrainer straight(o);
  const auto initial = weights(*straight.generator());
  for (int i = 0; i < 4; ++i) straight.step();
  const auto expected = weights(*straight.generator());
  double moved = 0;
  for (size_t i = 0; i < initial.size(); ++i) moved += (expected[i] - initial[i]).abs().sum().item<double>();
  EXPECT_GT(moved, 0);  // the generator (its condition weights first of all) is trained

  o.out_dir = (dir / "resumed").string();
  {
    train::NcvsdTrainer first(o);
    first.step();
    first.step();
    first.save_checkpoint();
  }
  train::NcvsdTrainer second(o);
  EXPECT_EQ(second.current_step(), 2);
  second.step();
  second.step();
  const auto got = weights(*second.generator());
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(torch::equal(got[i], expected[i])) << i;
  for (auto name : {"generator.safetensors", "samples.png", "loss.csv"})
    EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / name)) << name;
}

TEST(NcvsdTrain, AnyPriorTeachesAFreshStudent) {
  // A DDPM teacher (through the Denoiser interface) and a randomly initialised
  // ADM student: the student learns, its generator file loads and samples.
  // Without --student-config a non-ADM teacher is refused with the way out.
  auto dir = test::temp_dir();
  auto o = test::tiny_ncvsd_run(dir);
  diffusion::save_prior((dir / "ddpm.safetensors").string(), *test::tiny_ddpm());
  o.teacher = (dir / "ddpm.safetensors").string();
  EXPECT_THROW_MSG(train::NcvsdTrainer{o}, "--student-config");
  o.student_config = "tiny-16";
  o.steps = 3;
  o.save_every = 3;
  train::NcvsdTrainer trainer(o);
  // Student, fake score and EMA start equal.
  const auto initial = weights(*trainer.generator());
  const auto ema = weights(*trainer.ema());
  for (size_t i = 0; i < initial.size(); ++i) ASSERT_TRUE(torch::equal(initial[i], ema[i])) << i;
  trainer.run();
  const auto trained = weights(*trainer.generator());
  double moved = 0;
  for (size_t i = 0; i < initial.size(); ++i) moved += (trained[i] - initial[i]).abs().sum().item<double>();
  EXPECT_GT(moved, 0);
  const auto generator = (fs::path(o.out_dir) / "generator.safetensors").string();
  auto r = test::run_ud2m("sample --method ncvsd --model " + generator + " --steps 1 --n 1 --size 16 " +
                          (dir / "s.png").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(NcvsdTrain, InitGeneratorStartsTheStudentAndItsEmaFromTheFile) {
  // A distillation continued from an earlier run's generator file alone: the
  // student and its EMA hold the file's weights, the fake score starts as the
  // teacher's copy as in any fresh run. Another architecture is refused.
  auto dir = test::temp_dir();
  auto o = test::tiny_ncvsd_run(dir);
  o.steps = 3;
  o.save_every = 3;
  o.ema_decay = 0;  // the saved EMA is the trained generator itself
  train::NcvsdTrainer(o).run();
  const auto file = (fs::path(o.out_dir) / "generator.safetensors").string();

  auto fresh_options = o;
  fresh_options.out_dir = (dir / "fresh").string();
  train::NcvsdTrainer fresh(fresh_options);
  auto continued_options = fresh_options;
  continued_options.out_dir = (dir / "continued").string();
  continued_options.init_generator = file;
  train::NcvsdTrainer continued(continued_options);

  const auto saved = weights(*ncvsd::load_generator(file));
  const auto student = weights(*continued.generator()), ema = weights(*continued.ema());
  const auto fresh_student = weights(*fresh.generator());
  ASSERT_EQ(student.size(), saved.size());
  double from_fresh = 0;
  for (size_t i = 0; i < saved.size(); ++i) {
    EXPECT_TRUE(torch::equal(student[i], saved[i])) << i;
    EXPECT_TRUE(torch::equal(ema[i], saved[i])) << i;
    from_fresh += (saved[i] - fresh_student[i]).abs().sum().item<double>();
  }
  EXPECT_GT(from_fresh, 0);  // the file is not the teacher's copy it would otherwise start as
  const auto fake = weights(*continued.fake_score()), fresh_fake = weights(*fresh.fake_score());
  for (size_t i = 0; i < fake.size(); ++i) EXPECT_TRUE(torch::equal(fake[i], fresh_fake[i])) << i;

  auto other = nets::AdmConfig::preset("tiny-16");
  other.model_channels = 16;
  ncvsd::ConditionalDenoiser narrower(ncvsd::conditional_config(other), diffusion::Schedule::linear());
  const auto narrower_file = (dir / "narrower.safetensors").string();
  ncvsd::save_generator(narrower_file, *narrower);
  continued_options.out_dir = (dir / "refused").string();
  continued_options.init_generator = narrower_file;
  EXPECT_THROW_MSG(train::NcvsdTrainer{continued_options}, "is not of the student's architecture");
  // NCVSD's published generators sample and restore, but training continues ours only.
  continued_options.init_generator = (test::source_dir() / "tests/data/ncvsd/ncvsd_tiny.pkl").string();
  EXPECT_THROW_MSG(train::NcvsdTrainer{continued_options}, "do not train here");
}

TEST(NcvsdTrain, Edm2TeacherDistilsIntoNcvsdsOwnNetwork) {
  // An EDM2 teacher's student is NCVSD's network (EDM2 + ControlNet branch),
  // starting as the teacher: whatever y, a fresh copy denoises as the teacher
  // does (its mixing weights start at zero); once they move, y is heard.
  auto dir = test::temp_dir();
  auto teacher = test::tiny_edm2();
  {
    torch::NoGradGuard no_grad;
    ncvsd::Edm2Generator copy(*teacher);
    copy->eval();
    EXPECT_FALSE(copy->published());
    const auto x = torch::randn({2, 3, 16, 16}), y = torch::randn({2, 3, 16, 16});
    const auto level = torch::tensor({0.5f, 3.0f}), sigma = torch::tensor({0.2f, 1.0f});
    const auto expected = teacher->net()->forward(x, level);
    EXPECT_LT(test::max_rel_error(copy->forward(x, level, y, sigma), expected), 1e-6);
    // The ControlNet branch (unheard so far) is the teacher's encoder too.
    auto unet = teacher->net()->named_parameters();
    int branch = 0;
    for (auto& item : copy->net()->named_parameters()) {
      if (item.key().rfind("ctrl.", 0) != 0) continue;
      ++branch;
      EXPECT_TRUE(torch::equal(item.value(), unet["unet." + item.key().substr(5)])) << item.key();
    }
    EXPECT_GT(branch, 10);
    copy->net()->named_parameters()["dec.additional_skips_weight"].fill_(0.5);
    EXPECT_GT(test::max_rel_error(copy->forward(x, level, y, sigma), copy->forward(x, level, 2 * y, sigma)), 1e-3);
  }
  auto o = test::tiny_ncvsd_run(dir);
  o.teacher = (dir / "edm2.safetensors").string();
  diffusion::save_prior(o.teacher, *teacher);
  o.steps = 2;
  o.save_every = 2;
  train::NcvsdTrainer straight(o);
  const auto initial = weights(*straight.generator());
  straight.run();
  const auto expected = weights(*straight.generator());
  double moved = 0;
  for (size_t i = 0; i < initial.size(); ++i) moved += (expected[i] - initial[i]).abs().sum().item<double>();
  EXPECT_GT(moved, 0);
  {  // exact resume
    auto resumed = o;
    resumed.out_dir = (dir / "resumed").string();
    {
      train::NcvsdTrainer first(resumed);
      first.step();
      first.save_checkpoint();
    }
    train::NcvsdTrainer second(resumed);
    second.step();
    const auto got = weights(*second.generator());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(torch::equal(got[i], expected[i])) << i;
  }
  // Its file: ours, not a published network, so restoration takes our presets.
  const auto generator = (fs::path(o.out_dir) / "generator.safetensors").string();
  auto loaded = ncvsd::load_generator(generator);
  EXPECT_TRUE(std::dynamic_pointer_cast<ncvsd::Edm2GeneratorImpl>(loaded.ptr()));
  EXPECT_FALSE(loaded->published());
  auto r = test::run_ud2m("sample --method ncvsd --model " + generator + " --steps 2 --n 1 --size 16 " +
                          (dir / "s.png").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto crop = (dir / "crop.png").string();
  write_png(crop, read_image(o.data).narrow(2, 100, 16).narrow(3, 100, 16));
  r = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.05 " + crop + " " + (dir / "y.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + generator + " --nfe 2 -m " + (dir / "y.png").string() +
                     " --out " + (dir / "x.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto report = nlohmann::json::parse(read_file((dir / "x.json").string()));
  EXPECT_DOUBLE_EQ(report.at("settings").at("likelihood_sigma").get<double>(), 0.025);  // ours: half σ_y

  // A run continues from it; an ADM generator is another architecture.
  auto continued = o;
  continued.out_dir = (dir / "continued").string();
  continued.init_generator = generator;
  EXPECT_NO_THROW(train::NcvsdTrainer{continued});
  ncvsd::ConditionalDenoiser adm(*test::tiny_adm());
  continued.init_generator = (dir / "adm.safetensors").string();
  ncvsd::save_generator(continued.init_generator, *adm);
  continued.out_dir = (dir / "refused").string();
  EXPECT_THROW_MSG(train::NcvsdTrainer{continued}, "is not of the student's architecture");
  // Teachers it cannot copy: class-conditional (the photos have no classes) and latent ones.
  const auto edm2_data = test::source_dir() / "tests/data/edm2";
  o.out_dir = (dir / "conditional").string();
  o.teacher = (edm2_data / "edm2_tiny.pkl").string();
  EXPECT_THROW_MSG(train::NcvsdTrainer{o}, "is class-conditional");
  o.teacher = (edm2_data / "edm2_latent_tiny.pkl").string();
  EXPECT_THROW_MSG(train::NcvsdTrainer{o}, "is a latent model");
}

TEST(NcvsdTrain, TwoProcessesMatchOneWithTheCombinedBatch) {
  // As for UD2M: every rank draws the whole batch (crops, levels, noise, the
  // generator's z) and keeps its half, gradients of both networks averaged:
  // after 3 steps the generator, the fake score, their Adam moments and the
  // logged losses are those of one process with the whole batch, up to the
  // order of floating-point sums — far closer than another seed's run is
  // (tiny-16 has no dropout, whose masks would depend on the split).
  auto dir = test::temp_dir();
  auto o = test::tiny_ncvsd_run(dir);
  const auto args = [&](const std::string& out) {
    return "train --method ncvsd --prior " + o.teacher + " --data " + o.data + " --out " + (dir / out).string() +
           " --crop 16 --batch 4 --steps 3 --bf16 false --save-every 3";
  };
  auto one = test::run_ud2m(args("one"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = test::run_ud2m(args("two") + " --nproc 2");
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_NE(two.output.find("batch 4 (2 processes × 2)"), std::string::npos) << two.output;
  auto other = test::run_ud2m(args("other") + " --seed 1");
  ASSERT_EQ(other.exit_code, 0) << other.output;
  auto a = read_safetensors((dir / "one" / "checkpoint.safetensors").string());
  struct Differences {
    double loss, weights, moments;
  };
  const auto compare = [&](const std::string& run) {
    auto b = read_safetensors((dir / run / "checkpoint.safetensors").string());
    return Differences{(a.tensors.at("history") - b.tensors.at("history")).abs().max().item<double>(),
                       test::relative_difference(a.tensors, b.tensors, {"g.", "f.", "lvg.", "lvf."}),
                       test::relative_difference(a.tensors, b.tensors, {"adam_g.exp_avg.", "adam_f.exp_avg."})};
  };
  const auto split = compare("two"), seed = compare("other");
  std::printf("NCVSD, 2 processes vs 1 (another seed vs 1): max |loss difference| %.2e (%.2e), relative differences: "
              "weights %.2e (%.2e), Adam first moments %.2e (%.2e)\n",
              split.loss, seed.loss, split.weights, seed.weights, split.moments, seed.moments);
  EXPECT_LT(split.loss, 0.01 * seed.loss);
  EXPECT_LT(split.weights, 0.1 * seed.weights);
  EXPECT_LT(split.moments, 0.01 * seed.moments);
  EXPECT_EQ(a.tensors.at("history").size(0), 3);
}

TEST(NcvsdTrain, CliTrainsAGeneratorThatSampleAndRestoreUse) {
  auto dir = test::temp_dir();
  auto o = test::tiny_ncvsd_run(dir);
  auto r = test::run_ud2m("train --method ncvsd --prior " + o.teacher + " --data " + o.data + " --out " + o.out_dir +
                          " --crop 16 --steps 2 --bf16 false");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto generator = (fs::path(o.out_dir) / "generator.safetensors").string();
  ASSERT_TRUE(fs::exists(generator));
  for (const std::string precision : {"fp32", "bf16"}) {
    r = test::run_ud2m("sample --method ncvsd --model " + generator + " --steps 2 --n 2 --size 16 --precision " +
                       precision + " " + (dir / ("grid_" + precision + ".png")).string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const double agreement = metrics::psnr(read_image((dir / "grid_bf16.png").string()),
                                         read_image((dir / "grid_fp32.png").string()));
  std::printf("NCVSD sample, bf16 vs fp32: %.1f dB apart\n", agreement);
  EXPECT_GT(agreement, 25);
  // A measurement to restore: a 32² crop of the bundled photo, blurred (the
  // tiny test network attends over all pixels at half resolution: keep it small).
  const auto crop = (dir / "crop.png").string();
  write_png(crop, read_image(o.data).narrow(2, 100, 32).narrow(3, 100, 32));
  r = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.05 " + crop + " " +
                     (dir / "y.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + generator + " --nfe 4 -m " + (dir / "y.png").string() +
                     " --out " + (dir / "x.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir / "x.png"));
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + generator + " --nfe 4 --precision bf16 -m " +
                     (dir / "y.png").string() + " --out " + (dir / "x_bf16.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(read_file((dir / "x_bf16.json").string())).at("precision"), "bf16");
  // The likelihood σ' of the task's preset (deblurring: half the measurement's), unless told.
  auto setting = [&](const std::string& report, const char* key) {
    return nlohmann::json::parse(read_file((dir / report).string())).at("settings").at(key);
  };
  auto likelihood_sigma = [&](const std::string& report) { return setting(report, "likelihood_sigma").get<double>(); };
  EXPECT_DOUBLE_EQ(likelihood_sigma("x.json"), 0.025);
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + generator + " --nfe 2 --pnp-likelihood-sigma 0.04 -m " +
                     (dir / "y.png").string() + " --out " + (dir / "x_told.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_DOUBLE_EQ(likelihood_sigma("x_told.json"), 0.04);
  EXPECT_DOUBLE_EQ(setting("x_told.json", "sigma_max").get<double>(), 80);  // as published, unless told
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + generator +
                     " --nfe 2 --pnp-likelihood-sigma 0.04 --pnp-sigma-max 10 -m " + (dir / "y.png").string() +
                     " --out " + (dir / "x_low.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_DOUBLE_EQ(setting("x_low.json", "sigma_max").get<double>(), 10);
  EXPECT_FALSE(torch::equal(read_image((dir / "x_low.png").string()), read_image((dir / "x_told.png").string())));
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + generator + " --nfe 2 --pnp-likelihood-sigma 0 -m " +
                     (dir / "y.png").string() + " --out " + (dir / "x_own.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_DOUBLE_EQ(likelihood_sigma("x_own.json"), 0.05);  // 0: the measurement's own
  // A nonlinear operator: phase retrieval, through the Langevin likelihood step.
  r = test::run_ud2m("degrade --task phase_retrieval --oversampling 2 --sigma 0.05 " + crop + " " +
                     (dir / "y_pr.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + generator + " --nfe 3 -m " +
                     (dir / "y_pr.safetensors").string() + " --out " + (dir / "x_pr.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto sidecar = nlohmann::json::parse(read_file((dir / "x_pr.json").string()));
  EXPECT_NE(sidecar.dump().find("unadjusted Langevin"), std::string::npos) << sidecar.dump(2);
  EXPECT_DOUBLE_EQ(likelihood_sigma("x_pr.json"), 0.05);
  auto fits_amplitudes = [&](const std::string& report) { return setting(report, "fit_amplitudes").get<bool>(); };
  EXPECT_TRUE(fits_amplitudes("x_pr.json"));
  EXPECT_FALSE(fits_amplitudes("x.json"));
  // DPS fits phase retrieval's intensities unless told to fit amplitudes.
  for (const std::string flag : {"", "--fit-amplitudes true"}) {
    r = test::run_ud2m("restore --method dps --nfe 2 --model " + o.teacher + " " + flag + " -m " +
                       (dir / "y_pr.safetensors").string() + " --out " + (dir / "x_dps.png").string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(fits_amplitudes("x_dps.json"), !flag.empty()) << flag;
  }
  // Amplitudes are for intensity measurements, and only DPS and PnP-NCVSD fit them.
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + generator + " --fit-amplitudes true -m " +
                     (dir / "y.png").string() + " --out " + (dir / "z.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--fit-amplitudes is for intensity measurements (phase retrieval), not 'circular_blur'"),
            std::string::npos) << r.output;
  r = test::run_ud2m("restore --method ddrm --model " + o.teacher + " --fit-amplitudes true -m " +
                     (dir / "y_pr.safetensors").string() + " --out " + (dir / "z.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--fit-amplitudes applies to dps and pnp-ncvsd, not ddrm"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "z.png"));
  // The wrong kind of file for each method, and bad step counts.
  r = test::run_ud2m("restore --method ddrm --model " + generator + " -m " + (dir / "y.png").string() + " --out " +
                     (dir / "z.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("is not a diffusion prior (format 'ud2m-ncvsd-generator')"), std::string::npos) << r.output;
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + o.teacher + " -m " + (dir / "y.png").string() +
                     " --out " + (dir / "z.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("is not an NCVSD generator"), std::string::npos) << r.output;
  r = test::run_ud2m("sample --method ncvsd --model " + generator + " --steps 3 --size 16 " +
                     (dir / "g.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("1, 2 or 4 steps"), std::string::npos) << r.output;
  r = test::run_ud2m("sample --method ncvsd --model " + generator + " --indices 5,40 --size 16 " +
                     (dir / "g.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("NCVSD level index 40 is outside the grid 0..39"), std::string::npos) << r.output;
  r = test::run_ud2m("sample --method ncvsd --model " + generator + " --indices 3,20,39 --n 1 --size 16 " +
                     (dir / "custom.png").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir / "z.png"));
  EXPECT_FALSE(fs::exists(dir / "g.png"));
}
