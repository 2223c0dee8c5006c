#include "core/error.hpp"
#include "metrics/metrics.hpp"
#include "variational/tv.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {
// Denoising: A = I, the simplest operator with a closed-form prox.
struct Identity : physics::LinearOperator {
  torch::Tensor forward(const torch::Tensor& x) const override { return x; }
  torch::Tensor adjoint(const torch::Tensor& y) const override { return y; }
  torch::Tensor pinv(const torch::Tensor& y) const override { return y; }
  torch::Tensor prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const override {
    return (gamma * y + z) / (gamma + 1);
  }
  nlohmann::json to_json() const override { return {{"type", "identity"}}; }
  std::string name() const override { return "identity"; }
};

torch::Tensor piecewise_constant_image() {
  auto x = torch::full({1, 3, 32, 32}, -0.5);
  x.narrow(2, 8, 16).narrow(3, 8, 16).fill_(0.5);
  x.narrow(1, 0, 1).narrow(2, 0, 8).fill_(0.0);
  return x;
}
}  // namespace

TEST(TotalVariation, ValueOfAStepEdge) {
  // One vertical edge of height 1 across 10 rows, 3 channels: TV = 10·√3.
  auto x = torch::zeros({1, 3, 10, 10}, torch::kFloat64);
  x.narrow(3, 5, 5).fill_(1.0);
  EXPECT_NEAR(variational::total_variation(x).item<double>(), 10 * std::sqrt(3.0), 1e-9);
}

TEST(TotalVariation, ProxBeatsPerturbations) {
  torch::manual_seed(1);
  auto v = torch::randn({1, 3, 16, 16}, torch::kFloat64);
  const double lambda = 0.3;
  auto objective = [&](const torch::Tensor& x) {
    return 0.5 * (x - v).pow(2).sum().item<double>() + lambda * variational::total_variation(x).item<double>();
  };
  auto p = variational::tv_prox(v, lambda, 2000);
  const double best = objective(p);
  EXPECT_LT(best, objective(v));
  for (int i = 0; i < 20; ++i)
    EXPECT_LE(best, objective(p + 1e-3 * torch::randn_like(p)) + 1e-9) << "perturbation " << i;
}

TEST(TvRestore, DenoisingImprovesPsnr) {
  torch::manual_seed(2);
  auto clean = piecewise_constant_image();
  auto noisy = clean + 0.2 * torch::randn_like(clean);
  Identity op;
  variational::TvOptions options;
  options.weight = 0.3;
  options.iterations = 50;
  auto restored = variational::tv_restore(op, noisy, clean.sizes().vec(), options);
  const double before = metrics::psnr((noisy + 1) / 2, (clean + 1) / 2);
  const double after = metrics::psnr((restored + 1) / 2, (clean + 1) / 2);
  EXPECT_GT(after, before + 10.0) << "before " << before << " after " << after;
}

TEST(TvRestore, RejectsBadSettings) {
  Identity op;
  variational::TvOptions options;
  options.iterations = 0;
  auto y = torch::zeros({1, 3, 8, 8});
  EXPECT_THROW(variational::tv_restore(op, y, y.sizes().vec(), options), Error);
}

TEST(Metrics, PsnrOfKnownError) {
  auto a = torch::zeros({1, 3, 8, 8});
  EXPECT_NEAR(metrics::psnr(a + 0.1, a), 20.0, 1e-5);
  EXPECT_NEAR(metrics::psnr(a + 0.01, a), 40.0, 1e-5);
}
