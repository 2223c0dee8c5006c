#include <algorithm>
#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/image.hpp"
#include "cli/measurement.hpp"
#include "core/paths.hpp"
#include "diffusion/prior.hpp"
#include "metrics/metrics.hpp"
#include "test_util.hpp"
#include "ud2m/adapter.hpp"

using namespace ud2m;
namespace fs = std::filesystem;

namespace {
// A smooth 32x32 photo-like image and its Gaussian-blur measurement.
fs::path degraded(const fs::path& dir, const std::string& task = "gaussian_deblur", const std::string& extra = "") {
  torch::manual_seed(5);
  auto coarse = torch::rand({1, 3, 4, 4});
  auto image = torch::nn::functional::interpolate(
      coarse, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{32, 32})
                  .mode(torch::kBilinear).align_corners(false));
  write_png((dir / "clean.png").string(), image);
  auto r = test::run_ud2m("degrade --task " + task + " --sigma 0.02 " + extra + " " + (dir / "clean.png").string() +
                          " " + (dir / "y.png").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return dir / "y.png";
}

// A random tiny ADM prior at DIR/prior.safetensors; returns its path.
std::string save_tiny_prior(const fs::path& dir) {
  diffusion::AdmPrior prior(nets::AdmConfig::preset("tiny-16"), diffusion::Schedule::linear());
  const auto path = (dir / "prior.safetensors").string();
  diffusion::save_prior(path, prior);
  return path;
}
}  // namespace

TEST(RestoreCli, TvImprovesOnTheBlurredMeasurementAndWritesReportAndPanel) {
  auto dir = test::temp_dir();
  auto y = degraded(dir);
  auto r = test::run_ud2m("restore -m " + y.string() + " --out " + (dir / "x.png").string() + " --panel " +
                          (dir / "panel.png").string() + " --reference " + (dir / "clean.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto clean = read_image((dir / "clean.png").string());
  EXPECT_GT(metrics::psnr(read_image((dir / "x.png").string()), clean),
            metrics::psnr(read_image(y.string()), clean) + 1.0);
  auto report = nlohmann::json::parse(read_file((dir / "x.json").string()));
  EXPECT_EQ(report.at("method"), "tv");
  EXPECT_TRUE(fs::exists(dir / "panel.png"));
}

TEST(RestoreCli, DiffPirRunsWithAPriorFileAndReportsItsSettings) {
  auto dir = test::temp_dir();
  auto y = degraded(dir);
  const auto prior_path = save_tiny_prior(dir);
  auto r = test::run_ud2m("restore -m " + y.string() + " --method diffpir --model " +
                          prior_path + " --nfe 5 --samples 2 --out " +
                          (dir / "x.png").string() + " --panel " + (dir / "panel.png").string() +
                          " --reference " + (dir / "clean.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_image((dir / "x.png").string()).sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
  auto report = nlohmann::json::parse(read_file((dir / "x.json").string()));
  EXPECT_EQ(report.at("settings").at("nfe"), 5);
  EXPECT_EQ(report.at("samples"), 2);
  // Two samples and a reference: the calibration numbers are reported.
  const double coverage = report.at("coverage_90"), spread = report.at("mean_std");
  EXPECT_GE(coverage, 0.0);
  EXPECT_LE(coverage, 1.0);
  EXPECT_GT(spread, 0.0);
  EXPECT_NE(r.output.find("credible intervals cover"), std::string::npos) << r.output;
}

TEST(RestoreCli, BestFitKeepsTheSampleClosestToTheData) {
  auto dir = test::temp_dir();
  auto y = degraded(dir);
  const auto prior_path = save_tiny_prior(dir);
  auto r = test::run_ud2m("restore -m " + y.string() + " --method diffpir --model " +
                          prior_path + " --nfe 5 --samples 3 --estimate best-fit " +
                          "--bit-depth 16 --out " + (dir / "x.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(read_file((dir / "x.json").string()));
  const auto residuals = report.at("fit_residuals").get<std::vector<double>>();
  ASSERT_EQ(residuals.size(), 3u);
  const auto best = std::min_element(residuals.begin(), residuals.end()) - residuals.begin();
  EXPECT_EQ(report.at("best_sample").get<int64_t>(), best);
  EXPECT_GT(*std::max_element(residuals.begin(), residuals.end()), residuals[best]) << "samples must differ";
  // The output is that sample: its own data residual is the smallest one (up to 16-bit rounding).
  auto m = cli::load_measurement(y.string());
  auto x = to_model(read_image((dir / "x.png").string()));
  const double own = (m.degradation.op->forward(x) - m.y).norm().item<double>();
  EXPECT_NEAR(own, residuals[best], 1e-3 * residuals[best]);
}

TEST(RestoreCli, EveryDiffusionSamplerRunsAndDefaultsToItsPublishedNfe) {
  auto dir = test::temp_dir();
  auto y = degraded(dir);
  const auto prior_path = save_tiny_prior(dir);
  const auto model = " --model " + prior_path;
  for (std::string method : {"dps", "ddrm", "latino", "diffpir"}) {
    const auto out = (dir / (method + ".png")).string();
    auto r = test::run_ud2m("restore -m " + y.string() + " --method " + method + " --nfe 3 --out " + out + model);
    ASSERT_EQ(r.exit_code, 0) << method << ": " << r.output;
    EXPECT_EQ(read_image(out).sizes(), (std::vector<int64_t>{1, 3, 32, 32})) << method;
    auto report = nlohmann::json::parse(read_file(replace_extension(out, ".json")));
    EXPECT_EQ(report.at("settings").at("nfe"), 3) << method;
  }
  auto r = test::run_ud2m("restore -m " + y.string() + " --method latino --out " + (dir / "d.png").string() + model);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(read_file((dir / "d.json").string())).at("settings").at("nfe"), 8);
}

TEST(RestoreCli, RestoresAFolderOfMeasurementsWithReferencesByName) {
  auto dir = test::temp_dir();
  fs::create_directories(dir / "in");
  fs::create_directories(dir / "ref");
  for (auto name : {"a", "b"}) {
    auto sub = dir / name;
    fs::create_directories(sub);
    degraded(sub);
    fs::copy_file(sub / "y.png", dir / "in" / (std::string(name) + ".png"));
    fs::copy_file(sub / "y.json", dir / "in" / (std::string(name) + ".json"));
    fs::copy_file(sub / "clean.png", dir / "ref" / (std::string(name) + ".png"));
  }
  auto r = test::run_ud2m("restore -m " + (dir / "in").string() + " --out " + (dir / "out").string() +
                          " --reference " + (dir / "ref").string() + " --panel " + (dir / "panels").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (auto name : {"a.png", "a.json", "b.png", "b.json"}) EXPECT_TRUE(fs::exists(dir / "out" / name)) << name;
  EXPECT_TRUE(fs::exists(dir / "panels" / "b.png"));
  EXPECT_NE(r.output.find("mean PSNR"), std::string::npos) << r.output;
  EXPECT_TRUE(nlohmann::json::parse(read_file((dir / "out" / "a.json").string())).contains("psnr"));
}

// A photograph degraded elsewhere has no sidecar: --task, --sigma and the
// task's flags describe it, and restore sizes the image from the measurement.
TEST(RestoreCli, TaskFlagsDescribeAMeasurementWithoutASidecar) {
  auto dir = test::temp_dir();
  auto y = degraded(dir, "sr", "--factor 2");
  const auto with_sidecar = (dir / "a.png").string(), described = (dir / "b.png").string();
  auto r = test::run_ud2m("restore -m " + y.string() + " --out " + with_sidecar);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  fs::remove(dir / "y.json");
  r = test::run_ud2m("restore -m " + y.string() + " --out " + described + " --task sr --factor 2 --sigma 0.02");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_image(described).sizes(), (std::vector<int64_t>{1, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(read_image(described), read_image(with_sidecar)));
  EXPECT_EQ(nlohmann::json::parse(read_file((dir / "b.json").string())).at("task"), "sr");

  struct Case {
    std::string args, message;
  };
  const auto out = (dir / "x.png").string();
  std::vector<Case> cases = {
      {"--task sr", "--task needs --sigma"},
      {"--sigma 0.02", "together with --task"},
      {"--factor 2", "together with --task"},
      {"--task inpainting_random --sigma 0.02", "draws its mask or kernel from a seed"},
      {"--task sr --sigma 0.02 --sidecar " + (dir / "y.json").string(), "pass one or the other"},
      {"--task sr --sigma 0.02 --quality 5", "--quality does not apply to task 'sr'"},
      {"--task blur --sigma 0.02", "unknown task 'blur'"},
  };
  for (auto& c : cases) {
    r = test::run_ud2m("restore -m " + y.string() + " --out " + out + " " + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << ": " << r.output;
    EXPECT_FALSE(fs::exists(out)) << c.args;
  }
}

// The networks need sides divisible by 2^levels; any other photo size is
// padded for them and cropped back, for every sampler.
TEST(RestoreCli, ImagesOfAnySizeAreRestoredAtTheirSize) {
  auto dir = test::temp_dir();
  write_png((dir / "clean.png").string(), torch::rand({1, 3, 31, 23}));
  auto r = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.02 " + (dir / "clean.png").string() + " " +
                          (dir / "y.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto model = " --model " + save_tiny_prior(dir);
  for (std::string method : {"ddrm", "dps"}) {
    const auto out = (dir / (method + ".png")).string();
    r = test::run_ud2m("restore -m " + (dir / "y.png").string() + " --method " + method + " --nfe 3 --out " + out +
                       model);
    ASSERT_EQ(r.exit_code, 0) << method << ": " << r.output;
    EXPECT_EQ(read_image(out).sizes(), (std::vector<int64_t>{1, 3, 31, 23})) << method;
  }
  // In 12 x 12 tiles (the image has more than 4 tiles' pixels), then a tile the prior cannot take.
  const auto tiled = (dir / "tiled.png").string();
  r = test::run_ud2m("restore -m " + (dir / "y.png").string() + " --method ddrm --nfe 3 --tile 12 --out " + tiled +
                     model);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_image(tiled).sizes(), (std::vector<int64_t>{1, 3, 31, 23}));
  r = test::run_ud2m("restore -m " + (dir / "y.png").string() + " --method ddrm --tile 9 --out " + tiled + model);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--tile must be 0 (off) or a multiple of 2"), std::string::npos) << r.output;
}

TEST(RestoreCli, NanDuringSamplingIsReportedWithItsStep) {
  auto dir = test::temp_dir();
  auto y = degraded(dir);
  diffusion::AdmPrior prior(nets::AdmConfig::preset("tiny-16"), diffusion::Schedule::linear());
  {
    torch::NoGradGuard no_grad;
    prior.module().parameters().back().fill_(std::numeric_limits<float>::quiet_NaN());
  }
  diffusion::save_prior((dir / "prior.safetensors").string(), prior);
  const auto out = (dir / "x.png").string();
  auto r = test::run_ud2m("restore -m " + y.string() + " --method ddrm --nfe 3 --out " + out + " --model " +
                          (dir / "prior.safetensors").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("NaN"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST(RestoreCli, BadRequestsFailWithOneClearErrorAndNoOutput) {
  auto dir = test::temp_dir();
  auto y = degraded(dir);
  const auto prior_path = save_tiny_prior(dir);
  const auto out = (dir / "x.png").string();
  const auto model = " --model " + prior_path;
  struct Case {
    std::string args, message;
  };
  std::vector<Case> cases = {
      {"--method foo", "unknown --method 'foo'"},
      {"--method diffpir", "needs a prior"},
      {"--method diffpir --nfe 0" + model, "--nfe must be positive"},
      {"--method diffpir --samples 0" + model, "--samples must be positive"},
      {"--sidecar " + (dir / "missing.json").string(), "no sidecar"},
  };
  for (auto& c : cases) {
    auto r = test::run_ud2m("restore -m " + y.string() + " --out " + out + " " + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << ": " << r.output;
    EXPECT_FALSE(fs::exists(out)) << c.args;
  }
  // A measurement whose size does not match its sidecar.
  write_png(y.string(), torch::rand({1, 3, 16, 16}));
  auto r = test::run_ud2m("restore -m " + y.string() + " --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("sidecar"), std::string::npos) << r.output;
  // DiffPIR on a nonlinear operator.
  auto j = degraded(dir, "jpeg");
  r = test::run_ud2m("restore -m " + j.string() + " --method diffpir --out " + out + model);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("needs a linear operator"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  // DDRM on an operator without an SVD.
  r = test::run_ud2m("restore -m " + j.string() + " --method ddrm --out " + out + model);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("singular value decomposition"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST(DemoCli, RestoresTheBundledImageAndMatchesDegrade) {
  // TV only here (--model ""): the shipped prior's DDRM at 256² is the demo's
  // job, too slow for the suite; the next test covers that path with a tiny prior.
  auto dir = test::temp_dir();
  auto r = test::run_ud2m("demo --model '' --out-dir " + (dir / "demo").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (auto name : {"measurement.png", "measurement.json", "restored.png", "panel.png"})
    EXPECT_TRUE(fs::exists(dir / "demo" / name)) << name;
  auto clean_path = (test::source_dir() / "assets" / "astronaut_256.png").string();
  auto clean = read_image(clean_path);
  EXPECT_GT(metrics::psnr(read_image((dir / "demo" / "restored.png").string()), clean),
            metrics::psnr(read_image((dir / "demo" / "measurement.png").string()), clean) + 3.0);
  // The demo's measurement is exactly what `ud2m degrade` makes with the same settings.
  r = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.01 --seed 0 " + clean_path + " " +
                     (dir / "y.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file((dir / "y.png").string()), read_file((dir / "demo" / "measurement.png").string()));
}

TEST(DemoCli, RestoresWithAPriorWhenOneIsGiven) {
  auto dir = test::temp_dir();
  const auto prior_path = save_tiny_prior(dir);
  auto r = test::run_ud2m("demo --nfe 2 --model " + prior_path + " --out-dir " +
                          (dir / "demo").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (auto name : {"tv.png", "ddrm.png", "restored.png", "panel.png"})
    EXPECT_TRUE(fs::exists(dir / "demo" / name)) << name;
  EXPECT_NE(r.output.find("DDRM (2 NFE"), std::string::npos) << r.output;
  // The shipped adapters belong to the shipped prior: UD2M is skipped, DDRM is the result.
  EXPECT_NE(r.output.find("no UD2M restoration"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "demo" / "ud2m.png"));
  EXPECT_EQ(read_file((dir / "demo" / "ddrm.png").string()), read_file((dir / "demo" / "restored.png").string()));

  // With an adapter of that prior, UD2M runs (N = 3, K = 1: 3 NFE) and is the result (on a 64² crop, for speed).
  write_png((dir / "crop.png").string(),
            read_image((test::source_dir() / "assets" / "astronaut_256.png").string()).narrow(2, 64, 64).narrow(3, 96, 64));
  unrolled::UnrolledNetwork net(diffusion::load_prior(prior_path), {1});
  unrolled::save_adapter((dir / "adapter.safetensors").string(), net, {"gaussian_deblur", 3, {}});
  const auto crop = " --image " + (dir / "crop.png").string();
  r = test::run_ud2m("demo --nfe 2 --model " + prior_path + crop + " --adapter " +
                     (dir / "adapter.safetensors").string() + " --out-dir " + (dir / "demo2").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("UD2M (3 NFE)"), std::string::npos) << r.output;
  EXPECT_EQ(read_file((dir / "demo2" / "ud2m.png").string()), read_file((dir / "demo2" / "restored.png").string()));
  unrolled::save_adapter((dir / "sr.safetensors").string(), net, {"sr", 3, {}});
  r = test::run_ud2m("demo --model " + prior_path + crop + " --adapter " +
                     (dir / "sr.safetensors").string() + " --out-dir " + (dir / "demo3").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("was trained for sr, not gaussian_deblur"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "demo3" / "measurement.png")) << "refused before writing anything";
}
