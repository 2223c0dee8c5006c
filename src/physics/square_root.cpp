#include "physics/square_root.hpp"

#include "core/error.hpp"

namespace ud2m::physics {

SquareRoot::SquareRoot(OperatorPtr inner) : inner_(std::move(inner)) {
  UD2M_CHECK(inner_ != nullptr, "square_root needs an operator");
  UD2M_CHECK(!inner_->is_linear(),
             "square_root is for non-negative nonlinear operators (intensities), not the linear '{}'", inner_->name());
}

torch::Tensor SquareRoot::forward(const torch::Tensor& x) const {
  // The ε keeps the gradient finite where A(x) = 0: for A = |z|² it is z/√(|z|² + ε), of modulus ≤ 1.
  return (inner_->forward(x) + 1e-12).sqrt();
}

nlohmann::json SquareRoot::to_json() const { return {{"type", name()}, {"of", inner_->to_json()}}; }

}  // namespace ud2m::physics
