// Inpainting: y = m ⊙ x with a 0/1 mask m (1 = observed), the same for every
// channel. Diagonal, so the prox (γm y + z)/(γm + 1) and A† = m ⊙ y are exact.
// The measurement keeps the image's shape (missing pixels are 0), as deepinv's.
#pragma once
#include <string>

#include "physics/operator.hpp"

namespace ud2m::physics {

class Inpainting : public LinearOperator {
 public:
  explicit Inpainting(torch::Tensor mask);  // (H, W), values 0 or 1

  torch::Tensor forward(const torch::Tensor& x) const override;
  torch::Tensor adjoint(const torch::Tensor& y) const override { return forward(y); }
  torch::Tensor pinv(const torch::Tensor& y) const override { return forward(y); }
  torch::Tensor prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const override;
  bool has_closed_form_prox() const override { return true; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override { return input_shape; }
  nlohmann::json to_json() const override;
  std::string name() const override { return "inpainting"; }
  static std::shared_ptr<Inpainting> from_json(const nlohmann::json& j);

  const torch::Tensor& mask() const { return mask_; }

 private:
  torch::Tensor mask_for(const torch::Tensor& x) const;
  torch::Tensor mask_;  // (H, W) float32
};

// Exactly round(fraction·H·W) pixels missing, chosen by a seeded permutation.
torch::Tensor random_mask(int64_t height, int64_t width, double fraction_missing, uint64_t seed);
// A centred hole of box_h × box_w pixels.
torch::Tensor box_mask(int64_t height, int64_t width, int64_t box_h, int64_t box_w);
// A user's mask image (white = observed, threshold 0.5) that must be height × width.
torch::Tensor load_mask_file(const std::string& path, int64_t height, int64_t width);

}  // namespace ud2m::physics
