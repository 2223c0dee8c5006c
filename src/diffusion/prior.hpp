// A diffusion prior: a network + its noise schedule. On disk it is a
// safetensors file whose metadata names the architecture and its config, so
// `--model FILE` needs nothing else; a diffusers model folder (config.json +
// weights) also loads directly.
#pragma once
#include <memory>
#include <string>

#include "diffusion/denoiser.hpp"
#include "io/safetensors.hpp"
#include "nets/adm_unet.hpp"
#include "nets/ddpm_unet.hpp"
#include "nets/edm2_unet.hpp"
#include "nets/vae_decoder.hpp"

namespace ud2m::diffusion {

class Prior : public Denoiser {
 public:
  explicit Prior(Schedule schedule) : schedule_(std::move(schedule)) {}
  const Schedule& schedule() const override { return schedule_; }

  virtual torch::nn::Module& module() = 0;
  virtual int channels() const = 0;
  virtual int image_size() const = 0;  // training resolution (other sizes work too)
  // Input sizes must be multiples of this (the U-Net halves the resolution).
  virtual int size_multiple() const = 0;
  // Weights in `dtype` (bf16: the fast CPU path), convolutions channels-last.
  // Only networks whose activations follow their weights' dtype take bf16
  // (ADM and DDPM; GroupNorm stays fp32 in both).
  void set_inference_precision(torch::ScalarType dtype, bool channels_last);
  virtual bool runs_in_weight_dtype() const { return false; }
  // Latent diffusion models (EDM2 ImageNet-512): the VAE latent space their
  // samples live in; none for pixel models.
  virtual std::optional<nets::LatentSpace> latent_space() const { return std::nullopt; }
  // Model-file metadata: format, arch, config, schedule.
  virtual nlohmann::json description() const = 0;
  // UD2M adapters: LoRA on the attention projections, and which parameters
  // form the output head (trained along with the LoRA factors).
  virtual void add_lora(const nets::LoraOptions& options) = 0;
  virtual void fold_lora() = 0;  // into the base weights, for restoring (nets::fold_lora)
  virtual bool is_output_head(const std::string& parameter_name) const = 0;

 private:
  Schedule schedule_;
};

class AdmPrior : public Prior {
 public:
  AdmPrior(const nets::AdmConfig& config, Schedule schedule);
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  torch::nn::Module& module() override { return *net_; }
  int channels() const override { return net_->config().in_channels; }
  int image_size() const override { return net_->config().image_size; }
  int size_multiple() const override { return 1 << (net_->config().channel_mult.size() - 1); }
  nlohmann::json description() const override;
  void add_lora(const nets::LoraOptions& options) override { net_->add_lora(options); }
  void fold_lora() override { net_->fold_lora(); }
  bool is_output_head(const std::string& name) const override { return name.rfind("out.", 0) == 0; }
  bool runs_in_weight_dtype() const override { return true; }
  bool capturable_in_cuda_graph() const override { return true; }
  nets::AdmUNet& net() { return net_; }

 private:
  nets::AdmUNet net_;
};

class DdpmPrior : public Prior {
 public:
  DdpmPrior(const nets::DdpmConfig& config, Schedule schedule, int image_size);
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  torch::nn::Module& module() override { return *net_; }
  int channels() const override { return net_->config().in_channels; }
  int image_size() const override { return image_size_; }
  int size_multiple() const override { return 1 << (net_->config().block_out_channels.size() - 1); }
  nlohmann::json description() const override;
  void add_lora(const nets::LoraOptions& options) override { net_->add_lora(options); }
  void fold_lora() override { net_->fold_lora(); }
  bool is_output_head(const std::string& name) const override {
    return name.rfind("conv_norm_out.", 0) == 0 || name.rfind("conv_out.", 0) == 0;
  }
  bool runs_in_weight_dtype() const override { return true; }
  bool capturable_in_cuda_graph() const override { return true; }

 private:
  nets::DdpmUNet net_;
  int image_size_;
};

// An EDM2 network (continuous σ, x0-predicting, VE) seen through the discrete
// schedule every sampler uses: at timestep t, σ_t = √((1−ᾱ_t)/ᾱ_t), the
// network denoises x_t/√ᾱ_t and ε follows. Class-conditional models see the
// classes set in classes(): one fixed class, one per batch row, or none (EDM2's
// zero label vector).
class Edm2Prior : public Prior {
 public:
  Edm2Prior(const nets::Edm2Config& config, Schedule schedule, int class_label = -1);
  torch::Tensor epsilon(const torch::Tensor& x_t, const torch::Tensor& t) override;
  torch::nn::Module& module() override { return *net_; }
  int channels() const override { return net_->config().img_channels; }
  int image_size() const override { return net_->config().img_resolution; }
  int size_multiple() const override { return 1 << (net_->config().channel_mult.size() - 1); }
  nlohmann::json description() const override;
  void add_lora(const nets::LoraOptions& options) override;
  void fold_lora() override {}  // never adapted (add_lora refuses)
  bool is_output_head(const std::string& name) const override { return name.rfind("unet.out_", 0) == 0; }
  nets::Edm2Net& net() { return net_; }
  nets::Edm2Classes& classes() { return classes_; }
  std::optional<nets::LatentSpace> latent_space() const override { return latent_; }
  void set_latent_space(std::optional<nets::LatentSpace> latent) { latent_ = std::move(latent); }

 private:
  nets::Edm2Net net_;
  nets::Edm2Classes classes_;
  std::optional<nets::LatentSpace> latent_;
};

using PriorPtr = std::shared_ptr<Prior>;

// What weights alone cannot tell about an original ADM or DDPM checkpoint.
struct LoadOptions {
  int num_head_channels = 64;  // every published ADM model
  int image_size = 256;        // ADM-256, DDPM LSUN and CelebA-HQ (CIFAR-10: 32)
  int class_label = -1;        // class-conditional models (EDM2 ImageNet): the class to sample; -1: none
};

// A ud2m prior file; a diffusers UNet2DModel folder; or an original checkpoint
// (guided-diffusion .pt, pytorch_diffusion DDPM .ckpt, Lightning .ckpt, plain
// safetensors, an EDM2 network pickle) whose ADM, DDPM or EDM2 config is
// recovered from its tensor names and shapes.
PriorPtr load_prior(const std::string& path, const LoadOptions& options = {});
// Weights stored in `dtype` (e.g. bf16 to halve the file); written atomically.
void save_prior(const std::string& path, Prior& prior, torch::ScalarType dtype = torch::kFloat32,
                const Metadata& extra = {});

}  // namespace ud2m::diffusion
