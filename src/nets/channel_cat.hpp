// The concatenation of a U-Net's decoder input with its skip connection along
// channels, torch::cat({a, b}, 1). For channels-last tensors on a GPU each
// output pixel is a's pixel then b's, both contiguous: one kernel copies them
// in 16-byte units (nets/channel_cat.cu), where PyTorch's cat takes a strided
// path for a dimension that is not the outermost in memory.
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

torch::Tensor cat_channels(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace ud2m::nets
