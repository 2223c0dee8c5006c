// [a | b] per pixel for channels-last tensors of any dtype: each output row
// (one pixel's channels) is a's row then b's. Rows of whole 16-byte units
// (ADM's bf16 channels: multiples of 8) copy a unit per thread; otherwise
// 4-byte or single-byte units, as the row sizes and alignment allow.
#include <algorithm>
#include <cstdint>

#include "nets/cuda_kernel_common.cuh"

namespace ud2m::nets::cuda {
namespace {

template <typename Unit>
__global__ void cat_pixels_kernel(const Unit* a, const Unit* b, Unit* y, int64_t pixels, int64_t units_a,
                                  int64_t units_b) {
  const int64_t row = units_a + units_b, total = pixels * row;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pixel = i / row, k = i % row;
    y[i] = k < units_a ? a[pixel * units_a + k] : b[pixel * units_b + (k - units_a)];
  }
}

template <typename Unit>
void launch(const void* a, const void* b, void* y, int64_t pixels, int64_t bytes_a, int64_t bytes_b,
            cudaStream_t on) {
  const int64_t units_a = bytes_a / sizeof(Unit), units_b = bytes_b / sizeof(Unit);
  const int64_t total = pixels * (units_a + units_b);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, 4096));
  cat_pixels_kernel<Unit><<<blocks, kThreads, 0, on>>>(static_cast<const Unit*>(a), static_cast<const Unit*>(b),
                                                       static_cast<Unit*>(y), pixels, units_a, units_b);
}

}  // namespace

void cat_pixels(const void* a, const void* b, void* y, int64_t pixels, int64_t bytes_a, int64_t bytes_b,
                void* stream) {
  const auto on = static_cast<cudaStream_t>(stream);
  if (in_whole_units(sizeof(uint4), {bytes_a, bytes_b}, {a, b, y}))
    launch<uint4>(a, b, y, pixels, bytes_a, bytes_b, on);
  else if (in_whole_units(sizeof(uint32_t), {bytes_a, bytes_b}, {a, b, y}))
    launch<uint32_t>(a, b, y, pixels, bytes_a, bytes_b, on);
  else
    launch<uint8_t>(a, b, y, pixels, bytes_a, bytes_b, on);
  check_launch("channel concatenation kernel");
}

}  // namespace ud2m::nets::cuda
