#include "diffusion/prior.hpp"

#include <filesystem>
#include <optional>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "io/checkpoint.hpp"
#include "nets/adm_infer.hpp"
#include "nets/ddpm_pesser.hpp"
#include "nets/inference_precision.hpp"
#include "nets/state_dict.hpp"

namespace ud2m::diffusion {
namespace fs = std::filesystem;

constexpr const char* kMetadataKey = "ud2m";

void Prior::set_inference_precision(torch::ScalarType dtype, bool channels_last) {
  UD2M_CHECK(dtype == torch::kFloat32 || runs_in_weight_dtype(),
             "{} inference is implemented for ADM and DDPM priors; this one is '{}' (use fp32)", c10::toString(dtype),
             description().value("arch", "?"));
  nets::cast_for_inference(module(), dtype, channels_last);
}

namespace {

nlohmann::json parse_json(const std::string& text, const std::string& what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{} is not valid JSON ({})", what, e.what());
  }
}

// A diffusers UNet2DModel from its config.json and weights.
PriorPtr diffusers_prior(const fs::path& config_path, const TensorMap& weights, const std::string& source) {
  auto config = parse_json(read_file(config_path.string()), "'" + config_path.string() + "'");
  UD2M_CHECK(config.value("_class_name", "UNet2DModel") == "UNet2DModel",
             "'{}' describes a {}, not a UNet2DModel", config_path.string(), config.value("_class_name", ""));
  const auto& size = config.contains("sample_size") ? config.at("sample_size") : nlohmann::json(256);
  auto prior = std::make_shared<DdpmPrior>(nets::DdpmConfig::from_diffusers(config), Schedule::linear(),
                                           size.is_number() ? size.get<int>() : 256);
  nets::load_state_dict(prior->module(), weights, source);
  return prior;
}

// A diffusers model folder: config.json + diffusion_pytorch_model.{safetensors,bin}.
PriorPtr load_diffusers_folder(const fs::path& folder) {
  const auto config_path = folder / "config.json";
  UD2M_CHECK(fs::exists(config_path), "'{}' is a folder without config.json; give a model file or a diffusers "
             "UNet2DModel folder", folder.string());
  for (auto name : {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"}) {
    const auto weights_path = (folder / name).string();
    if (fs::exists(weights_path)) return diffusers_prior(config_path, state_dict_of(read_checkpoint(weights_path)), weights_path);
  }
  fail("'{}' has no diffusion_pytorch_model.safetensors or .bin", folder.string());
}

std::shared_ptr<Edm2Prior> edm2_prior(const TensorMap& weights, const Metadata& metadata, const std::string& path,
                    const LoadOptions& options) {
  auto prior = std::make_shared<Edm2Prior>(nets::infer_edm2_config(weights, metadata, path), Schedule::linear(),
                                           options.class_label);
  nets::load_state_dict(prior->module(), weights, path);
  return prior;
}

// An EDM2 network pickle, read without running it.
PriorPtr load_edm2_pickle(const std::string& path, const LoadOptions& options) {
  CheckpointOptions opaque;
  opaque.opaque_records = true;
  auto file = read_checkpoint(path, opaque);
  auto weights = nets::edm2_state_dict(file);
  UD2M_CHECK(!nets::looks_like_edm2_controlnet(weights),
             "'{}' is an NCVSD generator, not a prior: use it with `restore --method pnp-ncvsd` or `sample "
             "--method ncvsd`",
             path);
  UD2M_CHECK(nets::looks_like_edm2(weights), "'{}' is a pickle without an EDM2 network in it (no 'ema' Precond "
             "module with unet.out_gain and unet.emb_fourier.freqs)", path);
  auto prior = edm2_prior(weights, file.metadata, path, options);
  prior->set_latent_space(nets::latent_space_of_pickle(file, path));
  return prior;
}

// Weights without ud2m metadata: an ADM state dict (guided-diffusion names), a
// DDPM state dict with pytorch_diffusion's names (Ho et al.'s models), or a
// diffusers UNet2DModel file with its config.json beside it.
PriorPtr prior_from_weights(const TensorMap& weights, const std::string& path, const LoadOptions& options) {
  if (nets::looks_like_edm2(weights)) return edm2_prior(weights, {}, path, options);
  if (weights.count("input_blocks.0.0.weight")) {
    auto config = nets::infer_adm_config(weights, path, options.num_head_channels, options.image_size);
    auto prior = std::make_shared<AdmPrior>(config, Schedule::linear());
    nets::load_state_dict(prior->module(), weights, path);
    return prior;
  }
  if (nets::has_pesser_ddpm_names(weights)) {
    auto config = nets::infer_pesser_ddpm_config(weights, path);
    auto prior = std::make_shared<DdpmPrior>(config, Schedule::linear(), options.image_size);
    nets::load_pesser_ddpm(prior->module(), config, weights, path);
    return prior;
  }
  const auto config_path = fs::path(path).parent_path() / "config.json";
  if (weights.count("conv_in.weight") && fs::exists(config_path)) return diffusers_prior(config_path, weights, path);
  fail("'{}' holds no known diffusion network: neither guided-diffusion (ADM) names, pytorch_diffusion (DDPM) "
       "names nor diffusers UNet2DModel names with a config.json beside the file",
       path);
}

}  // namespace

AdmPrior::AdmPrior(const nets::AdmConfig& config, Schedule schedule) : Prior(std::move(schedule)), net_(config) {
  net_->eval();
}

Edm2Prior::Edm2Prior(const nets::Edm2Config& config, Schedule schedule, int class_label)
    : Prior(std::move(schedule)), net_(config), classes_(config.label_dim, class_label, "the EDM2 model") {
  net_->eval();
}

torch::Tensor Edm2Prior::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  auto sigma = schedule().sigmas_at(t).to(torch::kFloat32).to(x_t.device());
  auto s = sigma.reshape({-1, 1, 1, 1});
  auto x = x_t.to(torch::kFloat32) * (1 + s * s).sqrt();  // x_t/√ᾱ_t = x0 + σ_t ε
  auto labels = classes_.one_hot(x_t.size(0), x_t.device());
  return ((x - net_->forward(x, sigma, labels)) / s).to(x_t.scalar_type());
}

nlohmann::json Edm2Prior::description() const {
  nlohmann::json d = {{"format", "ud2m-prior"}, {"version", 1}, {"arch", "edm2"},
                       {"config", net_->config().to_json()}, {"schedule", schedule().to_json()},
                       {"prediction", "x0 (EDM preconditioning)"}, {"class_label", classes_.fixed}};
  if (latent_) d["latent"] = latent_->to_json();
  return d;
}

void Edm2Prior::add_lora(const nets::LoraOptions&) {
  fail("UD2M adapters for EDM2 priors are not supported yet (LoRA on magnitude-preserving layers); use an ADM or "
       "DDPM prior");
}

torch::Tensor AdmPrior::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  // learn_sigma models also output the variance interpolation; samplers here use ε.
  return net_->forward(x_t, t).narrow(1, 0, x_t.size(1));
}

nlohmann::json AdmPrior::description() const {
  return {{"format", "ud2m-prior"}, {"version", 1}, {"arch", "adm"}, {"config", net_->config().to_json()},
          {"schedule", schedule().to_json()}, {"prediction", "epsilon"}};
}

DdpmPrior::DdpmPrior(const nets::DdpmConfig& config, Schedule schedule, int image_size)
    : Prior(std::move(schedule)), net_(config), image_size_(image_size) {
  net_->eval();
}

torch::Tensor DdpmPrior::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) { return net_->forward(x_t, t); }

nlohmann::json DdpmPrior::description() const {
  return {{"format", "ud2m-prior"}, {"version", 1}, {"arch", "ddpm"}, {"config", net_->config().to_json()},
          {"image_size", image_size_}, {"schedule", schedule().to_json()}, {"prediction", "epsilon"}};
}

PriorPtr load_prior(const std::string& path, const LoadOptions& options) {
  if (fs::is_directory(path)) return load_diffusers_folder(path);
  const auto format = detect_checkpoint_file_format(path);
  if (format == CheckpointFormat::Pickle) return load_edm2_pickle(path, options);
  std::optional<SafetensorsReader> reader;
  if (format == CheckpointFormat::Safetensors) reader.emplace(path);
  if (!reader || !reader->metadata().count(kMetadataKey)) {
    auto file = read_checkpoint(path);
    return prior_from_weights(state_dict_of(file), path, options);
  }
  // A ud2m file names its network: built first, then filled tensor by tensor
  // from the file, so the weights are never held twice (2.2 GB for ADM-256).
  auto meta = parse_json(reader->metadata().at(kMetadataKey), "the model metadata of '" + path + "'");
  UD2M_CHECK(meta.value("format", "") == "ud2m-prior", "'{}' is not a diffusion prior (format '{}')", path,
             meta.value("format", ""));
  PriorPtr prior;
  const auto arch = meta.value("arch", "");
  auto schedule = Schedule::from_json(meta.value("schedule", nlohmann::json::object()));
  if (arch == "adm")
    prior = std::make_shared<AdmPrior>(nets::AdmConfig::from_json(meta.at("config")), schedule);
  else if (arch == "ddpm")
    prior = std::make_shared<DdpmPrior>(nets::DdpmConfig::from_json(meta.at("config")), schedule,
                                        meta.value("image_size", 256));
  else if (arch == "edm2") {
    auto edm2 = std::make_shared<Edm2Prior>(nets::Edm2Config::from_json(meta.at("config")), schedule,
                                            options.class_label >= 0 ? options.class_label
                                                                     : meta.value("class_label", -1));
    if (meta.contains("latent")) edm2->set_latent_space(nets::LatentSpace::from_json(meta.at("latent")));
    prior = edm2;
  }
  else
    fail("'{}': unknown architecture '{}' (known: adm, ddpm, edm2)", path, arch);
  nets::load_state_dict(prior->module(), reader->layout(), [&](const std::string& name) { return reader->read(name); },
                        path);
  return prior;
}

void save_prior(const std::string& path, Prior& prior, torch::ScalarType dtype, const Metadata& extra) {
  TensorMap weights;
  for (auto& [name, tensor] : nets::state_dict(prior.module())) weights[name] = tensor.detach().to(dtype).contiguous();
  Metadata metadata = extra;
  metadata[kMetadataKey] = prior.description().dump();
  write_safetensors(path, weights, metadata);
}

}  // namespace ud2m::diffusion
