#include "nets/edm2_unet.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <regex>
#include <set>

#include "core/error.hpp"

namespace ud2m::nets {
namespace F = torch::nn::functional;

// ---- magnitude-preserving operations -------------------------------------

namespace {

// x / (eps + ‖x‖/√(numel per slice)) over `dims`: unit mean square per slice.
torch::Tensor mp_normalize(const torch::Tensor& x, std::vector<int64_t> dims, double eps = 1e-4) {
  auto norm = torch::linalg_vector_norm(x, 2, dims, /*keepdim=*/true, torch::kFloat32);
  const double alpha = std::sqrt(static_cast<double>(norm.numel()) / static_cast<double>(x.numel()));
  return x / (norm * alpha + eps).to(x.scalar_type());
}

torch::Tensor mp_silu(const torch::Tensor& x) { return torch::silu(x) / 0.596; }

// (1−t)·a + t·b, rescaled so unit-magnitude inputs give a unit-magnitude sum.
torch::Tensor mp_sum(const torch::Tensor& a, const torch::Tensor& b, double t) {
  return torch::lerp(a, b, t) / std::sqrt((1 - t) * (1 - t) + t * t);
}

torch::Tensor mp_cat(const torch::Tensor& a, const torch::Tensor& b, double t) {
  const double na = a.size(1), nb = b.size(1);
  const double c = std::sqrt((na + nb) / ((1 - t) * (1 - t) + t * t));
  return torch::cat({a * (c / std::sqrt(na) * (1 - t)), b * (c / std::sqrt(nb) * t)}, 1);
}

// The pixel models' resampling filter [1, 1]: 2×2 box average down, nearest up.
torch::Tensor resample(const torch::Tensor& x, const std::string& mode) {
  if (mode == "down") return F::avg_pool2d(x, F::AvgPool2dFuncOptions(2));
  if (mode == "up") return x.repeat_interleave(2, 2).repeat_interleave(2, 3);
  return x;
}

std::vector<int64_t> all_but_first(const torch::Tensor& t) {
  std::vector<int64_t> dims(t.dim() - 1);
  std::iota(dims.begin(), dims.end(), 1);
  return dims;
}

}  // namespace

MPConvImpl::MPConvImpl(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel) {
  std::vector<int64_t> shape{out_channels, in_channels};
  shape.insert(shape.end(), kernel.begin(), kernel.end());
  weight = register_parameter("weight", torch::randn(shape));
}

torch::Tensor MPConvImpl::forward(const torch::Tensor& x, const torch::Tensor& gain) {
  if (is_training()) {
    torch::NoGradGuard no_grad;
    weight.copy_(mp_normalize(weight.to(torch::kFloat32), all_but_first(weight)));
  }
  auto w = mp_normalize(weight.to(torch::kFloat32), all_but_first(weight));
  const double fan_in = static_cast<double>(w[0].numel());
  w = gain.defined() ? w * (gain.to(torch::kFloat32) / std::sqrt(fan_in)) : w / std::sqrt(fan_in);
  w = w.to(x.scalar_type());
  if (w.dim() == 2) return torch::matmul(x, w.t());
  return F::conv2d(x, w, F::Conv2dFuncOptions().padding(w.size(-1) / 2));
}

MPFourierImpl::MPFourierImpl(int64_t channels) {
  freqs = register_buffer("freqs", 2 * M_PI * torch::randn({channels}));
  phases = register_buffer("phases", 2 * M_PI * torch::rand({channels}));
}

torch::Tensor MPFourierImpl::forward(const torch::Tensor& x) {
  auto y = torch::outer(x.to(torch::kFloat32), freqs.to(torch::kFloat32)) + phases.to(torch::kFloat32);
  return (y.cos() * std::sqrt(2.0)).to(x.scalar_type());
}

// ---- the encoder/decoder block -------------------------------------------

class Edm2BlockImpl : public torch::nn::Module {
 public:
  Edm2BlockImpl(int64_t in_channels, int64_t out_channels, int64_t emb_channels, bool decoder, std::string resample,
                bool attention, const Edm2Config& c)
      : decoder_(decoder), resample_(std::move(resample)), config_(c) {
    if (attention) {
      UD2M_CHECK(out_channels % c.channels_per_head == 0,
                 "EDM2 config: a block of {} channels cannot be split into heads of {} channels", out_channels,
                 c.channels_per_head);
      num_heads_ = out_channels / c.channels_per_head;
    }
    emb_gain = register_parameter("emb_gain", torch::zeros({}));
    conv_res0 = register_module("conv_res0", MPConv(decoder ? in_channels : out_channels, out_channels,
                                                    std::vector<int64_t>{3, 3}));
    emb_linear = register_module("emb_linear", MPConv(emb_channels, out_channels, std::vector<int64_t>{}));
    conv_res1 = register_module("conv_res1", MPConv(out_channels, out_channels, std::vector<int64_t>{3, 3}));
    if (in_channels != out_channels)
      conv_skip = register_module("conv_skip", MPConv(in_channels, out_channels, std::vector<int64_t>{1, 1}));
    if (num_heads_ > 0) {
      attn_qkv = register_module("attn_qkv", MPConv(out_channels, out_channels * 3, std::vector<int64_t>{1, 1}));
      attn_proj = register_module("attn_proj", MPConv(out_channels, out_channels, std::vector<int64_t>{1, 1}));
    }
  }

  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb) {
    x = resample(x, resample_);
    if (!decoder_) {
      if (conv_skip) x = conv_skip(x);
      x = mp_normalize(x, {1});  // pixel norm
    }
    auto y = conv_res0(mp_silu(x));
    auto scale = emb_linear(emb, emb_gain) + 1;
    y = mp_silu(y * scale.unsqueeze(2).unsqueeze(3).to(y.scalar_type()));
    if (is_training() && config_.dropout > 0) y = F::dropout(y, F::DropoutFuncOptions().p(config_.dropout));
    y = conv_res1(y);
    if (decoder_ && conv_skip) x = conv_skip(x);
    x = mp_sum(x, y, config_.res_balance);
    if (num_heads_ > 0) x = mp_sum(x, attention(x), config_.attn_balance);
    if (config_.clip_act > 0) x = x.clamp(-config_.clip_act, config_.clip_act);
    return x;
  }

 private:
  // Multi-head self-attention with pixel-normalised q, k, v: the qkv channels
  // are laid out (head, channel, {q, k, v}).
  torch::Tensor attention(const torch::Tensor& x) {
    const int64_t n = x.size(0), hw = x.size(2) * x.size(3);
    auto qkv = mp_normalize(attn_qkv(x).reshape({n, num_heads_, -1, 3, hw}), {2});
    auto q = qkv.select(3, 0), k = qkv.select(3, 1), v = qkv.select(3, 2);
    auto w = torch::einsum("nhcq,nhck->nhqk", {q, k / std::sqrt(static_cast<double>(q.size(2)))}).softmax(3);
    auto y = torch::einsum("nhqk,nhck->nhcq", {w, v});
    return attn_proj(y.reshape(x.sizes()));
  }

  bool decoder_;
  std::string resample_;
  Edm2Config config_;
  int64_t num_heads_ = 0;
  torch::Tensor emb_gain;
  MPConv conv_res0{nullptr}, emb_linear{nullptr}, conv_res1{nullptr}, conv_skip{nullptr}, attn_qkv{nullptr},
      attn_proj{nullptr};
};

// ---- the U-Net ------------------------------------------------------------

namespace {

void add(torch::nn::ModuleDict& dict, const std::string& name, std::shared_ptr<torch::nn::Module> module) {
  dict->update({{name, std::move(module)}});
}

std::string tag(int res) { return std::to_string(res) + "x" + std::to_string(res); }

// Builds the encoder and decoder halves with EDM2's layer names.
struct Edm2Layers {
  const Edm2Config& c;

  Edm2Block block(int in, int out, bool decoder, const std::string& mode, bool attention) const {
    return Edm2Block(std::make_shared<Edm2BlockImpl>(in, out, c.emb_dim(), decoder, mode, attention, c));
  }
  bool has_attention(int res) const {
    return std::find(c.attn_resolutions.begin(), c.attn_resolutions.end(), res) != c.attn_resolutions.end();
  }

  int channels(size_t level) const { return c.model_channels * c.channel_mult[level]; }

  // Each encoder layer's output channels: the skips the decoder consumes.
  std::vector<int> skip_channels() const {
    std::vector<int> skips;
    for (size_t level = 0; level < c.channel_mult.size(); ++level) {
      skips.push_back(channels(level == 0 ? 0 : level - 1));  // the input conv, or a down-sampling block
      skips.insert(skips.end(), c.num_blocks, channels(level));
    }
    return skips;
  }

  void add_encoder(torch::nn::ModuleDict& enc) const {
    int cout = c.img_channels + 1;  // the input gets a constant channel of ones
    for (size_t level = 0; level < c.channel_mult.size(); ++level) {
      const int res = c.img_resolution >> level;
      if (level == 0) {
        add(enc, tag(res) + "_conv", MPConv(cout, channels(0), std::vector<int64_t>{3, 3}).ptr());
        cout = channels(0);
      } else {
        add(enc, tag(res) + "_down", block(cout, cout, false, "down", false).ptr());
      }
      for (int idx = 0; idx < c.num_blocks; ++idx) {
        add(enc, tag(res) + "_block" + std::to_string(idx),
            block(cout, channels(level), false, "keep", has_attention(res)).ptr());
        cout = channels(level);
      }
    }
  }

  // Returns the decoder's output channels.
  int add_decoder(torch::nn::ModuleDict& dec) const {
    auto skips = skip_channels();
    int cout = skips.back();
    for (int level = static_cast<int>(c.channel_mult.size()) - 1; level >= 0; --level) {
      const int res = c.img_resolution >> level, channels = this->channels(level);
      if (level == static_cast<int>(c.channel_mult.size()) - 1) {
        add(dec, tag(res) + "_in0", block(cout, cout, true, "keep", true).ptr());
        add(dec, tag(res) + "_in1", block(cout, cout, true, "keep", false).ptr());
      } else {
        add(dec, tag(res) + "_up", block(cout, cout, true, "up", false).ptr());
      }
      for (int idx = 0; idx <= c.num_blocks; ++idx) {
        const int cin = cout + skips.back();
        skips.pop_back();
        add(dec, tag(res) + "_block" + std::to_string(idx), block(cin, channels, true, "keep", has_attention(res)).ptr());
        cout = channels;
      }
    }
    return cout;
  }
};

std::vector<torch::Tensor> run_encoder(torch::nn::ModuleDict& enc, const torch::Tensor& input,
                                       const torch::Tensor& emb) {
  auto x = torch::cat({input, torch::ones_like(input.narrow(1, 0, 1))}, 1);
  std::vector<torch::Tensor> skips;
  for (const auto& [name, module] : enc->items()) {
    if (auto conv = module->as<MPConvImpl>()) x = conv->forward(x);
    else x = module->as<Edm2BlockImpl>()->forward(x, emb);
    skips.push_back(x);
  }
  return skips;
}

// Each "block" layer concatenates the last remaining skip.
torch::Tensor run_decoder(torch::nn::ModuleDict& dec, torch::Tensor x, std::vector<torch::Tensor> skips,
                          const torch::Tensor& emb, double concat_balance) {
  for (const auto& [name, module] : dec->items()) {
    if (name.find("block") != std::string::npos) {
      x = mp_cat(x, skips.back(), concat_balance);
      skips.pop_back();
    }
    x = module->as<Edm2BlockImpl>()->forward(x, emb);
  }
  return x;
}

}  // namespace

int Edm2Config::noise_dim() const { return noise_channels > 0 ? noise_channels : model_channels * channel_mult.at(0); }

int Edm2Config::emb_dim() const {
  return emb_channels > 0 ? emb_channels : model_channels * *std::max_element(channel_mult.begin(), channel_mult.end());
}

Edm2StemImpl::Edm2StemImpl(const Edm2Config& c) : config_(c) {
  UD2M_CHECK(!c.channel_mult.empty() && c.num_blocks > 0 && c.model_channels > 0,
             "EDM2 config: channel_mult, num_blocks and model_channels must be positive");
  emb_fourier = register_module("emb_fourier", MPFourier(c.noise_dim()));
  emb_noise = register_module("emb_noise", MPConv(c.noise_dim(), c.emb_dim(), std::vector<int64_t>{}));
  if (c.label_dim > 0)
    emb_label = register_module("emb_label", MPConv(c.label_dim, c.emb_dim(), std::vector<int64_t>{}));
}

torch::Tensor Edm2StemImpl::embedding(const torch::Tensor& noise_labels, const torch::Tensor& class_labels) {
  auto emb = emb_noise(emb_fourier(noise_labels));
  if (emb_label) {
    auto labels = class_labels.defined() ? class_labels.to(emb.scalar_type())
                                         : torch::zeros({noise_labels.size(0), config_.label_dim}, emb.options());
    emb = mp_sum(emb, emb_label(labels * std::sqrt(static_cast<double>(config_.label_dim))), config_.label_balance);
  }
  return mp_silu(emb);
}

Edm2UNetImpl::Edm2UNetImpl(const Edm2Config& c) : Edm2StemImpl(c) {
  out_gain = register_parameter("out_gain", torch::zeros({}));
  const Edm2Layers layers{c};
  enc = register_module("enc", torch::nn::ModuleDict());
  layers.add_encoder(enc);
  dec = register_module("dec", torch::nn::ModuleDict());
  out_conv = register_module("out_conv", MPConv(layers.add_decoder(dec), c.img_channels,
                                                std::vector<int64_t>{3, 3}));
}

torch::Tensor Edm2UNetImpl::forward(const torch::Tensor& input, const torch::Tensor& noise_labels,
                                    const torch::Tensor& class_labels) {
  auto emb = embedding(noise_labels, class_labels);
  auto skips = run_encoder(enc, input, emb);
  auto x = skips.back();  // the encoder's output is also its last skip
  return out_conv(run_decoder(dec, x, std::move(skips), emb, config_.concat_balance), out_gain);
}

// ---- preconditioning -------------------------------------------------------

namespace {

// EDM's input and output scalings at level σ (N,), as (N, 1, 1, 1) columns, and c_noise (N,).
struct EdmScaling {
  torch::Tensor c_skip, c_out, c_in, c_noise;
};

EdmScaling edm_scaling(const torch::Tensor& sigma, double sd) {
  auto s = sigma.to(torch::kFloat32).reshape({-1, 1, 1, 1});
  return {sd * sd / (s * s + sd * sd), s * sd / (s * s + sd * sd).sqrt(), 1 / (s * s + sd * sd).sqrt(),
          s.flatten().log() / 4};
}

// u(σ): the log-variance head, on Fourier features of c_noise(σ). (N,)
torch::Tensor log_variance(MPFourier& fourier, MPConv& linear, const torch::Tensor& sigma) {
  return linear(fourier(sigma.to(torch::kFloat32).flatten().log() / 4)).reshape({-1});
}

}  // namespace

Edm2NetImpl::Edm2NetImpl(const Edm2Config& c) : config_(c) {
  unet = register_module("unet", Edm2UNet(c));
  logvar_fourier = register_module("logvar_fourier", MPFourier(c.logvar_channels));
  logvar_linear = register_module("logvar_linear", MPConv(c.logvar_channels, 1, std::vector<int64_t>{}));
}

torch::Tensor Edm2NetImpl::forward(const torch::Tensor& x, const torch::Tensor& sigma,
                                   const torch::Tensor& class_labels) {
  const auto k = edm_scaling(sigma, config_.sigma_data);
  auto x32 = x.to(torch::kFloat32);
  auto f = unet(k.c_in * x32, k.c_noise, class_labels);
  return k.c_skip * x32 + k.c_out * f.to(torch::kFloat32);
}

torch::Tensor Edm2NetImpl::logvar(const torch::Tensor& sigma) {
  return log_variance(logvar_fourier, logvar_linear, sigma);
}

Edm2Classes::Edm2Classes(int label_dim, int fixed, const std::string& model) : label_dim(label_dim), fixed(fixed) {
  UD2M_CHECK(fixed < label_dim, "class {} does not exist: {} {}", fixed, model,
             label_dim == 0 ? "is unconditional" : fmt::format("has {} classes", label_dim));
}

torch::Tensor Edm2Classes::one_hot(int64_t rows, torch::Device device) const {
  torch::Tensor classes;
  if (!per_row.empty()) {
    UD2M_CHECK(static_cast<int64_t>(per_row.size()) == rows, "classes were drawn for batches of {} rows, not {}",
               per_row.size(), rows);
    classes = torch::tensor(per_row, torch::kLong);
  } else if (fixed >= 0) {
    classes = torch::full({rows}, fixed, torch::kLong);
  } else {
    return {};
  }
  return torch::one_hot(classes, label_dim).to(torch::kFloat32).to(device);
}

// ---- NCVSD's ControlNet generator --------------------------------------------

Edm2EncoderImpl::Edm2EncoderImpl(const Edm2Config& c) : Edm2StemImpl(c) {
  enc = register_module("enc", torch::nn::ModuleDict());
  Edm2Layers{c}.add_encoder(enc);
}

std::vector<torch::Tensor> Edm2EncoderImpl::forward(const torch::Tensor& x, const torch::Tensor& noise_labels,
                                                    const torch::Tensor& class_labels) {
  return run_encoder(enc, x, embedding(noise_labels, class_labels));
}

Edm2DecoderImpl::Edm2DecoderImpl(const Edm2Config& c) : Edm2StemImpl(c) {
  const Edm2Layers layers{c};
  out_gain = register_parameter("out_gain", torch::zeros({}));
  additional_x_weight = register_parameter("additional_x_weight", torch::zeros({1}));
  additional_skips_weight =
      register_parameter("additional_skips_weight", torch::zeros({static_cast<int64_t>(layers.skip_channels().size())}));
  dec = register_module("dec", torch::nn::ModuleDict());
  out_conv = register_module("out_conv", MPConv(layers.add_decoder(dec), c.img_channels,
                                                std::vector<int64_t>{3, 3}));
}

torch::Tensor Edm2DecoderImpl::forward(std::vector<torch::Tensor> skips, const std::vector<torch::Tensor>& control,
                                       const torch::Tensor& noise_labels, const torch::Tensor& class_labels) {
  UD2M_CHECK(control.size() == skips.size(), "the ControlNet branch gave {} skips, the encoder {}", control.size(),
             skips.size());
  // The mixing weights are kept in [0, 1]: clipped on every call, and in
  // training also where they are stored (as the reference does).
  if (is_training()) {
    torch::NoGradGuard no_grad;
    additional_x_weight.clamp_(0, 1);
    additional_skips_weight.clamp_(0, 1);
  }
  auto mix = [](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& weight) {
    auto t = weight.clamp(0, 1).to(a.scalar_type());
    return torch::lerp(a, b, t) / ((1 - t).square() + t.square()).sqrt();
  };
  // The encoders' outputs mix with one weight, each pair of skips with its own
  // (the outputs are also the last skips, mixed there with that skip's weight).
  auto x = mix(skips.back(), control.back(), additional_x_weight);
  for (size_t i = 0; i < skips.size(); ++i)
    skips[i] = mix(skips[i], control[i], additional_skips_weight[static_cast<int64_t>(i)]);
  auto emb = embedding(noise_labels, class_labels);
  return out_conv(run_decoder(dec, x, std::move(skips), emb, config_.concat_balance), out_gain);
}

Edm2ControlNetImpl::Edm2ControlNetImpl(const Edm2Config& c) : config_(c) {
  ctrl = register_module("ctrl", Edm2Encoder(c));
  enc = register_module("enc", Edm2Encoder(c));
  dec = register_module("dec", Edm2Decoder(c));
  logvar_fourier = register_module("logvar_fourier", MPFourier(c.logvar_channels));
  logvar_linear = register_module("logvar_linear", MPConv(c.logvar_channels, 1, std::vector<int64_t>{}));
}

torch::Tensor Edm2ControlNetImpl::forward(const torch::Tensor& x, const torch::Tensor& level, const torch::Tensor& y,
                                          const torch::Tensor& sigma_y, const torch::Tensor& class_labels) {
  const auto ky = edm_scaling(sigma_y, config_.sigma_data), kx = edm_scaling(level, config_.sigma_data);
  auto x32 = x.to(torch::kFloat32);
  auto control = ctrl(ky.c_in * y.to(torch::kFloat32), ky.c_noise, class_labels);
  auto skips = enc(kx.c_in * x32, kx.c_noise, class_labels);
  auto f = dec(std::move(skips), control, kx.c_noise, class_labels);
  return kx.c_skip * x32 + kx.c_out * f.to(torch::kFloat32);
}

torch::Tensor Edm2ControlNetImpl::logvar(const torch::Tensor& level) {
  return log_variance(logvar_fourier, logvar_linear, level);
}

// ---- config ----------------------------------------------------------------

nlohmann::json Edm2Config::to_json() const {
  return {{"img_resolution", img_resolution}, {"img_channels", img_channels},
          {"label_dim", label_dim},           {"model_channels", model_channels},
          {"channel_mult", channel_mult},     {"noise_channels", noise_dim()},
          {"emb_channels", emb_dim()},        {"num_blocks", num_blocks},
          {"attn_resolutions", attn_resolutions}, {"channels_per_head", channels_per_head},
          {"label_balance", label_balance},   {"concat_balance", concat_balance},
          {"res_balance", res_balance},       {"attn_balance", attn_balance},
          {"clip_act", clip_act},             {"dropout", dropout},
          {"logvar_channels", logvar_channels},
          {"sigma_data", sigma_data}};
}

Edm2Config Edm2Config::from_json(const nlohmann::json& j) {
  Edm2Config c;
  auto get = [&](const char* key, auto& field) {
    if (j.contains(key)) j.at(key).get_to(field);
  };
  get("img_resolution", c.img_resolution);
  get("img_channels", c.img_channels);
  get("label_dim", c.label_dim);
  get("model_channels", c.model_channels);
  get("channel_mult", c.channel_mult);
  get("noise_channels", c.noise_channels);
  get("emb_channels", c.emb_channels);
  get("num_blocks", c.num_blocks);
  get("attn_resolutions", c.attn_resolutions);
  get("channels_per_head", c.channels_per_head);
  get("label_balance", c.label_balance);
  get("concat_balance", c.concat_balance);
  get("res_balance", c.res_balance);
  get("attn_balance", c.attn_balance);
  get("clip_act", c.clip_act);
  get("dropout", c.dropout);
  get("logvar_channels", c.logvar_channels);
  get("sigma_data", c.sigma_data);
  return c;
}

// ---- reading EDM2 pickles --------------------------------------------------

namespace {

// A persistent_class object flattens as "<name>.0.state.<attribute>" (its
// reconstruction record's argument is {class source, ..., state}); a module's
// children, parameters and buffers sit under _modules/_parameters/_buffers.
// Dropping those segments leaves PyTorch's own state_dict names.
std::string module_path(const std::string& flat) {
  std::vector<std::string> parts, kept;
  for (size_t start = 0;;) {
    auto dot = flat.find('.', start);
    parts.push_back(flat.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] == "_modules" || parts[i] == "_parameters" || parts[i] == "_buffers") continue;
    if (parts[i] == "0" && i + 1 < parts.size() && parts[i + 1] == "state") {
      ++i;
      continue;
    }
    kept.push_back(parts[i]);
  }
  std::string out;
  for (auto& p : kept) out += (out.empty() ? "" : ".") + p;
  return out;
}

}  // namespace

TensorMap edm2_state_dict(const TensorFile& file) {
  TensorMap weights;
  for (auto& [name, tensor] : file.tensors) {
    auto clean = module_path(name);
    if (clean.rfind("ema.", 0) == 0) weights[clean.substr(4)] = tensor;
  }
  if (weights.empty())  // not a snapshot: a state dict of the network itself
    for (auto& [name, tensor] : file.tensors) weights[module_path(name)] = tensor;
  return weights;
}

bool looks_like_edm2(const TensorMap& weights) {
  return weights.count("unet.out_gain") && weights.count("unet.emb_fourier.freqs");
}

namespace {
// The config from an EDM2 Precond's names and shapes (unet.*, logvar_*).
Edm2Config config_from_precond_weights(const TensorMap& weights, const Metadata& metadata, const std::string& source);
}  // namespace

bool looks_like_edm2_controlnet(const TensorMap& weights) {
  return weights.count("model.ctrl.emb_fourier.freqs") && weights.count("model.dec.additional_x_weight");
}

Edm2Config infer_edm2_controlnet_config(const TensorMap& weights, const Metadata& metadata,
                                        const std::string& source) {
  UD2M_CHECK(looks_like_edm2_controlnet(weights),
             "'{}' holds no NCVSD generator network (no model.ctrl / model.dec.additional_x_weight)", source);
  // Its main encoder and log-variance head are laid out as an EDM2 Precond's U-Net's.
  TensorMap as_precond;
  for (auto& [name, t] : weights) {
    if (name.rfind("model.enc.", 0) == 0) as_precond["unet." + name.substr(10)] = t;
    if (name.rfind("model.logvar_", 0) == 0) as_precond[name.substr(6)] = t;
  }
  return config_from_precond_weights(as_precond, metadata, source);
}

Edm2Config infer_edm2_config(const TensorMap& weights, const Metadata& metadata, const std::string& source) {
  UD2M_CHECK(looks_like_edm2(weights), "'{}' holds no EDM2 network (no unet.out_gain / unet.emb_fourier.freqs)",
             source);
  return config_from_precond_weights(weights, metadata, source);
}

namespace {

Edm2Config config_from_precond_weights(const TensorMap& weights, const Metadata& metadata, const std::string& source) {
  auto shape = [&](const std::string& name) {
    auto it = weights.find(name);
    UD2M_CHECK(it != weights.end(), "'{}' is not a complete EDM2 network: '{}' is missing", source, name);
    return it->second.sizes().vec();
  };
  Edm2Config c;
  // Encoder levels, from the names "unet.enc.<res>x<res>_<kind>".
  static const std::regex enc_name(R"(unet\.enc\.(\d+)x\d+_(conv|down|block(\d+))\..*)");
  std::map<int, int, std::greater<int>> blocks_at;  // resolution -> number of blocks, largest first
  std::set<int> attention;
  for (auto& [name, t] : weights) {
    std::smatch m;
    if (!std::regex_match(name, m, enc_name)) continue;
    const int res = std::stoi(m[1]);
    auto& count = blocks_at[res];
    if (m[3].matched) {
      count = std::max(count, std::stoi(m[3]) + 1);
      if (name.find(".attn_qkv.") != std::string::npos) attention.insert(res);
    }
  }
  UD2M_CHECK(!blocks_at.empty(), "'{}' is not a complete EDM2 network: it has no encoder", source);
  c.img_resolution = blocks_at.begin()->first;
  const auto first = shape(fmt::format("unet.enc.{0}x{0}_conv.weight", c.img_resolution));
  c.img_channels = static_cast<int>(first.at(1)) - 1;
  c.num_blocks = blocks_at.begin()->second;
  std::vector<int> channels;
  for (auto& [res, count] : blocks_at)
    channels.push_back(static_cast<int>(shape(fmt::format("unet.enc.{0}x{0}_block0.conv_res1.weight", res)).at(0)));
  c.model_channels = std::accumulate(channels.begin(), channels.end(), 0, [](int a, int b) { return std::gcd(a, b); });
  c.channel_mult.clear();
  for (int ch : channels) c.channel_mult.push_back(ch / c.model_channels);
  c.attn_resolutions.assign(attention.rbegin(), attention.rend());
  c.noise_channels = static_cast<int>(shape("unet.emb_fourier.freqs").at(0));
  c.emb_channels = static_cast<int>(shape("unet.emb_noise.weight").at(0));
  c.label_dim = weights.count("unet.emb_label.weight") ? static_cast<int>(shape("unet.emb_label.weight").at(1)) : 0;
  c.logvar_channels = static_cast<int>(shape("logvar_fourier.freqs").at(0));

  // What the weights cannot tell: the constructor arguments a pickle stores.
  for (auto& [key, value] : metadata) {
    auto clean = module_path(key);
    auto at = clean.rfind("._init_kwargs.");
    if (clean.rfind("ema.", 0) != 0 || at == std::string::npos) continue;
    auto field = clean.substr(at + std::string("._init_kwargs.").size());
    auto parsed = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) continue;
    if (field == "channels_per_head" && parsed.is_number_integer()) c.channels_per_head = parsed;
    if (field == "sigma_data" && parsed.is_number()) c.sigma_data = parsed;
    const std::pair<const char*, double*> numbers[] = {{"label_balance", &c.label_balance},
                                                       {"concat_balance", &c.concat_balance},
                                                       {"res_balance", &c.res_balance},
                                                       {"attn_balance", &c.attn_balance},
                                                       {"clip_act", &c.clip_act},
                                                       {"dropout", &c.dropout}};
    for (auto [name, target] : numbers)
      if (field == name && parsed.is_number()) *target = parsed;
  }
  return c;
}

}  // namespace

}  // namespace ud2m::nets
