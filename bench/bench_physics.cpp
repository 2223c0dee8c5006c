// Operator apply (A) and prox times on a batch of 8×3×256×256, printed one
// line per operator: "name apply_ms prox_ms". bench/physics.sh runs this and
// bench/bench_physics.py (deepinv, same inputs and sizes) and prints ratios.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>

#include "fastest_time.hpp"
#include "physics/blur.hpp"
#include "physics/downsampling.hpp"
#include "physics/inpainting.hpp"
#include "physics/kernels.hpp"

using namespace ud2m::physics;

namespace {
using ud2m::bench::time_ms;

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
