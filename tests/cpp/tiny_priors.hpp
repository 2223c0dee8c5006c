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

}  // namespace ud2m::test
