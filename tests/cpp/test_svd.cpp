// The SVD views DDRM works in: checked against the operators themselves.
#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/identity.hpp"
#include "physics/inpainting.hpp"
#include "physics/jpeg.hpp"
#include "physics/kernels.hpp"
#include "physics/svd.hpp"
#include "test_util.hpp"

using namespace ud2m;
using namespace ud2m::physics;

namespace {

std::vector<std::pair<std::string, std::shared_ptr<LinearOperator>>> decomposable_operators() {
  const int64_t H = 16, W = 20;
  return {{"identity", std::make_shared<Identity>()},
          {"inpainting", std::make_shared<Inpainting>(random_mask(H, W, 0.6, 3))},
          {"gaussian blur", std::make_shared<CircularBlur>(gaussian_kernel(5, 1.5), H, W)},
          {"motion blur", std::make_shared<CircularBlur>(motion_kernel(7, 2), H, W)},
          {"sr x2 bicubic", std::make_shared<Downsampling>(sr_filter("bicubic", 2), 2, H, W)},
          {"sr x4 box", std::make_shared<Downsampling>(sr_filter("box", 4), 4, H, W)}};
}

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

}  // namespace

TEST(Svd, CoordinatesDiagonaliseTheOperator) {
  torch::manual_seed(0);
  for (auto& [name, op] : decomposable_operators()) {
    auto svd = svd_of(*op);
    ASSERT_TRUE(svd) << name;
    auto x = torch::randn({2, 3, 16, 20}, torch::kFloat64);
    auto c = svd->vt(x);
    auto s = svd->singular_values(c).to(torch::kFloat64);
    // Uᵀ A x = s ⊙ Vᵀ x
    EXPECT_LT(rel(svd->ut(op->forward(x)), s * c), 1e-9) << name;
    // V Vᵀ projects onto the row space: the measurement is unchanged, and projecting twice changes nothing.
    auto projected = svd->v(c);
    EXPECT_LT(rel(op->forward(projected), op->forward(x)), 1e-9) << name;
    EXPECT_LT(rel(svd->v(svd->vt(projected)), projected), 1e-9) << name;
    // What the projection removes is invisible to A.
    EXPECT_LT(op->forward(x - projected).abs().max().item<double>(), 1e-9) << name;
  }
}

TEST(Svd, SingularValuesMatchTheOperatorNorm) {
  // The largest singular value is ‖A‖, which power iteration on AᵀA finds.
  torch::manual_seed(1);
  for (auto& [name, op] : decomposable_operators()) {
    auto svd = svd_of(*op);
    auto x = torch::randn({1, 1, 16, 20}, torch::kFloat64);
    for (int i = 0; i < 300; ++i) x = op->normal(x) / op->normal(x).norm();
    const double norm = std::sqrt((x * op->normal(x)).sum().item<double>() / (x * x).sum().item<double>());
    const double s_max = svd->singular_values(svd->vt(x)).max().item<double>();
    EXPECT_NEAR(s_max, norm, 2e-3 * norm) << name;
  }
}

TEST(Svd, OperatorsWithoutOneSayNo) {
  JpegCompression jpeg(10);
  EXPECT_FALSE(svd_of(jpeg));
}
