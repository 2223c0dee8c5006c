// LoRA (Hu et al. 2021): a linear map W becomes W + s·B·A with A (r × in),
// B (out × r) and s = α/r. B starts at zero, so an adapted network computes
// exactly what its base does until training moves B; the base weights are
// never copied or changed.
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

struct LoraOptions {
  int rank = 5;
  double alpha = 1.5;  // scale α/r = 1.5/5, as published for UD2M
  double scale() const { return alpha / rank; }
};

class LoraImpl : public torch::nn::Module {
 public:
  LoraImpl(int64_t in, int64_t out, const LoraOptions& options);
  // The update s·B·A·x for x (N, in, T) (a 1×1 Conv1d's input) ...
  torch::Tensor channels_first(const torch::Tensor& x) const;
  // ... and for x (..., in) (a Linear's input).
  torch::Tensor channels_last(const torch::Tensor& x) const;

  torch::Tensor A, B;

 private:
  double scale_;
};
TORCH_MODULE(Lora);

}  // namespace ud2m::nets
