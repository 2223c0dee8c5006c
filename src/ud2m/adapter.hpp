// UD2M adapter files: only what was trained (LoRA factors, the prior's output
// head, λ and ρ scales, the learned initialiser if any) plus metadata naming
// the base prior by fingerprint, the task it was trained for (or "general"),
// K and N. A few hundred KiB (~1 MiB with an initialiser).
#pragma once
#include <optional>
#include <string>

#include "io/safetensors.hpp"
#include "ud2m/unrolled.hpp"

namespace ud2m::unrolled {

struct AdapterInfo {
  std::string task = "general";  // a degrade task name, or "general" (any operator)
  int steps = 3;                 // N the adapter was trained for
  nlohmann::json training;       // free-form: data, steps, losses
  // Whether it may restore measurements of `degrade_task` (its own, or any if general).
  bool fits(const std::string& degrade_task) const { return task == "general" || task == degrade_task; }
};

void save_adapter(const std::string& path, UnrolledNetwork& network, const AdapterInfo& info);

struct LoadedAdapter {
  std::shared_ptr<UnrolledNetwork> network;
  AdapterInfo info;
};

// An adapter file read but not yet applied: the network settings it needs
// (K, LoRA rank/alpha/placement, ρ inflation, initialiser) and its tensors.
struct AdapterFile {
  std::string path;
  std::string base_fingerprint;
  UnrolledOptions options;
  AdapterInfo info;
  TensorMap tensors;
};

AdapterFile read_adapter(const std::string& path);
bool is_adapter_file(const std::string& path);

// Copies the adapter `in` to `out` with N steps × K blocks (where given) as
// the setting it restores with by default: the blocks share their weights, so
// any N × K runs with the same tensors. Tensors and training record are kept.
// Returns the adapter as written.
AdapterFile write_with_default_unroll(const std::string& in, const std::string& out, std::optional<int> steps,
                                      std::optional<int> blocks);

// Copies the adapter's tensors into `network`, which must be built with
// `file.options` on the prior the adapter was trained on (`prior_name` names
// it in the error otherwise) — or with LoRA on the residual blocks where the
// adapter has none (widened): those keep their zero update.
void apply_adapter(const AdapterFile& file, UnrolledNetwork& network, const std::string& prior_name);

// `prior` must be the base the adapter was trained on (checked by fingerprint);
// it is adapted in place.
LoadedAdapter load_adapter(const std::string& path, diffusion::PriorPtr prior, const std::string& prior_name);

}  // namespace ud2m::unrolled
