#include "nets/ddpm_unet.hpp"

#include <cmath>

#include "core/error.hpp"

namespace ud2m::nets {
namespace F = torch::nn::functional;
namespace {

Fp32GroupNorm group_norm(const DdpmConfig& c, int64_t channels) {
  return Fp32GroupNorm(c.norm_num_groups, channels, c.norm_eps);
}

torch::nn::Conv2d conv3x3(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}

class ResnetBlockImpl : public torch::nn::Module {
 public:
  ResnetBlockImpl(const DdpmConfig& c, int64_t in, int64_t out, int64_t temb) {
    norm1 = register_module("norm1", group_norm(c, in));
    conv1 = register_module("conv1", conv3x3(in, out));
    time_emb_proj = register_module("time_emb_proj", torch::nn::Linear(temb, out));
    norm2 = register_module("norm2", group_norm(c, out));
    dropout = register_module("dropout", torch::nn::Dropout(c.dropout));
    conv2 = register_module("conv2", conv3x3(out, out));
    if (in != out) conv_shortcut = register_module("conv_shortcut", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1)));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) {
    auto h = with_lora(*conv1, conv1_lora, norm1->forward_silu(x));
    h = h + time_emb_proj(torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);
    h = with_lora(*conv2, conv2_lora, dropout(norm2->forward_silu(h)));
    return (conv_shortcut ? conv_shortcut(x) : x) + h;
  }
  void add_lora(const LoraOptions& options) {
    auto lora = [&](const torch::nn::Conv2d& conv) {
      return ConvLora(conv->options.in_channels(), conv->options.out_channels(), options);
    };
    conv1_lora = register_module("conv1_lora", lora(conv1));
    conv2_lora = register_module("conv2_lora", lora(conv2));
  }

  void fold_lora() {
    nets::fold_lora(*this, "conv1_lora", conv1->weight, conv1_lora);
    nets::fold_lora(*this, "conv2_lora", conv2->weight, conv2_lora);
  }

 private:
  ConvLora conv1_lora{nullptr}, conv2_lora{nullptr};
  Fp32GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(ResnetBlock);

// Self-attention over pixels with linear q/k/v/out projections (diffusers'
// Attention with a residual connection).
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const DdpmConfig& c, int64_t channels)
      : heads_(c.attention_head_dim > 0 ? channels / c.attention_head_dim : 1) {
    group_norm_ = register_module("group_norm", group_norm(c, channels));
    to_q = register_module("to_q", torch::nn::Linear(channels, channels));
    to_k = register_module("to_k", torch::nn::Linear(channels, channels));
    to_v = register_module("to_v", torch::nn::Linear(channels, channels));
    to_out = register_module("to_out", torch::nn::ModuleList(torch::nn::Linear(channels, channels)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), d = c / heads_;
    auto tokens = group_norm_(x).reshape({b, c, h * w}).transpose(1, 2);  // (B, T, C); x may be channels-last
    // Contiguous (B, heads, T, d) operands: on transposed views the CPU falls
    // back to the unfused attention kernel (several times slower).
    auto split = [&](const torch::Tensor& t) { return t.view({b, h * w, heads_, d}).transpose(1, 2).contiguous(); };
    auto project = [&](torch::nn::Linear& linear, Lora& lora, const torch::Tensor& in) {
      auto out = linear(in);
      return lora ? out + lora->channels_last(in) : out;
    };
    auto a = at::scaled_dot_product_attention(split(project(to_q, q_lora, tokens)), split(project(to_k, k_lora, tokens)),
                                              split(project(to_v, v_lora, tokens)));
    auto merged = a.transpose(1, 2).reshape({b, h * w, c});
    auto out = to_out[0]->as<torch::nn::Linear>()->forward(merged);
    if (out_lora) out = out + out_lora->channels_last(merged);
    // x first: the sum takes x's memory layout (the reshaped tokens are channels-last).
    return x + out.transpose(1, 2).reshape({b, c, h, w});
  }

  void add_lora(const LoraOptions& options) {
    const int64_t c = to_q->options.in_features();
    q_lora = register_module("to_q_lora", Lora(c, c, options));
    k_lora = register_module("to_k_lora", Lora(c, c, options));
    v_lora = register_module("to_v_lora", Lora(c, c, options));
    out_lora = register_module("to_out_lora", Lora(c, c, options));
  }

  void fold_lora() {
    nets::fold_lora(*this, "to_q_lora", to_q->weight, q_lora);
    nets::fold_lora(*this, "to_k_lora", to_k->weight, k_lora);
    nets::fold_lora(*this, "to_v_lora", to_v->weight, v_lora);
    nets::fold_lora(*this, "to_out_lora", to_out[0]->as<torch::nn::Linear>()->weight, out_lora);
  }

 private:
  int64_t heads_;
  Fp32GroupNorm group_norm_{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};
  Lora q_lora{nullptr}, k_lora{nullptr}, v_lora{nullptr}, out_lora{nullptr};
};
TORCH_MODULE(Attention);

// One level: resnets (+ attentions) and an optional resampler, named as diffusers does.
class LevelImpl : public torch::nn::Module {
 public:
  LevelImpl(const DdpmConfig& c, std::vector<std::pair<int64_t, int64_t>> resnet_channels, bool attention,
            int64_t temb, int resample /* -1 down, 0 none, +1 up */, int64_t channels)
      : resample_(resample), padding_(c.downsample_padding) {
    resnets = register_module("resnets", torch::nn::ModuleList());
    for (auto [in, out] : resnet_channels) resnets->push_back(ResnetBlock(c, in, out, temb));
    if (attention) {
      attentions = register_module("attentions", torch::nn::ModuleList());
      for (size_t i = 0; i < resnet_channels.size(); ++i) attentions->push_back(Attention(c, channels));
    }
    if (resample < 0) {
      auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).stride(2).padding(c.downsample_padding));
      samplers = register_module("downsamplers", torch::nn::ModuleList(ResamplerConv(conv)));
    } else if (resample > 0) {
      samplers = register_module("upsamplers", torch::nn::ModuleList(ResamplerConv(conv3x3(channels, channels))));
    }
  }

  // Down path: returns the output of every resnet (and the resampler) as skips.
  torch::Tensor down(torch::Tensor h, const torch::Tensor& temb, std::vector<torch::Tensor>& skips) {
    for (size_t i = 0; i < resnets->size(); ++i) {
      h = resnets[i]->as<ResnetBlockImpl>()->forward(h, temb);
      if (attentions) h = attentions[i]->as<AttentionImpl>()->forward(h);
      skips.push_back(h);
    }
    if (samplers) {
      if (padding_ == 0) h = F::pad(h, F::PadFuncOptions({0, 1, 0, 1}));
      h = conv()->forward(h);
      skips.push_back(h);
    }
    return h;
  }

  // Up path: each resnet consumes one skip, last in first out.
  torch::Tensor up(torch::Tensor h, const torch::Tensor& temb, std::vector<torch::Tensor>& skips) {
    for (size_t i = 0; i < resnets->size(); ++i) {
      h = resnets[i]->as<ResnetBlockImpl>()->forward(torch::cat({h, skips.back()}, 1), temb);
      skips.pop_back();
      if (attentions) h = attentions[i]->as<AttentionImpl>()->forward(h);
    }
    if (samplers)
      h = conv()->forward(F::interpolate(h, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kNearest)));
    return h;
  }

 private:
  // diffusers wraps the resampling convolution in a module holding "conv".
  struct ResamplerConvImpl : torch::nn::Module {
    explicit ResamplerConvImpl(torch::nn::Conv2d c) { conv = register_module("conv", c); }
    torch::nn::Conv2d conv{nullptr};
  };
  TORCH_MODULE(ResamplerConv);
  torch::nn::Conv2dImpl* conv() { return samplers[0]->as<ResamplerConvImpl>()->conv.get(); }

  int resample_, padding_;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, samplers{nullptr};
};
TORCH_MODULE(Level);

class MidBlockImpl : public torch::nn::Module {
 public:
  MidBlockImpl(const DdpmConfig& c, int64_t channels, int64_t temb) {
    resnets = register_module("resnets", torch::nn::ModuleList(ResnetBlock(c, channels, channels, temb),
                                                               ResnetBlock(c, channels, channels, temb)));
    attentions = register_module("attentions", torch::nn::ModuleList(Attention(c, channels)));
  }
  torch::Tensor forward(torch::Tensor h, const torch::Tensor& temb) {
    h = resnets[0]->as<ResnetBlockImpl>()->forward(h, temb);
    h = attentions[0]->as<AttentionImpl>()->forward(h);
    return resnets[1]->as<ResnetBlockImpl>()->forward(h, temb);
  }
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(MidBlock);

// diffusers' Timesteps: exponent −ln(10⁴)·i/(half − shift), [sin, cos] unless flipped.
torch::Tensor sinusoidal_embedding(const torch::Tensor& t, int64_t dim, bool flip, int shift) {
  const int64_t half = dim / 2;
  auto freqs = torch::exp(-std::log(10000.0) * torch::arange(half, t.options().dtype(torch::kFloat32)) / (half - shift));
  auto args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);
  auto emb = flip ? torch::cat({torch::cos(args), torch::sin(args)}, -1) : torch::cat({torch::sin(args), torch::cos(args)}, -1);
  if (dim % 2) emb = F::pad(emb, F::PadFuncOptions({0, 1}));
  return emb;
}

}  // namespace

nlohmann::json DdpmConfig::to_json() const {
  return {{"in_channels", in_channels}, {"out_channels", out_channels},
          {"block_out_channels", block_out_channels}, {"attention", attention},
          {"layers_per_block", layers_per_block}, {"norm_num_groups", norm_num_groups},
          {"norm_eps", norm_eps}, {"attention_head_dim", attention_head_dim},
          {"flip_sin_to_cos", flip_sin_to_cos}, {"freq_shift", freq_shift},
          {"downsample_padding", downsample_padding}, {"dropout", dropout}};
}

DdpmConfig DdpmConfig::from_json(const nlohmann::json& j) {
  DdpmConfig c;
  c.in_channels = j.value("in_channels", c.in_channels);
  c.out_channels = j.value("out_channels", c.out_channels);
  c.block_out_channels = j.value("block_out_channels", c.block_out_channels);
  c.attention = j.value("attention", c.attention);
  c.layers_per_block = j.value("layers_per_block", c.layers_per_block);
  c.norm_num_groups = j.value("norm_num_groups", c.norm_num_groups);
  c.norm_eps = j.value("norm_eps", c.norm_eps);
  c.attention_head_dim = j.value("attention_head_dim", c.attention_head_dim);
  c.flip_sin_to_cos = j.value("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = j.value("freq_shift", c.freq_shift);
  c.downsample_padding = j.value("downsample_padding", c.downsample_padding);
  c.dropout = j.value("dropout", c.dropout);
  return c;
}

DdpmConfig DdpmConfig::from_diffusers(const nlohmann::json& j) {
  DdpmConfig c;
  c.in_channels = j.value("in_channels", 3);
  c.out_channels = j.value("out_channels", 3);
  c.block_out_channels = j.at("block_out_channels").get<std::vector<int>>();
  c.layers_per_block = j.value("layers_per_block", 2);
  c.norm_num_groups = j.value("norm_num_groups", 32);
  c.norm_eps = j.value("norm_eps", 1e-5);
  c.attention_head_dim = j.contains("attention_head_dim") && !j.at("attention_head_dim").is_null() ? j.at("attention_head_dim").get<int>() : 0;
  c.flip_sin_to_cos = j.value("flip_sin_to_cos", true);
  c.freq_shift = j.value("freq_shift", 0);
  c.downsample_padding = j.value("downsample_padding", 1);
  c.dropout = j.value("dropout", 0.0);
  c.attention.clear();
  for (auto& type : j.at("down_block_types")) {
    const auto name = type.get<std::string>();
    UD2M_CHECK(name == "DownBlock2D" || name == "AttnDownBlock2D", "unsupported diffusers block type '{}'", name);
    c.attention.push_back(name == "AttnDownBlock2D");
  }
  UD2M_CHECK(c.attention.size() == c.block_out_channels.size(), "config.json: {} block types for {} levels",
             c.attention.size(), c.block_out_channels.size());
  return c;
}

DdpmUNetImpl::DdpmUNetImpl(const DdpmConfig& c) : config_(c) {
  const auto& ch = c.block_out_channels;
  const int levels = static_cast<int>(ch.size());
  const int64_t temb = 4 * ch[0];
  conv_in = register_module("conv_in", conv3x3(c.in_channels, ch[0]));
  time_linear_1 = torch::nn::Linear(ch[0], temb);
  time_linear_2 = torch::nn::Linear(temb, temb);
  auto time_embedding = std::make_shared<torch::nn::Module>();
  time_embedding->register_module("linear_1", time_linear_1);
  time_embedding->register_module("linear_2", time_linear_2);
  register_module("time_embedding", time_embedding);

  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  for (int i = 0; i < levels; ++i) {
    std::vector<std::pair<int64_t, int64_t>> resnets;
    for (int k = 0; k < c.layers_per_block; ++k) resnets.push_back({k == 0 ? ch[std::max(i - 1, 0)] : ch[i], ch[i]});
    down_blocks->push_back(Level(c, resnets, c.attention[i], temb, i < levels - 1 ? -1 : 0, ch[i]));
  }
  mid_block = register_module("mid_block", MidBlock(c, ch.back(), temb).ptr());
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  for (int i = 0; i < levels; ++i) {
    const int level = levels - 1 - i;
    const int64_t out = ch[level], prev = ch[std::min(level + 1, levels - 1)];
    const int64_t skip_in = ch[std::max(level - 1, 0)];  // channels entering this level on the way down
    std::vector<std::pair<int64_t, int64_t>> resnets;
    for (int k = 0; k <= c.layers_per_block; ++k) {
      const int64_t skip = k == c.layers_per_block ? skip_in : out;
      resnets.push_back({(k == 0 ? prev : out) + skip, out});
    }
    up_blocks->push_back(Level(c, resnets, c.attention[level], temb, level > 0 ? 1 : 0, out));
  }
  conv_norm_out = register_module("conv_norm_out", group_norm(c, ch[0]));
  conv_out = register_module("conv_out", conv3x3(ch[0], c.out_channels));
}

torch::Tensor DdpmUNetImpl::forward(const torch::Tensor& x, const torch::Tensor& t) {
  // Activations follow the weights' dtype (bf16 inference); GroupNorm runs in fp32.
  const auto dtype = conv_in->weight.scalar_type();
  auto emb = sinusoidal_embedding(t, config_.block_out_channels[0], config_.flip_sin_to_cos, config_.freq_shift);
  emb = time_linear_2(torch::silu(time_linear_1(emb.to(dtype))));
  auto h = conv_in(x.to(dtype));
  std::vector<torch::Tensor> skips{h};
  for (auto& block : *down_blocks) h = block->as<LevelImpl>()->down(h, emb, skips);
  h = std::static_pointer_cast<MidBlockImpl>(mid_block)->forward(h, emb);
  for (auto& block : *up_blocks) h = block->as<LevelImpl>()->up(h, emb, skips);
  return conv_out(conv_norm_out->forward_silu(h)).to(x.scalar_type());
}

void DdpmUNetImpl::add_lora(const LoraOptions& options) {
  const bool resblocks = options.on_resblocks();
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* attention = dynamic_cast<AttentionImpl*>(m.get())) attention->add_lora(options);
    if (auto* block = dynamic_cast<ResnetBlockImpl*>(m.get()); block && resblocks) block->add_lora(options);
  }
}

void DdpmUNetImpl::fold_lora() {
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* attention = dynamic_cast<AttentionImpl*>(m.get())) attention->fold_lora();
    if (auto* block = dynamic_cast<ResnetBlockImpl*>(m.get())) block->fold_lora();
  }
}

}  // namespace ud2m::nets
