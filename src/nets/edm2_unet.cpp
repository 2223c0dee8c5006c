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

// ---- the U-Net -------------------------------------------------------------

namespace {
void add(torch::nn::ModuleDict& dict, const std::string& name, std::shared_ptr<torch::nn::Module> module) {
  dict->update({{name, std::move(module)}});
}
}  // namespace

int Edm2Config::noise_dim() const { return noise_channels > 0 ? noise_channels : model_channels * channel_mult.at(0); }

int Edm2Config::emb_dim() const {
  return emb_channels > 0 ? emb_channels : model_channels * *std::max_element(channel_mult.begin(), channel_mult.end());
}

Edm2UNetImpl::Edm2UNetImpl(const Edm2Config& c) : config_(c) {
  UD2M_CHECK(!c.channel_mult.empty() && c.num_blocks > 0 && c.model_channels > 0,
             "EDM2 config: channel_mult, num_blocks and model_channels must be positive");
  const int cemb = c.emb_dim();
  out_gain = register_parameter("out_gain", torch::zeros({}));
  emb_fourier = register_module("emb_fourier", MPFourier(c.noise_dim()));
  emb_noise = register_module("emb_noise", MPConv(c.noise_dim(), cemb, std::vector<int64_t>{}));
  if (c.label_dim > 0) emb_label = register_module("emb_label", MPConv(c.label_dim, cemb, std::vector<int64_t>{}));
  auto has_attention = [&](int res) {
    return std::find(c.attn_resolutions.begin(), c.attn_resolutions.end(), res) != c.attn_resolutions.end();
  };
  auto block = [&](int in, int out, bool decoder, const std::string& mode, bool attention) {
    return Edm2Block(std::make_shared<Edm2BlockImpl>(in, out, cemb, decoder, mode, attention, c));
  };

  enc = register_module("enc", torch::nn::ModuleDict());
  std::vector<int> skips;
  int cout = c.img_channels + 1;  // the input gets a constant channel of ones
  for (size_t level = 0; level < c.channel_mult.size(); ++level) {
    const int res = c.img_resolution >> level, channels = c.model_channels * c.channel_mult[level];
    const std::string tag = std::to_string(res) + "x" + std::to_string(res);
    if (level == 0) {
      add(enc, tag + "_conv", MPConv(cout, channels, std::vector<int64_t>{3, 3}).ptr());
      cout = channels;
    } else {
      add(enc, tag + "_down", block(cout, cout, false, "down", false).ptr());
    }
    skips.push_back(cout);
    for (int idx = 0; idx < c.num_blocks; ++idx) {
      add(enc, tag + "_block" + std::to_string(idx), block(cout, channels, false, "keep", has_attention(res)).ptr());
      cout = channels;
      skips.push_back(cout);
    }
  }

  dec = register_module("dec", torch::nn::ModuleDict());
  for (int level = static_cast<int>(c.channel_mult.size()) - 1; level >= 0; --level) {
    const int res = c.img_resolution >> level, channels = c.model_channels * c.channel_mult[level];
    const std::string tag = std::to_string(res) + "x" + std::to_string(res);
    if (level == static_cast<int>(c.channel_mult.size()) - 1) {
      add(dec, tag + "_in0", block(cout, cout, true, "keep", true).ptr());
      add(dec, tag + "_in1", block(cout, cout, true, "keep", false).ptr());
    } else {
      add(dec, tag + "_up", block(cout, cout, true, "up", false).ptr());
    }
    for (int idx = 0; idx <= c.num_blocks; ++idx) {
      const int cin = cout + skips.back();
      skips.pop_back();
      add(dec, tag + "_block" + std::to_string(idx), block(cin, channels, true, "keep", has_attention(res)).ptr());
      cout = channels;
    }
  }
  out_conv = register_module("out_conv", MPConv(cout, c.img_channels, std::vector<int64_t>{3, 3}));
}

torch::Tensor Edm2UNetImpl::forward(const torch::Tensor& input, const torch::Tensor& noise_labels,
                                    const torch::Tensor& class_labels) {
  auto emb = emb_noise(emb_fourier(noise_labels));
  if (emb_label) {
    auto labels = class_labels.defined() ? class_labels.to(emb.scalar_type())
                                         : torch::zeros({input.size(0), config_.label_dim}, emb.options());
    emb = mp_sum(emb, emb_label(labels * std::sqrt(static_cast<double>(config_.label_dim))), config_.label_balance);
  }
  emb = mp_silu(emb);

  auto x = torch::cat({input, torch::ones_like(input.narrow(1, 0, 1))}, 1);
  std::vector<torch::Tensor> skips;
  for (const auto& [name, module] : enc->items()) {
    if (auto conv = module->as<MPConvImpl>()) x = conv->forward(x);
    else x = module->as<Edm2BlockImpl>()->forward(x, emb);
    skips.push_back(x);
  }
  for (const auto& [name, module] : dec->items()) {
    if (name.find("block") != std::string::npos) {
      x = mp_cat(x, skips.back(), config_.concat_balance);
      skips.pop_back();
    }
    x = module->as<Edm2BlockImpl>()->forward(x, emb);
  }
  return out_conv(x, out_gain);
}

// ---- preconditioning -------------------------------------------------------

Edm2NetImpl::Edm2NetImpl(const Edm2Config& c) : config_(c) {
  unet = register_module("unet", Edm2UNet(c));
  logvar_fourier = register_module("logvar_fourier", MPFourier(c.logvar_channels));
  logvar_linear = register_module("logvar_linear", MPConv(c.logvar_channels, 1, std::vector<int64_t>{}));
}

torch::Tensor Edm2NetImpl::forward(const torch::Tensor& x, const torch::Tensor& sigma,
                                   const torch::Tensor& class_labels) {
  const double sd = config_.sigma_data;
  auto s = sigma.to(torch::kFloat32).reshape({-1, 1, 1, 1});
  auto c_skip = sd * sd / (s * s + sd * sd);
  auto c_out = s * sd / (s * s + sd * sd).sqrt();
  auto c_in = 1 / (s * s + sd * sd).sqrt();
  auto c_noise = s.flatten().log() / 4;
  auto x32 = x.to(torch::kFloat32);
  auto f = unet(c_in * x32, c_noise, class_labels);
  return c_skip * x32 + c_out * f.to(torch::kFloat32);
}

torch::Tensor Edm2NetImpl::logvar(const torch::Tensor& sigma) {
  auto c_noise = sigma.to(torch::kFloat32).flatten().log() / 4;
  return logvar_linear(logvar_fourier(c_noise)).reshape({-1});
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

Edm2Config infer_edm2_config(const TensorMap& weights, const Metadata& metadata, const std::string& source) {
  UD2M_CHECK(looks_like_edm2(weights), "'{}' holds no EDM2 network (no unet.out_gain / unet.emb_fourier.freqs)",
             source);
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

}  // namespace ud2m::nets
