// A = outer ∘ inner for two linear operators (e.g. blur then inpainting).
// Aᵀ = innerᵀ ∘ outerᵀ exactly; prox and A† by conjugate gradients (base class),
// since a product of two "easy" operators is in general not easy.
#pragma once
#include "physics/operator.hpp"

namespace ud2m::physics {

class Composition : public LinearOperator {
 public:
  Composition(LinearOperatorPtr outer, LinearOperatorPtr inner);

  torch::Tensor forward(const torch::Tensor& x) const override { return outer_->forward(inner_->forward(x)); }
  torch::Tensor adjoint(const torch::Tensor& y) const override { return inner_->adjoint(outer_->adjoint(y)); }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& s) const override {
    return outer_->output_shape(inner_->output_shape(s));
  }
  nlohmann::json to_json() const override;
  std::string name() const override { return "composition"; }

 private:
  LinearOperatorPtr outer_, inner_;
};

}  // namespace ud2m::physics
