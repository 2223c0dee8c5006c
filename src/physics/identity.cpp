#include "physics/identity.hpp"

#include "core/error.hpp"

namespace ud2m::physics {

torch::Tensor Identity::prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const {
  UD2M_CHECK(gamma >= 0, "prox step gamma must be non-negative, not {}", gamma);
  return (gamma * y + z) / (gamma + 1);
}

}  // namespace ud2m::physics
