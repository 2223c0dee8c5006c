#include "diffusion/prior.hpp"

#include "core/error.hpp"
#include "nets/state_dict.hpp"

namespace ud2m::diffusion {

constexpr const char* kMetadataKey = "ud2m";

AdmPrior::AdmPrior(const nets::AdmConfig& config, Schedule schedule)
    : net_(config), schedule_(std::move(schedule)) {
  net_->eval();
}

torch::Tensor AdmPrior::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  auto out = net_->forward(x_t, t);
  // learn_sigma models also output the variance interpolation; samplers here use ε.
  return out.narrow(1, 0, x_t.size(1));
}

nlohmann::json AdmPrior::description() const {
  return {{"format", "ud2m-prior"},
          {"version", 1},
          {"arch", "adm"},
          {"config", net_->config().to_json()},
          {"schedule", schedule_.to_json()},
          {"prediction", "epsilon"}};
}

std::shared_ptr<AdmPrior> load_prior(const std::string& path) {
  auto file = read_safetensors(path);
  UD2M_CHECK(file.metadata.count(kMetadataKey),
             "'{}' is a safetensors file without ud2m model metadata; convert the original checkpoint with "
             "`ud2m convert`",
             path);
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(file.metadata.at(kMetadataKey));
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' has unreadable model metadata ({})", path, e.what());
  }
  UD2M_CHECK(meta.value("format", "") == "ud2m-prior", "'{}' is not a diffusion prior (format '{}')", path,
             meta.value("format", ""));
  UD2M_CHECK(meta.value("arch", "") == "adm", "'{}': unknown architecture '{}'", path, meta.value("arch", ""));
  auto prior = std::make_shared<AdmPrior>(nets::AdmConfig::from_json(meta.at("config")),
                                          Schedule::from_json(meta.at("schedule")));
  nets::load_state_dict(*prior->net(), file.tensors, path);
  return prior;
}

void save_prior(const std::string& path, AdmPrior& prior, torch::ScalarType dtype, const Metadata& extra) {
  TensorMap weights;
  for (auto& [name, tensor] : nets::state_dict(*prior.net())) weights[name] = tensor.detach().to(dtype);
  Metadata metadata = extra;
  metadata[kMetadataKey] = prior.description().dump();
  write_safetensors(path, weights, metadata);
}

}  // namespace ud2m::diffusion
