#include "nets/residual_add.hpp"

#include "nets/fused_path.hpp"

#ifdef UD2M_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "nets/cuda_kernels.hpp"
#endif

namespace ud2m::nets {

bool fused_residual_add_applies(const torch::Tensor& x) {
#ifdef UD2M_WITH_CUDA_KERNELS
  return x.is_cuda() && x.scalar_type() == torch::kBFloat16 && x.dim() == 4 && fused_kernels_may_take({x});
#else
  (void)x;
  return false;
#endif
}

namespace {

#ifdef UD2M_WITH_CUDA_KERNELS
bool fusable(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias1, const torch::Tensor& bias2) {
  if (!fused_residual_add_applies(a) || !fused_residual_add_applies(b) || a.sizes() != b.sizes()) return false;
  const bool nchw = a.is_contiguous() && b.is_contiguous();
  const bool nhwc = a.is_contiguous(torch::MemoryFormat::ChannelsLast) && b.is_contiguous(torch::MemoryFormat::ChannelsLast);
  auto per_channel = [&](const torch::Tensor& t) {
    return !t.defined() || (t.dim() == 1 && t.size(0) == a.size(1) && t.is_contiguous() && t.device() == a.device() &&
                            (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16) &&
                            !(torch::GradMode::is_enabled() && t.requires_grad()));
  };
  return (nchw || nhwc) && per_channel(bias1) && per_channel(bias2);
}

cuda::ChannelValues values_of(const torch::Tensor& bias) {
  if (!bias.defined()) return {};
  return {bias.data_ptr(), bias.scalar_type() == torch::kBFloat16, 0};
}
#endif

}  // namespace

torch::Tensor residual_add(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias1,
                           const torch::Tensor& bias2) {
#ifdef UD2M_WITH_CUDA_KERNELS
  if (fusable(a, b, bias1, bias2)) {
    const c10::cuda::CUDAGuard guard(a.device());
    const bool channels_last = !a.is_contiguous();
    const cuda::Activations shape{a.size(0), a.size(1), a.size(2) * a.size(3),
                                  channels_last ? cuda::Layout::kChannelsLast : cuda::Layout::kChannelsFirst};
    auto y = torch::empty_like(a);
    cuda::residual_add_bf16(a.data_ptr(), b.data_ptr(), y.data_ptr(), shape, values_of(bias1), values_of(bias2),
                            c10::cuda::getCurrentCUDAStream(a.device().index()).stream());
    return y;
  }
#endif
  auto y = a + b;  // a first: the sum takes a's memory layout
  for (const auto& bias : {bias1, bias2})
    if (bias.defined()) y = y + bias.to(y.scalar_type()).view({1, -1, 1, 1});
  return y;
}

}  // namespace ud2m::nets
