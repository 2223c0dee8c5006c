#include "ncvsd/networks.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/random.hpp"
#include "io/checkpoint.hpp"
#include "ncvsd/generation.hpp"
#include "nets/state_dict.hpp"

namespace ud2m::ncvsd {
namespace {

constexpr const char* kMetadataKey = "ud2m";
constexpr const char* kFormat = "ud2m-ncvsd-generator";

torch::Tensor per_sample(const torch::Tensor& v, const torch::Tensor& like) {
  return v.to(like.dtype()).view({-1, 1, 1, 1});
}

}  // namespace

nets::AdmConfig conditional_config(nets::AdmConfig config) {
  config.in_channels = 2 * config.in_channels + 1;  // x, y·c_in(σ), c_noise(σ)
  return config;
}

torch::Tensor prior_x0(diffusion::Prior& prior, const torch::Tensor& x, const torch::Tensor& level) {
  auto scale = per_sample((1 + level.pow(2)).rsqrt(), x);
  auto eps = prior.epsilon(x * scale, prior.schedule().timesteps_at(level));
  return x - per_sample(level, x) * eps.to(x.dtype());
}

LogVarianceImpl::LogVarianceImpl(int features, uint64_t seed) {
  auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
  frequencies_ = register_buffer("frequencies", at::randn({features}, rng));
  phases_ = register_buffer("phases", at::rand({features}, rng));
  linear_ = register_module("linear", torch::nn::Linear(features, 1));
  torch::NoGradGuard no_grad;
  linear_->weight.zero_();
  linear_->bias.zero_();
}

torch::Tensor LogVarianceImpl::forward(const torch::Tensor& level) {
  auto c_noise = level.to(torch::kFloat32).log().div(4).unsqueeze(1);
  auto features = torch::cos(2 * M_PI * (c_noise * frequencies_ + phases_)) * std::sqrt(2.0);
  return linear_->forward(features).squeeze(1);
}

ConditionalDenoiserImpl::ConditionalDenoiserImpl(const nets::AdmConfig& conditional, diffusion::Schedule schedule)
    : schedule_(std::move(schedule)) {
  UD2M_CHECK(conditional.in_channels % 2 == 1, "an NCVSD network has 2C+1 input channels, not {}",
             conditional.in_channels);
  net_ = register_module("net", nets::AdmUNet(conditional));
}

ConditionalDenoiserImpl::ConditionalDenoiserImpl(diffusion::AdmPrior& teacher)
    : ConditionalDenoiserImpl(conditional_config(teacher.net()->config()), teacher.schedule()) {
  torch::NoGradGuard no_grad;
  auto source = nets::state_dict(*teacher.net());
  for (auto& item : net_->named_parameters()) {
    auto& from = source.at(item.key());
    auto& to = item.value();
    if (from.sizes() == to.sizes()) {
      to.copy_(from);
    } else {  // the first convolution: the teacher's input channels, zeros for the conditions
      to.zero_();
      to.narrow(1, 0, from.size(1)).copy_(from);
    }
  }
  for (auto& item : net_->named_buffers()) item.value().copy_(source.at(item.key()));
}

torch::Tensor ConditionalDenoiserImpl::forward(const torch::Tensor& x, const torch::Tensor& level,
                                               const torch::Tensor& y, const torch::Tensor& sigma) {
  auto scale = per_sample((1 + level.pow(2)).rsqrt(), x);
  auto c_in = per_sample((sigma.pow(2) + 0.25).rsqrt(), y);  // σ_data = 0.5
  auto c_noise = per_sample(sigma.log() / 4, y).expand({y.size(0), 1, y.size(2), y.size(3)});
  auto input = torch::cat({x * scale, y * c_in, c_noise}, 1);
  auto eps = net_->forward(input, schedule_.timesteps_at(level)).narrow(1, 0, x.size(1));
  return x - per_sample(level, x) * eps.to(x.dtype());
}

nlohmann::json ConditionalDenoiserImpl::description() const {
  return {{"arch", "adm"}, {"config", net_->config().to_json()}, {"schedule", schedule_.to_json()},
          {"noise_injection", kNoiseInjection}};
}

Edm2GeneratorImpl::Edm2GeneratorImpl(const nets::Edm2Config& config, double noise_injection, int class_label,
                                     bool published)
    : noise_injection_(noise_injection), classes_(config.label_dim, class_label, "the NCVSD generator"),
      published_(published) {
  UD2M_CHECK(noise_injection >= 0, "an NCVSD generator's noise injection must be >= 0, not {}", noise_injection);
  net_ = register_module("net", nets::Edm2ControlNet(config));
}

Edm2GeneratorImpl::Edm2GeneratorImpl(diffusion::Edm2Prior& teacher)
    : Edm2GeneratorImpl(teacher.net()->config(), kNoiseInjection, -1, /*published=*/false) {
  torch::NoGradGuard no_grad;
  // ctrl.X, enc.X and dec.X are the U-Net's unet.X (the reference's load_state_dict(strict=False)).
  auto unet = nets::state_dict(*teacher.net());
  auto copy = [&](const std::string& name, torch::Tensor& to) {
    const auto from = unet.find("unet." + name.substr(name.find('.') + 1));
    if (from != unet.end()) to.copy_(from->second);
  };
  for (auto& item : net_->named_parameters()) copy(item.key(), item.value());
  for (auto& item : net_->named_buffers()) copy(item.key(), item.value());
}

torch::Tensor Edm2GeneratorImpl::forward(const torch::Tensor& x, const torch::Tensor& level, const torch::Tensor& y,
                                         const torch::Tensor& sigma) {
  return net_->forward(x, level, y, sigma, classes_.one_hot(x.size(0), x.device())).to(x.scalar_type());
}

nlohmann::json Edm2GeneratorImpl::description() const {
  nlohmann::json d = {{"arch", "edm2-controlnet"}, {"config", net_->config().to_json()},
                       {"noise_injection", noise_injection_}, {"class_label", classes_.fixed},
                       {"published", published_}};
  if (latent_) d["latent"] = latent_->to_json();
  return d;
}

torch::Tensor generate(GeneratorNetImpl& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       torch::Generator& rng) {
  return generate(generator, y, sigma, gaussian(y.sizes(), rng, y.options()));
}

torch::Tensor generate(GeneratorNetImpl& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       const torch::Tensor& z) {
  auto level = (1 + generator.noise_injection()) * sigma;
  auto extra = per_sample((level.pow(2) - sigma.pow(2)).sqrt(), y);
  return generator.forward(y + extra * z, level, y, sigma);
}

torch::Tensor generate(GeneratorNetImpl& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       torch::Generator& rng, const std::optional<diffusion::Tiling>& tiling) {
  auto z = gaussian(y.sizes(), rng, y.options());
  if (!tiling || !tiling->applies_to(y)) return generate(generator, y, sigma, z);
  const int64_t c = y.size(1);
  return diffusion::run_in_tiles(torch::cat({y, z}, 1), *tiling, [&](const torch::Tensor& tiles, int64_t copies) {
    return generate(generator, tiles.narrow(1, 0, c), sigma.repeat({copies}), tiles.narrow(1, c, c));
  });
}

void save_generator(const std::string& path, GeneratorNetImpl& generator, const nlohmann::json& extra,
                    torch::ScalarType dtype) {
  TensorMap weights;
  for (auto& [name, t] : nets::state_dict(generator.network())) weights[name] = t.detach().to(dtype).contiguous();
  nlohmann::json meta = {{"format", kFormat}, {"version", 1}};
  if (!extra.is_null()) meta.update(extra);  // the default {} is a null json
  meta.update(generator.description());      // the network is what it is, whatever `extra` says
  meta.erase("generation_levels");
  for (const auto& [steps, indices] : generator.level_sets) meta["generation_levels"][std::to_string(steps)] = indices;
  write_safetensors(path, weights, {{kMetadataKey, meta.dump()}});
}

namespace {

// NCVSD's snapshot: the GenerativeDenoiser's PrecondCondition under "model.",
// its γ a plain attribute of the pickled object.
GeneratorNet load_ncvsd_pickle(const std::string& path, int class_label) {
  CheckpointOptions opaque;
  opaque.opaque_records = true;
  auto file = read_checkpoint(path, opaque);
  auto weights = nets::edm2_state_dict(file);
  UD2M_CHECK(nets::looks_like_edm2_controlnet(weights),
             "'{}' is a pickle without an NCVSD generator in it (no 'ema' GenerativeDenoiser holding a "
             "PrecondCondition)",
             path);
  double gamma = kNoiseInjection;
  if (auto it = file.metadata.find("ema.gamma"); it != file.metadata.end()) {
    auto stored = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
    UD2M_CHECK(stored.is_number(), "'{}': the generator's gamma is '{}', not a number", path, it->second);
    gamma = stored;
  }
  Edm2Generator generator(nets::infer_edm2_controlnet_config(weights, file.metadata, path), gamma, class_label);
  TensorMap network;
  for (auto& [name, t] : weights)
    if (name.rfind("model.", 0) == 0) network[name.substr(6)] = t.to(torch::kFloat32);
  nets::load_state_dict(*generator->net(), network, path);
  generator->set_latent_space(nets::latent_space_of_pickle(file, path));
  generator->eval();
  return as_generator_net(generator.ptr());
}

nlohmann::json generator_metadata(const TensorFile& file, const std::string& path) {
  UD2M_CHECK(file.metadata.count(kMetadataKey), "'{}' has no ud2m metadata: not an NCVSD generator", path);
  auto meta = nlohmann::json::parse(file.metadata.at(kMetadataKey));
  UD2M_CHECK(meta.value("format", "") == kFormat,
             "'{}' is not an NCVSD generator (format '{}'; train one with `ud2m train --method ncvsd`)", path,
             meta.value("format", ""));
  return meta;
}

// {"4": [0, 14, 22, 30, 39], ...}, each checked as `convert --levels` checks them.
std::map<int, std::vector<int>> stored_level_sets(const nlohmann::json& meta, const std::string& path) {
  std::map<int, std::vector<int>> sets;
  if (!meta.contains("generation_levels")) return sets;
  const auto& stored = meta.at("generation_levels");
  UD2M_CHECK(stored.is_object(), "'{}': generation_levels is '{}', not a map from step counts to level indices", path,
             stored.dump());
  for (const auto& [key, indices] : stored.items()) {
    const auto where = fmt::format("'{}', generation_levels[\"{}\"]", path, key);
    auto integer = [](const nlohmann::json& i) { return i.is_number_integer(); };
    const bool integers = indices.is_array() && std::all_of(indices.begin(), indices.end(), integer);
    UD2M_CHECK(integers, "{}: '{}' is not a list of level indices", where, indices.dump());
    const int steps = parse_step_count(key, where);
    sets[steps] = indices.get<std::vector<int>>();
    check_level_set(steps, sets[steps], where);
  }
  return sets;
}

}  // namespace

GeneratorNet load_generator(const std::string& path, int class_label) {
  if (detect_checkpoint_file_format(path) == CheckpointFormat::Pickle) return load_ncvsd_pickle(path, class_label);
  auto file = read_safetensors(path);
  const auto meta = generator_metadata(file, path);
  const auto arch = meta.value("arch", "adm");  // files written before the published architecture had none
  GeneratorNet generator{nullptr};
  if (arch == "adm") {
    UD2M_CHECK(class_label < 0, "class {} does not exist: the NCVSD generator '{}' is unconditional", class_label,
               path);
    generator = as_generator_net(std::make_shared<ConditionalDenoiserImpl>(
        nets::AdmConfig::from_json(meta.at("config")), diffusion::Schedule::from_json(meta.at("schedule"))));
  } else if (arch == "edm2-controlnet") {
    const int stored_class = meta.value("class_label", -1);
    // Files converted before ours existed hold published networks only.
    auto edm2 = std::make_shared<Edm2GeneratorImpl>(
        nets::Edm2Config::from_json(meta.at("config")), meta.value("noise_injection", kNoiseInjection),
        class_label >= 0 ? class_label : stored_class, meta.value("published", true));
    if (meta.contains("latent")) edm2->set_latent_space(nets::LatentSpace::from_json(meta.at("latent")));
    generator = as_generator_net(edm2);
  } else {
    fail("'{}': unknown NCVSD generator architecture '{}' (known: adm, edm2-controlnet)", path, arch);
  }
  TensorMap weights;
  for (auto& [name, t] : file.tensors) weights[name] = t.to(torch::kFloat32);
  nets::load_state_dict(generator->network(), weights, path);
  generator->level_sets = stored_level_sets(meta, path);
  generator->eval();
  return generator;
}

nlohmann::json generator_file_notes(const std::string& path) {
  if (detect_checkpoint_file_format(path) == CheckpointFormat::Pickle) return nlohmann::json::object();
  return generator_metadata(TensorFile{{}, SafetensorsReader(path).metadata()}, path);
}

bool is_generator_file(const std::string& path) {
  switch (detect_checkpoint_file_format(path)) {
    case CheckpointFormat::Pickle: {
      CheckpointOptions opaque;
      opaque.opaque_records = true;
      return nets::looks_like_edm2_controlnet(nets::edm2_state_dict(read_checkpoint(path, opaque)));
    }
    case CheckpointFormat::Safetensors: {  // the header says; the weights stay unread
      const auto metadata = SafetensorsReader(path).metadata();
      auto it = metadata.find(kMetadataKey);
      if (it == metadata.end()) return false;
      auto meta = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
      return meta.is_object() && meta.value("format", "") == kFormat;
    }
    default: return false;
  }
}

}  // namespace ud2m::ncvsd
