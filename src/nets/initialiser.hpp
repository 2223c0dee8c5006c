// The learned initialiser of UD2M's "w/ RAM" variant: a small residual U-Net
// that refines the closed-form start x⁽⁰⁾ = Aᵀy/Aᵀ1 given the current x_t
// (one extra network evaluation per sampling step). Inputs, 8 channels:
// x⁽⁰⁾, √ᾱ_t·x_t (bounded at every t, unlike x_t/√ᾱ_t) and two constant maps
// √ᾱ_t, √(1−ᾱ_t) that say how much of x_t is signal. Width 32 at full
// resolution, 64 at half: conv in → 2 residual blocks → stride-2 conv →
// 2 residual blocks → nearest upsample + conv, plus the skip → 1 residual block
// → norm, SiLU, conv out. The output conv starts at zero, so an untrained
// initialiser returns x⁽⁰⁾ exactly and training starts from the plain network.
#pragma once
#include <torch/torch.h>

namespace ud2m::nets {

class InitialiserImpl : public torch::nn::Module {
 public:
  explicit InitialiserImpl(int64_t image_channels = 3, int64_t width = 32);
  // x0: the closed-form start; x_t at a timestep with cumulative ᾱ = alpha_bar.
  torch::Tensor forward(const torch::Tensor& x0, const torch::Tensor& x_t, double alpha_bar);

 private:
  torch::nn::Conv2d in{nullptr}, down{nullptr}, up{nullptr}, out{nullptr};
  torch::nn::Sequential full{nullptr}, half{nullptr}, merged{nullptr};
  torch::nn::GroupNorm out_norm{nullptr};
};
TORCH_MODULE(Initialiser);

}  // namespace ud2m::nets
