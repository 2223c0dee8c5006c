#include "nets/ddpm_pesser.hpp"

#include <set>
#include <string_view>
#include <utility>

#include "core/error.hpp"
#include "nets/state_dict.hpp"

namespace ud2m::nets {
namespace {

using Renames = std::vector<std::pair<std::string_view, std::string_view>>;

// diffusers name -> pytorch_diffusion name, as prefixes. Names not listed are
// the same in both (conv_in, conv_out; norm1, conv1, norm2, conv2 in a block).
const Renames kOutside = {{"time_embedding.linear_1.", "temb.dense.0."},
                          {"time_embedding.linear_2.", "temb.dense.1."},
                          {"conv_norm_out.", "norm_out."}};
const Renames kMiddle = {{"mid_block.resnets.0.", "mid.block_1."},
                         {"mid_block.attentions.0.", "mid.attn_1."},
                         {"mid_block.resnets.1.", "mid.block_2."}};
const Renames kLevel = {{"resnets.", "block."},  // + index
                        {"attentions.", "attn."},
                        {"downsamplers.0.conv.", "downsample.conv."},
                        {"upsamplers.0.conv.", "upsample.conv."}};
const Renames kResnet = {{"time_emb_proj.", "temb_proj."}, {"conv_shortcut.", "nin_shortcut."}};
const Renames kAttention = {{"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."},
                            {"to_out.0.", "proj_out."}};

bool take(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

// "12.rest" -> 12, leaving "rest".
int take_index(std::string_view& s) {
  const size_t dot = s.find('.');
  const int index = std::stoi(std::string(s.substr(0, dot)));
  s.remove_prefix(dot + 1);
  return index;
}

// Renames the first matching prefix of `s` with `table`; the rest is kept.
std::string rename(std::string_view s, const Renames& table) {
  for (auto [ours, theirs] : table)
    if (take(s, ours)) return std::string(theirs) + std::string(s);
  return std::string(s);
}

// Inside a residual or attention block (mid.block_1.<here>, down.0.attn.1.<here>).
std::string rename_inner(std::string_view s, bool attention) { return rename(s, attention ? kAttention : kResnet); }

const torch::Tensor& get(const TensorMap& w, const std::string& key, int64_t dims, const std::string& source) {
  auto it = w.find(key);
  UD2M_CHECK(it != w.end(), "'{}' is not a pytorch_diffusion DDPM checkpoint: it has no '{}'", source, key);
  UD2M_CHECK(it->second.dim() == dims, "'{}': '{}' has {} dimensions, a DDPM U-Net has {} there", source, key,
             it->second.dim(), dims);
  return it->second;
}

}  // namespace

bool has_pesser_ddpm_names(const TensorMap& w) {
  return w.count("temb.dense.0.weight") && w.count("conv_in.weight");
}

std::string pesser_ddpm_name(const std::string& diffusers_name, int levels) {
  std::string_view s = diffusers_name;
  for (auto [ours, theirs] : kOutside)
    if (take(s, ours)) return std::string(theirs) + std::string(s);
  for (auto [ours, theirs] : kMiddle)
    if (take(s, ours)) return std::string(theirs) + rename_inner(s, theirs == "mid.attn_1.");
  const bool down = take(s, "down_blocks."), up = !down && take(s, "up_blocks.");
  if (!down && !up) return diffusers_name;  // conv_in, conv_out
  int level = take_index(s);
  if (up) level = levels - 1 - level;  // diffusers runs the coarsest first; pytorch_diffusion indexes by resolution
  std::string out = (down ? "down." : "up.") + std::to_string(level) + ".";
  const bool attention = take(s, "attentions.");
  if (attention || take(s, "resnets.")) {
    const int block = take_index(s);
    return out + (attention ? "attn." : "block.") + std::to_string(block) + "." + rename_inner(s, attention);
  }
  return out + rename(s, kLevel);  // down/up-sampling convolution
}

DdpmConfig infer_pesser_ddpm_config(const TensorMap& w, const std::string& source) {
  const auto& conv_in = get(w, "conv_in.weight", 4, source);
  const auto& temb = get(w, "temb.dense.0.weight", 2, source);
  const int64_t ch = conv_in.size(0);
  DdpmConfig c;
  c.in_channels = static_cast<int>(conv_in.size(1));
  c.out_channels = static_cast<int>(get(w, "conv_out.weight", 4, source).size(0));
  c.norm_num_groups = 32;
  c.norm_eps = 1e-6;
  c.attention_head_dim = 0;
  c.flip_sin_to_cos = false;
  c.freq_shift = 1;
  c.downsample_padding = 0;
  c.dropout = 0.0;

  const int levels = count_children(w, "down");
  UD2M_CHECK(levels > 0 && count_children(w, "up") == levels,
             "'{}' has {} down levels and {} up levels; a DDPM U-Net has as many of each", source, levels,
             count_children(w, "up"));
  c.layers_per_block = count_children(w, "down.0.block");
  c.block_out_channels.clear();
  c.attention.clear();
  for (int l = 0; l < levels; ++l) {
    const std::string down = "down." + std::to_string(l), up = "up." + std::to_string(l);
    UD2M_CHECK(count_children(w, down + ".block") == c.layers_per_block,
               "'{}': level {} has {} residual blocks on the way down and level 0 has {}; a DDPM U-Net has the same "
               "number at every level", source, l, count_children(w, down + ".block"), c.layers_per_block);
    UD2M_CHECK(count_children(w, up + ".block") == c.layers_per_block + 1,
               "'{}': up level {} has {} residual blocks; a DDPM U-Net with {} per level on the way down has {}",
               source, l, count_children(w, up + ".block"), c.layers_per_block, c.layers_per_block + 1);
    c.block_out_channels.push_back(static_cast<int>(get(w, down + ".block.0.conv1.weight", 4, source).size(0)));
    c.attention.push_back(count_children(w, down + ".attn") > 0);
    if (l + 1 < levels)
      UD2M_CHECK(w.count(down + ".downsample.conv.weight"),
                 "'{}': level {} has no '{}.downsample.conv.weight'; only convolutional resampling "
                 "(resamp_with_conv=True, every published model) is supported", source, l, down);
  }
  UD2M_CHECK(c.block_out_channels[0] == ch,
             "'{}': conv_in gives {} channels but level 0 has {}; only a channel multiplier of 1 at the first level "
             "(every published model) is supported", source, ch, c.block_out_channels[0]);
  UD2M_CHECK(temb.size(0) == 4 * ch && temb.size(1) == ch,
             "'{}': temb.dense.0.weight is {}x{}, a DDPM U-Net with {} base channels has {}x{}", source,
             temb.size(0), temb.size(1), ch, 4 * ch, ch);
  for (int channels : c.block_out_channels)
    UD2M_CHECK(channels % c.norm_num_groups == 0,
               "'{}': {} channels cannot form the {} GroupNorm groups of a DDPM U-Net", source, channels,
               c.norm_num_groups);
  for (auto& [name, tensor] : w)
    UD2M_CHECK(name.find(".conv_shortcut.") == std::string::npos,
               "'{}' has 3x3 shortcut convolutions ('{}'); only 1x1 'nin_shortcut' (every published model) is "
               "supported", source, name);
  return c;
}

void load_pesser_ddpm(torch::nn::Module& net, const DdpmConfig& config, const TensorMap& weights,
                      const std::string& source) {
  const int levels = static_cast<int>(config.block_out_channels.size());
  TensorMap renamed;
  std::set<std::string> used;
  std::vector<std::string> missing, misshaped, unexpected;
  for (auto& [ours, target] : state_dict(net)) {
    const auto theirs = pesser_ddpm_name(ours, levels);
    auto it = weights.find(theirs);
    if (it == weights.end()) {
      missing.push_back(theirs);
      continue;
    }
    used.insert(theirs);
    // q, k, v and proj_out are 1x1 convolutions there, linear layers here.
    auto expected = target.sizes().vec();
    if (target.dim() == 2 && ours.find(".attentions.") != std::string::npos) expected.insert(expected.end(), {1, 1});
    if (it->second.sizes() != c10::IntArrayRef(expected))
      misshaped.push_back(fmt::format("{} ({} in the file, {} expected)", theirs, fmt::join(it->second.sizes(), "x"),
                                      fmt::join(expected, "x")));
    else
      renamed[ours] = it->second.reshape(target.sizes());
  }
  for (auto& [name, tensor] : weights)
    if (!used.count(name)) unexpected.push_back(name);
  if (const auto problems = describe_mismatch(missing, unexpected, misshaped); !problems.empty()) {
    fail("'{}' has pytorch_diffusion (DDPM) names but fits no DDPM U-Net; its shapes suggest {}, which does not "
         "fit:{}", source, describe_ddpm_config(config), problems);
  }
  load_state_dict(net, renamed, source);
}

std::string describe_ddpm_config(const DdpmConfig& c) {
  std::vector<int> attention;
  for (size_t l = 0; l < c.attention.size(); ++l)
    if (c.attention[l]) attention.push_back(static_cast<int>(l));
  return fmt::format("channels {} with {} residual block{} per level, attention at {}, {} -> {} image channels",
                     fmt::join(c.block_out_channels, ","), c.layers_per_block, c.layers_per_block == 1 ? "" : "s",
                     attention.empty()       ? std::string("no level")
                     : attention.size() == 1 ? fmt::format("level {}", attention[0])
                                             : fmt::format("levels {}", fmt::join(attention, ",")),
                     c.in_channels, c.out_channels);
}

}  // namespace ud2m::nets
