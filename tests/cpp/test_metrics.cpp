// Metrics against their Python references (tests/python/gen_metrics.py):
// scikit-image SSIM, the lpips package, pytorch-fid's Inception and Fréchet
// distance, torchmetrics' KID, numpy's quantiles; plus known values.
#include "core/error.hpp"
#include "io/safetensors.hpp"
#include "metrics/fid.hpp"
#include "metrics/metrics.hpp"
#include "metrics/perceptual.hpp"
#include "metrics/posterior.hpp"
#include "nets/state_dict.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {

TensorMap refs(const std::string& file) { return read_safetensors((test::refs_dir("metrics") / file).string()).tensors; }
std::string ref_path(const std::string& file) { return (test::refs_dir("metrics") / file).string(); }

// The message of the Error `f` throws ("" if none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(MetricsSsim, MatchesScikitImage) {
  auto r = refs("ssim.safetensors");
  for (const char* c : {"rgb", "gray"}) {
    auto s = metrics::ssim_per_image(r.at(std::string(c) + "_pred"), r.at(std::string(c) + "_ref"));
    auto expected = r.at(std::string(c) + "_ssim");
    ASSERT_EQ(s.sizes(), expected.sizes()) << c;
    const double err = test::max_rel_error(s, expected);
    std::printf("SSIM %s: max rel. error vs scikit-image %.2e\n", c, err);
    EXPECT_LE(err, 1e-6) << c;
  }
}

TEST(MetricsSsim, KnownValues) {
  auto x = torch::rand({2, 3, 24, 31}, torch::kFloat64);
  EXPECT_NEAR(metrics::ssim(x, x), 1.0, 1e-12);
  // Two constant images: only the luminance term is left, (2ab + C1) / (a² + b² + C1).
  const double a = 0.3, b = 0.7, c1 = 1e-4;
  EXPECT_NEAR(metrics::ssim(torch::full({1, 1, 16, 16}, a), torch::full({1, 1, 16, 16}, b)),
              (2 * a * b + c1) / (a * a + b * b + c1), 1e-6);
  auto noisy = (x + 0.1 * torch::randn_like(x)).clamp(0, 1);
  EXPECT_LT(metrics::ssim(noisy, x), metrics::ssim((x + noisy) / 2, x));
}

TEST(MetricsSsim, RejectsTinyOrMismatchedImages) {
  EXPECT_NE(error_of([] { metrics::ssim(torch::rand({1, 3, 10, 40}), torch::rand({1, 3, 10, 40})); }).find("11x11"),
            std::string::npos);
  EXPECT_NE(error_of([] { metrics::ssim(torch::rand({1, 3, 16, 16}), torch::rand({1, 3, 16, 17})); }).find("16x17"),
            std::string::npos);
}

TEST(MetricsPsnr, PerImageKnownValues) {
  auto x = torch::rand({2, 3, 8, 8}, torch::kFloat64);
  auto shift = torch::tensor({0.1, 0.01}, torch::kFloat64).view({2, 1, 1, 1});
  auto p = metrics::psnr_per_image(x + shift, x);
  EXPECT_NEAR(p[0].item<double>(), 20.0, 1e-9);
  EXPECT_NEAR(p[1].item<double>(), 40.0, 1e-9);
  EXPECT_NEAR(metrics::psnr(x + shift, x), 30.0, 1e-9);
}

class MetricsLpips : public ::testing::TestWithParam<std::string> {};

TEST_P(MetricsLpips, MatchesTheLpipsPackage) {
  const auto& net_name = GetParam();
  auto net = nets::load_lpips(ref_path(net_name + "_backbone.pth"), ref_path(net_name + "_heads.pth"));
  EXPECT_EQ(nets::lpips_backbone_name(net->backbone()), net_name);
  auto r = refs("lpips.safetensors");
  auto d = metrics::lpips_per_image(net, r.at("pred"), r.at("ref"));
  auto expected = r.at(net_name + "_lpips").to(torch::kFloat64);
  ASSERT_EQ(d.sizes(), expected.sizes());
  const double err = test::max_rel_error(d, expected);
  std::printf("LPIPS %s: max rel. error vs lpips %.2e\n", net_name.c_str(), err);
  EXPECT_LE(err, 1e-4);
  // A distance: zero on identical images, and the network keeps its input gradient.
  EXPECT_NEAR(metrics::lpips_per_image(net, r.at("ref"), r.at("ref")).abs().max().item<double>(), 0.0, 1e-7);
  auto x = (r.at("pred") * 2 - 1).requires_grad_();
  net->forward(x, r.at("ref") * 2 - 1).sum().backward();
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(MetricsBackbones, MetricsLpips, ::testing::Values("alex", "vgg", "squeeze"));

TEST(MetricsLpipsFiles, MismatchesNameTheFileAndTheTensor) {
  // VGG heads on an AlexNet trunk: lin1 has 128 channels instead of 192.
  auto heads = ref_path("vgg_heads.pth");
  auto message = error_of([&] { nets::load_lpips(ref_path("alex_backbone.pth"), heads); });
  EXPECT_NE(message.find(heads), std::string::npos) << message;
  EXPECT_NE(message.find("lin1.model.1.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("weights/v0.1/alex.pth"), std::string::npos) << message;
  // Heads given as the trunk.
  message = error_of([&] { nets::load_lpips(heads, heads); });
  EXPECT_NE(message.find("is not a torchvision AlexNet"), std::string::npos) << message;
  // A trunk with a tensor of the wrong shape.
  auto dir = test::temp_dir();
  auto trunk = nets::state_dict(*nets::LpipsNet(nets::LpipsBackbone::Squeeze)->trunk);
  trunk["features.6.expand3x3.weight"] = torch::zeros({128, 32, 1, 1});
  write_safetensors((dir / "squeeze.safetensors").string(), trunk);
  message = error_of([&] { nets::load_lpips((dir / "squeeze.safetensors").string(), ref_path("squeeze_heads.pth")); });
  EXPECT_NE(message.find("squeeze.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("features.6.expand3x3.weight (128x32x1x1 in the file, 128x32x3x3 expected)"),
            std::string::npos)
      << message;
}

TEST(MetricsFid, InceptionFeaturesMatchPytorchFid) {
  auto net = nets::load_fid_inception(ref_path("pt_inception.pth"));
  auto r = refs("fid.safetensors");
  auto f = metrics::inception_features(net, r.at("images"));
  auto expected = r.at("features").to(torch::kFloat64);
  ASSERT_EQ(f.sizes(), expected.sizes());
  const double err = test::max_rel_error(f, expected);
  std::printf("Inception features: max rel. error vs pytorch-fid %.2e\n", err);
  EXPECT_LE(err, 1e-4);
  // Three images per set give singular covariances; torchmetrics' eigenvalue
  // route is the reference there (pytorch-fid's sqrtm refuses them).
  const double fid = metrics::frechet_distance(f.narrow(0, 0, 3), f.narrow(0, 3, 3));
  const double fid_err = std::abs(fid / r.at("fid_images_torchmetrics").item<double>() - 1);
  std::printf("FID of 3 vs 3 images: %.6f, rel. error vs torchmetrics %.2e\n", fid, fid_err);
  EXPECT_LE(fid_err, 1e-4);
  auto kid = metrics::kernel_inception_distance(f.narrow(0, 0, 3), f.narrow(0, 3, 3));
  const double kid_err = std::abs(kid.mean / r.at("kid_images").item<double>() - 1);
  std::printf("KID of 3 vs 3 images: rel. error vs torchmetrics %.2e\n", kid_err);
  EXPECT_LE(kid_err, 1e-4);
}

TEST(MetricsFid, FrechetDistanceMatchesPytorchFid) {
  auto r = refs("fid.safetensors");
  const double fid = metrics::frechet_distance(r.at("feat_a"), r.at("feat_b"));
  const double err = std::abs(fid / r.at("fid_ab").item<double>() - 1);
  std::printf("FID on full-rank features: %.6f, rel. error vs pytorch-fid %.2e\n", fid, err);
  EXPECT_LE(err, 1e-8);
  EXPECT_NEAR(metrics::frechet_distance(r.at("feat_a"), r.at("feat_a")), 0.0, 1e-9);
  // Fewer images than dimensions (the route through the nuclear norm of ABᵀ).
  const double fid_cd = metrics::frechet_distance(r.at("feat_c"), r.at("feat_d"));
  const double err_cd = std::abs(fid_cd / r.at("fid_cd").item<double>() - 1);
  std::printf("FID on rank-deficient features: %.6f, rel. error vs torchmetrics %.2e\n", fid_cd, err_cd);
  EXPECT_LE(err_cd, 1e-6);
  EXPECT_NEAR(metrics::frechet_distance(r.at("feat_c"), r.at("feat_c")), 0.0, 1e-9);
}

TEST(MetricsFid, KidMatchesTorchmetrics) {
  auto r = refs("fid.safetensors");
  auto a = r.at("feat_a"), b = r.at("feat_b");
  auto kid = metrics::kernel_inception_distance(a.narrow(0, 0, 150), b);
  EXPECT_EQ(kid.subsets, 1);
  const double err = std::abs(kid.mean / r.at("kid_ab").item<double>() - 1);
  std::printf("KID on equal sets: rel. error vs torchmetrics %.2e\n", err);
  EXPECT_LE(err, 1e-10);
  // Unequal sets: random subsets, reproducible by seed, near the exact value.
  metrics::KidOptions options;
  options.subset_size = 120;
  options.subsets = 10;
  auto sub = metrics::kernel_inception_distance(a, b, options);
  std::printf("KID over 10 subsets of 120: %.4f ± %.4f, exact on 150: %.4f\n", sub.mean, sub.std, kid.mean);
  EXPECT_EQ(sub.subsets, 10);
  EXPECT_EQ(sub.subset_size, 120);
  EXPECT_GT(sub.std, 0.0);
  EXPECT_EQ(metrics::kernel_inception_distance(a, b, options).mean, sub.mean);
  EXPECT_NEAR(sub.mean, kid.mean, 0.15 * kid.mean);
  // Unbiased: two halves of one distribution are ~0 apart.
  EXPECT_NEAR(metrics::kernel_inception_distance(a.narrow(0, 0, 100), a.narrow(0, 100, 100)).mean, 0.0,
              0.1 * kid.mean);
}

TEST(MetricsFid, WrongInceptionFileIsNamed) {
  auto path = ref_path("alex_backbone.pth");
  auto message = error_of([&] { nets::load_fid_inception(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("missing 564 tensors: Conv2d_1a_3x3.bn.bias"), std::string::npos) << message;
  EXPECT_NE(message.find("pt_inception-2015-12-05-6726825d.pth"), std::string::npos) << message;
}

TEST(MetricsPosterior, MatchesNumpy) {
  auto r = refs("posterior.safetensors");
  auto samples = r.at("samples"), reference = r.at("reference");
  EXPECT_LE(test::max_rel_error(metrics::posterior_std(samples), r.at("std")), 1e-12);
  EXPECT_DOUBLE_EQ(metrics::credible_coverage(samples, reference, 0.5), r.at("coverage_50").item<double>());
  EXPECT_DOUBLE_EQ(metrics::credible_coverage(samples, reference, 0.9), r.at("coverage_90").item<double>());
}

TEST(MetricsPosterior, KnownValues) {
  auto s = torch::arange(5, torch::kFloat64).view({5, 1});  // samples 0, 1, 2, 3, 4 of one pixel
  EXPECT_DOUBLE_EQ(metrics::sample_quantile(s, 0.5).item<double>(), 2.0);
  EXPECT_DOUBLE_EQ(metrics::sample_quantile(s, 0.1).item<double>(), 0.4);
  EXPECT_DOUBLE_EQ(metrics::posterior_mean(s).item<double>(), 2.0);
  EXPECT_NEAR(metrics::posterior_std(s).item<double>(), std::sqrt(2.5), 1e-12);
  // Calibrated samples: the truth is one more draw from the same distribution,
  // so a central 90% interval of 400 samples holds it ~90% of the time.
  torch::manual_seed(3);
  auto samples = torch::randn({400, 1, 1, 48, 48}, torch::kFloat64);
  auto truth = torch::randn({1, 1, 48, 48}, torch::kFloat64);
  EXPECT_NEAR(metrics::credible_coverage(samples, truth, 0.9), 0.9, 0.02);
  // Over-confident samples (std 0.5 for a truth of std 1) cover far less.
  EXPECT_LT(metrics::credible_coverage(0.5 * samples, truth, 0.9), 0.65);
  EXPECT_NE(error_of([&] { metrics::credible_coverage(samples, truth, 1.0); }).find("(0, 1)"), std::string::npos);
  EXPECT_NE(error_of([&] { metrics::credible_coverage(samples.narrow(0, 0, 1), truth, 0.9); }).find("2 samples"),
            std::string::npos);
}
