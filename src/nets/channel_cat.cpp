#include "nets/channel_cat.hpp"

#ifdef UD2M_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "nets/cuda_kernels.hpp"
#include "nets/fused_path.hpp"
#endif

namespace ud2m::nets {

#ifdef UD2M_WITH_CUDA_KERNELS
namespace {

// Dense channels-last GPU tensors of one dtype and pixel grid, where a fused
// kernel may take them (the composed cat has the backward).
bool copies_whole_pixels(const torch::Tensor& a, const torch::Tensor& b) {
  auto channels_last = [](const torch::Tensor& t) {
    return t.is_cuda() && t.dim() == 4 && t.is_contiguous(torch::MemoryFormat::ChannelsLast);
  };
  return fused_kernels_may_take({a, b}) && channels_last(a) && channels_last(b) && a.scalar_type() == b.scalar_type() &&
         a.device() == b.device() && a.size(0) == b.size(0) && a.size(2) == b.size(2) && a.size(3) == b.size(3);
}

}  // namespace
#endif

torch::Tensor cat_channels(const torch::Tensor& a, const torch::Tensor& b) {
#ifdef UD2M_WITH_CUDA_KERNELS
  if (copies_whole_pixels(a, b)) {
    const c10::cuda::CUDAGuard guard(a.device());
    auto y = torch::empty({a.size(0), a.size(1) + b.size(1), a.size(2), a.size(3)},
                          a.options().memory_format(torch::MemoryFormat::ChannelsLast));
    cuda::cat_pixels(a.data_ptr(), b.data_ptr(), y.data_ptr(), a.size(0) * a.size(2) * a.size(3),
                     a.size(1) * a.element_size(), b.size(1) * b.element_size(),
                     c10::cuda::getCurrentCUDAStream(a.device().index()).stream());
    return y;
  }
#endif
  return torch::cat({a, b}, 1);
}

}  // namespace ud2m::nets
