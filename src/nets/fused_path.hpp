// When our fused kernels may stand in for PyTorch's ops. They have no
// backward, so they run only where autograd records nothing, and never while
// a ComposedOpsOnly lives. Each caller adds its own device, dtype and layout
// conditions (nets/fp32_group_norm.cpp, residual_add.cpp, channel_cat.cpp).
#pragma once
#include <initializer_list>

#include <torch/torch.h>

namespace ud2m::nets {

// While one lives on this thread, the fused paths are off: every op runs as
// PyTorch's composed ops. Activation recomputation (nets/recompute.cpp) runs a
// network once without autograd and again with it: both runs must compute the
// same values, or the gradients belong to a slightly different forward.
class ComposedOpsOnly {
 public:
  ComposedOpsOnly();
  ~ComposedOpsOnly();
  static bool active();  // on this thread
  ComposedOpsOnly(const ComposedOpsOnly&) = delete;
  ComposedOpsOnly& operator=(const ComposedOpsOnly&) = delete;

 private:
  bool previous_;
};

// Whether a fused kernel may take these inputs (undefined ones ignored):
// no ComposedOpsOnly on this thread, and none of them needs a gradient.
bool fused_kernels_may_take(std::initializer_list<torch::Tensor> inputs);

}  // namespace ud2m::nets
