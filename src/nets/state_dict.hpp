// Loading published weights into a module by name, with one clear error that
// lists the first missing, unexpected and mis-shaped tensors.
#pragma once
#include <torch/torch.h>

#include <string>

#include "io/safetensors.hpp"

namespace ud2m::nets {

// Copies `weights` into the module's parameters and buffers (converting dtype);
// throws Error naming `source` unless names and shapes match exactly.
void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const std::string& source);

TensorMap state_dict(const torch::nn::Module& module);

}  // namespace ud2m::nets
