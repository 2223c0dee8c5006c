// Gaussian (and uniform) noise from a CPU generator, delivered on any device: the same seed
// gives the same numbers on the CPU and on a GPU, and one generator type
// serves every sampler and trainer.
#pragma once
#include <torch/torch.h>

namespace ud2m {

inline torch::Tensor gaussian(at::IntArrayRef sizes, torch::Generator& rng,
                              const torch::TensorOptions& options = torch::kFloat32) {
  auto cpu = at::randn(sizes, rng, options.device(torch::kCPU));
  return options.device().is_cpu() ? cpu : cpu.to(options.device(), /*non_blocking=*/true);
}

// U[0, 1), likewise.
inline torch::Tensor uniform(at::IntArrayRef sizes, torch::Generator& rng,
                             const torch::TensorOptions& options = torch::kFloat32) {
  auto cpu = at::rand(sizes, rng, options.device(torch::kCPU));
  return options.device().is_cpu() ? cpu : cpu.to(options.device(), /*non_blocking=*/true);
}

}  // namespace ud2m
