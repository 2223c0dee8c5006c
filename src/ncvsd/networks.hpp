// NCVSD's networks, built from an ε-prediction ADM teacher (our priors).
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

#include <optional>

#include "diffusion/prior.hpp"
#include "diffusion/tiled_denoiser.hpp"

namespace ud2m::ncvsd {

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

class ConditionalDenoiserImpl : public torch::nn::Module {
 public:
  // A copy of the teacher with the two conditioning inputs added.
  explicit ConditionalDenoiserImpl(diffusion::AdmPrior& teacher);
  // An empty network of a saved configuration (weights loaded afterwards).
  ConditionalDenoiserImpl(const nets::AdmConfig& conditional_config, diffusion::Schedule schedule);

  // x0 estimate of x at `level` (N,), given y at `sigma` (N,).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& level, const torch::Tensor& y,
                        const torch::Tensor& sigma);
  nets::AdmUNet& net() { return net_; }
  const diffusion::Schedule& schedule() const { return schedule_; }
  int channels() const { return (net_->config().in_channels - 1) / 2; }
  int image_size() const { return net_->config().image_size; }  // training resolution
  // Input sizes must be multiples of this (the U-Net halves the resolution).
  int size_multiple() const { return 1 << (net_->config().channel_mult.size() - 1); }

 private:
  nets::AdmUNet net_{nullptr};
  diffusion::Schedule schedule_;
};
TORCH_MODULE(ConditionalDenoiser);

constexpr double kNoiseInjection = 0.414;  // γ: the generator sees y at (1+γ)σ

// The generative denoiser G(y, σ, z): a sample of p(x0 | y) for y = x0 + σn.
// Injects fresh noise up to σ̂ = (1+γ)σ and denoises there, conditioned on y.
torch::Tensor generate(ConditionalDenoiser& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       torch::Generator& rng);
// The same with the standard normal draw z (shaped like y) given.
torch::Tensor generate(ConditionalDenoiser& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       const torch::Tensor& z);
// The first, over overlapping tiles of a large y (diffusion/tiled_denoiser.hpp)
// with one z drawn for the whole image, so overlapping tiles share their noise.
torch::Tensor generate(ConditionalDenoiser& generator, const torch::Tensor& y, const torch::Tensor& sigma,
                       torch::Generator& rng, const std::optional<diffusion::Tiling>& tiling);

// Generator files: weights (bf16 by default) + metadata naming the format,
// the conditional ADM config and the schedule. Written atomically.
void save_generator(const std::string& path, ConditionalDenoiser& generator, const nlohmann::json& extra = {},
                    torch::ScalarType dtype = torch::kBFloat16);
// (A generator given where a prior is expected fails in load_prior, which names its format.)
ConditionalDenoiser load_generator(const std::string& path);

}  // namespace ud2m::ncvsd
