// The one interface every sampler calls a prior through, whatever the network
// predicts: ε at a discrete timestep, and from it x0 estimates and scores.
#pragma once
#include <torch/torch.h>

#include <memory>

#include "diffusion/schedule.hpp"

namespace ud2m::diffusion {

class Denoiser {
 public:
  virtual ~Denoiser() = default;
  // ε̂(x_t, t) for VP-scaled x_t (N, C, H, W) and timesteps t (N,).
  virtual torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) = 0;
  virtual const Schedule& schedule() const = 0;
  // Whether one ε call can be recorded into a CUDA graph and replayed: no
  // host syncs, no host-side tensors (GraphedDenoiser).
  virtual bool capturable_in_cuda_graph() const { return false; }

  // x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t at one timestep for the whole batch.
  torch::Tensor x0(const torch::Tensor& x_t, int t);
  // ∇ log p_t(x_t) = −ε̂/√(1−ᾱ_t).
  torch::Tensor score(const torch::Tensor& x_t, int t);
  // Plain denoising of x = x0 + σ·n (σ in model units): scale to the nearest
  // timestep's VP level and return x̂0 — deepinv's DiffUNet denoiser mode.
  torch::Tensor denoise(const torch::Tensor& x, double sigma);

  torch::Tensor timesteps(int t, const torch::Tensor& like) const;
};

using DenoiserPtr = std::shared_ptr<Denoiser>;

}  // namespace ud2m::diffusion
