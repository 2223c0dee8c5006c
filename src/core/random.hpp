// Gaussian (and uniform) noise from a CPU generator, delivered on any device: the same seed
// gives the same numbers on the CPU and on a GPU, and one generator type
// serves every sampler and trainer.
#pragma once
#include <torch/torch.h>

namespace ud2m {

// Numbers drawn on the CPU, moved to where `options` asks.
inline torch::Tensor on_device(const torch::Tensor& cpu, const torch::TensorOptions& options) {
  return options.device().is_cpu() ? cpu : cpu.to(options.device(), /*non_blocking=*/true);
}

inline torch::Tensor gaussian(at::IntArrayRef sizes, torch::Generator& rng,
                              const torch::TensorOptions& options = torch::kFloat32) {
  return on_device(at::randn(sizes, rng, options.device(torch::kCPU)), options);
}

// U[0, 1), likewise.
inline torch::Tensor uniform(at::IntArrayRef sizes, torch::Generator& rng,
                             const torch::TensorOptions& options = torch::kFloat32) {
  return on_device(at::rand(sizes, rng, options.device(torch::kCPU)), options);
}

}  // namespace ud2m
