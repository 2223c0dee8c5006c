// Activation recomputation ("gradient checkpointing"): y = f(x) computed
// without keeping f's intermediate activations; the backward pass runs f
// again, with gradients, and backpropagates through that. Memory: only x is
// kept, at the cost of a second forward of f. The parameters f uses receive
// their gradients (accumulated into .grad) during that inner backward, so
// they need not be passed in. f must be deterministic (eval mode, no dropout);
// the autocast state of the forward is restored for the recomputation.
#pragma once
#include <torch/torch.h>

#include <functional>

namespace ud2m::nets {

torch::Tensor recompute_in_backward(std::function<torch::Tensor(const torch::Tensor&)> f, const torch::Tensor& x);

}  // namespace ud2m::nets
