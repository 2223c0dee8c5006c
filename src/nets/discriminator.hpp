// UD2M's conditional discriminator D(x, y↑): the image and the measurement
// brought to image space, concatenated (6 channels); conv 3×3 → 32, then five
// [avg-pool 2 → conv 3×3 → InstanceNorm → LeakyReLU(0.2)] stages with
// 64, 128, 256, 128, 64 channels; flatten → linear → one logit (no sigmoid:
// the losses take logits). A stage whose map is 1×1 (the last one at 32²)
// uses GroupNorm with one group instead (same parameters): InstanceNorm there
// maps everything to its bias, which made the whole discriminator a constant
// (PyTorch refuses it in training).
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

class DiscriminatorImpl : public torch::nn::Module {
 public:
  // image_size: side of the square inputs (a multiple of 32).
  DiscriminatorImpl(int64_t image_size, int64_t image_channels = 3);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& y_up);

 private:
  torch::nn::Sequential features{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(Discriminator);

}  // namespace ud2m::nets
