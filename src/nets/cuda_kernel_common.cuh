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

// Whether loops in units of `unit_bytes` apply: every tensor aligned to the
// unit, every row (of these byte sizes) whole units.
inline bool in_whole_units(int64_t unit_bytes, std::initializer_list<int64_t> row_bytes,
                           std::initializer_list<const void*> tensors) {
  for (const void* p : tensors)
    if (reinterpret_cast<uintptr_t>(p) % unit_bytes != 0) return false;
  for (const int64_t bytes : row_bytes)
    if (bytes % unit_bytes != 0) return false;
  return true;
}

// Whether the 16-byte loops over bf16 rows of `row_length` values apply.
inline bool vectorisable(int64_t row_length, std::initializer_list<const void*> tensors) {
  return in_whole_units(kVector * sizeof(__nv_bfloat16), {row_length * int64_t(sizeof(__nv_bfloat16))}, tensors);
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
