// The compute device a command runs on, from its --device flag.
#pragma once
#include <torch/types.h>

#include <string>

namespace ud2m {

// "cpu", "cuda" or "cuda:N"; a clear error for anything else, and for a GPU
// that this machine or this build of LibTorch does not have.
torch::Device parse_device(const std::string& name);

}  // namespace ud2m
