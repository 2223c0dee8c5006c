#include "nets/adm_unet.hpp"

#include <cmath>

#include "core/error.hpp"
#include "nets/channel_cat.hpp"
#include "nets/fp32_group_norm.hpp"
#include "nets/residual_add.hpp"

namespace ud2m::nets {
namespace F = torch::nn::functional;
namespace {

// guided-diffusion's normalization(): GroupNorm(32), in float32.
Fp32GroupNorm GroupNorm32(int64_t channels) { return Fp32GroupNorm(32, channels, 1e-5); }

torch::nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
}

class UpsampleImpl : public torch::nn::Module {
 public:
  UpsampleImpl(int64_t channels, bool use_conv, int64_t out_channels) {
    if (use_conv) conv = register_module("conv", conv3x3(channels, out_channels));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = F::interpolate(x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0})
                                   .mode(torch::kNearest));
    return conv ? conv(h) : h;
  }
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample);

class DownsampleImpl : public torch::nn::Module {
 public:
  DownsampleImpl(int64_t channels, bool use_conv, int64_t out_channels) {
    if (use_conv) op = register_module("op", conv3x3(channels, out_channels, 2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return op ? op(x) : F::avg_pool2d(x, F::AvgPool2dFuncOptions(2)); }
  torch::nn::Conv2d op{nullptr};
};
TORCH_MODULE(Downsample);

class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t channels, int64_t emb_channels, double dropout, int64_t out_channels, bool scale_shift,
               bool up = false, bool down = false)
      : scale_shift_(scale_shift) {
    in_layers = register_module(
        "in_layers", torch::nn::Sequential(GroupNorm32(channels), torch::nn::SiLU(), conv3x3(channels, out_channels)));
    if (up) {
      h_upd = std::make_shared<UpsampleImpl>(channels, false, channels);
      x_upd = std::make_shared<UpsampleImpl>(channels, false, channels);
    } else if (down) {
      h_down = std::make_shared<DownsampleImpl>(channels, false, channels);
      x_down = std::make_shared<DownsampleImpl>(channels, false, channels);
    }
    emb_layers = register_module(
        "emb_layers",
        torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(emb_channels, (scale_shift ? 2 : 1) * out_channels)));
    out_layers = register_module("out_layers",
                                 torch::nn::Sequential(GroupNorm32(out_channels), torch::nn::SiLU(),
                                                       torch::nn::Dropout(dropout), conv3x3(out_channels, out_channels)));
    if (out_channels != channels)
      skip = register_module("skip_connection",
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, out_channels, 1)));
  }

  torch::Tensor forward(const torch::Tensor& x_in, const torch::Tensor& emb) {
    torch::Tensor x = x_in;
    // (The SiLU modules in in_layers/out_layers only keep the original's
    // indices: each norm applies its activation, fused on a GPU.)
    auto a = in_layers[0]->as<Fp32GroupNormImpl>()->forward_silu(x);
    if (h_upd || h_down) {  // resample between the norm+activation and the convolution, as the original does
      a = h_upd ? h_upd->forward(a) : h_down->forward(a);
      x = x_upd ? x_upd->forward(x) : x_down->forward(x);
    }
    // The convolution's bias is added by the norm after it (on a GPU no pass
    // of its own: in the fused kernels).
    auto* in_conv = in_layers[2]->as<torch::nn::Conv2d>();
    auto h = with_lora(*in_conv, in_lora, a, /*with_bias=*/false);
    // emb_layers[0], the SiLU, was applied once for all blocks (AdmUNetImpl::activated_embedding).
    auto emb_out = emb_layers[1]->as<torch::nn::Linear>()->forward(emb).to(h.scalar_type()).unsqueeze(-1).unsqueeze(-1);
    auto* out_norm = out_layers[0]->as<Fp32GroupNormImpl>();
    if (scale_shift_) {
      auto parts = emb_out.chunk(2, 1);
      h = out_norm->forward_silu(h, 1 + parts[0], parts[1], in_conv->bias);
    } else {
      h = out_norm->forward_silu(h, {}, {}, emb_out + in_conv->bias.view({1, -1, 1, 1}));
    }
    h = out_layers[2]->as<torch::nn::Dropout>()->forward(h);
    auto* out_conv = out_layers[3]->as<torch::nn::Conv2d>();
    if (fused_residual_add_applies(h)) {  // both convolutions' biases added in the sum's own pass
      h = with_lora(*out_conv, out_lora, h, /*with_bias=*/false);
      if (!skip) return residual_add(x, h, out_conv->bias);
      return residual_add(with_lora(*skip, ConvLora{nullptr}, x, /*with_bias=*/false), h, out_conv->bias, skip->bias);
    }
    h = with_lora(*out_conv, out_lora, h);
    return (skip ? skip(x) : x) + h;
  }

  void add_lora(const LoraOptions& options) {
    auto lora = [&](const torch::nn::Conv2dImpl& conv) {
      return ConvLora(conv.options.in_channels(), conv.options.out_channels(), options);
    };
    in_lora = register_module("in_lora", lora(*in_layers[2]->as<torch::nn::Conv2d>()));
    out_lora = register_module("out_lora", lora(*out_layers[3]->as<torch::nn::Conv2d>()));
  }

  void fold_lora() {
    nets::fold_lora(*this, "in_lora", in_layers[2]->as<torch::nn::Conv2d>()->weight, in_lora);
    nets::fold_lora(*this, "out_lora", out_layers[3]->as<torch::nn::Conv2d>()->weight, out_lora);
  }

 private:
  bool scale_shift_;
  torch::nn::Sequential in_layers{nullptr}, emb_layers{nullptr}, out_layers{nullptr};
  std::shared_ptr<UpsampleImpl> h_upd, x_upd;
  std::shared_ptr<DownsampleImpl> h_down, x_down;
  torch::nn::Conv2d skip{nullptr};
  ConvLora in_lora{nullptr}, out_lora{nullptr};
};

class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(int64_t channels, int num_heads, int num_head_channels, bool new_order) : new_order_(new_order) {
    if (num_head_channels == -1) {
      heads_ = num_heads;
    } else {
      UD2M_CHECK(channels % num_head_channels == 0, "ADM config: {} channels are not divisible by {} head channels",
                 channels, num_head_channels);
      heads_ = channels / num_head_channels;
    }
    norm = register_module("norm", GroupNorm32(channels));
    qkv = register_module("qkv", torch::nn::Conv1d(torch::nn::Conv1dOptions(channels, 3 * channels, 1)));
    proj_out = register_module("proj_out", torch::nn::Conv1d(torch::nn::Conv1dOptions(channels, channels, 1)));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    if (x.suggest_memory_format() == torch::MemoryFormat::ChannelsLast) return forward_tokens(x);
    const int64_t b = x.size(0), c = x.size(1), length = x.size(2) * x.size(3);
    auto flat = x.reshape({b, c, length});
    auto normed = norm(flat);
    auto q_k_v = qkv(normed);
    if (qkv_lora) q_k_v = q_k_v + qkv_lora->channels_first(normed);
    auto a = attention(q_k_v);
    auto h = proj_out(a);
    if (proj_out_lora) h = h + proj_out_lora->channels_first(a);
    // x first: the sum takes x's memory layout. A channels-last network would
    // otherwise carry an NCHW tensor down its residual path from here, and
    // every convolution after it would copy its input back (12% of a bf16
    // FFHQ pass).
    return x + h.reshape(x.sizes());
  }

  // The same block for channels-last x, whose memory already holds (B, T, C)
  // token rows: the projections are matrix products with their bias fused
  // in, q, k and v are strided views of qkv's output that the attention
  // kernels read in place, and the result is added in x's layout. The NCHW
  // path above copies the activations five times to change layouts.
  torch::Tensor forward_tokens(const torch::Tensor& x) {
    const int64_t b = x.size(0), c = x.size(1), height = x.size(2), width = x.size(3), length = height * width;
    auto rows = [&](const torch::Tensor& t) { return t.permute({0, 2, 3, 1}).reshape({b * length, c}); };
    auto normed = rows(norm(x));
    auto q_k_v = F::linear(normed, qkv->weight.squeeze(-1), qkv->bias);
    if (qkv_lora) q_k_v = q_k_v + qkv_lora->channels_last(normed);
    auto a = token_attention(q_k_v.view({b, length, 3 * c}));
    auto h = F::linear(a, proj_out->weight.squeeze(-1), proj_out->bias);
    if (proj_out_lora) h = h + proj_out_lora->channels_last(a);
    return x + h.view({b, height, width, c}).permute({0, 3, 1, 2});
  }

  void add_lora(const LoraOptions& options) {
    const int64_t c = proj_out->options.in_channels();
    qkv_lora = register_module("qkv_lora", Lora(c, 3 * c, options));
    proj_out_lora = register_module("proj_out_lora", Lora(c, c, options));
  }

  void fold_lora() {
    nets::fold_lora(*this, "qkv_lora", qkv->weight, qkv_lora);
    nets::fold_lora(*this, "proj_out_lora", proj_out->weight, proj_out_lora);
  }

 private:
  // qkv: (B, 3·C, T) -> (B, C, T). The legacy layout splits q, k, v inside each
  // head's block of channels; the new one splits first, then by head.
  torch::Tensor attention(const torch::Tensor& qkv_out) {
    const int64_t b = qkv_out.size(0), width = qkv_out.size(1), length = qkv_out.size(2);
    const int64_t ch = width / (3 * heads_);
    std::vector<torch::Tensor> q_k_v;
    if (new_order_) {
      for (auto& part : qkv_out.chunk(3, 1)) q_k_v.push_back(part.reshape({b * heads_, ch, length}));
    } else {
      q_k_v = qkv_out.reshape({b * heads_, 3 * ch, length}).split(ch, 1);
    }
    // Softmax(qᵀk/√ch) v, with contiguous (B, heads, T, ch) operands for the
    // fused kernels: given transposed views (channels not innermost) the CPU
    // falls back to the unfused path, 4.6× slower at 4096 tokens, and the
    // GPU's flash and memory-efficient kernels take 4-D operands only.
    auto tokens = [&](const torch::Tensor& part) {
      return part.transpose(1, 2).contiguous().view({b, heads_, length, ch});
    };
    auto a = at::scaled_dot_product_attention(tokens(q_k_v[0]), tokens(q_k_v[1]), tokens(q_k_v[2]));
    // (B, heads, T, ch) -> (B, heads·ch, T). Not a view: the GPU's flash
    // kernels return the heads interleaved in memory, (B, T, heads, ch).
    return a.transpose(2, 3).reshape({b, heads_ * ch, length});
  }

  // qkv: (B, T, 3·C) token rows, channels laid out as above -> (B·T, C).
  torch::Tensor token_attention(const torch::Tensor& qkv_rows) {
    const int64_t b = qkv_rows.size(0), length = qkv_rows.size(1), width = qkv_rows.size(2);
    const int64_t ch = width / (3 * heads_);
    // (B, T, heads, ch) views, channels innermost, as (B, heads, T, ch).
    std::vector<torch::Tensor> q_k_v;
    if (new_order_) {
      for (auto& part : qkv_rows.chunk(3, 2)) q_k_v.push_back(part.view({b, length, heads_, ch}).transpose(1, 2));
    } else {
      auto per_head = qkv_rows.view({b, length, heads_, 3, ch});
      for (int64_t i = 0; i < 3; ++i) q_k_v.push_back(per_head.select(3, i).transpose(1, 2));
    }
    auto a = at::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
    return a.transpose(1, 2).reshape({b * length, heads_ * ch});
  }

  bool new_order_;
  int64_t heads_;
  Fp32GroupNorm norm{nullptr};
  torch::nn::Conv1d qkv{nullptr}, proj_out{nullptr};
  Lora qkv_lora{nullptr}, proj_out_lora{nullptr};
};

// guided-diffusion's TimestepEmbedSequential: children named "0", "1", ...;
// residual blocks also receive the timestep embedding.
class EmbedSequentialImpl : public torch::nn::Module {
 public:
  template <typename M>
  void add(std::shared_ptr<M> module) {
    register_module(std::to_string(children_.size()), module);
    children_.push_back(module);
  }
  torch::Tensor forward(torch::Tensor h, const torch::Tensor& emb) {
    for (auto& child : children_) {
      if (auto res = std::dynamic_pointer_cast<ResBlockImpl>(child))
        h = res->forward(h, emb);
      else if (auto attn = std::dynamic_pointer_cast<AttentionBlockImpl>(child))
        h = attn->forward(h);
      else if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(child))
        h = conv->forward(h);
      else if (auto up = std::dynamic_pointer_cast<UpsampleImpl>(child))
        h = up->forward(h);
      else if (auto down = std::dynamic_pointer_cast<DownsampleImpl>(child))
        h = down->forward(h);
    }
    return h;
  }

 private:
  std::vector<std::shared_ptr<torch::nn::Module>> children_;
};

}  // namespace

std::vector<int> AdmConfig::attention_factors() const {
  std::vector<int> factors;
  for (int res : attention_resolutions) factors.push_back(image_size / res);
  return factors;
}

nlohmann::json AdmConfig::to_json() const {
  return {{"image_size", image_size},
          {"in_channels", in_channels},
          {"model_channels", model_channels},
          {"out_channels", out_channels},
          {"num_res_blocks", num_res_blocks},
          {"attention_resolutions", attention_resolutions},
          {"dropout", dropout},
          {"channel_mult", channel_mult},
          {"conv_resample", conv_resample},
          {"num_classes", num_classes},
          {"num_heads", num_heads},
          {"num_head_channels", num_head_channels},
          {"num_heads_upsample", num_heads_upsample},
          {"use_scale_shift_norm", use_scale_shift_norm},
          {"resblock_updown", resblock_updown},
          {"use_new_attention_order", use_new_attention_order}};
}

AdmConfig AdmConfig::from_json(const nlohmann::json& j) {
  AdmConfig c;
  auto get = [&](const char* key, auto& field) {
    if (j.contains(key)) field = j.at(key).get<std::remove_reference_t<decltype(field)>>();
  };
  get("image_size", c.image_size);
  get("in_channels", c.in_channels);
  get("model_channels", c.model_channels);
  get("out_channels", c.out_channels);
  get("num_res_blocks", c.num_res_blocks);
  get("attention_resolutions", c.attention_resolutions);
  get("dropout", c.dropout);
  get("channel_mult", c.channel_mult);
  get("conv_resample", c.conv_resample);
  get("num_classes", c.num_classes);
  get("num_heads", c.num_heads);
  get("num_head_channels", c.num_head_channels);
  get("num_heads_upsample", c.num_heads_upsample);
  get("use_scale_shift_norm", c.use_scale_shift_norm);
  get("resblock_updown", c.resblock_updown);
  get("use_new_attention_order", c.use_new_attention_order);
  return c;
}

AdmConfig AdmConfig::preset(const std::string& name) {
  AdmConfig c;  // defaults are the FFHQ model of DPS/DiffPIR
  if (name == "adm-ffhq-256") return c;
  if (name == "adm-256-uncond") {
    c.model_channels = 256;
    c.num_res_blocks = 2;
    c.attention_resolutions = {32, 16, 8};
    return c;
  }
  if (name == "ud2m-small-64") {  // the prior this project trains and ships (≤ 16 MiB in bf16)
    c.image_size = 64;
    c.model_channels = 32;  // narrow at full resolution: cheap to train on a CPU
    c.out_channels = 3;
    c.num_res_blocks = 2;
    c.attention_resolutions = {16, 8};
    c.channel_mult = {1, 2, 4, 4};
    c.num_head_channels = 32;
    c.dropout = 0.1;
    return c;
  }
  if (name == "tiny-16") {  // for tests: seconds to train
    c.image_size = 16;
    c.model_channels = 32;
    c.out_channels = 3;
    c.num_res_blocks = 1;
    c.attention_resolutions = {8};
    c.channel_mult = {1, 2};
    c.num_head_channels = 16;
    return c;
  }
  fail("unknown ADM preset '{}'; available: adm-256-uncond, adm-ffhq-256, ud2m-small-64, tiny-16", name);
}

torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period) {
  const int64_t half = dim / 2;
  auto freqs = torch::exp(-std::log(max_period) * torch::arange(half, t.options().dtype(torch::kFloat32)) / half);
  auto args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);
  auto emb = torch::cat({torch::cos(args), torch::sin(args)}, -1);
  if (dim % 2) emb = torch::cat({emb, torch::zeros_like(emb.narrow(1, 0, 1))}, -1);
  return emb;
}

AdmUNetImpl::AdmUNetImpl(const AdmConfig& config) : config_(config) {
  const int64_t mc = config.model_channels, emb_dim = 4 * mc;
  const auto attention_at = config.attention_factors();
  auto wants_attention = [&](int ds) { return std::find(attention_at.begin(), attention_at.end(), ds) != attention_at.end(); };
  const int heads_up = config.num_heads_upsample == -1 ? config.num_heads : config.num_heads_upsample;
  auto res_block = [&](int64_t in, int64_t out, bool up = false, bool down = false) {
    return std::make_shared<ResBlockImpl>(in, emb_dim, config.dropout, out, config.use_scale_shift_norm, up, down);
  };
  auto attention = [&](int64_t ch, int heads) {
    return std::make_shared<AttentionBlockImpl>(ch, heads, config.num_head_channels, config.use_new_attention_order);
  };

  time_embed = register_module("time_embed", torch::nn::Sequential(torch::nn::Linear(mc, emb_dim), torch::nn::SiLU(),
                                                                    torch::nn::Linear(emb_dim, emb_dim)));
  if (config.num_classes > 0)
    label_emb = register_module("label_emb", torch::nn::Embedding(config.num_classes, emb_dim));

  input_blocks = register_module("input_blocks", torch::nn::ModuleList());
  int64_t ch = config.channel_mult[0] * mc;
  auto first = std::make_shared<EmbedSequentialImpl>();
  first->add(torch::nn::Conv2d(torch::nn::Conv2dOptions(config.in_channels, ch, 3).padding(1)).ptr());
  input_blocks->push_back(first);
  std::vector<int64_t> skip_channels{ch};
  int ds = 1;
  const int levels = static_cast<int>(config.channel_mult.size());
  for (int level = 0; level < levels; ++level) {
    for (int i = 0; i < config.num_res_blocks; ++i) {
      auto block = std::make_shared<EmbedSequentialImpl>();
      block->add(res_block(ch, config.channel_mult[level] * mc));
      ch = config.channel_mult[level] * mc;
      if (wants_attention(ds)) block->add(attention(ch, config.num_heads));
      input_blocks->push_back(block);
      skip_channels.push_back(ch);
    }
    if (level != levels - 1) {
      auto block = std::make_shared<EmbedSequentialImpl>();
      if (config.resblock_updown)
        block->add(res_block(ch, ch, false, true));
      else
        block->add(std::make_shared<DownsampleImpl>(ch, config.conv_resample, ch));
      input_blocks->push_back(block);
      skip_channels.push_back(ch);
      ds *= 2;
    }
  }

  auto middle = std::make_shared<EmbedSequentialImpl>();
  middle->add(res_block(ch, ch));
  middle->add(attention(ch, config.num_heads));
  middle->add(res_block(ch, ch));
  middle_block = register_module("middle_block", middle);

  output_blocks = register_module("output_blocks", torch::nn::ModuleList());
  for (int level = levels - 1; level >= 0; --level) {
    for (int i = 0; i <= config.num_res_blocks; ++i) {
      auto block = std::make_shared<EmbedSequentialImpl>();
      const int64_t skip_ch = skip_channels.back();
      skip_channels.pop_back();
      block->add(res_block(ch + skip_ch, config.channel_mult[level] * mc));
      ch = config.channel_mult[level] * mc;
      if (wants_attention(ds)) block->add(attention(ch, heads_up));
      if (level > 0 && i == config.num_res_blocks) {
        if (config.resblock_updown)
          block->add(res_block(ch, ch, true, false));
        else
          block->add(std::make_shared<UpsampleImpl>(ch, config.conv_resample, ch));
        ds /= 2;
      }
      output_blocks->push_back(block);
    }
  }
  out = register_module("out", torch::nn::Sequential(GroupNorm32(ch), torch::nn::SiLU(),
                                                     torch::nn::Conv2d(torch::nn::Conv2dOptions(ch, config.out_channels, 3).padding(1))));
}

torch::Tensor AdmUNetImpl::activated_embedding(const torch::Tensor& t, const torch::Tensor& labels,
                                               torch::ScalarType dtype) {
  auto emb = time_embed->forward(timestep_embedding(t, config_.model_channels).to(dtype));
  if (labels.defined()) emb = emb + label_emb(labels);
  return torch::silu(emb);
}

torch::Tensor AdmUNetImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& labels) {
  UD2M_CHECK((config_.num_classes > 0) == labels.defined(),
             "this ADM model {} class labels", config_.num_classes > 0 ? "needs" : "takes no");
  // Activations follow the weights' dtype (bf16 inference) and the input's layout.
  const auto dtype = out[2]->as<torch::nn::Conv2d>()->weight.scalar_type();
  const auto emb = activated_embedding(t, labels, dtype);
  std::vector<torch::Tensor> skips;
  torch::Tensor h = x.to(dtype);
  for (auto& block : *input_blocks) {
    h = block->as<EmbedSequentialImpl>()->forward(h, emb);
    skips.push_back(h);
  }
  h = std::static_pointer_cast<EmbedSequentialImpl>(middle_block)->forward(h, emb);
  for (auto& block : *output_blocks) {
    h = block->as<EmbedSequentialImpl>()->forward(cat_channels(h, skips.back()), emb);
    skips.pop_back();
  }
  h = out[0]->as<Fp32GroupNormImpl>()->forward_silu(h);  // out[1], the SiLU, is fused in
  return out[2]->as<torch::nn::Conv2d>()->forward(h).to(x.scalar_type());
}

std::vector<torch::Tensor> AdmUNetImpl::encoder_features(const torch::Tensor& x, const torch::Tensor& t) {
  UD2M_CHECK(config_.num_classes == 0, "encoder features are defined for unconditional ADM models only");
  const auto dtype = out[2]->as<torch::nn::Conv2d>()->weight.scalar_type();
  const auto emb = activated_embedding(t, {}, dtype);
  std::vector<torch::Tensor> features;
  torch::Tensor h = x.to(dtype);
  for (size_t i = 0; i < input_blocks->size(); ++i) {
    auto next = input_blocks[i]->as<EmbedSequentialImpl>()->forward(h, emb);
    // A level ends where the next block downsamples (or at the last block).
    if (i > 0 && next.size(-1) != h.size(-1)) features.push_back(h);
    h = next;
  }
  features.push_back(h);
  features.push_back(std::static_pointer_cast<EmbedSequentialImpl>(middle_block)->forward(h, emb));
  return features;
}

int64_t count_parameters(torch::nn::Module& module) {
  int64_t n = 0;
  for (auto& p : module.parameters()) n += p.numel();
  return n;
}

void AdmUNetImpl::add_lora(const LoraOptions& options) {
  const bool resblocks = options.on_resblocks();
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* attention = dynamic_cast<AttentionBlockImpl*>(m.get())) attention->add_lora(options);
    if (auto* block = dynamic_cast<ResBlockImpl*>(m.get()); block && resblocks) block->add_lora(options);
  }
}

void AdmUNetImpl::fold_lora() {
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* attention = dynamic_cast<AttentionBlockImpl*>(m.get())) attention->fold_lora();
    if (auto* block = dynamic_cast<ResBlockImpl*>(m.get())) block->fold_lora();
  }
}

}  // namespace ud2m::nets
