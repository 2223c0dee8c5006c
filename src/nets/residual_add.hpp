// The sum that closes a residual block, skip + h + the biases of the
// convolutions that produced them — one pass on a GPU for bf16 activations
// (nets/residual_add.cu), where PyTorch adds each convolution's bias in a pass
// of its own and then the sum.
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

// Whether residual_add runs the fused kernel for activations like x (bf16 on
// a GPU, outside autograd and ComposedOpsOnly): only then is it worth leaving
// the biases out of the convolutions (on the CPU they cost nothing there).
bool fused_residual_add_applies(const torch::Tensor& x);

// a + b + bias1 + bias2, the biases per channel ((C), either undefined).
torch::Tensor residual_add(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias1,
                           const torch::Tensor& bias2 = {});

}  // namespace ud2m::nets
