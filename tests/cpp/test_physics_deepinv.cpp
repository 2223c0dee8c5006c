// Agreement with deepinv's operators on the same inputs (tests/python/gen_physics.py).
#include "io/safetensors.hpp"
#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/inpainting.hpp"
#include "physics/kernels.hpp"
#include "test_util.hpp"

using namespace ud2m::physics;
using ud2m::test::max_rel_error;

namespace {

ud2m::TensorMap load(const std::string& name) {
  return ud2m::read_safetensors((ud2m::test::refs_dir("physics") / (name + ".safetensors")).string()).tensors;
}

// Compares every output deepinv produced for this case; prints the errors for the report.
void compare(const std::string& name, const LinearOperator& op, const ud2m::TensorMap& t) {
  const double gamma = t.at("gamma").item<double>();
  std::vector<std::pair<std::string, torch::Tensor>> ours = {{"A", op.forward(t.at("x"))},
                                                             {"At", op.adjoint(t.at("y"))}};
  if (t.count("prox")) ours.emplace_back("prox", op.prox(t.at("z"), t.at("y"), gamma));
  if (t.count("pinv")) ours.emplace_back("pinv", op.pinv(t.at("y")));
  for (const auto& [key, value] : ours) {
    ASSERT_EQ(value.sizes(), t.at(key).sizes()) << name << " " << key;
    const double err = max_rel_error(value, t.at(key));
    std::printf("deepinv agreement %-20s %-5s max rel err %.2e\n", name.c_str(), key.c_str(), err);
    EXPECT_LE(err, 1e-5) << name << " " << key;
  }
}

}  // namespace

TEST(PhysicsDeepinv, GaussianKernelMatches) {
  auto t = load("blurfft_gaussian");
  EXPECT_LE(max_rel_error(gaussian_kernel(5, std::sqrt(3.0)), t.at("kernel")), 1e-6);
}

TEST(PhysicsDeepinv, BlurFFT) {
  for (std::string name : {"blurfft_gaussian", "blurfft_even"}) {
    auto t = load(name);
    CircularBlur op(t.at("kernel"), t.at("x").size(2), t.at("x").size(3));
    compare(name, op, t);
  }
}

TEST(PhysicsDeepinv, BlurReflectAndValid) {
  for (std::string pad : {"reflect", "valid"})
    for (std::string k : {"odd", "even"}) {
      const auto name = "blur_" + pad + "_" + k;
      auto t = load(name);
      ConvBlur op(t.at("kernel"), parse_boundary(pad), t.at("x").size(2), t.at("x").size(3));
      compare(name, op, t);
    }
}

TEST(PhysicsDeepinv, DownsamplingCircular) {
  for (auto [filter, factor] : std::vector<std::pair<std::string, int>>{
           {"gaussian", 2}, {"bicubic", 2}, {"bicubic", 4}, {"gaussian", 4}}) {
    const auto name = "sr_" + filter + "_" + std::to_string(factor);
    auto t = load(name);
    // Our filter is built independently: it must equal deepinv's.
    auto ours = sr_filter(filter, factor);
    ASSERT_EQ(ours.sizes(), t.at("kernel").sizes()) << name;
    EXPECT_LE(max_rel_error(ours, t.at("kernel")), 1e-6) << name;
    Downsampling op(ours, factor, t.at("x").size(2), t.at("x").size(3));
    compare(name, op, t);
  }
}

TEST(PhysicsDeepinv, Inpainting) {
  auto t = load("inpainting");
  Inpainting op(t.at("mask"));
  compare("inpainting", op, t);
}

TEST(PhysicsDeepinv, MotionBlurGenerator) {
  for (int seed : {0, 7}) {
    auto theirs = load("motion_" + std::to_string(seed)).at("kernel");
    auto ours = motion_kernel(31, seed);
    const double err = max_rel_error(ours, theirs);
    std::printf("deepinv agreement motion kernel seed %d: max rel err %.2e\n", seed, err);
    EXPECT_LE(err, 1e-5) << seed;
  }
}
