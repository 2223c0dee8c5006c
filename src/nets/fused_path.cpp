#include "nets/fused_path.hpp"

namespace ud2m::nets {
namespace {
thread_local bool composed_ops_only = false;
}  // namespace

ComposedOpsOnly::ComposedOpsOnly() : previous_(composed_ops_only) { composed_ops_only = true; }
ComposedOpsOnly::~ComposedOpsOnly() { composed_ops_only = previous_; }
bool ComposedOpsOnly::active() { return composed_ops_only; }

bool fused_kernels_may_take(std::initializer_list<torch::Tensor> inputs) {
  if (composed_ops_only) return false;
  if (!torch::GradMode::is_enabled()) return true;
  for (const auto& t : inputs)
    if (t.defined() && t.requires_grad()) return false;
  return true;
}

}  // namespace ud2m::nets
