// Images of any size for networks that need sides divisible by 2^levels: x_t
// is reflect-padded up to the next multiple (the padding continues the
// picture and its noise) and ε cropped back, so every sampler, the unrolled
// UD2M blocks and `denoise` take a photo as it comes.
#pragma once
#include <torch/torch.h>

#include "diffusion/denoiser.hpp"

namespace ud2m::diffusion {

// Pads the last two dimensions at the bottom and right up to multiples of
// `multiple` (reflect where the side allows it, else replicate).
inline torch::Tensor pad_to_multiple(const torch::Tensor& x, int64_t multiple) {
  namespace F = torch::nn::functional;
  const int64_t h = x.size(-2), w = x.size(-1);
  const int64_t pad_h = (multiple - h % multiple) % multiple, pad_w = (multiple - w % multiple) % multiple;
  if (pad_h == 0 && pad_w == 0) return x;
  auto options = F::PadFuncOptions({0, pad_w, 0, pad_h});
  if (pad_h < h && pad_w < w)
    options.mode(torch::kReflect);
  else
    options.mode(torch::kReplicate);
  return F::pad(x, options);
}

// The top-left h × w of x (undoes pad_to_multiple).
inline torch::Tensor crop_to(const torch::Tensor& x, int64_t h, int64_t w) {
  return x.narrow(-2, 0, h).narrow(-1, 0, w);
}

class PaddedDenoiser : public Denoiser {
 public:
  PaddedDenoiser(DenoiserPtr inner, int64_t multiple) : inner_(std::move(inner)), multiple_(multiple) {}
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override {
    return crop_to(inner_->epsilon(pad_to_multiple(x_t, multiple_), t), x_t.size(-2), x_t.size(-1));
  }
  const Schedule& schedule() const override { return inner_->schedule(); }
  bool capturable_in_cuda_graph() const override { return inner_->capturable_in_cuda_graph(); }

 private:
  DenoiserPtr inner_;
  int64_t multiple_;
};

}  // namespace ud2m::diffusion
