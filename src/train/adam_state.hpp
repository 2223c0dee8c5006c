// AdamW's per-parameter moments as checkpoint tensors ("<prefix>exp_avg.<name>",
// "<prefix>exp_avg_sq.<name>") and back, for exact resume.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.hpp"

namespace ud2m::train {

using NamedParameters = std::vector<std::pair<std::string, torch::Tensor>>;

NamedParameters named(torch::nn::Module& module);

// Returns Adam's step count (shared by all parameters).
int64_t save_adam_state(torch::optim::AdamW& optimizer, const NamedParameters& parameters, const std::string& prefix,
                        TensorMap& out);
void load_adam_state(torch::optim::AdamW& optimizer, const NamedParameters& parameters, const std::string& prefix,
                     const TensorMap& in, int64_t step);

}  // namespace ud2m::train
