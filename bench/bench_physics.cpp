// Operator apply (A) and prox times on a batch of 8×3×256×256, printed one
// line per operator: "name apply_ms prox_ms". bench/physics.sh runs this and
// bench/bench_physics.py (deepinv, same inputs and sizes) and prints ratios.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>

#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/inpainting.hpp"
#include "physics/kernels.hpp"

using namespace ud2m::physics;

namespace {
// Fastest of `reps` timed runs after two warm-ups, in milliseconds: on a shared
// machine the minimum is the least disturbed by other processes.
double time_ms(const std::function<void()>& fn, int reps = 15) {
  fn(), fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return *std::min_element(t.begin(), t.end());
}

void report(const std::string& name, const LinearOperator& op, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  auto y = op.forward(x);
  const double apply = time_ms([&] { op.forward(x); });
  const double prox = time_ms([&] { op.prox(x, y, 0.5); });
  std::printf("%s %.3f %.3f\n", name.c_str(), apply, prox);
}
}  // namespace

int main() {
  torch::manual_seed(0);
  const int64_t H = 256, W = 256;
  auto x = torch::rand({8, 3, H, W}) * 2 - 1;
  report("gaussian_blur_circular", CircularBlur(gaussian_kernel(5, std::sqrt(3.0)), H, W), x);
  report("sr4_bicubic", Downsampling(sr_filter("bicubic", 4), 4, H, W), x);
  report("inpainting_random", Inpainting(random_mask(H, W, 0.7, 0)), x);
  return 0;
}
