// LoRA (Hu et al. 2021): a linear map W becomes W + s·B·A with A (r × in),
// B (out × r) and s = α/r. B starts at zero, so an adapted network computes
// exactly what its base does until training moves B; the base weights are
// never copied or changed.
#pragma once
#include <torch/torch.h>

#include <string>

namespace ud2m::nets {

struct LoraOptions {
  int rank = 5;
  double alpha = 1.5;  // scale α/r = 1.5/5, as published for UD2M
  // Where: "attention" (as published: ADM qkv/proj_out, DDPM q/k/v/out) or
  // "attention+resblocks" (also both 3×3 convolutions of every residual block).
  std::string placement = "attention";
  double scale() const { return alpha / rank; }
  bool on_resblocks() const;  // checks the placement's name
};

class LoraImpl : public torch::nn::Module {
 public:
  LoraImpl(int64_t in, int64_t out, const LoraOptions& options);
  // The update s·B·A·x for x (N, in, T) (a 1×1 Conv1d's input) ...
  torch::Tensor channels_first(const torch::Tensor& x) const;
  // ... and for x (..., in) (a Linear's input).
  torch::Tensor channels_last(const torch::Tensor& x) const;
  torch::Tensor weight_update() const;  // s·B·A (out × in)

  torch::Tensor A, B;

 private:
  double scale_;
};
TORCH_MODULE(Lora);

// The same for a 3×3 convolution (stride 1, padding 1): A is a 3×3 conv to r
// channels, B a 1×1 conv back, B zero at the start.
class ConvLoraImpl : public torch::nn::Module {
 public:
  ConvLoraImpl(int64_t in, int64_t out, const LoraOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;  // the update, added to the conv's output
  torch::Tensor weight_update() const;  // the same as one 3×3 kernel: s·B∘A (out × in × 3 × 3)

  torch::Tensor A, B;

 private:
  double scale_;
};
TORCH_MODULE(ConvLora);

// For restoring: folds the update of `lora` (registered in `owner` as `name`)
// into the base `weight` it adapts and removes it, so an adapted network runs
// as fast as its base. Nothing can be trained or saved afterwards.
void fold_lora(torch::nn::Module& owner, const std::string& name, torch::Tensor weight, Lora& lora);
void fold_lora(torch::nn::Module& owner, const std::string& name, torch::Tensor weight, ConvLora& lora);

// conv(x), plus lora(x) when there is one; without conv's bias if asked (for
// a GroupNorm that adds it: Fp32GroupNormImpl::forward_silu's input_bias).
torch::Tensor with_lora(torch::nn::Conv2dImpl& conv, const ConvLora& lora, const torch::Tensor& x,
                        bool with_bias = true);

}  // namespace ud2m::nets
