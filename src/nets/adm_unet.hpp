// The ADM U-Net of guided-diffusion (Dhariwal & Nichol 2021), config-driven,
// with the original module names so published state dicts load unchanged.
#pragma once
#include <torch/torch.h>

#include "nets/lora.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace ud2m::nets {

struct AdmConfig {
  int image_size = 256;
  int in_channels = 3;
  int model_channels = 128;
  int out_channels = 6;  // 2 × in_channels when learn_sigma
  int num_res_blocks = 1;
  std::vector<int> attention_resolutions = {16};  // in pixels, e.g. 32,16,8 at 256²
  double dropout = 0.0;
  std::vector<int> channel_mult = {1, 1, 2, 2, 4, 4};
  bool conv_resample = true;
  int num_classes = 0;  // 0: unconditional
  int num_heads = 4;
  int num_head_channels = 64;  // -1: use num_heads
  int num_heads_upsample = -1;
  bool use_scale_shift_norm = true;
  bool resblock_updown = true;
  bool use_new_attention_order = false;

  bool learn_sigma() const { return out_channels == 2 * in_channels; }
  // Attention at these downsampling factors (image_size / resolution).
  std::vector<int> attention_factors() const;

  nlohmann::json to_json() const;
  static AdmConfig from_json(const nlohmann::json& j);
  // Published configurations: "adm-256-uncond" (ImageNet 256, 552.8 M),
  // "adm-ffhq-256" (FFHQ/DPS, 93.6 M); "ud2m-small-64" (the shipped prior);
  // "tiny-16" (tests).
  static AdmConfig preset(const std::string& name);
};

// Sinusoidal timestep embedding [cos, sin] with frequencies exp(−ln(10⁴)·i/half).
torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period = 10000.0);

class AdmUNetImpl : public torch::nn::Module {
 public:
  explicit AdmUNetImpl(const AdmConfig& config);
  // x: (N, C, H, W) in model units; t: (N,) timesteps (float allowed);
  // labels: (N,) class indices for class-conditional models. Returns the raw
  // network output (ε, plus the variance interpolation when learn_sigma).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& labels = {});
  // The encoder's activations at the end of each resolution level and after
  // the middle block (unconditional models): a feature pyramid of the prior.
  std::vector<torch::Tensor> encoder_features(const torch::Tensor& x, const torch::Tensor& t);
  const AdmConfig& config() const { return config_; }
  // LoRA on every attention block's qkv and proj_out (UD2M's adapter placement).
  void add_lora(const LoraOptions& options);
  void fold_lora();  // see nets::fold_lora

 private:
  // SiLU(timestep embedding [+ label embedding]): what every residual block's
  // emb_layers projects (their SiLU, identical in each, is applied here once).
  torch::Tensor activated_embedding(const torch::Tensor& t, const torch::Tensor& labels, torch::ScalarType dtype);

  AdmConfig config_;
  torch::nn::Sequential time_embed{nullptr};
  torch::nn::Embedding label_emb{nullptr};
  torch::nn::ModuleList input_blocks{nullptr}, output_blocks{nullptr};
  std::shared_ptr<torch::nn::Module> middle_block;
  torch::nn::Sequential out{nullptr};
};
TORCH_MODULE(AdmUNet);

int64_t count_parameters(torch::nn::Module& module);

}  // namespace ud2m::nets
