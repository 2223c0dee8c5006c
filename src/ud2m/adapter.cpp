#include "ud2m/adapter.hpp"

#include <algorithm>
#include <optional>

#include "core/error.hpp"
#include "io/safetensors.hpp"
#include "nets/lora.hpp"

namespace ud2m::unrolled {

constexpr const char* kMetadataKey = "ud2m";

void save_adapter(const std::string& path, UnrolledNetwork& network, const AdapterInfo& info) {
  TensorMap tensors;
  for (auto& [name, value] : network.trainable_parameters())
    tensors[name] = value.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const auto& o = network.options();
  nlohmann::json meta = {{"format", "ud2m-adapter"},
                         {"version", 1},
                         {"base_fingerprint", network.base_fingerprint()},
                         {"base", network.prior().description()},
                         {"task", info.task},
                         {"blocks", o.blocks},
                         {"steps", info.steps},
                         {"noise_inflation", o.noise_inflation},
                         {"learned_init", o.learned_init},
                         {"lora", {{"rank", o.lora.rank}, {"alpha", o.lora.alpha}, {"placement", o.lora.placement}}},
                         {"training", info.training}};
  write_safetensors(path, tensors, {{kMetadataKey, meta.dump()}});
}

namespace {

// The adapter's metadata: an object whose format is "ud2m-adapter" if the file is one.
nlohmann::json adapter_metadata(const Metadata& metadata) {
  auto it = metadata.find(kMetadataKey);
  if (it == metadata.end()) return {};
  return nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
}

bool is_adapter(const nlohmann::json& meta) { return meta.is_object() && meta.value("format", "") == "ud2m-adapter"; }

nlohmann::json checked_adapter_metadata(const TensorFile& file, const std::string& path) {
  auto meta = adapter_metadata(file.metadata);
  UD2M_CHECK(is_adapter(meta), "'{}' is not a UD2M adapter (no ud2m-adapter metadata)", path);
  return meta;
}

AdapterFile adapter_from(const nlohmann::json& meta, TensorMap tensors, const std::string& path) {
  AdapterFile adapter;
  adapter.path = path;
  adapter.base_fingerprint = meta.value("base_fingerprint", "");
  auto& options = adapter.options;
  options.blocks = meta.value("blocks", 3);
  options.lora.rank = meta.at("lora").value("rank", 5);
  options.lora.alpha = meta.at("lora").value("alpha", 1.5);
  options.lora.placement = meta.at("lora").value("placement", options.lora.placement);
  options.noise_inflation = meta.value("noise_inflation", options.noise_inflation);
  options.learned_init = meta.value("learned_init", false);
  adapter.info = {meta.value("task", "general"), meta.value("steps", 3), meta.value("training", nlohmann::json())};
  adapter.tensors = std::move(tensors);
  return adapter;
}

}  // namespace

bool is_adapter_file(const std::string& path) {
  try {
    return is_adapter(adapter_metadata(SafetensorsReader(path).metadata()));
  } catch (const std::exception&) {  // not a safetensors file
    return false;
  }
}

AdapterFile write_with_default_unroll(const std::string& in, const std::string& out, std::optional<int> steps,
                                      std::optional<int> blocks) {
  auto file = read_safetensors(in);
  auto meta = checked_adapter_metadata(file, in);
  if (steps) meta["steps"] = *steps;
  if (blocks) meta["blocks"] = *blocks;
  auto adapter = adapter_from(meta, std::move(file.tensors), out);
  UD2M_CHECK(adapter.info.steps > 0 && adapter.options.blocks > 0,
             "an adapter's N steps and K blocks must be positive (got {} x {})", adapter.info.steps,
             adapter.options.blocks);
  write_safetensors(out, adapter.tensors, {{kMetadataKey, meta.dump()}});
  return adapter;
}

AdapterFile read_adapter(const std::string& path) {
  auto file = read_safetensors(path);
  const auto meta = checked_adapter_metadata(file, path);
  return adapter_from(meta, std::move(file.tensors), path);
}

void apply_adapter(const AdapterFile& file, UnrolledNetwork& network, const std::string& prior_name) {
  const auto& actual = network.base_fingerprint();
  UD2M_CHECK(file.base_fingerprint == actual,
             "the adapter '{}' was trained on another base prior (fingerprint {}) than '{}' ({})", file.path,
             file.base_fingerprint, prior_name, actual);
  const bool widened = network.options().lora.on_resblocks() && !file.options.lora.on_resblocks();
  std::vector<std::string> new_lora;  // module paths of the residual blocks' LoRA, absent from the file
  if (widened)
    for (const auto& item : network.named_modules())
      if (dynamic_cast<const nets::ConvLoraImpl*>(item.value().get())) new_lora.push_back(item.key() + ".");
  auto is_new = [&](const std::string& name) {
    return std::any_of(new_lora.begin(), new_lora.end(), [&](const auto& prefix) { return name.rfind(prefix, 0) == 0; });
  };
  torch::NoGradGuard no_grad;
  for (auto& [name, value] : network.trainable_parameters()) {
    auto found = file.tensors.find(name);
    if (found == file.tensors.end() && is_new(name)) continue;
    UD2M_CHECK(found != file.tensors.end(), "the adapter '{}' lacks '{}'", file.path, name);
    UD2M_CHECK(found->second.sizes() == value.sizes(), "the adapter '{}' has '{}' of shape {}, the network {}",
               file.path, name, found->second.sizes().vec(), value.sizes().vec());
    value.copy_(found->second);
  }
}

LoadedAdapter load_adapter(const std::string& path, diffusion::PriorPtr prior, const std::string& prior_name) {
  auto file = read_adapter(path);
  auto network = std::make_shared<UnrolledNetwork>(std::move(prior), file.options);
  apply_adapter(file, *network, prior_name);
  return {network, file.info};
}

}  // namespace ud2m::unrolled
