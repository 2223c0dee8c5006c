// The DDPM U-Net of Ho et al. (LSUN, CelebA-HQ, CIFAR models) in diffusers'
// UNet2DModel layout and names, so `diffusion_pytorch_model.*` + config.json
// load unchanged.
#pragma once
#include <torch/torch.h>

#include "nets/fp32_group_norm.hpp"
#include "nets/lora.hpp"

#include <nlohmann/json.hpp>

#include <vector>

namespace ud2m::nets {

struct DdpmConfig {
  int in_channels = 3;
  int out_channels = 3;
  std::vector<int> block_out_channels = {128, 128, 256, 256, 512, 512};
  std::vector<bool> attention = {false, false, false, false, true, false};  // per level (Attn*Block2D)
  int layers_per_block = 2;
  int norm_num_groups = 32;
  double norm_eps = 1e-6;
  int attention_head_dim = 0;  // 0: one head spanning all channels
  bool flip_sin_to_cos = false;
  int freq_shift = 1;
  int downsample_padding = 0;  // 0: pad (0,1,0,1) before the stride-2 convolution
  double dropout = 0.0;

  nlohmann::json to_json() const;
  static DdpmConfig from_json(const nlohmann::json& j);
  // diffusers' config.json of a UNet2DModel (down_block_types etc.).
  static DdpmConfig from_diffusers(const nlohmann::json& config);
};

class DdpmUNetImpl : public torch::nn::Module {
 public:
  explicit DdpmUNetImpl(const DdpmConfig& config);
  // x: (N, C, H, W); t: (N,) timesteps. Returns ε̂.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t);
  const DdpmConfig& config() const { return config_; }
  // LoRA on every attention's q, k, v and output projection (UD2M's placement).
  void add_lora(const LoraOptions& options);
  void fold_lora();  // see nets::fold_lora

 private:
  DdpmConfig config_;
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::Linear time_linear_1{nullptr}, time_linear_2{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  std::shared_ptr<torch::nn::Module> mid_block;
  Fp32GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(DdpmUNet);

}  // namespace ud2m::nets
