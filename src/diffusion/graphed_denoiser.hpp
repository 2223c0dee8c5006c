// A denoiser whose ε is replayed from a CUDA graph. At batch 1 a U-Net pass on
// a GPU is hundreds of small kernels, and launching them one by one costs more
// than running them (REFERENCES.md: ADM-256 takes 39 ms eager in bf16 on an
// H100, 9.3 ms compiled and graphed). The first call for an input shape
// warms the network up and captures one pass; later calls copy their inputs
// into the captured buffers and replay it. Inputs on the CPU, calls that need
// gradients (DPS) and networks that cannot be captured call straight through.
#pragma once
#include <memory>

#include "diffusion/denoiser.hpp"

namespace ud2m::diffusion {

class GraphedDenoiser : public Denoiser {
 public:
  explicit GraphedDenoiser(DenoiserPtr inner);
  ~GraphedDenoiser() override;
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  const Schedule& schedule() const override { return inner_->schedule(); }
  // Whether the last epsilon() call was a replay.
  bool replayed() const { return replayed_; }

 private:
  struct Graph;  // keeps the CUDA headers out of this one
  void capture(const torch::Tensor& x_t, const torch::Tensor& t);

  DenoiserPtr inner_;
  std::unique_ptr<Graph> graph_;
  bool replayed_ = false;
};

}  // namespace ud2m::diffusion
