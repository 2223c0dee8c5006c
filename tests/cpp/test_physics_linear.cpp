// Algebraic facts every linear operator must satisfy: ⟨Ax, y⟩ = ⟨x, Aᵀy⟩,
// the prox is the minimiser it claims to be, and A A† A = A.
#include <functional>

#include "core/error.hpp"
#include "physics/blur.hpp"
#include "physics/composition.hpp"
#include "physics/downsampling.hpp"
#include "physics/identity.hpp"
#include "physics/inpainting.hpp"
#include "physics/kernels.hpp"
#include "test_util.hpp"

using namespace ud2m::physics;

namespace {

struct Case {
  std::string label;
  std::function<LinearOperatorPtr(int64_t H, int64_t W, uint64_t seed)> make;
  int64_t multiple = 1;        // image sides must be multiples of this
  double pinv_tolerance = 1e-4;  // CG-based pseudo-inverses converge more loosely
};

torch::Tensor random_kernel(int64_t h, int64_t w, uint64_t seed) {
  auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto k = at::rand({h, w}, rng, torch::TensorOptions().dtype(torch::kFloat32)) + 0.1;
  return k / k.sum();
}

std::vector<Case> cases() {
  return {
      {"identity", [](int64_t, int64_t, uint64_t) { return std::make_shared<Identity>(); }},
      {"circular_gaussian",
       [](int64_t H, int64_t W, uint64_t) { return std::make_shared<CircularBlur>(gaussian_kernel(5, 1.7), H, W); }},
      {"circular_even_random",
       [](int64_t H, int64_t W, uint64_t s) { return std::make_shared<CircularBlur>(random_kernel(4, 6, s), H, W); }},
      {"circular_motion",
       [](int64_t H, int64_t W, uint64_t s) { return std::make_shared<CircularBlur>(motion_kernel(7, s), H, W); }},
      {"reflect_blur",
       [](int64_t H, int64_t W, uint64_t s) {
         return std::make_shared<ConvBlur>(random_kernel(5, 4, s), ConvBlur::Boundary::reflect, H, W);
       },
       1, 2e-2},
      {"valid_blur",
       [](int64_t H, int64_t W, uint64_t s) {
         return std::make_shared<ConvBlur>(random_kernel(3, 4, s), ConvBlur::Boundary::valid, H, W);
       },
       1, 2e-2},
      {"sr2_gaussian",
       [](int64_t H, int64_t W, uint64_t) { return std::make_shared<Downsampling>(sr_filter("gaussian", 2), 2, H, W); },
       2},
      {"sr4_bicubic",
       [](int64_t H, int64_t W, uint64_t) { return std::make_shared<Downsampling>(sr_filter("bicubic", 4), 4, H, W); },
       4},
      {"sr2_box",
       [](int64_t H, int64_t W, uint64_t) { return std::make_shared<Downsampling>(sr_filter("box", 2), 2, H, W); }, 2},
      {"inpainting_random",
       [](int64_t H, int64_t W, uint64_t s) { return std::make_shared<Inpainting>(random_mask(H, W, 0.7, s)); }},
      {"inpainting_box",
       [](int64_t H, int64_t W, uint64_t) { return std::make_shared<Inpainting>(box_mask(H, W, H / 2, W / 2)); }},
      {"composition_inpaint_blur",
       [](int64_t H, int64_t W, uint64_t s) {
         return std::make_shared<Composition>(std::make_shared<Inpainting>(random_mask(H, W, 0.5, s)),
                                              std::make_shared<CircularBlur>(gaussian_kernel(3, 1.0), H, W));
       },
       1, 2e-2},
  };
}

double scalar_product(const torch::Tensor& a, const torch::Tensor& b) { return (a * b).sum().item<double>(); }

// Random sizes and data in float64.
struct Problem {
  LinearOperatorPtr op;
  torch::Tensor x, y, z;
};

Problem make_problem(const Case& c, uint64_t seed) {
  auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
  // Sides 16..32: the widest filter here (bicubic ×4) is 16 pixels.
  auto side = [&] { return c.multiple * at::randint(16 / c.multiple, 32 / c.multiple + 1, {1}, rng).item<int64_t>(); };
  const auto H = side(), W = side();
  auto op = c.make(H, W, seed);
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto x = at::randn({2, 3, H, W}, rng, f64);
  auto y = at::randn(op->output_shape({2, 3, H, W}), rng, f64);
  auto z = at::randn({2, 3, H, W}, rng, f64);
  return {op, x, y, z};
}

}  // namespace

TEST(PhysicsLinear, AdjointIdentity) {
  for (const auto& c : cases())
    for (uint64_t seed : {1, 2, 3}) {
      auto p = make_problem(c, seed);
      const double lhs = scalar_product(p.op->forward(p.x), p.y), rhs = scalar_product(p.x, p.op->adjoint(p.y));
      EXPECT_LE(std::abs(lhs - rhs) / std::max(std::abs(lhs), 1e-12), 1e-5) << c.label << " seed " << seed;
      // float32 stays close too (the library's working precision).
      auto xf = p.x.to(torch::kFloat32), yf = p.y.to(torch::kFloat32);
      const double lf = scalar_product(p.op->forward(xf), yf), rf = scalar_product(xf, p.op->adjoint(yf));
      EXPECT_LE(std::abs(lf - rf) / std::max(std::abs(lf), 1e-12), 1e-4) << c.label << " float32";
    }
}

TEST(PhysicsLinear, ProxIsTheMinimiser) {
  for (const auto& c : cases())
    for (double gamma : {0.3, 5.0}) {
      auto p = make_problem(c, 7);
      auto x = p.op->prox(p.z, p.y, gamma);
      // Gradient of ½γ‖Ax − y‖² + ½‖x − z‖² at the prox result.
      auto grad = gamma * p.op->adjoint(p.op->forward(x) - p.y) + (x - p.z);
      const double rel = (grad.norm() / p.z.norm()).item<double>();
      EXPECT_LE(rel, p.op->has_closed_form_prox() ? 1e-10 : 1e-5) << c.label << " gamma " << gamma;
    }
}

TEST(PhysicsLinear, ClosedFormProxMatchesConjugateGradients) {
  for (const auto& c : cases()) {
    auto p = make_problem(c, 11);
    if (!p.op->has_closed_form_prox()) continue;
    auto closed = p.op->prox(p.z, p.y, 2.0);
    auto cg = p.op->LinearOperator::prox(p.z, p.y, 2.0);
    EXPECT_LE(ud2m::test::max_rel_error(closed, cg), 1e-5) << c.label;
  }
}

TEST(PhysicsLinear, PseudoInverse) {
  for (const auto& c : cases()) {
    auto p = make_problem(c, 5);
    // One image, one channel: CG-based pseudo-inverses run hundreds of iterations.
    auto Ax = p.op->forward(p.x.slice(0, 0, 1).slice(1, 0, 1));
    auto again = p.op->forward(p.op->pinv(Ax));
    EXPECT_LE(((again - Ax).norm() / Ax.norm()).item<double>(), c.pinv_tolerance) << c.label;
  }
}

TEST(PhysicsLinear, CircularBlurIsPeriodicConvolution) {
  // A delta at the origin comes out as the kernel centred there, wrapping round the edges.
  auto k = random_kernel(3, 4, 9);
  CircularBlur op(k, 8, 8);
  auto delta = torch::zeros({1, 1, 8, 8});
  delta[0][0][0][0] = 1;
  auto y = op.forward(delta)[0][0];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j)
      EXPECT_NEAR(y[(i - 1 + 8) % 8][(j - 2 + 8) % 8].item<float>(), k[i][j].item<float>(), 1e-6);
}

TEST(PhysicsLinear, KernelLargerThanImageIsAnError) {
  EXPECT_THROW(CircularBlur(gaussian_kernel(9, 2), 8, 16), ud2m::Error);
  EXPECT_THROW(ConvBlur(gaussian_kernel(9, 2), ConvBlur::Boundary::valid, 16, 8), ud2m::Error);
  EXPECT_THROW(Downsampling(sr_filter("bicubic", 2), 3, 12, 13), ud2m::Error);
}

namespace {
// The explicit matrix of a linear operator on (1, 1, H, W) images, float64.
torch::Tensor dense_matrix(const LinearOperator& op, int64_t H, int64_t W) {
  auto basis = torch::eye(H * W, torch::kFloat64).view({H * W, 1, H, W});
  return op.forward(basis).flatten(1).t();  // (outputs, H·W)
}
}  // namespace

TEST(PhysicsLinear, PseudoInverseEqualsTheMatrixPseudoInverse) {
  struct Dense {
    std::string label;
    LinearOperatorPtr op;
    int64_t H, W;
    double tolerance;
  };
  const std::vector<Dense> cases = {
      {"circular_gaussian", std::make_shared<CircularBlur>(gaussian_kernel(3, 0.8), 8, 6), 8, 6, 1e-8},
      {"sr2_bicubic", std::make_shared<Downsampling>(sr_filter("bicubic", 2), 2, 8, 8), 8, 8, 1e-8},
      {"sr2_box", std::make_shared<Downsampling>(sr_filter("box", 2), 2, 6, 8), 6, 8, 1e-8},
      {"inpainting", std::make_shared<Inpainting>(random_mask(7, 5, 0.4, 3)), 7, 5, 1e-12},
      {"valid_blur_cg", std::make_shared<ConvBlur>(random_kernel(3, 2, 4), ConvBlur::Boundary::valid, 7, 6), 7, 6,
       1e-3},
  };
  for (const auto& c : cases) {
    auto A = dense_matrix(*c.op, c.H, c.W);
    auto y = torch::randn({A.size(0)}, torch::kFloat64);
    auto expected = torch::matmul(torch::linalg_pinv(A), y).view({1, 1, c.H, c.W});
    auto ours = c.op->pinv(y.view(c.op->output_shape({1, 1, c.H, c.W})));
    EXPECT_LE(ud2m::test::max_rel_error(ours, expected), c.tolerance) << c.label;
  }
}

TEST(PhysicsLinear, WorksUnderInferenceMode) {
  c10::InferenceMode guard;
  ConvBlur op(random_kernel(3, 3, 1), ConvBlur::Boundary::reflect, 10, 10);
  auto y = op.adjoint(op.forward(torch::randn({1, 3, 10, 10})));
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{1, 3, 10, 10}));
}
