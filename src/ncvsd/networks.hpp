// NCVSD's networks: ours, built from an ε-prediction ADM teacher (our priors),
// and the published generator (EDM2 + ControlNet branch), read from NCVSD's pickles.
//
// Every network here is an x0-denoiser at a continuous VE level: x = x0 + level·n
// is fed to the ε-network as x/√(1+level²) at the continuous timestep whose
// level it is (log σ_t interpolated between integer t), and x0 = x − level·ε̂.
//
// The generator G and the fake score both need the observation y = x0 + σn
// and its level σ besides their own input. They get them as extra input
// channels — y·c_in(σ) and a constant map c_noise(σ) = ln(σ)/4 — of a copy of
// the teacher whose first-convolution weights for those channels start at
// zero, so a fresh copy *is* the teacher. (The published networks feed y
// through a ControlNet branch of the EDM2 U-Net instead.)
#pragma once
#include <torch/torch.h>

#include <map>
#include <optional>
#include <vector>

#include "diffusion/prior.hpp"
#include "diffusion/tiled_denoiser.hpp"
#include "nets/edm2_unet.hpp"
#include "nets/vae_decoder.hpp"

namespace ud2m::ncvsd {

constexpr double kNoiseInjection = 0.414;  // γ: the generator sees y at (1+γ)σ

// What generation and PnP-NCVSD need of a generator network: an x0-denoiser at
// a continuous level, conditioned on the observation y at its level σ.
class GeneratorNetImpl : public torch::nn::Module {
 public:
  // x0 estimate of x at `level` (N,), given y at `sigma` (N,).
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& level, const torch::Tensor& y,
                                const torch::Tensor& sigma) = 0;
  virtual int channels() const = 0;
  virtual int image_size() const = 0;     // training resolution
  virtual int size_multiple() const = 0;  // input sides must be multiples of this
  virtual double noise_injection() const { return kNoiseInjection; }
  // Whether activations follow the weights' dtype (so bf16 weights mean bf16 inference).
  virtual bool runs_in_weight_dtype() const = 0;
  // The network whose state dict a generator file stores, and the metadata naming it.
  virtual torch::nn::Module& network() = 0;
  virtual nlohmann::json description() const = 0;
  // Generators distilled from latent models (EDM2 ImageNet-512): their VAE latent space.
  virtual std::optional<nets::LatentSpace> latent_space() const { return std::nullopt; }
  // NCVSD's own (published) networks, which restoration gives the published presets.
  virtual bool published() const { return false; }

  // Level index sets for few-step generation chosen for this network, by step
  // count (ncvsd/generation.hpp; `convert --levels`), kept in its file. Empty
  // for most: they generate on the published sets.
  std::map<int, std::vector<int>> level_sets;
};
TORCH_MODULE(GeneratorNet);

// Any generator network, seen through the interface.
template <class Impl>
GeneratorNet as_generator_net(std::shared_ptr<Impl> impl) {
  return GeneratorNet(std::shared_ptr<GeneratorNetImpl>(std::move(impl)));
}

// The teacher: E[x0 | x0 + level·n = x] from an unconditional prior.
torch::Tensor prior_x0(diffusion::Prior& prior, const torch::Tensor& x, const torch::Tensor& level);

// A learned per-level log-variance u(level) weighting the losses (EDM2):
// fixed random Fourier features of ln(level)/4, then a linear map (zero at start).
class LogVarianceImpl : public torch::nn::Module {
 public:
  explicit LogVarianceImpl(int features = 64, uint64_t seed = 0);
  torch::Tensor forward(const torch::Tensor& level);  // (N,) -> (N,)

 private:
  torch::Tensor frequencies_, phases_;
  torch::nn::Linear linear_{nullptr};
};
TORCH_MODULE(LogVariance);

// An unconditional ADM configuration with the two conditioning inputs added.
nets::AdmConfig conditional_config(nets::AdmConfig unconditional);

class ConditionalDenoiserImpl : public GeneratorNetImpl {
 public:
  // A copy of the teacher with the two conditioning inputs added.
  explicit ConditionalDenoiserImpl(diffusion::AdmPrior& teacher);
  // An empty network of a saved configuration (weights loaded afterwards).
  ConditionalDenoiserImpl(const nets::AdmConfig& conditional_config, diffusion::Schedule schedule);

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& level, const torch::Tensor& y,
                        const torch::Tensor& sigma) override;
  nets::AdmUNet& net() { return net_; }
  const diffusion::Schedule& schedule() const { return schedule_; }
  int channels() const override { return (net_->config().in_channels - 1) / 2; }
  int image_size() const override { return net_->config().image_size; }
  int size_multiple() const override { return 1 << (net_->config().channel_mult.size() - 1); }
  bool runs_in_weight_dtype() const override { return true; }
  torch::nn::Module& network() override { return *net_; }
  nlohmann::json description() const override;

 private:
  nets::AdmUNet net_{nullptr};
  diffusion::Schedule schedule_;
};
TORCH_MODULE(ConditionalDenoiser);

// NCVSD's generator network (its PrecondCondition): the EDM2 U-Net with a
// ControlNet encoder for y, EDM preconditioning at each input's level, and the
// noise injection γ. Read from NCVSD's pickles (published), or distilled here
// from an EDM2 teacher. Class-conditional networks see the classes set in
// classes() (by default EDM2's zero label vector).
class Edm2GeneratorImpl : public GeneratorNetImpl {
 public:
  Edm2GeneratorImpl(const nets::Edm2Config& config, double noise_injection, int class_label = -1,
                    bool published = true);
  // The teacher's U-Net in the encoder, the decoder and the ControlNet branch,
  // whose mixing weights start at zero, so that a fresh copy *is* the teacher
  // (as the published training starts); the log-variance head starts afresh.
  explicit Edm2GeneratorImpl(diffusion::Edm2Prior& teacher);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& level, const torch::Tensor& y,
                        const torch::Tensor& sigma) override;
  nets::Edm2ControlNet& net() { return net_; }
  nets::Edm2Classes& classes() { return classes_; }
  int channels() const override { return net_->config().img_channels; }
  int image_size() const override { return net_->config().img_resolution; }
  int size_multiple() const override { return 1 << (net_->config().channel_mult.size() - 1); }
  double noise_injection() const override { return noise_injection_; }
  bool runs_in_weight_dtype() const override { return false; }  // fp32 activations, as EDM2 priors
  torch::nn::Module& network() override { return *net_; }
  nlohmann::json description() const override;
  std::optional<nets::LatentSpace> latent_space() const override { return latent_; }
  void set_latent_space(std::optional<nets::LatentSpace> latent) { latent_ = std::move(latent); }
  bool published() const override { return published_; }

 private:
  nets::Edm2ControlNet net_{nullptr};
  std::optional<nets::LatentSpace> latent_;
  double noise_injection_;
  nets::Edm2Classes classes_;
  bool published_;
};
TORCH_MODULE(Edm2Generator);

// The generative denoiser G(y, σ, z): a sample of p(x0 | y) for y = x0 + σn.
// Injects fresh noise up to σ̂ = (1+γ)σ and denoises there, conditioned on y.
torch::Tensor generate(GeneratorNetImpl& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       torch::Generator& rng);
// The same with the standard normal draw z (shaped like y) given.
torch::Tensor generate(GeneratorNetImpl& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       const torch::Tensor& z);
// The first, over overlapping tiles of a large y (diffusion/tiled_denoiser.hpp)
// with one z drawn for the whole image, so overlapping tiles share their noise.
torch::Tensor generate(GeneratorNetImpl& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       torch::Generator& rng, const std::optional<diffusion::Tiling>& tiling);

// Generator files: weights (bf16 by default) + metadata naming the format and
// the architecture with its config (and schedule, for ours) and its level
// sets, and whatever else `extra` says (training provenance). Written atomically.
void save_generator(const std::string& path, GeneratorNetImpl& generator, const nlohmann::json& extra = {},
                    torch::ScalarType dtype = torch::kBFloat16);
// A generator file, or one of NCVSD's network pickles (`snapshot-*.pkl`,
// `ncvsd-*.pkl`: an EasyDict whose `ema` is the fp16 GenerativeDenoiser), read
// without running it. class_label picks the class of a class-conditional one.
// (A generator given where a prior is expected fails in load_prior, which names its format.)
GeneratorNet load_generator(const std::string& path, int class_label = -1);
// Whether `path` is something load_generator reads (not a prior).
bool is_generator_file(const std::string& path);
// The ud2m metadata of a generator file (teacher, training run, step...), to
// carry over as save_generator's `extra` when it is written again; {} for a pickle.
nlohmann::json generator_file_notes(const std::string& path);

}  // namespace ud2m::ncvsd
