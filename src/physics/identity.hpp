// A = I (denoising): prox (γy + z)/(γ + 1), A† = I.
#pragma once
#include "physics/operator.hpp"

namespace ud2m::physics {

class Identity : public LinearOperator {
 public:
  torch::Tensor forward(const torch::Tensor& x) const override { return x; }
  torch::Tensor adjoint(const torch::Tensor& y) const override { return y; }
  torch::Tensor pinv(const torch::Tensor& y) const override { return y; }
  torch::Tensor prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const override;
  bool has_closed_form_prox() const override { return true; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override { return input_shape; }
  nlohmann::json to_json() const override { return {{"type", name()}}; }
  std::string name() const override { return "identity"; }
};

}  // namespace ud2m::physics
