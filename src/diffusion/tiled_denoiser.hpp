// Large images in overlapping tiles. A U-Net's self-attention is global: on a
// 1200×800 photo the shipped prior attends over 60,000 positions at its
// 1/4-resolution level, and those attention layers cost several times more
// than all its convolutions (a 9-NFE UD2M restore took 22 minutes on 2
// cores). A prior trained on 64×64 crops never used context that wide anyway.
// The network runs on overlapping tile × tile windows (batched) and their
// outputs are blended with weights that fall linearly to the tile edges over
// the overlap, so every pixel takes its value mostly from the tiles where it
// lies away from the edge. Images of at most 4·tile² pixels go through whole:
// there the tiles' overlap would cost more than the attention they save
// (measured: a 256² image runs faster whole, a 512² one 2× faster in 128² tiles).
#pragma once
#include <functional>
#include <vector>

#include "diffusion/denoiser.hpp"

namespace ud2m::diffusion {

struct Tiling {
  int64_t tile = 128, overlap = 16;  // 0 < overlap < tile
  int64_t batch = 4;                 // tiles per network call

  // Tile origins along one side of `size` pixels: 0, ..., size − tile, as few
  // as keep neighbours overlapping by at least `overlap`, evenly spread.
  std::vector<int64_t> origins(int64_t size) const;
  bool applies_to(const torch::Tensor& x) const { return x.size(-2) * x.size(-1) > 4 * tile * tile; }
  void check() const;  // one clear error for settings the tiling cannot use
};

// network(tiles, copies): the network on a batch of tiles, `copies` tiles of
// x's batch concatenated along dimension 0 (so per-image inputs such as
// timesteps repeat `copies` times); its output has the tiles' batch and
// sides (any channels).
using TileNetwork = std::function<torch::Tensor(const torch::Tensor& tiles, int64_t copies)>;
// The network's output over the whole of x, blended from its tiles
// (differentiable: DPS takes gradients through it).
torch::Tensor run_in_tiles(const torch::Tensor& x, const Tiling& tiling, const TileNetwork& network);

class TiledDenoiser : public Denoiser {
 public:
  TiledDenoiser(DenoiserPtr inner, Tiling tiling);
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  const Schedule& schedule() const override { return inner_->schedule(); }
  bool capturable_in_cuda_graph() const override { return inner_->capturable_in_cuda_graph(); }

 private:
  DenoiserPtr inner_;
  Tiling tiling_;
};

}  // namespace ud2m::diffusion
