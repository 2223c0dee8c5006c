// √A(x) for a non-negative operator A: the amplitudes of intensity
// measurements (phase retrieval's |z|² -> |z|). Fitting amplitudes instead of
// intensities evens out the likelihood's curvature: the intensities' is
// |z(ω)|²/σ², orders of magnitude apart between the bright low frequencies
// and the weak high ones, so gradient and Langevin steps sized for the
// stiffest direction leave the rest unmoved; |z| has a unit gradient in z, so
// the amplitudes' curvature is at most 1/σ'² in every direction. The
// published phase-retrieval protocol measures amplitudes.
#pragma once
#include "physics/operator.hpp"

namespace ud2m::physics {

class SquareRoot : public Operator {
 public:
  explicit SquareRoot(OperatorPtr inner);

  torch::Tensor forward(const torch::Tensor& x) const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& s) const override { return inner_->output_shape(s); }
  nlohmann::json to_json() const override;
  std::string name() const override { return "square_root"; }

 private:
  OperatorPtr inner_;
};

}  // namespace ud2m::physics
