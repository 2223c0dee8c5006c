// Fourier phase retrieval, nonlinear: y = |F(P D v)|², per channel, of the
// image's intensities v = (x + 1)/2 in [0, 1] (as the DPS/DAPS protocol
// measures images: on [-1, 1] values x and −x, an image and its negative,
// would give the same measurement), where P
// zero-pads each H×W channel to (o·H, o·W) at the bottom/right (oversampling
// o ≥ 1), F is the orthonormal 2-D DFT (so ‖F v‖ = ‖v‖), and D is either the
// identity or, in the random-phase variant, a diagonal of unit-modulus
// e^{iθ}, θ ~ U[0, 2π) per pixel, drawn from the seed and shared by all
// channels (it is regenerated from the seed, never stored). Acting per channel
// keeps colour (a gray-only model would make colour unrecoverable). The data
// gradient is autograd's (base class).
#pragma once
#include <cstdint>

#include "physics/operator.hpp"

namespace ud2m::physics {

class PhaseRetrieval : public Operator {
 public:
  PhaseRetrieval(int64_t height, int64_t width, int64_t oversampling, bool random_phase, uint64_t seed);

  torch::Tensor forward(const torch::Tensor& x) const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& s) const override;
  // M = F* diag(1/(1/s² + λ(ω)/σ²)) F on the image's own grid, λ the
  // eigenvalues of the circulant closest to the Gauss–Newton curvature
  // (see the .cpp); noise F* diag(…)^½ F ξ. Plain variant only (the
  // random-phase mask mixes frequencies).
  std::optional<LangevinPreconditioner> langevin_preconditioner(const torch::Tensor& x, double prior_var,
                                                                double noise_var) const override;
  nlohmann::json to_json() const override;
  std::string name() const override { return "phase_retrieval"; }
  static std::shared_ptr<PhaseRetrieval> from_json(const nlohmann::json& j);

 private:
  int64_t height_, width_, oversampling_;
  bool random_phase_;
  uint64_t seed_;
  torch::Tensor phase_;  // (H, W) complex128 e^{iθ}, or undefined
};

}  // namespace ud2m::physics
