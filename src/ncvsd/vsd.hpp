// The losses of noise-conditional variational score distillation (NCVSD).
//
// A generator G(y, σ, z) should sample p(x0 | y) for y = x0 + σn. Its sample
// x is diffused to x_t = x + tε and two denoisers look at x_t:
//   s  — the "fake" denoiser, trained by denoising score matching on the
//        generator's own samples (so it knows q(x_t));
//   s0 — the frozen teacher at the noise-conditional point: since
//        p(x0 | x_t, y) ∝ p(x0) N(y; x0, σ²) N(x_t; x0, t²) = p(x0) N(y_eff; x0, σ_eff²)·c,
//        the teacher's unconditional denoiser at (y_eff, σ_eff) is exactly
//        E[x0 | x_t, y] (so it knows p(x_t | y)).
// Their difference (s − s0)/t² is ∇log q_t − ∇log p_t(· | y): the generator
// loss below has the gradient 2(s − s0)ᵀ∂x/∂θ, i.e. 2t²·∇θ KL(q_t ‖ p_t(· | y)).
// All levels are VE standard deviations in model units; tensors are batched
// (N, ...) with per-sample levels (N,).
#pragma once
#include <torch/torch.h>

namespace ud2m::ncvsd {

constexpr double kSigmaData = 0.5;  // EDM's σ_data

struct NoiseConditionalPoint {
  torch::Tensor y_eff, sigma_eff;  // where the teacher is evaluated: sigma_eff (N,)
};

// σ_eff = (1/σ² + 1/t²)^(−1/2), y_eff = (y/σ² + x_t/t²)·σ_eff².
NoiseConditionalPoint noise_conditional_point(const torch::Tensor& y, const torch::Tensor& sigma,
                                              const torch::Tensor& x_t, const torch::Tensor& t);

// EDM's loss weight λ(t) = (t² + σ_d²)/(t·σ_d)².
torch::Tensor edm_weight(const torch::Tensor& t);

// Per-sample generator loss (N,): (w/e^{logvar})·‖x − sg(x − (s − s0))‖² + logvar·numel,
// elementwise logvar as EDM2 (logvar (N,) or a scalar; 0 when not learned).
torch::Tensor generator_loss(const torch::Tensor& x, const torch::Tensor& s0, const torch::Tensor& s,
                             const torch::Tensor& weight, const torch::Tensor& logvar);

// Per-sample denoising score matching loss of the fake denoiser on the
// generator's (detached) samples x: (w/e^{logvar})·‖s − sg(x)‖² + logvar·numel.
torch::Tensor fake_score_loss(const torch::Tensor& s, const torch::Tensor& x, const torch::Tensor& weight,
                              const torch::Tensor& logvar);

// t ~ LogNormal(p_mean, p_std) per sample: EDM's training level distribution
// (NCVSD: (0.4, 2.0) for the generator loss, (−0.8, 1.6) for the fake score).
torch::Tensor lognormal_levels(int64_t n, double p_mean, double p_std, torch::Generator& rng);

}  // namespace ud2m::ncvsd
