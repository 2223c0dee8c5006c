// Exponential moving average of a model's weights, as the trainers keep it.
#pragma once
#include <torch/torch.h>

#include <algorithm>

#include "core/error.hpp"

namespace ud2m::train {

// ema ← d·ema + (1 − d)·model with d = min(max_decay, (1 + step)/(10 + step)):
// the warm-up keeps early EMA weights from being dominated by where they started.
// One fused call (on a GPU a few multi-tensor kernels, not two per tensor).
inline void update_ema(torch::nn::Module& ema, torch::nn::Module& model, double max_decay, int64_t step) {
  torch::NoGradGuard no_grad;
  const double decay = std::min(max_decay, (1.0 + step) / (10.0 + step));
  auto src = model.parameters(), dst = ema.parameters();
  UD2M_CHECK(src.size() == dst.size(), "an EMA of {} tensors for a model of {}", dst.size(), src.size());
  for (auto& t : src) t = t.detach();
  at::_foreach_lerp_(dst, src, 1 - decay);
}

}  // namespace ud2m::train
