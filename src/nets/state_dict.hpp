// Loading published weights into a module by name, with one clear error that
// lists the first missing, unexpected and mis-shaped tensors.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>

#include "io/safetensors.hpp"

namespace ud2m::nets {

// Copies `weights` into the module's parameters and buffers (converting dtype);
// throws Error naming `source` unless names and shapes match exactly.
void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const std::string& source);
// The same with the values read one tensor at a time: `layout` names the
// tensors and their shapes (values unused), `read` fetches one.
void load_state_dict(torch::nn::Module& module, const TensorMap& layout,
                     const std::function<torch::Tensor(const std::string&)>& read, const std::string& source);

TensorMap state_dict(const torch::nn::Module& module);

// " missing 3 tensors: a, b, c; 1 unexpected tensors: d" — the first few of
// each kind, for load errors; "" when all lists are empty.
std::string describe_mismatch(const std::vector<std::string>& missing, const std::vector<std::string>& unexpected,
                              const std::vector<std::string>& misshaped);

// Number of consecutive child blocks "prefix.0.", "prefix.1.", ... in `weights`
// (for recovering a config from a checkpoint's names).
int count_children(const TensorMap& weights, const std::string& prefix);

}  // namespace ud2m::nets
