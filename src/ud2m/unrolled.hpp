// L_θ(y, x_t, t): UD2M's unrolled network. K blocks, each
//   1. a data step z = argmin ‖y − A(z)‖²/(2λσ_y²) + ‖z − x_t/√ᾱ_t‖²/(2σ_t²) + ‖z − x⁽ᵏ⁻¹⁾‖²/(2ρ²)
//      (one prox of the operator: the operator enters only here, so any
//      linear operator works, also ones never seen in training; for a
//      nonlinear one whose measurement is an image, JPEG, a few gradient
//      steps through its differentiable model);
//   2. re-noise z to t_δ, the timestep whose level is nearest ρ₀ = σ'σ_t/√(σ'²+σ_t²),
//      σ' = cσ_y (c = 1; the reference code uses c = 13 for inpainting, which
//      measured worse here once x⁽⁰⁾ fills the holes, see initial_estimate);
//   3. one call of the LoRA-adapted prior there: x⁽ᵏ⁾ = its x0 estimate.
// x⁽⁰⁾ = Aᵀy/Aᵀ1, or y itself for JPEG (initial_estimate), optionally refined by a learned initialiser
// given x_t (the "w/ RAM" variant, +1 network evaluation); the output is x⁽ᴷ⁾.
// Learned: the LoRA factors, the prior's output head, λ = exp(θ_λ) and
// ρ = ρ₀·exp(θ_ρ) (both 1 at the start), and the initialiser if there is one.
#pragma once
#include <torch/torch.h>

#include <string>

#include "diffusion/prior.hpp"
#include "nets/initialiser.hpp"
#include "nets/lora.hpp"
#include "physics/operator.hpp"

namespace ud2m::unrolled {

struct UnrolledOptions {
  int blocks = 3;  // K
  nets::LoraOptions lora;
  // c in ρ₀ (so in t_δ and the weight of x⁽ᵏ⁻¹⁾).
  double noise_inflation = 1;
  // The "w/ RAM" variant: x⁽⁰⁾ refined by a small trained network (nets/initialiser.hpp).
  bool learned_init = false;
  // Gradient steps of the data step for a nonlinear operator (no closed-form prox).
  int nonlinear_prox_steps = 10;
};

class UnrolledNetwork : public torch::nn::Module {
 public:
  // Fingerprints the prior's weights, then adds LoRA to it and freezes every
  // base weight except the output head.
  UnrolledNetwork(diffusion::PriorPtr prior, UnrolledOptions options);

  // x̂0 for x_t at timestep t; sigma: measurement noise std in [0, 1] units (> 0).
  // Differentiable with respect to the trainable parameters.
  torch::Tensor forward(const physics::Operator& op, const torch::Tensor& y, double sigma,
                        const torch::Tensor& x_t, int t, torch::Generator& rng);
  // The same with the re-noising draws given, block_noise[k] for block k (each
  // shaped like x_t): what `rng` would draw, in order (data-parallel ranks draw
  // them for the whole batch and keep their share).
  torch::Tensor forward(const physics::Operator& op, const torch::Tensor& y, double sigma,
                        const torch::Tensor& x_t, int t, const std::vector<torch::Tensor>& block_noise);
  // K standard normal draws shaped like x_t, from rng.
  std::vector<torch::Tensor> draw_block_noise(const torch::Tensor& x_t, torch::Generator& rng) const;

  // Step 1 of a block (sigma_y in model units); differentiable in λ and ρ too.
  torch::Tensor data_step(const physics::Operator& op, const torch::Tensor& y, double sigma_y,
                          const torch::Tensor& x_t, int t, const torch::Tensor& previous) const;
  // ρ₀ (with σ' = c·sigma_y) and its timestep t_δ.
  double rho0(double sigma_y, int t) const;
  int renoise_timestep(double sigma_y, int t) const;

  torch::Tensor lambda() const { return log_lambda_.exp(); }
  torch::Tensor rho_scale() const { return log_rho_scale_.exp(); }
  // Everything an adapter file holds, by name (prior.* LoRA and head, scalars).
  std::vector<std::pair<std::string, torch::Tensor>> trainable_parameters();

  diffusion::Prior& prior() { return *prior_; }
  const UnrolledOptions& options() const { return options_; }
  // Network evaluations per call: K blocks, +1 with a learned initialiser.
  int evaluations() const { return options_.blocks + (initialiser_ ? 1 : 0); }
  // Unroll more or fewer blocks than trained (K ≥ 1).
  void set_blocks(int blocks);
  void set_noise_inflation(double inflation);  // c > 0
  // Training memory: recompute each prior call in the backward pass instead of
  // keeping its activations (~K× less, one more forward per call).
  void set_recompute(bool recompute) { recompute_ = recompute; }
  const std::string& base_fingerprint() const { return base_fingerprint_; }
  // For restoring only: the LoRA updates go into the prior's weights (the
  // adapted network then costs what its base does); it cannot be trained or
  // saved as an adapter afterwards.
  void fold_lora();
  bool lora_folded() const { return lora_folded_; }
  // For restoring only, once folded: the blocks call the prior through this
  // denoiser (e.g. the folded prior on a GPU, diffusion::OffloadedDenoiser).
  void set_denoiser(diffusion::DenoiserPtr denoiser);

 private:
  diffusion::Denoiser& denoiser() { return denoiser_ ? *denoiser_ : *prior_; }

  diffusion::PriorPtr prior_;
  diffusion::DenoiserPtr denoiser_;
  UnrolledOptions options_;
  std::string base_fingerprint_;
  torch::Tensor log_lambda_, log_rho_scale_;
  nets::Initialiser initialiser_{nullptr};
  bool recompute_ = false;
  bool lora_folded_ = false;
};

// x⁽⁰⁾ of the unrolled network: Aᵀy/Aᵀ1 where Aᵀ1 is not ~0, pixels no
// measurement sees filled from their seen neighbours, clamped to the image
// range; for a nonlinear operator whose measurement is an image (JPEG), y
// clamped (others, e.g. phase retrieval, are refused). The paper's per-task inits (y for deblurring, an upsampling of y for
// SR) without knowing the task; for inpainting a smooth fill instead of y's
// grey holes, which at t_δ ≈ 2 the prior cannot fill (+9.4 dB measured).
torch::Tensor initial_estimate(const physics::Operator& op, const torch::Tensor& y);

// FNV-1a (64 bit, hex) over the names and fp32 values of a module's
// parameters and buffers: names a base prior in adapter files.
std::string weights_fingerprint(torch::nn::Module& module);

}  // namespace ud2m::unrolled
