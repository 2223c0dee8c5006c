// The compute device a command runs on, from its --device flag.
#pragma once
#include <torch/types.h>

#include <string>

namespace ud2m {

// "cpu", "cuda" or "cuda:N"; a clear error for anything else, and for a GPU
// that this machine or this build of LibTorch does not have.
torch::Device parse_device(const std::string& name);

// Whether bf16 convolutions and matmuls are fast here: on a GPU, and on x86
// CPUs with AVX-512 (BW, VL, DQ), where oneDNN has bf16 kernels. Elsewhere
// PyTorch runs CPU bf16 convolutions as reference loops, ~50x slower than fp32.
bool has_fast_bf16(const torch::Device& device);

// Waits for the device's queued work (a no-op on the CPU), e.g. before timing.
void synchronize(const torch::Device& device);

// The most memory the caching allocator has held for tensors on this GPU so
// far, in MiB (0 on the CPU).
double peak_device_memory_mib(const torch::Device& device);

}  // namespace ud2m
