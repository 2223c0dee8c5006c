#include "train/adam_state.hpp"

namespace ud2m::train {

NamedParameters named(torch::nn::Module& module) {
  NamedParameters out;
  for (auto& item : module.named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

int64_t save_adam_state(torch::optim::AdamW& optimizer, const NamedParameters& parameters, const std::string& prefix,
                        TensorMap& out) {
  int64_t step = 0;
  for (auto& [name, p] : parameters) {
    auto it = optimizer.state().find(p.unsafeGetTensorImpl());
    if (it == optimizer.state().end()) continue;
    auto& state = static_cast<torch::optim::AdamWParamState&>(*it->second);
    out[prefix + "exp_avg." + name] = state.exp_avg();
    out[prefix + "exp_avg_sq." + name] = state.exp_avg_sq();
    step = state.step();
  }
  return step;
}

void load_adam_state(torch::optim::AdamW& optimizer, const NamedParameters& parameters, const std::string& prefix,
                     const TensorMap& in, int64_t step) {
  for (auto& [name, p] : parameters) {
    auto key = prefix + "exp_avg." + name;
    if (!in.count(key)) continue;
    auto state = std::make_unique<torch::optim::AdamWParamState>();
    // Copies on the parameter's device: a checkpoint is read onto the CPU.
    state->exp_avg(in.at(key).to(p.device(), /*non_blocking=*/false, /*copy=*/true));
    state->exp_avg_sq(in.at(prefix + "exp_avg_sq." + name).to(p.device(), false, true));
    state->step(step);
    optimizer.state()[p.unsafeGetTensorImpl()] = std::move(state);
  }
}

}  // namespace ud2m::train
