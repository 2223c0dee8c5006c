// A denoiser whose network runs on another device (a GPU) while the caller —
// a sampler, its operator, the unrolled UD2M blocks — stays on the CPU: each
// ε call moves x_t and t there and the result back (~1 MB at 256², against a
// network pass of tens of GFLOP). Gradients flow through the moves (DPS).
#pragma once
#include "diffusion/denoiser.hpp"

namespace ud2m::diffusion {

class OffloadedDenoiser : public Denoiser {
 public:
  OffloadedDenoiser(DenoiserPtr inner, torch::Device device) : inner_(std::move(inner)), device_(device) {}
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override {
    return inner_->epsilon(x_t.to(device_), t.to(device_)).to(x_t.device());
  }
  const Schedule& schedule() const override { return inner_->schedule(); }

 private:
  DenoiserPtr inner_;
  torch::Device device_;
};

}  // namespace ud2m::diffusion
