// Blur y = k ∗ x (true convolution, the same kernel on every channel).
//  - CircularBlur: periodic boundary, diagonal in Fourier, so Aᵀ, the prox
//    (γ|K|² + 1)⁻¹(γK̄Y + Z) and A† (K̄/|K|² where |K| > 1e-5, else 0, as
//    deepinv's BlurFFT) are exact and cheap.
//  - ConvBlur: "reflect" (output the image's size, mirrored border) or "valid"
//    (output shrinks by the kernel size − 1); Aᵀ is the exact transpose
//    (transposed convolution, then the mirrored border folded back), prox and
//    A† use conjugate gradients.
#pragma once
#include "physics/operator.hpp"

namespace ud2m::physics {

class CircularBlur : public LinearOperator {
 public:
  // kernel: (h, w) float; image size (H, W) fixes the spectrum.
  CircularBlur(torch::Tensor kernel, int64_t height, int64_t width);

  torch::Tensor forward(const torch::Tensor& x) const override;
  torch::Tensor adjoint(const torch::Tensor& y) const override;
  torch::Tensor pinv(const torch::Tensor& y) const override;
  torch::Tensor prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const override;
  bool has_closed_form_prox() const override { return true; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override { return input_shape; }
  nlohmann::json to_json() const override;
  std::string name() const override { return "circular_blur"; }
  static std::shared_ptr<CircularBlur> from_json(const nlohmann::json& j);

  const torch::Tensor& kernel() const { return kernel_; }
  const torch::Tensor& half_spectrum() const { return spectrum_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  static constexpr double kPinvTolerance = 1e-5;  // singular values |K| below this count as zero

 private:
  torch::Tensor apply(const torch::Tensor& x, const torch::Tensor& multiplier64) const;
  void check_input(const torch::Tensor& x) const;
  torch::Tensor kernel_;
  int64_t height_, width_;
  torch::Tensor spectrum_;  // (H, W/2+1) complex128
};

class ConvBlur : public LinearOperator {
 public:
  enum class Boundary { reflect, valid };
  // (height, width): size of the images it applies to (Aᵀ needs it in valid mode).
  ConvBlur(torch::Tensor kernel, Boundary boundary, int64_t height, int64_t width);

  torch::Tensor forward(const torch::Tensor& x) const override;
  torch::Tensor adjoint(const torch::Tensor& y) const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  nlohmann::json to_json() const override;
  std::string name() const override { return "conv_blur"; }
  static std::shared_ptr<ConvBlur> from_json(const nlohmann::json& j);

  const torch::Tensor& kernel() const { return kernel_; }

 private:
  torch::Tensor kernel_;
  Boundary boundary_;
  int64_t height_, width_;
};

std::string boundary_name(ConvBlur::Boundary b);
ConvBlur::Boundary parse_boundary(const std::string& name);  // "reflect" | "valid"

// The batched per-channel convolution both blur kinds and the tests share: x
// (N, C, H, W) with an (h, w) kernel, padding already applied (valid conv).
torch::Tensor conv_valid(const torch::Tensor& x, const torch::Tensor& kernel);

}  // namespace ud2m::physics
