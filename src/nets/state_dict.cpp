#include "nets/state_dict.hpp"

#include <set>

#include "core/error.hpp"

namespace ud2m::nets {
namespace {

std::string first_few(const std::vector<std::string>& items, size_t n = 5) {
  std::string out;
  for (size_t i = 0; i < std::min(n, items.size()); ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > n) out += fmt::format(" and {} more", items.size() - n);
  return out;
}

}  // namespace

std::string describe_mismatch(const std::vector<std::string>& missing, const std::vector<std::string>& unexpected,
                              const std::vector<std::string>& misshaped) {
  std::string problems;
  if (!missing.empty()) problems += fmt::format(" missing {} tensors: {};", missing.size(), first_few(missing));
  if (!unexpected.empty()) problems += fmt::format(" {} unexpected tensors: {};", unexpected.size(), first_few(unexpected));
  if (!misshaped.empty()) problems += fmt::format(" {} mis-shaped tensors: {};", misshaped.size(), first_few(misshaped));
  if (!problems.empty()) problems.pop_back();
  return problems;
}

int count_children(const TensorMap& weights, const std::string& prefix) {
  int n = 0;
  while (true) {
    const std::string head = prefix + "." + std::to_string(n) + ".";
    auto it = weights.lower_bound(head);
    if (it == weights.end() || it->first.compare(0, head.size(), head) != 0) return n;
    ++n;
  }
}

TensorMap state_dict(const torch::nn::Module& module) {
  TensorMap out;
  for (auto& item : module.named_parameters()) out[item.key()] = item.value();
  for (auto& item : module.named_buffers()) out[item.key()] = item.value();
  return out;
}

void load_state_dict(torch::nn::Module& module, const TensorMap& weights, const std::string& source) {
  load_state_dict(module, weights, [&](const std::string& name) { return weights.at(name); }, source);
}

void load_state_dict(torch::nn::Module& module, const TensorMap& weights,
                     const std::function<torch::Tensor(const std::string&)>& read, const std::string& source) {
  auto targets = state_dict(module);
  std::vector<std::string> missing, unexpected, misshaped;
  for (auto& [name, target] : targets) {
    auto it = weights.find(name);
    if (it == weights.end())
      missing.push_back(name);
    else if (it->second.sizes() != target.sizes())
      misshaped.push_back(fmt::format("{} ({} in the file, {} expected)", name, fmt::join(it->second.sizes(), "x"),
                                      fmt::join(target.sizes(), "x")));
  }
  for (auto& [name, tensor] : weights)
    if (!targets.count(name)) unexpected.push_back(name);
  const auto problems = describe_mismatch(missing, unexpected, misshaped);
  if (!problems.empty()) fail("'{}' does not fit this architecture:{}", source, problems);
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(read(name));
}

}  // namespace ud2m::nets
