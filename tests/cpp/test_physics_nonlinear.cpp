// JPEG (surrogate vs the real codec) and phase retrieval (gradient vs finite differences).
#include "core/image.hpp"
#include "io/safetensors.hpp"
#include "physics/degradation.hpp"
#include "physics/identity.hpp"
#include "physics/jpeg.hpp"
#include "physics/phase_retrieval.hpp"
#include "physics/square_root.hpp"
#include "test_util.hpp"

using namespace ud2m::physics;

namespace {
torch::Tensor photo() {
  return ud2m::read_safetensors((ud2m::test::refs_dir("physics") / "photo.safetensors").string()).tensors.at("photo");
}
double psnr01(const torch::Tensor& a, const torch::Tensor& b) {  // inputs in model units [-1, 1]
  const double mse = ((a - b) / 2).pow(2).mean().item<double>();
  return 10 * std::log10(1.0 / mse);
}
}  // namespace

TEST(PhysicsJpeg, QuantTablesFollowLibjpeg) {
  EXPECT_EQ(jpeg_quant_table(false, 50)[0][0].item<float>(), 16);  // quality 50 = the base table
  EXPECT_EQ(jpeg_quant_table(false, 10)[0][0].item<float>(), 80);  // 16·500/100
  EXPECT_EQ(jpeg_quant_table(true, 10)[7][7].item<float>(), 255);  // 99·5 clamped to baseline
  EXPECT_EQ(jpeg_quant_table(false, 100)[3][3].item<float>(), 1);
}

TEST(PhysicsJpeg, SurrogateIsCloseToTheCodec) {
  auto x = ud2m::to_model(photo());  // 120×104: exercises the padding to multiples of 16
  for (int quality : {10, 50, 90}) {
    JpegCompression op(quality);
    auto codec = op.measure(x);
    auto surrogate = op.forward(x).clamp(-1, 1);
    const double close = psnr01(surrogate, codec), lossy = psnr01(x, codec);
    std::printf("JPEG quality %d: PSNR(surrogate, codec) %.2f dB; PSNR(clean, codec) %.2f dB\n", quality, close,
                lossy);
    // The surrogate must model the codec far better than "no compression" does.
    EXPECT_GT(close, 30.0) << quality;
    EXPECT_GT(close, lossy + 5.0) << quality;
  }
}

TEST(PhysicsJpeg, SurrogateHasAGradient) {
  JpegCompression op(10);
  auto x = ud2m::to_model(photo()).slice(2, 0, 32).slice(3, 0, 32);
  auto g = op.data_grad(x, torch::zeros_like(x));
  EXPECT_TRUE(torch::isfinite(g).all().item<bool>());
  EXPECT_GT(g.abs().sum().item<double>(), 0);
}

TEST(PhysicsJpeg, JacobianNormIsWithinTheDeclaredBound) {
  // Power iteration on JᵀJ, J the straight-through Jacobian of the surrogate;
  // Jv comes from differentiating w ↦ Jᵀw (linear in w) once more. The UD2M
  // data step sizes its gradient steps with this bound.
  JpegCompression op(10);
  auto x = ud2m::to_model(photo()).slice(2, 0, 32).slice(3, 0, 32).to(torch::kFloat64);
  auto apply_jtj = [&](const torch::Tensor& v) {
    auto xv = x.detach().requires_grad_(true);
    auto w = torch::zeros_like(x).requires_grad_(true);
    auto jt_w = torch::autograd::grad({(op.forward(xv) * w).sum()}, {xv}, {}, true, true)[0];
    auto j_v = torch::autograd::grad({(jt_w * v).sum()}, {w})[0];
    return torch::autograd::grad({(op.forward(xv) * j_v).sum()}, {xv})[0];
  };
  torch::manual_seed(0);
  auto v = torch::randn_like(x);
  double norm = 0;
  for (int i = 0; i < 60; ++i) {
    v = v / v.norm();
    auto next = apply_jtj(v);
    norm = std::sqrt((next * v).sum().item<double>());
    v = next;
  }
  std::printf("JPEG surrogate: ‖J‖ ≈ %.4f (declared bound %.2f)\n", norm, op.jacobian_bound());
  EXPECT_GE(norm, 0.99);  // luma alone passes unchanged
  EXPECT_LE(norm, op.jacobian_bound());
}

TEST(PhysicsPhaseRetrieval, GradientMatchesFiniteDifferences) {
  for (bool random_phase : {false, true}) {
    PhaseRetrieval op(6, 5, 2, random_phase, 3);
    auto rng = at::make_generator<at::CPUGeneratorImpl>(4);
    auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
    auto x = at::randn({1, 2, 6, 5}, rng, f64);
    auto y = op.forward(at::randn({1, 2, 6, 5}, rng, f64));
    auto v = at::randn({1, 2, 6, 5}, rng, f64);
    auto f = [&](const torch::Tensor& u) { return 0.5 * (op.forward(u) - y).pow(2).sum().item<double>(); };
    const double h = 1e-6;
    const double fd = (f(x + h * v) - f(x - h * v)) / (2 * h);
    const double analytic = (op.data_grad(x, y) * v).sum().item<double>();
    EXPECT_NEAR(analytic, fd, 1e-6 * std::max(1.0, std::abs(fd))) << random_phase;
  }
}

TEST(PhysicsPhaseRetrieval, ShapesAndParseval) {
  PhaseRetrieval op(8, 6, 3, false, 0);
  auto x = torch::randn({2, 3, 8, 6});
  auto y = op.forward(x);
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{2, 3, 24, 18}));
  // Orthonormal DFT of the [0, 1] intensities v = (x + 1)/2: the measurement sums to ‖v‖².
  const double energy = ((x + 1) / 2).pow(2).sum().item<double>();
  EXPECT_NEAR(y.sum().item<double>(), energy, 1e-3 * energy);
  // The random phase mask is a pure phase: same energy, different intensities.
  PhaseRetrieval rp(8, 6, 3, true, 0);
  auto yr = rp.forward(x);
  EXPECT_NEAR(yr.sum().item<double>(), energy, 1e-3 * energy);
  EXPECT_GT((yr - y).abs().max().item<double>(), 1e-3);
  // A black image measures nothing, and an image and its negative differ.
  EXPECT_EQ(op.forward(-torch::ones({1, 3, 8, 6})).abs().max().item<double>(), 0.0);
  EXPECT_GT((op.forward(-x) - y).abs().max().item<double>(), 1e-2);
}

// Amplitudes √A of phase retrieval's intensities: |F(P v)| itself, a gradient
// that finite differences confirm and that stays finite (zero) where the
// spectrum vanishes, and a JSON description that rebuilds it.
TEST(PhysicsSquareRoot, AmplitudesOfPhaseRetrieval) {
  auto intensities = std::make_shared<PhaseRetrieval>(6, 5, 2, false, 0);
  SquareRoot op(intensities);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(5);
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto x = at::randn({1, 2, 6, 5}, rng, f64);
  auto spectrum = torch::fft::fft2((x + 1) / 2, std::vector<int64_t>{12, 10}, {-2, -1}, "ortho");
  EXPECT_LT((op.forward(x) - spectrum.abs()).abs().max().item<double>(), 1e-9);
  auto y = op.forward(at::randn({1, 2, 6, 5}, rng, f64));
  auto v = at::randn({1, 2, 6, 5}, rng, f64);
  auto f = [&](const torch::Tensor& u) { return 0.5 * (op.forward(u) - y).pow(2).sum().item<double>(); };
  const double h = 1e-6, fd = (f(x + h * v) - f(x - h * v)) / (2 * h);
  EXPECT_NEAR((op.data_grad(x, y) * v).sum().item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd)));
  auto black = -torch::ones({1, 2, 6, 5}, f64);  // every |z| = 0, where √ has no slope
  auto at_black = op.data_grad(black, y);
  EXPECT_TRUE(torch::isfinite(at_black).all().item<bool>());
  EXPECT_LT(at_black.abs().max().item<double>(), 1e-3);
  auto rebuilt = operator_from_json(op.to_json());
  EXPECT_EQ(rebuilt->name(), "square_root");
  EXPECT_TRUE(torch::equal(rebuilt->forward(x), op.forward(x)));
  EXPECT_THROW_MSG(SquareRoot(std::make_shared<Identity>()), "not the linear 'identity'");
}
