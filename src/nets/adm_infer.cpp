#include "nets/adm_infer.hpp"

#include "core/error.hpp"
#include "nets/state_dict.hpp"

namespace ud2m::nets {
namespace {

bool has(const TensorMap& w, const std::string& key) { return w.count(key) > 0; }

}  // namespace

AdmConfig infer_adm_config(const TensorMap& w, const std::string& source, int num_head_channels, int image_size) {
  for (const char* key : {"input_blocks.0.0.weight", "out.2.weight", "time_embed.0.weight"})
    UD2M_CHECK(has(w, key), "'{}' is not an ADM (guided-diffusion) checkpoint: it has no '{}'", source, key);
  AdmConfig c;
  c.image_size = image_size;
  c.num_head_channels = num_head_channels;
  c.num_heads = -1;
  c.dropout = 0.0;
  c.use_new_attention_order = false;
  c.model_channels = static_cast<int>(w.at("input_blocks.0.0.weight").size(0));
  c.in_channels = static_cast<int>(w.at("input_blocks.0.0.weight").size(1));
  c.out_channels = static_cast<int>(w.at("out.2.weight").size(0));
  c.num_classes = has(w, "label_emb.weight") ? static_cast<int>(w.at("label_emb.weight").size(0)) : 0;

  // Output blocks: levels·(n+1); the last block of every level but the first ends with an up-sampler.
  const int outputs = count_children(w, "output_blocks");
  int ups = 0;
  for (int j = 0; j < outputs; ++j)
    for (int k : {1, 2}) {
      const std::string p = "output_blocks." + std::to_string(j) + "." + std::to_string(k) + ".";
      if (has(w, p + "in_layers.2.weight") || has(w, p + "conv.weight")) {
        ++ups;
        c.resblock_updown = has(w, p + "in_layers.2.weight");
        break;
      }
    }
  const int levels = ups + 1;
  UD2M_CHECK(outputs > 0 && outputs % levels == 0, "'{}': cannot recover the U-Net levels from {} output blocks",
             source, outputs);
  c.num_res_blocks = outputs / levels - 1;
  c.conv_resample = c.resblock_updown || has(w, "input_blocks." + std::to_string(c.num_res_blocks + 1) + ".0.op.weight");

  c.channel_mult.clear();
  c.attention_resolutions.clear();
  for (int level = 0; level < levels; ++level) {
    const std::string block = "input_blocks." + std::to_string(1 + level * (c.num_res_blocks + 1));
    UD2M_CHECK(has(w, block + ".0.in_layers.2.weight"), "'{}': unexpected layout, no '{}'", source,
               block + ".0.in_layers.2.weight");
    c.channel_mult.push_back(static_cast<int>(w.at(block + ".0.in_layers.2.weight").size(0) / c.model_channels));
    if (has(w, block + ".1.qkv.weight")) c.attention_resolutions.push_back(image_size >> level);
  }
  const auto& emb = w.at("input_blocks.1.0.emb_layers.1.weight");
  c.use_scale_shift_norm = emb.size(0) == 2 * w.at("input_blocks.1.0.in_layers.2.weight").size(0);
  return c;
}

}  // namespace ud2m::nets
