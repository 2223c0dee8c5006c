// ud2m eval: pairing by name, the values it reports equal the library's on
// the same files, the JSON report, and the errors a user can run into.
#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/image.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "metrics/fid.hpp"
#include "metrics/metrics.hpp"
#include "metrics/perceptual.hpp"
#include "test_util.hpp"

using namespace ud2m;
namespace fs = std::filesystem;

namespace {

std::string ref_path(const std::string& file) { return (test::refs_dir("metrics") / file).string(); }

// ref/{a,b,c}.png from the reference photos, pred/ the degraded ones (b as JPEG
// in ref, so names pair without extensions), plus a stray file on each side.
fs::path image_folders() {
  auto dir = test::temp_dir();
  fs::create_directories(dir / "ref");
  fs::create_directories(dir / "pred");
  auto r = read_safetensors(ref_path("lpips.safetensors")).tensors;
  const char* names[] = {"a", "b", "c"};
  for (int i = 0; i < 3; ++i) {
    auto ext = std::string(names[i]) == "b" ? ".jpg" : ".png";
    write_image((dir / "ref" / (std::string(names[i]) + ext)).string(), r.at("ref")[i]);
    write_png((dir / "pred" / (std::string(names[i]) + ".png")).string(), r.at("pred")[i]);
  }
  write_png((dir / "ref" / "only_ref.png").string(), r.at("ref")[0]);
  write_file_atomic((dir / "pred" / "a.json").string(), "{}");  // restore's reports are not images
  return dir;
}

std::string folders(const fs::path& dir) {
  return " --ref " + (dir / "ref").string() + " --pred " + (dir / "pred").string();
}

}  // namespace

TEST(MetricsEvalCli, ReportsTheLibrarysValuesAndWritesJson) {
  auto dir = image_folders();
  auto trunk = ref_path("alex_backbone.pth"), heads = ref_path("alex_heads.pth");
  auto r = test::run_ud2m("eval" + folders(dir) + " --lpips-weights " + trunk + " " + heads + " --inception " +
                          ref_path("pt_inception.pth") + " --json " + (dir / "eval.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("LPIPS (alex)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("mean (3)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("FID"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("only_ref.png"), std::string::npos) << r.output;  // the unpaired file is named

  auto report = nlohmann::json::parse(read_file((dir / "eval.json").string()));
  ASSERT_EQ(report.at("images").size(), 3u);
  auto lpips = nets::load_lpips(trunk, heads);
  auto inception = nets::load_fid_inception(ref_path("pt_inception.pth"));
  std::vector<torch::Tensor> refs, preds;
  double psnr_sum = 0;
  for (auto& row : report.at("images")) {
    refs.push_back(read_image(row.at("ref").get<std::string>()));
    preds.push_back(read_image(row.at("pred").get<std::string>()));
    EXPECT_DOUBLE_EQ(row.at("psnr").get<double>(), metrics::psnr(preds.back(), refs.back()));
    EXPECT_DOUBLE_EQ(row.at("ssim").get<double>(), metrics::ssim(preds.back(), refs.back()));
    EXPECT_NEAR(row.at("lpips").get<double>(),
                metrics::lpips_per_image(lpips, preds.back(), refs.back()).item<double>(), 1e-6);
    psnr_sum += row.at("psnr").get<double>();
  }
  EXPECT_EQ(report.at("images")[1].at("ref").get<std::string>(), (dir / "ref" / "b.jpg").string());
  EXPECT_NEAR(report.at("mean").at("psnr").get<double>(), psnr_sum / 3, 1e-12);
  // The CLI computes features image by image; one batch here may round differently.
  auto a = metrics::inception_features(inception, torch::cat(refs));
  auto b = metrics::inception_features(inception, torch::cat(preds));
  EXPECT_NEAR(report.at("fid").get<double>(), metrics::frechet_distance(b, a), 1e-4 * report.at("fid").get<double>());
  EXPECT_EQ(report.at("kid").at("subsets").get<int>(), 1);
  EXPECT_EQ(report.at("unpaired").at("ref").size(), 1u);
}

TEST(MetricsEvalCli, WithoutWeightsReportsPsnrAndSsimOnly) {
  auto dir = image_folders();
  auto r = test::run_ud2m("eval" + folders(dir) + " --json " + (dir / "eval.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(read_file((dir / "eval.json").string()));
  EXPECT_TRUE(report.at("images")[0].contains("ssim"));
  EXPECT_FALSE(report.at("images")[0].contains("lpips"));
  EXPECT_FALSE(report.contains("fid"));
}

// Generated vs real images, unpaired, with a prior's features standing in for
// Inception's: the CLI's FD-prior is the library's on the same images; a set
// against itself is at distance 0, and a corrupted copy is farther away.
TEST(MetricsEvalCli, UnpairedSetsCompareByPriorFeatures) {
  auto dir = test::temp_dir();
  diffusion::AdmPrior prior(nets::AdmConfig::preset("tiny-16"), diffusion::Schedule::linear());
  const auto prior_path = (dir / "prior.safetensors").string();
  diffusion::save_prior(prior_path, prior);
  auto real = torch::rand({6, 3, 16, 16}).mul(0.5).add(torch::linspace(0, 0.5, 16).view({1, 1, 1, 16}));
  auto noisy = (real + 0.3 * torch::randn_like(real)).clamp(0, 1);
  for (auto name : {"real", "same", "noisy"}) fs::create_directories(dir / name);
  for (int i = 0; i < 6; ++i) {
    const auto file = "img" + std::to_string(i) + ".png";
    write_png((dir / "real" / file).string(), real[i]);
    write_png((dir / "same" / ("other_name_" + file)).string(), real[i]);  // names need not pair
    write_png((dir / "noisy" / file).string(), noisy[i]);
  }
  auto fd_prior = [&](const std::string& pred) {
    auto json = (dir / (pred + ".json")).string();
    auto r = test::run_ud2m("eval --unpaired --ref " + (dir / "real").string() + " --pred " + (dir / pred).string() +
                            " --feature-prior " + prior_path + " --json " + json);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("FD-prior"), std::string::npos) << r.output;
    return nlohmann::json::parse(read_file(json));
  };
  auto same = fd_prior("same"), far = fd_prior("noisy");
  EXPECT_NEAR(same.at("fd_prior").get<double>(), 0.0, 1e-6);
  EXPECT_GT(far.at("fd_prior").get<double>(), 1e-3);
  EXPECT_GT(far.at("kid_prior").at("mean").get<double>(), same.at("kid_prior").at("mean").get<double>());
  EXPECT_FALSE(far.contains("images"));
  // The same value from the library on the images as the PNGs hold them.
  std::vector<torch::Tensor> a, b;
  for (int i = 0; i < 6; ++i) {
    a.push_back(metrics::prior_features(prior.net(), read_image((dir / "real" / ("img" + std::to_string(i) + ".png")).string())));
    b.push_back(metrics::prior_features(prior.net(), read_image((dir / "noisy" / ("img" + std::to_string(i) + ".png")).string())));
  }
  EXPECT_NEAR(far.at("fd_prior").get<double>(), metrics::frechet_distance(torch::cat(b), torch::cat(a)),
              1e-6 * far.at("fd_prior").get<double>());
  auto r = test::run_ud2m("eval --unpaired --ref " + (dir / "real").string() + " --pred " + (dir / "noisy").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("give --inception or --feature-prior"), std::string::npos) << r.output;
}

TEST(MetricsEvalCli, BadRequestsFailWithOneClearErrorAndNoReport) {
  auto dir = image_folders();
  auto json = " --json " + (dir / "eval.json").string();
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    auto r = test::run_ud2m("eval" + args + json);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
    EXPECT_FALSE(fs::exists(dir / "eval.json")) << args;
  };
  expect_error(" --ref " + (dir / "nope").string() + " --pred " + (dir / "pred").string(), "is not a folder");
  fs::create_directories(dir / "other");
  write_png((dir / "other" / "zzz.png").string(), torch::rand({1, 3, 16, 16}));
  expect_error(" --ref " + (dir / "ref").string() + " --pred " + (dir / "other").string(), "no image in --pred");
  write_png((dir / "other" / "a.png").string(), torch::rand({1, 3, 16, 16}));
  expect_error(" --ref " + (dir / "ref").string() + " --pred " + (dir / "other").string(),
               (dir / "other" / "a.png").string() + "' is 16x16 but its reference");
  // A mismatched weight file is named with its first mismatching tensor.
  expect_error(folders(dir) + " --lpips-weights " + ref_path("alex_backbone.pth") + " " + ref_path("vgg_heads.pth"),
               ref_path("vgg_heads.pth") + "' does not fit this architecture: 4 mis-shaped tensors: lin1.model.1.weight");
  expect_error(folders(dir) + " --inception " + ref_path("squeeze_backbone.pth"), "pt_inception-2015-12-05-6726825d");
  expect_error(folders(dir) + " --inception " + (dir / "missing.pth").string(), "missing.pth' is not a file");
}
