// Large images in overlapping tiles. A U-Net's self-attention is global: on a
// 1200×800 photo the shipped prior attends over 60,000 positions at its
// 1/4-resolution level, and those attention layers cost several times more
// than all its convolutions (a 9-NFE UD2M restore took 22 minutes on 2
// cores). A prior trained on 64×64 crops never used context that wide anyway.
// TiledDenoiser runs the network on overlapping tile × tile windows (batched)
// and blends their ε with weights that fall linearly to the tile edges over
// the overlap, so every pixel takes its value mostly from the tiles where it
// lies away from the edge. Images of at most 4·tile² pixels go through whole:
// there the tiles' overlap would cost more than the attention they save
// (measured: a 256² image runs faster whole, a 512² one 2× faster in 128² tiles).
#pragma once
#include <vector>

#include "diffusion/denoiser.hpp"

namespace ud2m::diffusion {

class TiledDenoiser : public Denoiser {
 public:
  // tile: a multiple of the network's size multiple; 0 < overlap < tile;
  // batch: tiles per network call.
  TiledDenoiser(DenoiserPtr inner, int64_t tile, int64_t overlap, int64_t batch = 4);
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  const Schedule& schedule() const override { return inner_->schedule(); }
  bool capturable_in_cuda_graph() const override { return inner_->capturable_in_cuda_graph(); }

  // Tile origins along one side of `size` pixels: 0, stride, ..., size − tile.
  std::vector<int64_t> origins(int64_t size) const;

 private:
  DenoiserPtr inner_;
  int64_t tile_, overlap_, batch_;
};

}  // namespace ud2m::diffusion
