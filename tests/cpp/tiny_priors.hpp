// Tiny random priors (16×16 networks) for the tests that need a real network
// but not a trained one; the seed fixes the weights.
#pragma once
#include <torch/torch.h>

#include <memory>

#include "diffusion/prior.hpp"

namespace ud2m::test {

inline std::shared_ptr<diffusion::AdmPrior> tiny_adm(uint64_t seed = 0) {
  torch::manual_seed(seed);
  return std::make_shared<diffusion::AdmPrior>(nets::AdmConfig::preset("tiny-16"), diffusion::Schedule::linear());
}

inline std::shared_ptr<diffusion::DdpmPrior> tiny_ddpm() {
  torch::manual_seed(0);
  nets::DdpmConfig c;
  c.block_out_channels = {32, 32};
  c.layers_per_block = 1;
  c.attention = {false, true};
  c.norm_num_groups = 8;
  return std::make_shared<diffusion::DdpmPrior>(c, diffusion::Schedule::linear(), 16);
}

// An unconditional EDM2 network of the golden tests' size with every weight
// random, gains included (EDM2 starts its output gain at zero, which would make
// a fresh network the identity c_skip·x).
inline std::shared_ptr<diffusion::Edm2Prior> tiny_edm2(uint64_t seed = 0) {
  torch::manual_seed(seed);
  nets::Edm2Config c;
  c.img_resolution = 16;
  c.model_channels = 16;
  c.channel_mult = {1, 2, 2};
  c.num_blocks = 1;
  c.attn_resolutions = {8};
  c.channels_per_head = 16;
  auto prior = std::make_shared<diffusion::Edm2Prior>(c, diffusion::Schedule::linear());
  torch::NoGradGuard no_grad;
  for (auto& p : prior->net()->parameters()) p.normal_(0, 0.5);
  return prior;
}

}  // namespace ud2m::test
