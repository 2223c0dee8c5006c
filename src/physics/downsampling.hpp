// Super-resolution: y = (h ∗ x)[::f, ::f], a circular anti-aliasing blur then
// decimation by f (deepinv's Downsampling with circular padding). Aᵀ inserts
// zeros and applies the adjoint blur. In Fourier, decimation averages the f²
// aliased copies of the spectrum, so AAᵀ is diagonal at low resolution: this
// gives the closed-form prox (Zhao et al. 2016, "Fast single image
// super-resolution using a new analytical solution for ℓ2–ℓ2 problems") and
// A† = Aᵀ(AAᵀ)⁻¹, with AAᵀ eigenvalues below 1e-10 (singular values < 1e-5)
// treated as zero.
#pragma once
#include <string>

#include "physics/operator.hpp"

namespace ud2m::physics {

class Downsampling : public LinearOperator {
 public:
  // filter: (h, w) kernel; (height, width) must be divisible by factor.
  Downsampling(torch::Tensor filter, int64_t factor, int64_t height, int64_t width);

  torch::Tensor forward(const torch::Tensor& x) const override;
  torch::Tensor adjoint(const torch::Tensor& y) const override;
  torch::Tensor pinv(const torch::Tensor& y) const override;
  torch::Tensor prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const override;
  bool has_closed_form_prox() const override { return true; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  nlohmann::json to_json() const override;
  std::string name() const override { return "downsampling"; }
  static std::shared_ptr<Downsampling> from_json(const nlohmann::json& j);

  int64_t factor() const { return factor_; }
  const torch::Tensor& filter() const { return filter_; }
  // Eigenvalues of AAᵀ in the orthonormal low-resolution Fourier basis, (H/f, W/f) float64.
  const torch::Tensor& aat_eigenvalues() const { return aliased_power_; }

 private:
  torch::Tensor block_mean(const torch::Tensor& spectrum) const;  // (.., H, W) -> (.., H/f, W/f)
  torch::Tensor tile(const torch::Tensor& spectrum) const;        // (.., H/f, W/f) -> (.., H, W)
  // x̂ ↦ F⁻¹(H̄ · tile(v)) for a low-resolution spectrum v: Aᵀ in Fourier.
  torch::Tensor adjoint_from_spectrum(const torch::Tensor& low_spectrum) const;
  void check_input(const torch::Tensor& x) const;
  torch::Tensor filter_;
  int64_t factor_, height_, width_;
  torch::Tensor spectrum_;       // (H, W) complex128
  torch::Tensor half_spectrum_;  // (H, W/2+1) complex128, for the real-FFT forward
  torch::Tensor aliased_power_;  // mean of |H|² over aliases, (H/f, W/f) float64: the eigenvalues of AAᵀ
};

// The anti-aliasing filter by name: "bicubic" (deepinv's, 4f wide), "gaussian"
// (std = f), "box" (f×f average, i.e. area downsampling).
torch::Tensor sr_filter(const std::string& name, int64_t factor);

}  // namespace ud2m::physics
