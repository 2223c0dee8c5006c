// AdamW whose step is one fused call per parameter group (PyTorch's
// _fused_adamw_: one pass over each tensor on the CPU, a few multi-tensor
// kernels on a GPU), where LibTorch's AdamW issues ~9 operations per
// parameter tensor. An NCVSD step updates ~770 tensors, so that was ~7,000
// operator calls (on a GPU, kernel launches) per step for the optimizer alone.
//
// It keeps LibTorch's AdamW state (AdamWParamState: step, exp_avg,
// exp_avg_sq), so checkpoints save and load it as before (adam_state.hpp),
// and the same update: decoupled weight decay, bias-corrected moments.
#pragma once
#include <torch/torch.h>

namespace ud2m::train {

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  // Closures and amsgrad are not supported (no trainer uses them).
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace ud2m::train
