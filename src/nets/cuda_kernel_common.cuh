// What our .cu kernels share: the 16-byte vector unit, reading per-channel
// values in place, and the launch check.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "nets/cuda_kernels.hpp"

namespace ud2m::nets::cuda {

constexpr int kThreads = 256;

// Eight bf16 values in one 16-byte load or store: the vectorised loops'
// unit, where rows of contiguous elements hold a multiple of eight and the
// tensors are 16-byte aligned (decided per call, see vectorisable()).
constexpr int kVector = 8;

// Whether the 16-byte loops apply: rows of whole vectors, aligned tensors.
inline bool vectorisable(int64_t row_length, std::initializer_list<const void*> tensors) {
  for (const void* p : tensors)
    if (reinterpret_cast<uintptr_t>(p) % (kVector * 2) != 0) return false;
  return row_length % kVector == 0;
}

// Value (b, c) of per-channel values, `absent` where there are none.
inline __device__ float value_at(const ChannelValues& v, int64_t b, int64_t c, float absent) {
  if (v.data == nullptr) return absent;
  const int64_t i = b * v.batch_stride + c;
  return v.bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(v.data)[i]) : static_cast<const float*>(v.data)[i];
}

// Throws with `what` if the last launch failed.
inline void check_launch(const char* what) {
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

}  // namespace ud2m::nets::cuda
