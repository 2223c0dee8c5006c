// The decoder half of Stable Diffusion's VAE (diffusers' AutoencoderKL, e.g.
// stabilityai/sd-vae-ft-mse), with diffusers' module names, so a latent
// diffusion model's samples can be turned into pixels: EDM2's ImageNet-512
// models and the NCVSD generators distilled from them work on its latents.
//
// And EDM2's latent convention (its training/encoders.py, StabilityVAEEncoder):
// the network's latents are z = raw·scale + bias per channel, and the pixels in
// [0, 1] are the VAE's decoding of the raw latents.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "io/safetensors.hpp"

namespace ud2m::nets {

struct VaeDecoderConfig {
  int latent_channels = 4;
  int out_channels = 3;
  std::vector<int> block_out_channels = {128, 256, 512, 512};  // encoder order; the decoder runs them reversed
  int layers_per_block = 2;                                     // the decoder has one more per level
  int norm_num_groups = 32;
  bool use_post_quant_conv = true;
  bool mid_block_attention = true;
  // diffusers' config.json of an AutoencoderKL.
  static VaeDecoderConfig from_diffusers(const nlohmann::json& config);
};

class VaeDecoderImpl : public torch::nn::Module {
 public:
  explicit VaeDecoderImpl(const VaeDecoderConfig& config);
  // Raw latents (N, latent_channels, h, w) -> the VAE's pixels (N, out_channels, 8h, 8w).
  torch::Tensor forward(const torch::Tensor& latents);
  const VaeDecoderConfig& config() const { return config_; }

 private:
  VaeDecoderConfig config_;
  torch::nn::Conv2d post_quant_conv{nullptr};
  std::shared_ptr<torch::nn::Module> decoder_;
};
TORCH_MODULE(VaeDecoder);

// A diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.
// {safetensors,bin}): its decoder. The encoder's weights are not read; the
// attention names of older files (query/key/value/proj_attn) are accepted.
VaeDecoder load_vae_decoder(const std::string& folder);

// EDM2's latent space: which VAE, and the per-channel affine map from its raw latents.
struct LatentSpace {
  std::string vae_name;  // as the model names it (stabilityai/sd-vae-ft-mse)
  std::vector<double> scale, bias;

  nlohmann::json to_json() const;
  static LatentSpace from_json(const nlohmann::json& j);
  // Final latents (N, C, h, w) -> pixels in [0, 1], where the latents and the VAE are.
  torch::Tensor decode(VaeDecoder& vae, const torch::Tensor& latents) const;
};

// The latent space an EDM2 or NCVSD network pickle's `encoder` entry describes
// (a StabilityVAEEncoder); none for pixel models (StandardRGBEncoder).
std::optional<LatentSpace> latent_space_of_pickle(const TensorFile& file, const std::string& source);

}  // namespace ud2m::nets
