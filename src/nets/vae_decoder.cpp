#include "nets/vae_decoder.hpp"

#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "io/checkpoint.hpp"
#include "nets/fp32_group_norm.hpp"
#include "nets/state_dict.hpp"

namespace ud2m::nets {
namespace F = torch::nn::functional;
namespace fs = std::filesystem;

namespace {

constexpr double kEps = 1e-6;  // every norm of the VAE decoder

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(kernel / 2));
}

// diffusers' ResnetBlock2D without a time embedding.
class ResnetImpl : public torch::nn::Module {
 public:
  ResnetImpl(int64_t in, int64_t out, int64_t groups) {
    norm1 = register_module("norm1", Fp32GroupNorm(groups, in, kEps));
    conv1 = register_module("conv1", conv(in, out, 3));
    norm2 = register_module("norm2", Fp32GroupNorm(groups, out, kEps));
    conv2 = register_module("conv2", conv(out, out, 3));
    if (in != out) conv_shortcut = register_module("conv_shortcut", conv(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = conv2(norm2->forward_silu(conv1(norm1->forward_silu(x))));
    return (conv_shortcut ? conv_shortcut(x) : x) + h;
  }

 private:
  Fp32GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};
TORCH_MODULE(Resnet);

// The mid-block's single-head self-attention over all pixels, with a residual.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t channels, int64_t groups) {
    group_norm = register_module("group_norm", Fp32GroupNorm(groups, channels, kEps));
    to_q = register_module("to_q", torch::nn::Linear(channels, channels));
    to_k = register_module("to_k", torch::nn::Linear(channels, channels));
    to_v = register_module("to_v", torch::nn::Linear(channels, channels));
    to_out = register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(channels, channels)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    auto tokens = group_norm(x).reshape({n, c, h * w}).transpose(1, 2);  // (N, HW, C)
    auto y = at::scaled_dot_product_attention(to_q(tokens), to_k(tokens), to_v(tokens));
    y = to_out[0]->as<torch::nn::Linear>()->forward(y);
    return x + y.transpose(1, 2).reshape({n, c, h, w});
  }

 private:
  Fp32GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};
};
TORCH_MODULE(Attention);

// A module holding one convolution named "conv" (diffusers' Upsample2D).
class UpsampleImpl : public torch::nn::Module {
 public:
  explicit UpsampleImpl(int64_t channels) { conv_ = register_module("conv", conv(channels, channels, 3)); }
  torch::Tensor forward(const torch::Tensor& x) {
    return conv_(F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2, 2})
                                       .mode(torch::kNearest)));
  }

 private:
  torch::nn::Conv2d conv_{nullptr};
};
TORCH_MODULE(Upsample);

// One decoder level (UpDecoderBlock2D): resnets, then a 2× upsampling except at the last level.
class UpBlockImpl : public torch::nn::Module {
 public:
  UpBlockImpl(int64_t in, int64_t out, int layers, int64_t groups, bool upsample) {
    resnets = register_module("resnets", torch::nn::ModuleList());
    for (int i = 0; i < layers; ++i) resnets->push_back(Resnet(i == 0 ? in : out, out, groups));
    if (upsample) upsamplers = register_module("upsamplers", torch::nn::ModuleList(Upsample(out)));
  }
  torch::Tensor forward(torch::Tensor x) {
    for (auto& r : *resnets) x = r->as<ResnetImpl>()->forward(x);
    return upsamplers ? upsamplers[0]->as<UpsampleImpl>()->forward(x) : x;
  }

 private:
  torch::nn::ModuleList resnets{nullptr}, upsamplers{nullptr};
};
TORCH_MODULE(UpBlock);

class MidBlockImpl : public torch::nn::Module {
 public:
  MidBlockImpl(int64_t channels, int64_t groups, bool attention) {
    resnets = register_module("resnets", torch::nn::ModuleList(Resnet(channels, channels, groups),
                                                               Resnet(channels, channels, groups)));
    if (attention) attentions = register_module("attentions", torch::nn::ModuleList(Attention(channels, groups)));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = resnets[0]->as<ResnetImpl>()->forward(x);
    if (attentions) x = attentions[0]->as<AttentionImpl>()->forward(x);
    return resnets[1]->as<ResnetImpl>()->forward(x);
  }

 private:
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(MidBlock);

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const VaeDecoderConfig& c) {
    const std::vector<int> levels(c.block_out_channels.rbegin(), c.block_out_channels.rend());
    conv_in = register_module("conv_in", conv(c.latent_channels, levels[0], 3));
    mid_block = register_module("mid_block", MidBlock(levels[0], c.norm_num_groups, c.mid_block_attention));
    up_blocks = register_module("up_blocks", torch::nn::ModuleList());
    for (size_t i = 0; i < levels.size(); ++i)
      up_blocks->push_back(UpBlock(levels[i == 0 ? 0 : i - 1], levels[i], c.layers_per_block + 1,
                                   c.norm_num_groups, /*upsample=*/i + 1 < levels.size()));
    conv_norm_out = register_module("conv_norm_out", Fp32GroupNorm(c.norm_num_groups, levels.back(), kEps));
    conv_out = register_module("conv_out", conv(levels.back(), c.out_channels, 3));
  }
  torch::Tensor forward(const torch::Tensor& z) {
    auto x = mid_block(conv_in(z));
    for (auto& block : *up_blocks) x = block->as<UpBlockImpl>()->forward(x);
    return conv_out(conv_norm_out->forward_silu(x));
  }

 private:
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  MidBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  Fp32GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(Decoder);

// Older AutoencoderKL files name the attention's projections differently.
std::string current_name(const std::string& name) {
  static const std::pair<const char*, const char*> renames[] = {
      {".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}};
  for (auto [old_name, new_name] : renames)
    if (auto at = name.find(old_name); at != std::string::npos)
      return name.substr(0, at) + new_name + name.substr(at + std::string(old_name).size());
  return name;
}

}  // namespace

VaeDecoderConfig VaeDecoderConfig::from_diffusers(const nlohmann::json& j) {
  VaeDecoderConfig c;
  UD2M_CHECK(j.value("_class_name", "AutoencoderKL") == "AutoencoderKL", "a {} is not an AutoencoderKL",
             j.value("_class_name", ""));
  c.latent_channels = j.value("latent_channels", c.latent_channels);
  c.out_channels = j.value("out_channels", c.out_channels);
  if (j.contains("block_out_channels")) j.at("block_out_channels").get_to(c.block_out_channels);
  c.layers_per_block = j.value("layers_per_block", c.layers_per_block);
  c.norm_num_groups = j.value("norm_num_groups", c.norm_num_groups);
  c.use_post_quant_conv = j.value("use_post_quant_conv", true);
  c.mid_block_attention = j.value("mid_block_add_attention", true);
  UD2M_CHECK(!c.block_out_channels.empty() && c.layers_per_block > 0, "an AutoencoderKL needs block_out_channels "
             "and layers_per_block > 0");
  UD2M_CHECK(j.value("act_fn", "silu") == "silu", "AutoencoderKL with act_fn '{}' is not supported (silu only)",
             j.value("act_fn", ""));
  return c;
}

VaeDecoderImpl::VaeDecoderImpl(const VaeDecoderConfig& c) : config_(c) {
  if (c.use_post_quant_conv)
    post_quant_conv = register_module("post_quant_conv", conv(c.latent_channels, c.latent_channels, 1));
  decoder_ = register_module("decoder", Decoder(c).ptr());
}

torch::Tensor VaeDecoderImpl::forward(const torch::Tensor& latents) {
  auto z = post_quant_conv ? post_quant_conv(latents) : latents;
  return decoder_->as<DecoderImpl>()->forward(z);
}

VaeDecoder load_vae_decoder(const std::string& folder) {
  const fs::path dir(folder);
  const auto config_path = dir / "config.json";
  UD2M_CHECK(fs::is_directory(dir) && fs::exists(config_path),
             "--vae '{}' is not a diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors)",
             folder);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_file(config_path.string()));
  } catch (const nlohmann::json::exception& e) {
    fail("'{}' is not valid JSON ({})", config_path.string(), e.what());
  }
  VaeDecoder vae(VaeDecoderConfig::from_diffusers(config));
  for (auto name : {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"}) {
    const auto path = (dir / name).string();
    if (!fs::exists(path)) continue;
    TensorMap decoder_weights;  // the encoder half is not needed
    for (auto& [key, t] : state_dict_of(read_checkpoint(path))) {
      if (key.rfind("decoder.", 0) != 0 && key.rfind("post_quant_conv.", 0) != 0) continue;
      auto weight = t.to(torch::kFloat32);
      if (weight.dim() == 4 && key.find("attentions.") != std::string::npos) weight = weight.flatten(1);  // 1×1 convs
      decoder_weights[current_name(key)] = weight;
    }
    load_state_dict(*vae, decoder_weights, path);
    vae->eval();
    return vae;
  }
  fail("'{}' has no diffusion_pytorch_model.safetensors or .bin", folder);
}

// ---- EDM2's latent space ------------------------------------------------------

nlohmann::json LatentSpace::to_json() const { return {{"vae", vae_name}, {"scale", scale}, {"bias", bias}}; }

LatentSpace LatentSpace::from_json(const nlohmann::json& j) {
  return {j.value("vae", ""), j.at("scale").get<std::vector<double>>(), j.at("bias").get<std::vector<double>>()};
}

torch::Tensor LatentSpace::decode(VaeDecoder& vae, const torch::Tensor& latents) const {
  const int64_t c = latents.size(1);
  UD2M_CHECK(static_cast<int64_t>(scale.size()) == c && vae->config().latent_channels == c,
             "the latents have {} channels; the latent space {} and the VAE {}", c, scale.size(),
             vae->config().latent_channels);
  auto options = latents.options().dtype(torch::kFloat32);
  auto s = torch::tensor(scale, options).view({1, -1, 1, 1}), b = torch::tensor(bias, options).view({1, -1, 1, 1});
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> pixels;  // one image at a time: a 512² decoding holds GBs of activations
  for (auto& z : ((latents.to(torch::kFloat32) - b) / s).split(1)) pixels.push_back(vae(z).clamp(0, 1));
  return torch::cat(pixels);
}

std::optional<LatentSpace> latent_space_of_pickle(const TensorFile& file, const std::string& source) {
  auto kind = file.metadata.find("encoder.0.class_name");
  if (kind == file.metadata.end() || kind->second != "StabilityVAEEncoder") return std::nullopt;
  auto values = [&](const char* name) {
    auto it = file.tensors.find(std::string("encoder.0.state.") + name);
    UD2M_CHECK(it != file.tensors.end(), "'{}': its StabilityVAEEncoder has no '{}'", source, name);
    auto t = it->second.to(torch::kFloat64).flatten();
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  };
  LatentSpace space{"", values("scale"), values("bias")};
  if (auto name = file.metadata.find("encoder.0.state.vae_name"); name != file.metadata.end()) {
    auto parsed = nlohmann::json::parse(name->second, nullptr, /*allow_exceptions=*/false);
    space.vae_name = parsed.is_string() ? parsed.get<std::string>() : name->second;
  }
  return space;
}

}  // namespace ud2m::nets
