// Inference in another precision: a module's weights cast to `dtype` (bf16:
// ~1.9× faster convolutions on CPUs with AVX-512 bf16), 4-D ones channels-last
// if asked. For networks whose activations follow their weights' dtype (ADM,
// DDPM; GroupNorm still computes in fp32).
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

inline void cast_for_inference(torch::nn::Module& module, torch::ScalarType dtype, bool channels_last) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    auto data = p.to(dtype);
    if (channels_last && data.dim() == 4) data = data.contiguous(torch::MemoryFormat::ChannelsLast);
    p.set_data(data);
  }
}

}  // namespace ud2m::nets
