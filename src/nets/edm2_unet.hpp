// The EDM2 magnitude-preserving U-Net (Karras et al. 2024, "Analyzing and
// Improving the Training Dynamics of Diffusion Models") with its EDM
// preconditioning and learned log-variance head, config-driven, with the
// original module names so EDM2 network pickles load unchanged.
//
// Every layer keeps activations at unit magnitude: weights are normalised per
// output channel on every call (the stored weights need not be), SiLU, sums
// and concatenations are rescaled, and there is no normalisation layer other
// than a pixel norm.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "io/safetensors.hpp"

namespace ud2m::nets {

struct Edm2Config {
  int img_resolution = 64;
  int img_channels = 3;
  int label_dim = 0;  // 0: unconditional; 1000 for the ImageNet models
  int model_channels = 192;
  std::vector<int> channel_mult = {1, 2, 3, 4};
  int noise_channels = 0;  // Fourier features of the noise level; 0: model_channels × channel_mult[0]
  int emb_channels = 0;    // 0: model_channels × max(channel_mult)
  int num_blocks = 3;
  std::vector<int> attn_resolutions = {16, 8};
  int channels_per_head = 64;
  double label_balance = 0.5;
  double concat_balance = 0.5;
  double res_balance = 0.3;
  double attn_balance = 0.3;
  double clip_act = 256;  // 0: no clipping
  double dropout = 0;     // training only (0.1 for the M, L, XL models)
  int logvar_channels = 128;
  double sigma_data = 0.5;

  int noise_dim() const;
  int emb_dim() const;
  nlohmann::json to_json() const;
  static Edm2Config from_json(const nlohmann::json& j);
};

// One magnitude-preserving convolution or linear layer: the weight is
// normalised per output channel and scaled by gain/√fan_in on every call.
// In training mode the stored weight is also normalised in place first
// (EDM2's forced weight normalisation, which keeps Adam's steps relative).
class MPConvImpl : public torch::nn::Module {
 public:
  MPConvImpl(int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& gain = {});
  torch::Tensor weight;
};
TORCH_MODULE(MPConv);

class MPFourierImpl : public torch::nn::Module {
 public:
  explicit MPFourierImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);  // (N,) -> (N, channels): √2 cos(x·freqs + phases)
  torch::Tensor freqs, phases;
};
TORCH_MODULE(MPFourier);

class Edm2BlockImpl;
using Edm2Block = torch::nn::ModuleHolder<Edm2BlockImpl>;

// What every EDM2 U-Net variant starts with: the embedding of the noise level
// (and class), under EDM2's names emb_fourier / emb_noise / emb_label.
class Edm2StemImpl : public torch::nn::Module {
 public:
  const Edm2Config& config() const { return config_; }

 protected:
  explicit Edm2StemImpl(const Edm2Config& config);
  // noise_labels: (N,) c_noise; class_labels: (N, label_dim) or undefined (zeros).
  torch::Tensor embedding(const torch::Tensor& noise_labels, const torch::Tensor& class_labels);

  Edm2Config config_;
  MPFourier emb_fourier{nullptr};
  MPConv emb_noise{nullptr}, emb_label{nullptr};
};

class Edm2UNetImpl : public Edm2StemImpl {
 public:
  explicit Edm2UNetImpl(const Edm2Config& config);
  // x: (N, C, H, W) already scaled by c_in; noise_labels: (N,) c_noise;
  // class_labels: (N, label_dim) or undefined (unconditional models).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& noise_labels, const torch::Tensor& class_labels);

 private:
  torch::Tensor out_gain;
  MPConv out_conv{nullptr};
  torch::nn::ModuleDict enc{nullptr}, dec{nullptr};
};
TORCH_MODULE(Edm2UNet);

// EDM2's Precond: D(x; σ, class) = c_skip x + c_out F(c_in x; ln σ / 4, class),
// σ_data = 0.5, plus the log-variance u(σ) the training loss weights by.
class Edm2NetImpl : public torch::nn::Module {
 public:
  explicit Edm2NetImpl(const Edm2Config& config);
  // x: (N, C, H, W) in [-1, 1] units plus noise of level sigma (N,); class_labels:
  // (N, label_dim) one-hot (or mixed); undefined means zeros, as in EDM2.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& sigma, const torch::Tensor& class_labels = {});
  torch::Tensor logvar(const torch::Tensor& sigma);  // (N,)
  const Edm2Config& config() const { return config_; }

 private:
  Edm2Config config_;
  Edm2UNet unet{nullptr};
  MPFourier logvar_fourier{nullptr};
  MPConv logvar_linear{nullptr};
};
TORCH_MODULE(Edm2Net);

// The classes a class-conditional EDM2 network is shown: one for every batch
// row, one per row (as EDM2's generate_images draws them when given none), or
// none at all (EDM2's zero label vector).
struct Edm2Classes {
  Edm2Classes() = default;
  // Refuses a class the model (named by `model` in the error) does not have.
  Edm2Classes(int label_dim, int fixed, const std::string& model);
  int label_dim = 0;
  int fixed = -1;                // every row; -1: none
  std::vector<int64_t> per_row;  // overrides `fixed` when set; batches must then have this many rows
  // (rows, label_dim) one-hot on `device`; undefined for none.
  torch::Tensor one_hot(int64_t rows, torch::Device device) const;
};

// ---- NCVSD's generator network (github xypeng9903/ncvsd, PrecondCondition) --
// The EDM2 U-Net split in two, plus a second encoder (a ControlNet branch) for
// the noisy observation y at its level σ_y: the decoder mixes the branch's
// output and skips into the main encoder's with learned weights in [0, 1].

// The U-Net's encoder half: returns every layer's output (the skips; the last is x).
class Edm2EncoderImpl : public Edm2StemImpl {
 public:
  explicit Edm2EncoderImpl(const Edm2Config& config);
  std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& noise_labels,
                                     const torch::Tensor& class_labels);

 private:
  torch::nn::ModuleDict enc{nullptr};
};
TORCH_MODULE(Edm2Encoder);

// The decoder half, mixing a ControlNet branch's skips into the encoder's.
class Edm2DecoderImpl : public Edm2StemImpl {
 public:
  explicit Edm2DecoderImpl(const Edm2Config& config);
  torch::Tensor forward(std::vector<torch::Tensor> skips, const std::vector<torch::Tensor>& control,
                        const torch::Tensor& noise_labels, const torch::Tensor& class_labels);

 private:
  torch::Tensor out_gain, additional_x_weight, additional_skips_weight;
  MPConv out_conv{nullptr};
  torch::nn::ModuleDict dec{nullptr};
};
TORCH_MODULE(Edm2Decoder);

// D(x; level | y, σ_y, class) = c_skip x + c_out F(...), EDM preconditioning at
// each input's own level, plus the log-variance u(level).
class Edm2ControlNetImpl : public torch::nn::Module {
 public:
  explicit Edm2ControlNetImpl(const Edm2Config& config);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& level, const torch::Tensor& y,
                        const torch::Tensor& sigma_y, const torch::Tensor& class_labels = {});
  torch::Tensor logvar(const torch::Tensor& level);  // (N,)
  const Edm2Config& config() const { return config_; }

 private:
  Edm2Config config_;
  Edm2Encoder ctrl{nullptr}, enc{nullptr};
  Edm2Decoder dec{nullptr};
  MPFourier logvar_fourier{nullptr};
  MPConv logvar_linear{nullptr};
};
TORCH_MODULE(Edm2ControlNet);

// The network weights of an EDM2 network pickle (an EasyDict whose "ema" entry
// is the Precond module; read it with opaque records), as a state dict with
// EDM2's own names ("unet.enc.64x64_conv.weight", ...). A file that is already
// such a state dict comes back unchanged.
TensorMap edm2_state_dict(const TensorFile& file);
// The architecture, recovered from the weights' names and shapes. Head width
// and the balances are not in the weights: every published model uses the
// defaults, and a pickle's stored constructor arguments override them.
Edm2Config infer_edm2_config(const TensorMap& weights, const Metadata& metadata, const std::string& source);
bool looks_like_edm2(const TensorMap& weights);
// The same for NCVSD's generator: weights named as the GenerativeDenoiser
// holds them ("model.ctrl.enc.64x64_conv.weight", ...).
bool looks_like_edm2_controlnet(const TensorMap& weights);
Edm2Config infer_edm2_controlnet_config(const TensorMap& weights, const Metadata& metadata,
                                        const std::string& source);

}  // namespace ud2m::nets
